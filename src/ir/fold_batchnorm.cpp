// BatchNormalization at inference is y = (x - mean) * s + beta with
// s = gamma / sqrt(var + eps) per channel. When x comes straight from a Conv
// or Gemm, s scales that op's weights per output channel and the rest
// becomes its bias, so the BN node disappears.
#include <cmath>
#include <optional>
#include <vector>

#include "ir/passes.h"

namespace qtk::ir {

namespace {

struct BnParams {
  std::vector<double> scale;  // gamma / sqrt(var + eps)
  std::vector<double> shift;  // beta - mean * scale
};

// A float32 initializer of exactly `n` elements that is not a runtime input.
const Tensor* const_f32(const Graph& g, const std::string& name, int64_t n) {
  const Tensor* t = name.empty() ? nullptr : g.find_initializer(name);
  if (!t || t->dtype() != DType::kFloat32 || t->numel() != n) return nullptr;
  return t;
}

// Inference-mode BN with constant float parameters for `channels` channels.
std::optional<BnParams> bn_params(const Graph& g, const Node& bn, int64_t channels) {
  if (bn.inputs.size() != 5) return std::nullopt;
  // Training outputs (running mean/var, saved stats) must not be asked for.
  for (size_t i = 1; i < bn.outputs.size(); ++i)
    if (!bn.outputs[i].empty()) return std::nullopt;
  if (bn.attr_int("training_mode", 0) != 0) return std::nullopt;
  if (bn.attr_int("spatial", 1) != 1) return std::nullopt;  // opset < 9 per-element form
  const Tensor* gamma = const_f32(g, bn.inputs[1], channels);
  const Tensor* beta = const_f32(g, bn.inputs[2], channels);
  const Tensor* mean = const_f32(g, bn.inputs[3], channels);
  const Tensor* var = const_f32(g, bn.inputs[4], channels);
  if (!gamma || !beta || !mean || !var) return std::nullopt;
  const double eps = bn.attr_float("epsilon", 1e-5f);
  BnParams p;
  p.scale.resize(channels);
  p.shift.resize(channels);
  for (int64_t c = 0; c < channels; ++c) {
    const double v = static_cast<double>(var->data<float>()[c]) + eps;
    if (!(v > 0)) return std::nullopt;  // negative variance: leave it to the kernel
    p.scale[c] = gamma->data<float>()[c] / std::sqrt(v);
    p.shift[c] = beta->data<float>()[c] - mean->data<float>()[c] * p.scale[c];
  }
  return p;
}

// Conv: W [M, C/group, k...] scaled per output channel m; b' = b*s + shift.
bool fold_into_conv(Graph& g, Node& conv, const Node& bn, NameTable& names) {
  if (conv.inputs.size() < 2) return false;
  const Tensor* w = g.find_initializer(conv.inputs[1]);
  if (!w || w->dtype() != DType::kFloat32 || w->rank() < 3) return false;
  const int64_t m = w->dim(0);
  const Tensor* b = nullptr;
  if (conv.has_input(2) && !(b = const_f32(g, conv.inputs[2], m))) return false;
  auto p = bn_params(g, bn, m);
  if (!p) return false;

  Tensor nw = w->clone();  // the original may be shared with other nodes
  const int64_t per = w->numel() / m;
  for (int64_t c = 0; c < m; ++c) {
    float* row = nw.data<float>() + c * per;
    for (int64_t k = 0; k < per; ++k) row[k] = static_cast<float>(row[k] * p->scale[c]);
  }
  Tensor nb(DType::kFloat32, {m});
  for (int64_t c = 0; c < m; ++c) {
    const double bias = b ? b->data<float>()[c] : 0.0;
    nb.data<float>()[c] = static_cast<float>(bias * p->scale[c] + p->shift[c]);
  }
  const std::string base = conv.name.empty() ? bn.outputs[0] : conv.name;
  const std::string wn = names.fresh(base + "_W_bnfolded"), bn_name = names.fresh(base + "_B_bnfolded");
  g.set_initializer(wn, nw);
  g.set_initializer(bn_name, nb);
  conv.inputs.resize(3);
  conv.inputs[1] = wn;
  conv.inputs[2] = bn_name;
  return true;
}

// Gemm: Y = alpha*A'B' + beta*C with Y [N, M]; BN's channel is M.
// B' columns scale by s; C' = s*beta*C + shift, and the Gemm's beta becomes 1.
bool fold_into_gemm(Graph& g, Node& gemm, const Node& bn, NameTable& names) {
  if (gemm.inputs.size() < 2) return false;
  const Tensor* w = g.find_initializer(gemm.inputs[1]);
  if (!w || w->dtype() != DType::kFloat32 || w->rank() != 2) return false;
  const bool trans_b = gemm.attr_int("transB", 0) != 0;
  const int64_t m = trans_b ? w->dim(0) : w->dim(1);
  const Tensor* c = nullptr;
  if (gemm.has_input(2)) {
    c = g.find_initializer(gemm.inputs[2]);
    if (!c || c->dtype() != DType::kFloat32) return false;
    // Only a C that is the same for every row: [], [1], [M], [1, M], [1, 1].
    const Shape& cs = c->shape();
    const bool row = (c->numel() == 1 && c->rank() <= 2) || (cs == Shape{m}) || (cs == Shape{1, m});
    if (!row) return false;
  }
  auto p = bn_params(g, bn, m);
  if (!p) return false;

  Tensor nw = w->clone();
  float* d = nw.data<float>();
  const int64_t rows = w->dim(0), cols = w->dim(1);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) d[r * cols + k] = static_cast<float>(d[r * cols + k] * p->scale[trans_b ? r : k]);
  const double beta = gemm.attr_float("beta", 1.f);
  Tensor nc(DType::kFloat32, {m});
  for (int64_t j = 0; j < m; ++j) {
    const double cj = c ? c->data<float>()[c->numel() == 1 ? 0 : j] * beta : 0.0;
    nc.data<float>()[j] = static_cast<float>(cj * p->scale[j] + p->shift[j]);
  }
  const std::string base = gemm.name.empty() ? bn.outputs[0] : gemm.name;
  const std::string wn = names.fresh(base + "_B_bnfolded"), cn = names.fresh(base + "_C_bnfolded");
  g.set_initializer(wn, nw);
  g.set_initializer(cn, nc);
  gemm.inputs.resize(3);
  gemm.inputs[1] = wn;
  gemm.inputs[2] = cn;
  Attribute one;
  one.name = "beta";
  one.type = AttrType::kFloat;
  one.f = 1.f;
  gemm.set_attr(one);
  return true;
}

}  // namespace

Expected<int> fold_batchnorm(Model& m) {
  Graph& g = m.graph;
  auto reads = count_reads(g);
  std::unordered_map<std::string, size_t> producer;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (const auto& o : g.nodes[i].outputs)
      if (!o.empty()) producer[o] = i;
  NameTable names(g);

  std::vector<bool> erase(g.nodes.size(), false);
  int folded = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& bn = g.nodes[i];
    if (!is_default_domain(bn.domain) || bn.op_type != "BatchNormalization" || bn.inputs.empty() ||
        bn.outputs.empty() || bn.outputs[0].empty())
      continue;
    const std::string& x = bn.inputs[0];
    auto it = producer.find(x);
    if (it == producer.end() || erase[it->second]) continue;
    Node& prev = g.nodes[it->second];
    // The producer's output must feed only this BN (not a graph output,
    // not another node), and it must have a single output.
    if (reads[x] != 1 || prev.outputs.size() != 1 || !is_default_domain(prev.domain)) continue;
    bool ok = false;
    if (prev.op_type == "Conv") ok = fold_into_conv(g, prev, bn, names);
    else if (prev.op_type == "Gemm") ok = fold_into_gemm(g, prev, bn, names);
    if (!ok) continue;
    // The producer now writes the BN's output; readers need no change.
    prev.outputs[0] = bn.outputs[0];
    erase[i] = true;
    ++folded;
  }
  if (folded) {
    std::vector<Node> kept;
    kept.reserve(g.nodes.size());
    for (size_t i = 0; i < g.nodes.size(); ++i)
      if (!erase[i]) kept.push_back(std::move(g.nodes[i]));
    g.nodes = std::move(kept);
  }
  return folded;
}

}  // namespace qtk::ir
