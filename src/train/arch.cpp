#include "train/arch.h"

#include <cmath>
#include <sstream>

#include "train/rng.h"

namespace qtk::train {
namespace {

class Builder {
 public:
  explicit Builder(uint64_t seed) : rng_(seed) {
    m.ir_version = 8;
    m.opsets = {{"", 17}};
    m.producer_name = "qtk";
    m.producer_version = "0.1.0";
  }

  void input(const Shape& per_sample) {
    ir::ValueInfo v;
    v.name = "input";
    v.dtype = DType::kFloat32;
    v.has_shape = true;
    v.shape.push_back({-1, "batch"});
    for (int64_t d : per_sample) v.shape.push_back({d, ""});
    m.graph.inputs.push_back(v);
  }
  void output(const std::string& from, int64_t classes) {
    ir::Node& last = m.graph.nodes.back();
    for (auto& o : last.outputs)
      if (o == from) o = "logits";
    ir::ValueInfo v;
    v.name = "logits";
    v.dtype = DType::kFloat32;
    v.has_shape = true;
    v.shape = {{-1, "batch"}, {classes, ""}};
    m.graph.outputs.push_back(v);
  }

  std::string conv(const std::string& x, int64_t cin, int64_t cout, int64_t k, int64_t stride, int64_t pad,
                   bool bias) {
    const std::string n = "conv" + std::to_string(++convs_);
    const float std_dev = std::sqrt(2.f / static_cast<float>(cin * k * k));  // He (Kaiming) normal, fan-in
    std::vector<std::string> ins{x, weight(n + ".weight", {cout, cin, k, k}, std_dev)};
    if (bias) ins.push_back(constant(n + ".bias", {cout}, 0.f));
    node("Conv", n, ins, {ir::attr_ints("kernel_shape", {k, k}), ir::attr_ints("strides", {stride, stride}),
                          ir::attr_ints("pads", {pad, pad, pad, pad})});
    return n;
  }
  std::string bn(const std::string& x, int64_t c) {
    const std::string n = "bn" + std::to_string(++bns_);
    node("BatchNormalization", n,
         {x, constant(n + ".weight", {c}, 1.f), constant(n + ".bias", {c}, 0.f), constant(n + ".running_mean", {c}, 0.f),
          constant(n + ".running_var", {c}, 1.f)},
         {ir::attr_float("epsilon", 1e-5f), ir::attr_float("momentum", 0.9f)});
    return n;
  }
  std::string gemm(const std::string& x, int64_t in, int64_t out, bool relu_follows) {
    const std::string n = "fc" + std::to_string(++fcs_);
    const float bound = 1.f / std::sqrt(static_cast<float>(in));
    // Layers feeding a Relu get He normal; the classifier gets PyTorch's
    // default uniform(+-1/sqrt(fan_in)).
    const std::string w = relu_follows ? weight(n + ".weight", {out, in}, std::sqrt(2.f / static_cast<float>(in)))
                                       : uniform(n + ".weight", {out, in}, bound);
    node("Gemm", n, {x, w, uniform(n + ".bias", {out}, bound)}, {ir::attr_int("transB", 1)});
    return n;
  }
  std::string op(const std::string& type, const std::vector<std::string>& ins, std::vector<ir::Attribute> attrs = {}) {
    std::string n = type + std::to_string(++ops_);
    for (auto& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    node(type, n, ins, std::move(attrs));
    return n;
  }

  ir::Model m;

 private:
  void node(const std::string& type, const std::string& name, const std::vector<std::string>& ins,
            std::vector<ir::Attribute> attrs) {
    ir::Node nd;
    nd.name = name;
    nd.op_type = type;
    nd.inputs = ins;
    nd.outputs = {name};  // each node's output is named after it
    nd.attrs = std::move(attrs);
    m.graph.nodes.push_back(std::move(nd));
  }
  std::string add_init(const std::string& name, Tensor t) {
    m.graph.set_initializer(name, std::move(t));
    return name;
  }
  std::string weight(const std::string& name, const Shape& s, float std_dev) {
    Tensor t(DType::kFloat32, s);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(rng_.normal()) * std_dev;
    return add_init(name, t);
  }
  std::string uniform(const std::string& name, const Shape& s, float bound) {
    Tensor t(DType::kFloat32, s);
    for (int64_t i = 0; i < t.numel(); ++i)
      t.data<float>()[i] = static_cast<float>((2.0 * rng_.uniform() - 1.0) * bound);
    return add_init(name, t);
  }
  std::string constant(const std::string& name, const Shape& s, float v) {
    Tensor t(DType::kFloat32, s);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = v;
    return add_init(name, t);
  }

  Rng rng_;
  int convs_ = 0, bns_ = 0, fcs_ = 0, ops_ = 0;
};

Expected<ir::Model> build_mlp(const std::string& sizes_text, uint64_t seed) {
  std::vector<int64_t> sizes;
  std::stringstream ss(sizes_text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end || v < 1 || v > (1 << 20))
      return invalid_argument("mlp sizes must be positive integers, got '" + item + "' in 'mlp:" + sizes_text + "'");
    sizes.push_back(v);
  }
  if (sizes.size() < 2) return invalid_argument("mlp needs at least an input and an output size, e.g. mlp:784,128,10");
  Builder b(seed);
  b.input({sizes[0]});
  std::string x = "input";
  for (size_t i = 1; i < sizes.size(); ++i) {
    const bool hidden = i + 1 < sizes.size();
    x = b.gemm(x, sizes[i - 1], sizes[i], hidden);
    if (hidden) x = b.op("Relu", {x});
  }
  b.output(x, sizes.back());
  return std::move(b.m);
}

ir::Model build_cnn_small(uint64_t seed, int64_t classes) {
  Builder b(seed);
  b.input({1, 28, 28});
  std::string x = "input";
  int64_t cin = 1;
  for (int64_t c : {16, 32}) {
    x = b.op("Relu", {b.bn(b.conv(x, cin, c, 3, 1, 1, false), c)});
    x = b.op("MaxPool", {x}, {ir::attr_ints("kernel_shape", {2, 2}), ir::attr_ints("strides", {2, 2})});
    cin = c;
  }
  x = b.op("Flatten", {x}, {ir::attr_int("axis", 1)});
  x = b.op("Relu", {b.gemm(x, 32 * 7 * 7, 128, true)});
  x = b.gemm(x, 128, classes, false);
  b.output(x, classes);
  return std::move(b.m);
}

ir::Model build_resnet20(uint64_t seed, int64_t classes) {
  Builder b(seed);
  b.input({1, 28, 28});
  std::string x = b.op("Relu", {b.bn(b.conv("input", 1, 16, 3, 1, 1, false), 16)});
  int64_t cin = 16;
  for (int64_t stage = 0; stage < 3; ++stage) {
    const int64_t c = 16 << stage;
    for (int64_t block = 0; block < 3; ++block) {
      const int64_t stride = stage > 0 && block == 0 ? 2 : 1;
      std::string y = b.op("Relu", {b.bn(b.conv(x, cin, c, 3, stride, 1, false), c)});
      y = b.bn(b.conv(y, c, c, 3, 1, 1, false), c);
      // Shortcut: identity, or a strided 1x1 projection when the shape changes.
      const std::string s = stride != 1 || cin != c ? b.bn(b.conv(x, cin, c, 1, stride, 0, false), c) : x;
      x = b.op("Relu", {b.op("Add", {y, s})});
      cin = c;
    }
  }
  x = b.op("Flatten", {b.op("GlobalAveragePool", {x})}, {ir::attr_int("axis", 1)});
  x = b.gemm(x, 64, classes, false);
  b.output(x, classes);
  return std::move(b.m);
}

}  // namespace

Expected<ir::Model> build_architecture(const std::string& spec, uint64_t seed, int64_t classes) {
  if (spec.rfind("mlp:", 0) == 0) return build_mlp(spec.substr(4), seed);
  if (spec == "cnn-small") return build_cnn_small(seed, classes);
  if (spec == "resnet20") return build_resnet20(seed, classes);
  return invalid_argument("unknown architecture '" + spec + "' (known: " + architecture_help() + ")");
}

const char* architecture_help() { return "mlp:SIZES (e.g. mlp:784,128,10), cnn-small, resnet20"; }

}  // namespace qtk::train
