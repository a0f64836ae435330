// Conv, ConvTranspose, pooling, Gemm and MatMul run as one-node models through
// qtk::Session (1 and several threads) and checked against direct loops
// written here from the ONNX definitions, on random shapes and attributes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/session.h"
#include "one_node.h"

namespace qtk {
namespace {

ir::Attribute attr_i(const std::string& n, int64_t v) { return ir::attr_int(n, v); }
ir::Attribute attr_f(const std::string& n, float v) { return ir::attr_float(n, v); }
ir::Attribute attr_s(const std::string& n, const std::string& v) { return ir::attr_string(n, v); }
ir::Attribute attr_ints(const std::string& n, std::vector<int64_t> v) { return ir::attr_ints(n, std::move(v)); }

// One node; inputs named in order ("" = absent optional input), outputs y0...
Expected<std::vector<Tensor>> run_node(const std::string& op, const std::vector<std::string>& input_names,
                                       const std::vector<Tensor>& inputs, std::vector<ir::Attribute> attrs,
                                       size_t num_outputs = 1, int threads = 1) {
  return testing::run_one_node(op, input_names, inputs, std::move(attrs), num_outputs,
                               {.opset = 19, .threads = threads, .optimize = false});
}

// One node whose inputs marked `constant` are initializers of the graph (so
// kernels may prepare them at session build, as for a real model's weights);
// the others are fed. Outputs are named y0.
Expected<std::vector<Tensor>> run_node_with_constants(const std::string& op, const std::vector<std::string>& names,
                                                      const std::vector<Tensor>& inputs,
                                                      const std::vector<bool>& constant,
                                                      std::vector<ir::Attribute> attrs, int threads) {
  ir::Model m;
  m.opsets = {{"", 19}};
  ir::Node n;
  n.name = "node";
  n.op_type = op;
  n.inputs = names;
  n.outputs = {"y0"};
  n.attrs = std::move(attrs);
  std::vector<Tensor> feeds;
  for (size_t i = 0; i < names.size(); ++i) {
    if (constant[i]) {
      m.graph.initializers[names[i]] = inputs[i];
    } else {
      m.graph.inputs.push_back(testing::value_info(names[i], inputs[i].dtype()));
      feeds.push_back(inputs[i]);
    }
  }
  m.graph.outputs.push_back(testing::value_info("y0", DType::kUndefined));
  m.graph.nodes.push_back(n);
  SessionOptions so;
  so.threads = threads;
  so.optimize = false;
  QTK_ASSIGN_OR_RETURN(auto session, Session::create(m, so));
  // Twice: the second run reuses what the first left (packed weights, scratch).
  QTK_ASSIGN_OR_RETURN(auto first, session->run(feeds));
  (void)first;
  return session->run(feeds);
}

Tensor random_tensor(Shape shape, std::mt19937& rng) {
  Tensor t(DType::kFloat32, std::move(shape));
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

void expect_close(const Tensor& got, const std::vector<float>& want, const Shape& want_shape, const std::string& what,
                  float tol = 1e-4f) {
  ASSERT_EQ(got.dtype(), DType::kFloat32) << what;
  ASSERT_EQ(got.shape(), want_shape) << what;
  for (int64_t i = 0; i < got.numel(); ++i)
    ASSERT_NEAR(got.data<float>()[i], want[i], tol * (1.f + std::fabs(want[i]))) << what << " element " << i;
}

// ---------------------------------------------------------------------------
// Direct reference loops. Spatial dims are padded to 3 (D, H, W) in front.

struct Win {
  int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1}, k[3] = {1, 1, 1}, s[3] = {1, 1, 1}, d[3] = {1, 1, 1},
          p[3] = {0, 0, 0};
};

Win make_win(const Shape& in, const Shape& out, const Shape& k, const Shape& s, const Shape& d, const Shape& pb) {
  Win w;
  const size_t r = in.size(), off = 3 - r;
  for (size_t i = 0; i < r; ++i) {
    w.in[off + i] = in[i];
    w.out[off + i] = out[i];
    w.k[off + i] = k[i];
    w.s[off + i] = s[i];
    w.d[off + i] = d[i];
    w.p[off + i] = pb[i];
  }
  return w;
}

// y[n, m, o] = b[m] + sum_{c in group, taps} x[n, c, o*s - p + k*d] * w[m, c', k]
std::vector<float> ref_conv(const Tensor& x, const Tensor& w, const float* bias, int64_t group, const Win& g) {
  const int64_t N = x.dim(0), C = x.dim(1), M = w.dim(0), Cg = C / group, Mg = M / group;
  const int64_t IN = g.in[0] * g.in[1] * g.in[2], OUT = g.out[0] * g.out[1] * g.out[2], KS = g.k[0] * g.k[1] * g.k[2];
  std::vector<float> y(N * M * OUT);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t o0 = 0; o0 < g.out[0]; ++o0)
        for (int64_t o1 = 0; o1 < g.out[1]; ++o1)
          for (int64_t o2 = 0; o2 < g.out[2]; ++o2) {
            double acc = bias ? bias[m] : 0.0;
            for (int64_t c = 0; c < Cg; ++c)
              for (int64_t k0 = 0; k0 < g.k[0]; ++k0)
                for (int64_t k1 = 0; k1 < g.k[1]; ++k1)
                  for (int64_t k2 = 0; k2 < g.k[2]; ++k2) {
                    const int64_t i0 = o0 * g.s[0] - g.p[0] + k0 * g.d[0];
                    const int64_t i1 = o1 * g.s[1] - g.p[1] + k1 * g.d[1];
                    const int64_t i2 = o2 * g.s[2] - g.p[2] + k2 * g.d[2];
                    if (i0 < 0 || i0 >= g.in[0] || i1 < 0 || i1 >= g.in[1] || i2 < 0 || i2 >= g.in[2]) continue;
                    const int64_t ci = (m / Mg) * Cg + c;
                    acc += double(x.data<float>()[(n * C + ci) * IN + (i0 * g.in[1] + i1) * g.in[2] + i2]) *
                           w.data<float>()[(m * Cg + c) * KS + (k0 * g.k[1] + k1) * g.k[2] + k2];
                  }
            y[(n * M + m) * OUT + (o0 * g.out[1] + o1) * g.out[2] + o2] = static_cast<float>(acc);
          }
  return y;
}

// ConvTranspose as a scatter: y[n, m, i*s - p + k*d] += x[n, c, i] * w[c, m', k].
// Here g.in is X's spatial shape and g.out is Y's.
std::vector<float> ref_conv_transpose(const Tensor& x, const Tensor& w, const float* bias, int64_t group,
                                      const Win& g) {
  const int64_t N = x.dim(0), C = x.dim(1), Mg = w.dim(1), M = Mg * group, Cg = C / group;
  const int64_t IN = g.in[0] * g.in[1] * g.in[2], OUT = g.out[0] * g.out[1] * g.out[2], KS = g.k[0] * g.k[1] * g.k[2];
  std::vector<double> y(N * M * OUT, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t mm = 0; mm < Mg; ++mm)
        for (int64_t i0 = 0; i0 < g.in[0]; ++i0)
          for (int64_t i1 = 0; i1 < g.in[1]; ++i1)
            for (int64_t i2 = 0; i2 < g.in[2]; ++i2)
              for (int64_t k0 = 0; k0 < g.k[0]; ++k0)
                for (int64_t k1 = 0; k1 < g.k[1]; ++k1)
                  for (int64_t k2 = 0; k2 < g.k[2]; ++k2) {
                    const int64_t o0 = i0 * g.s[0] - g.p[0] + k0 * g.d[0];
                    const int64_t o1 = i1 * g.s[1] - g.p[1] + k1 * g.d[1];
                    const int64_t o2 = i2 * g.s[2] - g.p[2] + k2 * g.d[2];
                    if (o0 < 0 || o0 >= g.out[0] || o1 < 0 || o1 >= g.out[1] || o2 < 0 || o2 >= g.out[2]) continue;
                    const int64_t m = (c / Cg) * Mg + mm;
                    y[(n * M + m) * OUT + (o0 * g.out[1] + o1) * g.out[2] + o2] +=
                        double(x.data<float>()[(n * C + c) * IN + (i0 * g.in[1] + i1) * g.in[2] + i2]) *
                        w.data<float>()[(c * Mg + mm) * KS + (k0 * g.k[1] + k1) * g.k[2] + k2];
                  }
  std::vector<float> out(y.size());
  for (size_t i = 0; i < y.size(); ++i) out[i] = static_cast<float>(y[i] + (bias ? bias[(i / OUT) % M] : 0.f));
  return out;
}

// ---------------------------------------------------------------------------
// Conv

struct ConvCase {
  Shape x, w;  // [N, C, spatial...], [M, C/group, kernel...]
  int64_t group;
  Shape strides, dilations, pads;  // pads [b..., e...]
  bool bias;
};

Shape conv_out(const ConvCase& c) {
  const size_t r = c.x.size() - 2;
  Shape out;
  for (size_t i = 0; i < r; ++i)
    out.push_back((c.x[i + 2] + c.pads[i] + c.pads[i + r] - ((c.w[i + 2] - 1) * c.dilations[i] + 1)) / c.strides[i] +
                  1);
  return out;
}

// The reference Conv of case c on x, w and b (b only when c.bias), with the
// output spatial shape `out` (conv_out).
std::vector<float> reference_conv(const ConvCase& c, const Tensor& x, const Tensor& w, const Tensor& b,
                                  const Shape& out) {
  const size_t r = c.x.size() - 2;
  return ref_conv(x, w, c.bias ? b.data<float>() : nullptr, c.group,
                  make_win(Shape(c.x.begin() + 2, c.x.end()), out, Shape(c.w.begin() + 2, c.w.end()), c.strides,
                           c.dilations, Shape(c.pads.begin(), c.pads.begin() + r)));
}

TEST(ConvOps, ConvMatchesDirectLoopAcrossRanksGroupsAndThreads) {
  const ConvCase cases[] = {
      // 2-D, the CNN shapes: 3x3 pad 1, and a strided layer.
      {{2, 3, 9, 11}, {8, 3, 3, 3}, 1, {1, 1}, {1, 1}, {1, 1, 1, 1}, true},
      {{3, 4, 10, 10}, {6, 4, 3, 3}, 1, {2, 2}, {1, 1}, {1, 1, 1, 1}, false},
      // 1x1: stride 1 no pad (the GEMM-only path), and strided (im2col path).
      {{2, 5, 7, 6}, {9, 5, 1, 1}, 1, {1, 1}, {1, 1}, {0, 0, 0, 0}, true},
      {{2, 5, 7, 6}, {9, 5, 1, 1}, 1, {2, 2}, {1, 1}, {0, 0, 0, 0}, true},
      // Groups, dilation, asymmetric pads, uneven strides.
      {{2, 6, 11, 9}, {4, 3, 3, 2}, 2, {2, 1}, {2, 3}, {1, 0, 2, 3}, true},
      // Depthwise (direct path) and depthwise with a channel multiplier.
      {{2, 5, 8, 9}, {5, 1, 3, 3}, 5, {1, 2}, {1, 1}, {1, 1, 1, 1}, true},
      {{1, 4, 7, 7}, {8, 1, 3, 3}, 4, {1, 1}, {2, 2}, {2, 2, 2, 2}, false},
      // 1-D (plain and depthwise) and 3-D.
      {{3, 4, 17}, {5, 4, 4}, 1, {3}, {2}, {2, 1}, true},
      {{2, 3, 12}, {3, 1, 3}, 3, {1}, {1}, {1, 1}, true},
      {{2, 4, 5, 6, 7}, {6, 2, 2, 3, 3}, 2, {1, 2, 1}, {1, 1, 2}, {0, 1, 1, 1, 0, 2}, true},
      // Stride 1 with dilation and uneven pads (the padded-grid GEMM) in 1-D,
      // 2-D and grouped 3-D.
      {{2, 3, 15}, {4, 3, 3}, 1, {1}, {2}, {1, 3}, true},
      {{2, 3, 9, 8}, {5, 3, 3, 3}, 1, {1, 1}, {2, 1}, {0, 2, 1, 0}, false},
      {{1, 4, 5, 6, 5}, {4, 2, 2, 3, 2}, 2, {1, 1, 1}, {2, 1, 2}, {1, 0, 2, 0, 1, 1}, true},
      // Batched with enough work per image to spread images over threads.
      {{4, 8, 20, 20}, {16, 8, 3, 3}, 1, {1, 1}, {1, 1}, {1, 1, 1, 1}, true},
      // Larger: enough work for sgemm to split across threads (N = 1).
      {{1, 16, 28, 28}, {32, 16, 3, 3}, 1, {1, 1}, {1, 1}, {1, 1, 1, 1}, true},
  };
  std::mt19937 rng(11);
  int index = 0;
  for (const ConvCase& c : cases) {
    Tensor x = random_tensor(c.x, rng), w = random_tensor(c.w, rng), b = random_tensor({c.w[0]}, rng);
    const Shape out = conv_out(c);
    const std::vector<float> want = reference_conv(c, x, w, b, out);
    Shape y_shape = {c.x[0], c.w[0]};
    y_shape.insert(y_shape.end(), out.begin(), out.end());
    for (int threads : {1, 2, 3}) {
      std::vector<ir::Attribute> attrs = {attr_i("group", c.group), attr_ints("strides", c.strides),
                                          attr_ints("dilations", c.dilations), attr_ints("pads", c.pads)};
      // kernel_shape is optional: inferred from W.
      if (index % 2 == 0) attrs.push_back(attr_ints("kernel_shape", Shape(c.w.begin() + 2, c.w.end())));
      auto res = c.bias ? run_node("Conv", {"x", "w", "b"}, {x, w, b}, attrs, 1, threads)
                        : run_node("Conv", {"x", "w"}, {x, w}, attrs, 1, threads);
      ASSERT_TRUE(res.ok()) << "case " << index << ": " << res.status().message();
      expect_close((*res)[0], want, y_shape, "Conv case " + std::to_string(index) + " threads " +
                                                 std::to_string(threads));
    }
    ++index;
  }
}

// Constant weights are packed once at session build; results must match the
// direct loop (and hence the fed-weight path) on random shapes, including odd
// channel counts that leave partial micro-tiles, and strided (phase-split
// input), dilated and grouped layers.
TEST(ConvOps, ConvWithConstantWeightsMatchesDirectLoop) {
  std::mt19937 rng(13);
  std::uniform_int_distribution<int64_t> chan(1, 19), size(1, 17), kern(1, 3), stride(1, 3), dil(1, 2), pad(0, 2),
      group(1, 2);
  for (int index = 0; index < 14; ++index) {
    const int64_t G = group(rng), Cg = chan(rng), Mg = chan(rng), kh = kern(rng), kw = kern(rng);
    const int64_t H = size(rng) + 2 * kh, W = size(rng) + 2 * kw;  // windows always fit
    ConvCase c{{1 + index % 3, G * Cg, H, W}, {G * Mg, Cg, kh, kw}, G, {stride(rng), stride(rng)},
               {dil(rng), dil(rng)}, {pad(rng), pad(rng), pad(rng), pad(rng)}, index % 4 != 1};
    if (index == 0) c = {{2, 16, 28, 28}, {16, 16, 3, 3}, 1, {1, 1}, {1, 1}, {1, 1, 1, 1}, true};  // ResNet stage 1
    if (index == 1) c = {{3, 32, 14, 14}, {64, 32, 3, 3}, 1, {2, 2}, {1, 1}, {1, 1, 1, 1}, true};  // downsampling
    if (index == 2) c = {{2, 16, 9, 9}, {20, 16, 1, 1}, 1, {1, 1}, {1, 1}, {0, 0, 0, 0}, false};  // pointwise
    Tensor x = random_tensor(c.x, rng), w = random_tensor(c.w, rng), b = random_tensor({c.w[0]}, rng);
    const Shape out = conv_out(c);
    const std::vector<float> want = reference_conv(c, x, w, b, out);
    const Shape y_shape = {c.x[0], c.w[0], out[0], out[1]};
    const std::string what = "x " + shape_to_string(c.x) + " w " + shape_to_string(c.w) + " group " +
                             std::to_string(G) + " strides " + shape_to_string(c.strides) + " dilations " +
                             shape_to_string(c.dilations) + " pads " +
                             shape_to_string(c.pads) + " bias " + std::to_string(c.bias);
    for (int threads : {1, 2}) {
      const std::vector<ir::Attribute> attrs = {attr_i("group", c.group), attr_ints("strides", c.strides),
                                                attr_ints("dilations", c.dilations), attr_ints("pads", c.pads)};
      auto res = c.bias ? run_node_with_constants("Conv", {"x", "w", "b"}, {x, w, b}, {false, true, true}, attrs,
                                                  threads)
                        : run_node_with_constants("Conv", {"x", "w"}, {x, w}, {false, true}, attrs, threads);
      ASSERT_TRUE(res.ok()) << what << ": " << res.status().message();
      expect_close((*res)[0], want, y_shape, "constant-weight Conv " + what + " threads " + std::to_string(threads));
    }
  }
}

// Small images of a batch run side by side in one GEMM grid (conv_ops.cpp's
// batch_layout): each output is still summed in the same order, so a batch
// gives the bytes of its images run one at a time; and the direct loop's
// values. Random small shapes (rank 1-3, groups, dilations, uneven pads,
// strides along the outer dims only or along the last one too), batches with
// several divisors, constant and fed weights, 1 and 2 threads.
TEST(ConvOps, BatchOfSmallImagesMatchesImagesOneAtATime) {
  std::mt19937 rng(29);
  std::uniform_int_distribution<int64_t> chan(1, 9), size(1, 9), kern(1, 3), stride(1, 2), dil(1, 2), pad(0, 2),
      group(1, 2), rank_d(1, 3);
  const int64_t batches[] = {2, 4, 6, 8, 12, 16, 3, 9};
  for (int index = 0; index < 24; ++index) {
    const int64_t rank = index < 16 ? 2 : rank_d(rng), G = group(rng), Cg = chan(rng), Mg = chan(rng);
    ConvCase c{{batches[index % 8], G * Cg}, {G * Mg, Cg}, G, {}, {}, Shape(2 * rank), index % 3 != 2};
    for (int64_t t = 0; t < rank; ++t) {
      const int64_t k = kern(rng);
      c.x.push_back(size(rng) + 2 * k);  // windows always fit
      c.w.push_back(k);
      c.strides.push_back(t + 1 < rank || index % 4 == 3 ? stride(rng) : 1);
      c.dilations.push_back(dil(rng));
      c.pads[t] = pad(rng);
      c.pads[t + rank] = pad(rng);
    }
    if (index == 0) c = {{8, 16, 7, 7}, {16, 16, 3, 3}, 1, {1, 1}, {1, 1}, {1, 1, 1, 1}, true};  // ResNet stage 3-like
    if (index == 1) c = {{4, 8, 14, 14}, {12, 8, 3, 3}, 1, {1, 1}, {1, 1}, {1, 1, 1, 1}, false};
    const int64_t N = c.x[0];
    const std::string what = "case " + std::to_string(index) + " x " + shape_to_string(c.x) + " w " +
                             shape_to_string(c.w) + " group " + std::to_string(c.group) + " strides " +
                             shape_to_string(c.strides) + " dilations " + shape_to_string(c.dilations) + " pads " +
                             shape_to_string(c.pads) + " bias " + std::to_string(c.bias);
    Tensor x = random_tensor(c.x, rng), w = random_tensor(c.w, rng), b = random_tensor({c.w[0]}, rng);
    const Shape out = conv_out(c);
    const std::vector<float> want = reference_conv(c, x, w, b, out);
    Shape y_shape = {N, c.w[0]};
    y_shape.insert(y_shape.end(), out.begin(), out.end());
    const std::vector<ir::Attribute> attrs = {attr_i("group", c.group), attr_ints("strides", c.strides),
                                              attr_ints("dilations", c.dilations), attr_ints("pads", c.pads)};
    auto conv = [&](const Tensor& xs, bool constant_w, int threads) {
      return c.bias ? run_node_with_constants("Conv", {"x", "w", "b"}, {xs, w, b}, {false, constant_w, true}, attrs,
                                              threads)
                    : run_node_with_constants("Conv", {"x", "w"}, {xs, w}, {false, constant_w}, attrs, threads);
    };
    // Image by image, as the reference bytes.
    const int64_t x_image = x.numel() / N, y_image = shape_numel(y_shape) / N;
    std::vector<float> one_at_a_time(shape_numel(y_shape));
    for (int64_t n = 0; n < N; ++n) {
      Shape one_shape = c.x;
      one_shape[0] = 1;
      Tensor one(DType::kFloat32, one_shape);
      std::memcpy(one.raw(), x.data<float>() + n * x_image, x_image * sizeof(float));
      auto y = conv(one, true, 1);
      ASSERT_TRUE(y.ok()) << what << ": " << y.status().message();
      std::memcpy(one_at_a_time.data() + n * y_image, (*y)[0].raw(), y_image * sizeof(float));
    }
    for (int threads : {1, 2})
      for (bool constant_w : {true, false}) {
        auto y = conv(x, constant_w, threads);
        ASSERT_TRUE(y.ok()) << what << ": " << y.status().message();
        const std::string run = what + " threads " + std::to_string(threads) + " constant W " +
                                std::to_string(constant_w);
        expect_close((*y)[0], want, y_shape, run);
        for (int64_t i = 0; i < shape_numel(y_shape); ++i)
          ASSERT_EQ((*y)[0].data<float>()[i], one_at_a_time[i]) << run << ": differs from image by image at " << i;
      }
  }
}

// SAME_* pads by hand from the ONNX definition: out = ceil(in / stride),
// total = (out - 1) * stride + kernel - in, the odd pad at the end for UPPER.
TEST(ConvOps, AutoPadEqualsHandComputedPads) {
  std::mt19937 rng(5);
  Tensor x = random_tensor({1, 2, 6, 5}, rng), w = random_tensor({3, 2, 4, 3}, rng);
  // H: in 6, k 4, s 1 -> out 6, total 3.  W: in 5, k 3, s 2 -> out 3, total 2.
  struct {
    const char* mode;
    Shape pads;
  } modes[] = {{"SAME_UPPER", {1, 1, 2, 1}}, {"SAME_LOWER", {2, 1, 1, 1}}, {"VALID", {0, 0, 0, 0}}};
  for (const auto& m : modes) {
    auto got = run_node("Conv", {"x", "w"}, {x, w}, {attr_s("auto_pad", m.mode), attr_ints("strides", {1, 2})});
    auto want = run_node("Conv", {"x", "w"}, {x, w}, {attr_ints("pads", m.pads), attr_ints("strides", {1, 2})});
    ASSERT_TRUE(got.ok()) << m.mode << ": " << got.status().message();
    ASSERT_TRUE(want.ok()) << want.status().message();
    const Tensor& g = (*got)[0];
    EXPECT_EQ(g.shape(), std::string(m.mode) == "VALID" ? (Shape{1, 3, 3, 2}) : (Shape{1, 3, 6, 3})) << m.mode;
    expect_close(g, (*want)[0].to_float_vector(), (*want)[0].shape(), m.mode, 0.f);
  }
}

TEST(ConvOps, ConvRejectsBadInputsWithErrors) {
  std::mt19937 rng(1);
  Tensor x = random_tensor({1, 4, 5, 5}, rng);
  auto r1 = run_node("Conv", {"x", "w"}, {x, random_tensor({2, 3, 3, 3}, rng)}, {});  // C mismatch
  EXPECT_FALSE(r1.ok());
  auto r2 = run_node("Conv", {"x", "w"}, {x, random_tensor({2, 4, 7, 7}, rng)}, {});  // kernel > input
  EXPECT_FALSE(r2.ok());
  auto r3 = run_node("Conv", {"x", "w", "b"}, {x, random_tensor({2, 4, 3, 3}, rng), random_tensor({3}, rng)}, {});
  EXPECT_FALSE(r3.ok());  // bias length
  auto r4 = run_node("Conv", {"x", "w"}, {x, random_tensor({2, 4, 3, 3}, rng)}, {attr_ints("kernel_shape", {2, 2})});
  EXPECT_FALSE(r4.ok());  // kernel_shape disagrees with W
  Tensor xd(DType::kFloat64, {1, 4, 5, 5});
  Tensor wd(DType::kFloat64, {2, 4, 3, 3});
  auto r5 = run_node("Conv", {"x", "w"}, {xd, wd}, {});
  ASSERT_FALSE(r5.ok());
  EXPECT_EQ(r5.status().code(), ErrorCode::kUnsupported);
}

// ---------------------------------------------------------------------------
// ConvTranspose

TEST(ConvOps, ConvTransposeMatchesScatterLoop) {
  struct Case {
    Shape x, w;
    int64_t group;
    Shape strides, dilations, pads, output_padding;
    bool bias;
  } cases[] = {
      {{2, 3, 4, 5}, {3, 2, 3, 3}, 1, {2, 2}, {1, 1}, {0, 0, 0, 0}, {0, 0}, true},
      {{1, 4, 5, 4}, {4, 3, 3, 2}, 2, {3, 2}, {2, 1}, {1, 2, 0, 1}, {1, 0}, true},
      {{2, 2, 7}, {2, 3, 4}, 1, {2}, {1}, {1, 2}, {1}, false},
      {{1, 2, 3, 4, 3}, {2, 2, 2, 2, 3}, 2, {1, 2, 2}, {1, 1, 1}, {0, 0, 1, 1, 1, 0}, {0, 1, 0}, true},
      {{4, 8, 9, 9}, {8, 6, 3, 3}, 1, {2, 2}, {1, 1}, {1, 1, 1, 1}, {1, 1}, true},
  };
  std::mt19937 rng(21);
  int index = 0;
  for (const auto& c : cases) {
    Tensor x = random_tensor(c.x, rng), w = random_tensor(c.w, rng);
    const int64_t M = c.w[1] * c.group;
    Tensor b = random_tensor({M}, rng);
    const size_t r = c.x.size() - 2;
    Shape in(c.x.begin() + 2, c.x.end()), kernel(c.w.begin() + 2, c.w.end()), out, pb(c.pads.begin(),
                                                                                     c.pads.begin() + r);
    for (size_t i = 0; i < r; ++i)
      out.push_back(c.strides[i] * (in[i] - 1) + c.output_padding[i] + (kernel[i] - 1) * c.dilations[i] + 1 -
                    c.pads[i] - c.pads[i + r]);
    const std::vector<float> want = ref_conv_transpose(x, w, c.bias ? b.data<float>() : nullptr, c.group,
                                                       make_win(in, out, kernel, c.strides, c.dilations, pb));
    Shape y_shape = {c.x[0], M};
    y_shape.insert(y_shape.end(), out.begin(), out.end());
    for (int threads : {1, 2}) {
      std::vector<ir::Attribute> attrs = {attr_i("group", c.group), attr_ints("strides", c.strides),
                                          attr_ints("dilations", c.dilations), attr_ints("pads", c.pads),
                                          attr_ints("output_padding", c.output_padding)};
      auto res = c.bias ? run_node("ConvTranspose", {"x", "w", "b"}, {x, w, b}, attrs, 1, threads)
                        : run_node("ConvTranspose", {"x", "w"}, {x, w}, attrs, 1, threads);
      ASSERT_TRUE(res.ok()) << "case " << index << ": " << res.status().message();
      expect_close((*res)[0], want, y_shape, "ConvTranspose case " + std::to_string(index));
    }
    ++index;
  }
}

// output_shape fixes the size; the pads follow ONNX's rule (total pad split
// with the odd one at the start unless SAME_UPPER).
TEST(ConvOps, ConvTransposeOutputShapeDerivesPads) {
  std::mt19937 rng(3);
  Tensor x = random_tensor({1, 2, 4, 4}, rng), w = random_tensor({2, 1, 3, 3}, rng);
  // Natural size 2*(4-1)+3 = 9; asking for 8 means total pad 1 -> pads (1, 0).
  auto got = run_node("ConvTranspose", {"x", "w"}, {x, w},
                      {attr_ints("strides", {2, 2}), attr_ints("output_shape", {8, 8})});
  auto want = run_node("ConvTranspose", {"x", "w"}, {x, w},
                       {attr_ints("strides", {2, 2}), attr_ints("pads", {1, 1, 0, 0})});
  ASSERT_TRUE(got.ok()) << got.status().message();
  ASSERT_TRUE(want.ok()) << want.status().message();
  expect_close((*got)[0], (*want)[0].to_float_vector(), {1, 1, 8, 8}, "output_shape", 0.f);
}

// ---------------------------------------------------------------------------
// Pooling

struct PoolRef {
  std::vector<float> y;
  std::vector<int64_t> idx;  // row-major flat index of the max into X
};

// Windows over [N*C planes]; avg divides by the in-input count or, with
// count_include_pad, by the count inside input + pads.
PoolRef ref_pool(const Tensor& x, const Win& g, const Shape& pe3, bool is_max, bool include_pad) {
  const int64_t planes = x.dim(0) * x.dim(1);
  const int64_t IN = g.in[0] * g.in[1] * g.in[2], OUT = g.out[0] * g.out[1] * g.out[2];
  PoolRef r;
  r.y.resize(planes * OUT);
  r.idx.resize(planes * OUT);
  for (int64_t pl = 0; pl < planes; ++pl)
    for (int64_t o0 = 0; o0 < g.out[0]; ++o0)
      for (int64_t o1 = 0; o1 < g.out[1]; ++o1)
        for (int64_t o2 = 0; o2 < g.out[2]; ++o2) {
          float best = -std::numeric_limits<float>::infinity();
          int64_t best_at = -1, count = 0, padded = 0;
          double sum = 0;
          for (int64_t k0 = 0; k0 < g.k[0]; ++k0)
            for (int64_t k1 = 0; k1 < g.k[1]; ++k1)
              for (int64_t k2 = 0; k2 < g.k[2]; ++k2) {
                const int64_t i[3] = {o0 * g.s[0] - g.p[0] + k0 * g.d[0], o1 * g.s[1] - g.p[1] + k1 * g.d[1],
                                      o2 * g.s[2] - g.p[2] + k2 * g.d[2]};
                bool inside = true, in_pad = true;
                for (int t = 0; t < 3; ++t) {
                  inside = inside && i[t] >= 0 && i[t] < g.in[t];
                  in_pad = in_pad && i[t] >= -g.p[t] && i[t] < g.in[t] + pe3[t];
                }
                padded += in_pad;
                if (!inside) continue;
                const int64_t at = (i[0] * g.in[1] + i[1]) * g.in[2] + i[2];
                const float v = x.data<float>()[pl * IN + at];
                ++count;
                sum += v;
                if (v > best) {
                  best = v;
                  best_at = pl * IN + at;
                }
              }
          const int64_t o = pl * OUT + (o0 * g.out[1] + o1) * g.out[2] + o2;
          r.y[o] = is_max ? best : static_cast<float>(sum / (include_pad ? padded : count));
          r.idx[o] = best_at;
        }
  return r;
}

TEST(ConvOps, PoolingMatchesDirectLoops) {
  struct Case {
    Shape x, kernel, strides, dilations, pads;
    bool ceil;
  } cases[] = {
      {{2, 32, 28, 28}, {2, 2}, {2, 2}, {1, 1}, {0, 0, 0, 0}, false},  // the CNN's MaxPool
      {{1, 3, 9, 7}, {3, 2}, {2, 2}, {1, 1}, {1, 0, 1, 1}, true},
      {{2, 2, 10, 11}, {3, 3}, {3, 2}, {2, 1}, {2, 1, 1, 2}, false},
      {{2, 3, 13}, {4}, {3}, {1}, {2, 1}, true},
      {{1, 2, 5, 6, 7}, {2, 3, 2}, {1, 2, 2}, {1, 1, 2}, {1, 0, 1, 0, 1, 1}, false},
  };
  std::mt19937 rng(31);
  int index = 0;
  for (const auto& c : cases) {
    Tensor x = random_tensor(c.x, rng);
    const size_t r = c.x.size() - 2;
    Shape in(c.x.begin() + 2, c.x.end()), out, pb(c.pads.begin(), c.pads.begin() + r), pe3(3, 0);
    for (size_t i = 0; i < r; ++i) {
      const int64_t room = in[i] + c.pads[i] + c.pads[i + r] - ((c.kernel[i] - 1) * c.dilations[i] + 1);
      int64_t o = c.ceil ? (room + c.strides[i] - 1) / c.strides[i] + 1 : room / c.strides[i] + 1;
      if (c.ceil && (o - 1) * c.strides[i] >= in[i] + c.pads[i]) --o;  // last window must start inside
      out.push_back(o);
      pe3[3 - r + i] = c.pads[i + r];
    }
    const Win g = make_win(in, out, c.kernel, c.strides, c.dilations, pb);
    Shape y_shape = {c.x[0], c.x[1]};
    y_shape.insert(y_shape.end(), out.begin(), out.end());
    std::vector<ir::Attribute> attrs = {attr_ints("kernel_shape", c.kernel), attr_ints("strides", c.strides),
                                        attr_ints("dilations", c.dilations), attr_ints("pads", c.pads),
                                        attr_i("ceil_mode", c.ceil)};
    const std::string what = "pool case " + std::to_string(index);
    for (int threads : {1, 2}) {
      const PoolRef mx = ref_pool(x, g, pe3, true, false);
      auto res = run_node("MaxPool", {"x"}, {x}, attrs, 2, threads);
      ASSERT_TRUE(res.ok()) << what << ": " << res.status().message();
      expect_close((*res)[0], mx.y, y_shape, what + " MaxPool", 0.f);
      const Tensor& idx = (*res)[1];
      ASSERT_EQ(idx.dtype(), DType::kInt64);
      for (int64_t i = 0; i < idx.numel(); ++i) ASSERT_EQ(idx.data<int64_t>()[i], mx.idx[i]) << what << " index " << i;
      for (bool include_pad : {false, true}) {
        auto attrs_avg = attrs;
        attrs_avg.push_back(attr_i("count_include_pad", include_pad));
        auto avg = run_node("AveragePool", {"x"}, {x}, attrs_avg, 1, threads);
        ASSERT_TRUE(avg.ok()) << what << ": " << avg.status().message();
        expect_close((*avg)[0], ref_pool(x, g, pe3, false, include_pad).y, y_shape,
                     what + " AveragePool include_pad=" + std::to_string(include_pad), 1e-5f);
      }
    }
    ++index;
  }
}

TEST(ConvOps, MaxPoolColumnMajorIndicesPointAtTheMaximum) {
  std::mt19937 rng(8);
  const int64_t H = 6, W = 5;
  Tensor x = random_tensor({2, 3, H, W}, rng);
  auto res = run_node("MaxPool", {"x"}, {x},
                      {attr_ints("kernel_shape", {3, 2}), attr_ints("strides", {2, 2}), attr_i("storage_order", 1)},
                      2);
  ASSERT_TRUE(res.ok()) << res.status().message();
  const Tensor& y = (*res)[0];
  const Tensor& idx = (*res)[1];
  for (int64_t i = 0; i < y.numel(); ++i) {
    const int64_t v = idx.data<int64_t>()[i], plane = v / (H * W), in_plane = v % (H * W);
    const int64_t h = in_plane % H, w = in_plane / H;  // column-major within the plane
    EXPECT_EQ(plane, i / y.dim(2) / y.dim(3));
    EXPECT_EQ(x.data<float>()[plane * H * W + h * W + w], y.data<float>()[i]) << "output " << i;
  }
}

TEST(ConvOps, GlobalPoolsReduceWholePlanes) {
  std::mt19937 rng(9);
  Tensor x = random_tensor({3, 4, 5, 6}, rng);
  auto avg = run_node("GlobalAveragePool", {"x"}, {x}, {}, 1, 2);
  auto mx = run_node("GlobalMaxPool", {"x"}, {x}, {}, 1, 2);
  ASSERT_TRUE(avg.ok() && mx.ok());
  ASSERT_EQ((*avg)[0].shape(), (Shape{3, 4, 1, 1}));
  ASSERT_EQ((*mx)[0].shape(), (Shape{3, 4, 1, 1}));
  for (int64_t p = 0; p < 12; ++p) {
    double sum = 0;
    float best = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < 30; ++i) {
      sum += x.data<float>()[p * 30 + i];
      best = std::max(best, x.data<float>()[p * 30 + i]);
    }
    EXPECT_NEAR((*avg)[0].data<float>()[p], sum / 30, 1e-6);
    EXPECT_EQ((*mx)[0].data<float>()[p], best);
  }
}

// LpPool: (sum over the window of |x|^p)^(1/p), padding contributing nothing.
TEST(ConvOps, LpPoolMatchesDirectLoop) {
  std::mt19937 rng(12);
  const int64_t W = 11, K = 3, S = 2, PB = 1, PE = 2, P = 3;
  Tensor x = random_tensor({2, 3, W}, rng);
  const int64_t out = (W + PB + PE - K) / S + 1;
  auto res = run_node("LpPool", {"x"}, {x},
                      {attr_ints("kernel_shape", {K}), attr_ints("strides", {S}), attr_ints("pads", {PB, PE}),
                       attr_i("p", P)});
  ASSERT_TRUE(res.ok()) << res.status().message();
  std::vector<float> want;
  for (int64_t plane = 0; plane < 6; ++plane)
    for (int64_t o = 0; o < out; ++o) {
      double sum = 0;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t i = o * S - PB + k;
        if (i >= 0 && i < W) sum += std::pow(std::fabs(x.data<float>()[plane * W + i]), double(P));
      }
      want.push_back(static_cast<float>(std::pow(sum, 1.0 / P)));
    }
  expect_close((*res)[0], want, {2, 3, out}, "LpPool", 1e-5f);

  auto global = run_node("GlobalLpPool", {"x"}, {x}, {attr_i("p", 2)});
  ASSERT_TRUE(global.ok()) << global.status().message();
  std::vector<float> want_g;
  for (int64_t plane = 0; plane < 6; ++plane) {
    double sum = 0;
    for (int64_t i = 0; i < W; ++i) sum += double(x.data<float>()[plane * W + i]) * x.data<float>()[plane * W + i];
    want_g.push_back(static_cast<float>(std::sqrt(sum)));
  }
  expect_close((*global)[0], want_g, {2, 3, 1}, "GlobalLpPool", 1e-5f);
}

// ---------------------------------------------------------------------------
// Gemm and MatMul

TEST(LinalgOps, GemmMatchesLoopForEveryBiasShape) {
  const int64_t M = 7, N = 19, K = 13;
  std::mt19937 rng(41);
  const Shape c_shapes[] = {{}, {1}, {N}, {1, N}, {M, 1}, {M, N}, {1, 1}};
  int index = 0;
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    Tensor a = random_tensor(ta ? Shape{K, M} : Shape{M, K}, rng);
    Tensor b = random_tensor(tb ? Shape{N, K} : Shape{K, N}, rng);
    for (const Shape& cs : c_shapes) {
      Tensor c = random_tensor(cs, rng);
      const float alpha = 0.5f + index % 3, beta = index % 4 == 3 ? 0.f : -1.5f;
      std::vector<float> want(M * N);
      const Shape c2 = cs.size() == 2 ? cs : cs.size() == 1 ? Shape{1, cs[0]} : Shape{1, 1};
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double s = 0;
          for (int64_t p = 0; p < K; ++p)
            s += double(a.data<float>()[ta ? p * M + i : i * K + p]) * b.data<float>()[tb ? j * K + p : p * N + j];
          const float cv = c.data<float>()[(c2[0] == 1 ? 0 : i) * c2[1] + (c2[1] == 1 ? 0 : j)];
          want[i * N + j] = static_cast<float>(alpha * s + beta * cv);
        }
      auto res = run_node("Gemm", {"a", "b", "c"}, {a, b, c},
                          {attr_f("alpha", alpha), attr_f("beta", beta), attr_i("transA", ta), attr_i("transB", tb)});
      ASSERT_TRUE(res.ok()) << res.status().message();
      expect_close((*res)[0], want, {M, N}, "Gemm case " + std::to_string(index) + " C " + shape_to_string(cs));
      ++index;
    }
  }
  // No C at all.
  Tensor a = random_tensor({M, K}, rng), b = random_tensor({K, N}, rng);
  auto res = run_node("Gemm", {"a", "b"}, {a, b}, {});
  ASSERT_TRUE(res.ok()) << res.status().message();
  EXPECT_EQ((*res)[0].shape(), (Shape{M, N}));
  // C that cannot broadcast unidirectionally.
  auto bad = run_node("Gemm", {"a", "b", "c"}, {a, b, random_tensor({2, N}, rng)}, {});
  EXPECT_FALSE(bad.ok());
}

// Gemm and MatMul with B an initializer take the pre-packed path (B packed at
// session build) once op(A) has more than a few rows; it must agree with the
// loop on odd shapes, every transpose, with and without C, on 1 and 2 threads.
TEST(LinalgOps, GemmAndMatMulWithConstantWeightsMatchLoop) {
  std::mt19937 rng(61);
  std::uniform_int_distribution<int64_t> dim(1, 45);
  for (int index = 0; index < 12; ++index) {
    const int64_t M = index < 2 ? 64 : dim(rng) + 4, N = index == 0 ? 256 : dim(rng), K = index == 0 ? 784 : dim(rng);
    const bool ta = index % 2 == 1, tb = index % 4 >= 2;
    Tensor a = random_tensor(ta ? Shape{K, M} : Shape{M, K}, rng);
    Tensor b = random_tensor(tb ? Shape{N, K} : Shape{K, N}, rng);
    Tensor c = random_tensor({N}, rng);
    const bool with_c = index % 3 != 2;
    std::vector<float> want(M * N), want_mm(M * N);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t p = 0; p < K; ++p)
          s += double(a.data<float>()[ta ? p * M + i : i * K + p]) * b.data<float>()[tb ? j * K + p : p * N + j];
        want[i * N + j] = static_cast<float>(s + (with_c ? c.data<float>()[j] : 0.f));
      }
    const std::string what = "M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
                             " transA=" + std::to_string(ta) + " transB=" + std::to_string(tb) + " C=" +
                             std::to_string(with_c);
    for (int threads : {1, 2}) {
      const std::vector<ir::Attribute> attrs = {attr_i("transA", ta), attr_i("transB", tb)};
      auto res = with_c ? run_node_with_constants("Gemm", {"a", "b", "c"}, {a, b, c}, {false, true, true}, attrs,
                                                  threads)
                        : run_node_with_constants("Gemm", {"a", "b"}, {a, b}, {false, true}, attrs, threads);
      ASSERT_TRUE(res.ok()) << what << ": " << res.status().message();
      expect_close((*res)[0], want, {M, N}, "constant-B Gemm " + what + " threads " + std::to_string(threads));
      if (ta || tb || with_c) continue;
      // MatMul with a batch in front of A: [2, M, K] x [K, N], one tall product.
      Tensor a2 = Tensor(DType::kFloat32, {2, M, K});
      for (int64_t i = 0; i < M * K; ++i) a2.data<float>()[i] = a2.data<float>()[M * K + i] = a.data<float>()[i];
      std::vector<float> want2 = want;
      want2.insert(want2.end(), want.begin(), want.end());
      auto mm = run_node_with_constants("MatMul", {"a", "b"}, {a2, b}, {false, true}, {}, threads);
      ASSERT_TRUE(mm.ok()) << what << ": " << mm.status().message();
      expect_close((*mm)[0], want2, {2, M, N}, "constant-B MatMul " + what + " threads " + std::to_string(threads));
    }
  }
}

TEST(LinalgOps, GemmOnInt64IsExact) {
  Tensor a = Tensor::from_vector<int64_t>({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor b = Tensor::from_vector<int64_t>({3, 2}, {7, 8, 9, 10, 11, 12});
  Tensor c = Tensor::from_vector<int64_t>({2}, {100, 200});
  auto res = run_node("Gemm", {"a", "b", "c"}, {a, b, c}, {});
  ASSERT_TRUE(res.ok()) << res.status().message();
  const std::vector<int64_t> want = {58 + 100, 64 + 200, 139 + 100, 154 + 200};
  EXPECT_EQ((*res)[0].to_int64_vector(), want);
}

std::vector<float> ref_matmul(const Tensor& a, const Tensor& b, const Shape& as, const Shape& bs) {
  // as/bs: the operands' shapes after 1-D promotion, same rank (batch padded with 1s).
  const size_t r = as.size();
  const int64_t M = as[r - 2], K = as[r - 1], N = bs[r - 1];
  Shape batch;
  for (size_t i = 0; i + 2 < r; ++i) batch.push_back(std::max(as[i], bs[i]));
  int64_t nb = 1;
  for (int64_t d : batch) nb *= d;
  std::vector<float> y(nb * M * N);
  for (int64_t bi = 0; bi < nb; ++bi) {
    int64_t ra = 0, rb = 0, rem = bi, sa = 1, sb = 1;
    for (size_t t = batch.size(); t-- > 0;) {
      const int64_t idx = rem % batch[t];
      rem /= batch[t];
      ra += (as[t] == 1 ? 0 : idx) * sa;
      rb += (bs[t] == 1 ? 0 : idx) * sb;
      sa *= as[t];
      sb *= bs[t];
    }
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t p = 0; p < K; ++p)
          s += double(a.data<float>()[ra * M * K + i * K + p]) * b.data<float>()[rb * K * N + p * N + j];
        y[(bi * M + i) * N + j] = static_cast<float>(s);
      }
  }
  return y;
}

TEST(LinalgOps, MatMulFollowsNumpyBroadcasting) {
  struct Case {
    Shape a, b, y;
  } cases[] = {
      {{5}, {5}, {}},
      {{4}, {4, 3}, {3}},
      {{2, 6, 4}, {4}, {2, 6}},
      {{3, 4}, {4, 5}, {3, 5}},
      {{2, 3, 4}, {4, 5}, {2, 3, 5}},          // B shared: one tall GEMM
      {{3, 4}, {2, 4, 5}, {2, 3, 5}},          // A broadcast
      {{2, 1, 3, 4}, {5, 4, 6}, {2, 5, 3, 6}},  // both broadcast
      {{4, 33, 70}, {4, 70, 40}, {4, 33, 40}},
  };
  std::mt19937 rng(51);
  for (const auto& c : cases) {
    Tensor a = random_tensor(c.a, rng), b = random_tensor(c.b, rng);
    Shape as = c.a, bs = c.b;
    if (as.size() == 1) as.insert(as.begin(), 1);
    if (bs.size() == 1) bs.push_back(1);
    while (as.size() < bs.size()) as.insert(as.begin(), 1);
    while (bs.size() < as.size()) bs.insert(bs.begin(), 1);
    const std::vector<float> want = ref_matmul(a, b, as, bs);
    for (int threads : {1, 2}) {
      auto res = run_node("MatMul", {"a", "b"}, {a, b}, {}, 1, threads);
      ASSERT_TRUE(res.ok()) << shape_to_string(c.a) << " x " << shape_to_string(c.b) << ": "
                            << res.status().message();
      expect_close((*res)[0], want, c.y, "MatMul " + shape_to_string(c.a) + " x " + shape_to_string(c.b));
    }
  }
  std::mt19937 rng2(2);
  auto bad = run_node("MatMul", {"a", "b"}, {random_tensor({3, 4}, rng2), random_tensor({5, 6}, rng2)}, {});
  EXPECT_FALSE(bad.ok());
}

// A conv big enough (64 -> 64 channels, 3x3, 32x32: 38M multiply-adds) that
// one image's output tiles are split over the threads: the same bytes as on
// one thread (each output is summed by one thread in the same order).
TEST(ConvOps, OneImageSplitOverThreadsMatchesOneThread) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  Tensor x(DType::kFloat32, {1, 64, 32, 32}), w(DType::kFloat32, {64, 64, 3, 3}), b(DType::kFloat32, {64});
  for (Tensor* t : {&x, &w, &b})
    for (int64_t i = 0; i < t->numel(); ++i) t->data<float>()[i] = u(rng);
  std::vector<Tensor> outs;
  for (int threads : {1, 2}) {
    auto y = run_node_with_constants("Conv", {"x", "w", "b"}, {x, w, b}, {false, true, true},
                                     {attr_ints("pads", {1, 1, 1, 1})}, threads);
    ASSERT_TRUE(y.ok()) << y.status().message();
    outs.push_back((*y)[0]);
  }
  ASSERT_EQ(outs[0].shape(), outs[1].shape());
  EXPECT_EQ(std::memcmp(outs[0].raw(), outs[1].raw(), static_cast<size_t>(outs[0].nbytes())), 0);
}

}  // namespace
}  // namespace qtk
