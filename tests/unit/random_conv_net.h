// A random conv net for the randomized tests: odd channel counts and image
// sizes, plain, grouped, depthwise and dilated convs, residual joins,
// concats, pools and activations (random_graph_exactness_test.cpp, and
// against ONNX Runtime in tests/ort/random_nets_agreement_main.cpp).
#pragma once

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "random_nets.h"
#include "test_models.h"

namespace qtk::testing {

struct Feature {
  std::string name;
  int64_t c, h, w;
};

// Builds a random net on input x [N, c, h, w]; `log` describes it.
class ConvNetBuilder : RandomNetBuilder {
 public:
  ConvNetBuilder(uint32_t seed, std::ostringstream& log) : RandomNetBuilder(seed, log) {}

  ir::Model build(Feature x) {
    const int blocks = pick(2, 5);
    for (int b = 0; b < blocks; ++b) {
      switch (pick(0, 6)) {
        case 0: x = conv(x, pick(1, 24), pick(0, 3) == 0 ? 1 : 3, pick(0, 2) == 0 ? 2 : 1, false); break;
        case 6: x = upsample(x); break;
        case 1: x = conv(x, x.c, 3, pick(1, 2), /*depthwise=*/true); break;
        case 2: x = residual(x); break;
        case 3: x = concat(x); break;
        case 4: x = pool(x); break;
        default: x = conv(x, pick(1, 40), pick(1, 5), 1, false); break;
      }
    }
    if (pick(0, 1) == 0) {  // a classifier head, else the feature map is the output
      x = unary("GlobalAveragePool", x, {"", x.c, 1, 1});
      x = unary("Flatten", x, {"", x.c, 1, 1});
      const std::string w = name("fc_w"), bias = name("fc_b"), y = name("fc");
      m_.graph.set_initializer(w, uniform_tensor({10, x.c}, next_seed(), -0.5f, 0.5f));
      m_.graph.set_initializer(bias, uniform_tensor({10}, next_seed(), -0.1f, 0.1f));
      ir::Node n = op_node("Gemm", {x.name, w, bias}, y);
      n.attrs = {ir::attr_int("transB", 1)};
      m_.graph.nodes.push_back(n);
      log_ << " Gemm(10)";
      x = {y, 10, 1, 1};
    }
    m_.graph.outputs.push_back(float_info(x.name));
    return m_;
  }

 private:

  Feature unary(const std::string& op, const Feature& x, Feature out) {
    out.name = name(op);
    m_.graph.nodes.push_back(op_node(op, {x.name}, out.name));
    return out;
  }

  // kernel k (even ones padded more at the end), stride s, padded to keep
  // the size (always with `same`); Relu, Relu6 or nothing after.
  Feature conv(const Feature& x, int64_t out_c, int64_t k, int64_t s, bool depthwise, bool same = false) {
    int64_t group = depthwise ? x.c : 1;
    if (!depthwise && x.c % 2 == 0 && out_c % 2 == 0 && pick(0, 3) == 0) group = 2;
    if (depthwise) out_c = x.c;
    const int64_t dilation = k == 3 && pick(0, 5) == 0 ? 2 : 1, reach = dilation * (k - 1);
    const int64_t pad_begin = reach / 2, pad_end = reach - pad_begin;
    const bool padded = same || pick(0, 4) != 0 || x.h <= reach || x.w <= reach;
    const int64_t pb = padded ? pad_begin : 0, pe = padded ? pad_end : 0;
    const Feature y{name("conv"), out_c, (x.h + pb + pe - reach - 1) / s + 1, (x.w + pb + pe - reach - 1) / s + 1};
    const std::string w = y.name + "_w", b = y.name + "_b";
    const float bound = 1.5f / std::sqrt(static_cast<float>(x.c / group * k * k));
    m_.graph.set_initializer(w, uniform_tensor({out_c, x.c / group, k, k}, next_seed(), -bound, bound));
    std::vector<std::string> inputs = {x.name, w};
    if (pick(0, 3) != 0) {
      m_.graph.set_initializer(b, uniform_tensor({out_c}, next_seed(), -0.2f, 0.2f));
      inputs.push_back(b);
    }
    ir::Node n = op_node("Conv", inputs, y.name);
    n.attrs = {ir::attr_ints("kernel_shape", {k, k}), ir::attr_ints("strides", {s, s}),
               ir::attr_ints("pads", {pb, pb, pe, pe}), ir::attr_ints("dilations", {dilation, dilation}),
               ir::attr_int("group", group)};
    m_.graph.nodes.push_back(n);
    log_ << " Conv(" << x.c << "->" << out_c << " k" << k << " s" << s << " d" << dilation << " g" << group
         << " p" << pb << pe << " " << x.h << "x" << x.w << ")";
    return activation(y);
  }

  // Relu, Relu6 (fused into the conv's requantization), a table-lookup one
  // (LeakyRelu, Sigmoid, HardSwish: code tables), or none.
  Feature activation(const Feature& y) {
    switch (pick(0, 5)) {
      case 0: log_ << " Relu"; return unary("Relu", y, y);
      case 1: {
        const std::string lo = name("lo"), hi = name("hi"), out = name("relu6");
        m_.graph.set_initializer(lo, Tensor::scalar<float>(0.f));
        m_.graph.set_initializer(hi, Tensor::scalar<float>(6.f));
        m_.graph.nodes.push_back(op_node("Clip", {y.name, lo, hi}, out));
        log_ << " Relu6";
        return {out, y.c, y.h, y.w};
      }
      case 2: {
        Feature out = unary("LeakyRelu", y, y);
        m_.graph.nodes.back().attrs = {ir::attr_float("alpha", 0.1f)};
        log_ << " LeakyRelu";
        return out;
      }
      case 3: log_ << " Sigmoid"; return unary("Sigmoid", y, y);
      case 4: log_ << " HardSwish"; return unary("HardSwish", y, y);
      default: return y;
    }
  }

  // x + conv(relu(conv(x))), both 3x3 with pads 1 (the join fuses into the second conv).
  Feature residual(const Feature& x) {
    log_ << " [residual";
    const Feature inner = conv(x, x.c, 3, 1, false, true), branch = conv(inner, x.c, 3, 1, false, true);
    const Feature y{name("add"), x.c, x.h, x.w};
    m_.graph.nodes.push_back(op_node("Add", {branch.name, x.name}, y.name));
    log_ << " Add]";
    return pick(0, 1) == 0 ? unary("Relu", y, y) : y;
  }

  // Two 1x1 / 3x3 branches joined along channels.
  Feature concat(const Feature& x) {
    log_ << " [concat";
    const Feature a = conv(x, pick(1, 12), 1, 1, false, true), b = conv(x, pick(1, 12), 3, 1, false, true);
    const Feature y{name("cat"), a.c + b.c, x.h, x.w};
    ir::Node n = op_node("Concat", {a.name, b.name}, y.name);
    n.attrs = {ir::attr_int("axis", 1)};
    m_.graph.nodes.push_back(n);
    log_ << "]";
    return y;
  }

  // Twice the size: a ConvTranspose (kernel 2, stride 2) or a nearest Resize.
  Feature upsample(const Feature& x) {
    if (x.h > 12 || x.w > 12) return x;
    if (pick(0, 1) == 0) {
      const int64_t out_c = pick(1, 16);
      const Feature y{name("deconv"), out_c, 2 * x.h, 2 * x.w};
      const std::string w = y.name + "_w";
      m_.graph.set_initializer(w, uniform_tensor({x.c, out_c, 2, 2}, next_seed(), -0.5f, 0.5f));
      ir::Node n = op_node("ConvTranspose", {x.name, w}, y.name);
      n.attrs = {ir::attr_ints("kernel_shape", {2, 2}), ir::attr_ints("strides", {2, 2})};
      m_.graph.nodes.push_back(n);
      log_ << " ConvTranspose(" << x.c << "->" << out_c << " k2 s2)";
      return activation(y);
    }
    const Feature y{name("resize"), x.c, 2 * x.h, 2 * x.w};
    const std::string scales = y.name + "_scales";
    m_.graph.set_initializer(scales, Tensor::from_vector<float>({4}, {1.f, 1.f, 2.f, 2.f}));
    ir::Node n = op_node("Resize", {x.name, "", scales}, y.name);
    n.attrs = {ir::attr_string("mode", "nearest")};
    m_.graph.nodes.push_back(n);
    log_ << " Resize(x2)";
    return y;
  }

  Feature pool(const Feature& x) {
    if (x.h < 2 || x.w < 2) return x;
    const bool max = pick(0, 1) == 0, overlapping = pick(0, 1) == 0 && x.h >= 3 && x.w >= 3;
    const int64_t k = overlapping ? 3 : 2, s = overlapping ? 1 : 2, p = overlapping ? 1 : 0;
    const Feature y{name(max ? "maxpool" : "avgpool"), x.c, (x.h + 2 * p - k) / s + 1, (x.w + 2 * p - k) / s + 1};
    ir::Node n = op_node(max ? "MaxPool" : "AveragePool", {x.name}, y.name);
    n.attrs = {ir::attr_ints("kernel_shape", {k, k}), ir::attr_ints("strides", {s, s}),
               ir::attr_ints("pads", {p, p, p, p})};
    m_.graph.nodes.push_back(n);
    log_ << " " << n.op_type << "(k" << k << " s" << s << ")";
    return y;
  }
};

// Net `seed` on x [N, c, h, w] with its input's sizes, drawn from the seed.
struct RandomConvNet {
  ir::Model model;
  int64_t c, h, w;
};
inline RandomConvNet random_conv_net(uint32_t seed, std::ostringstream& log) {
  RandomDims dim(seed);
  const int64_t channels = std::vector<int64_t>{1, 3, 4, 8}[static_cast<size_t>(dim(0, 3))];
  const int64_t h = dim(3, 20), w = dim(3, 20);
  log << "seed " << seed << ": x [N," << channels << "," << h << "," << w << "]";
  return {ConvNetBuilder(seed, log).build({"x", channels, h, w}), channels, h, w};
}

}  // namespace qtk::testing
