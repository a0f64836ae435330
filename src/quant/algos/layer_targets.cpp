#include "quant/algos/layer_targets.h"

#include <algorithm>
#include <cmath>
#include <map>

namespace qtk::quant::algos {

std::vector<Target> select_targets(const ir::Graph& g, const QuantPlan& plan, WeightMethod method,
                                   int64_t max_hessian_columns, QuantReport& report) {
  std::map<std::string, int> uses;
  for (const auto& n : g.nodes)
    for (const auto& in : n.inputs) ++uses[in];
  const char* name = method == WeightMethod::kGptq ? "GPTQ" : "AdaRound";
  std::vector<Target> out;
  for (const auto& use : plan.weights) {
    const ir::Node& n = g.nodes[use.node];
    const std::string& w = n.inputs[use.input];
    auto fallback = [&](const std::string& why) {
      report.warnings.push_back(n.describe() + ": " + name + " not applied (" + why + "); weight rounded to nearest");
    };
    if (use.input != 1 || uses[w] != 1) {
      fallback("weight shared by several nodes");
      continue;
    }
    if (n.inputs.empty() || n.inputs[0].empty() || g.find_initializer(n.inputs[0])) {
      fallback("input is a constant");
      continue;
    }
    auto geo = layer_geometry(n, *g.find_initializer(w));
    if (!geo.ok()) {
      fallback(geo.status().message());
      continue;
    }
    if (method == WeightMethod::kGptq && geo->cols > max_hessian_columns) {
      fallback("reduction length " + std::to_string(geo->cols) + " > " + std::to_string(max_hessian_columns) +
               ": Hessian too large");
      continue;
    }
    out.push_back({use.node, w, n.inputs[0], use.channel_axis, use.reduction_axis, *geo, 0});
  }
  std::map<size_t, size_t> target_of;
  for (size_t i = 0; i < out.size(); ++i) target_of[out[i].node] = i;
  std::map<std::string, int> depth;  // tensor -> weighted layers in front of it
  for (size_t k = 0; k < g.nodes.size(); ++k) {
    int d = 0;
    for (const auto& in : g.nodes[k].inputs)
      if (auto it = depth.find(in); it != depth.end()) d = std::max(d, it->second);
    if (auto t = target_of.find(k); t != target_of.end()) out[t->second].wave = d++;
    for (const auto& o : g.nodes[k].outputs) depth[o] = d;
  }
  return out;
}

std::vector<float> weight_matrix(const Tensor& w, const LayerGeometry& geo, int64_t g) {
  std::vector<float> m(static_cast<size_t>(geo.rows * geo.cols));
  const float* src = w.data<float>();
  for (int64_t r = 0; r < geo.rows; ++r)
    for (int64_t c = 0; c < geo.cols; ++c) {
      const float v = src[geo.weight_index(g, r, c)];
      m[r * geo.cols + c] = std::isfinite(v) ? v : 0.f;
    }
  return m;
}

bool has_plain_bias(const ir::Node& n) {
  if (n.op_type == "Conv") return true;
  return n.op_type == "Gemm" && n.attr_float("alpha", 1.f) == 1.f && n.attr_float("beta", 1.f) == 1.f;
}

void add_bias(ir::Model& m, size_t node, const std::string& weight, const std::vector<float>& delta) {
  ir::Node& n = m.graph.nodes[node];
  Tensor bias(DType::kFloat32, {static_cast<int64_t>(delta.size())});
  if (n.has_input(2)) {
    const Tensor* old = m.graph.find_initializer(n.inputs[2]);
    if (!old || old->dtype() != DType::kFloat32 || old->numel() != bias.numel() || old->rank() != 1) return;
    bias = old->clone();
  }
  for (size_t i = 0; i < delta.size(); ++i) bias.data<float>()[i] += delta[i];
  const std::string name = weight + "_algo_bias";
  m.graph.set_initializer(name, bias);
  if (n.inputs.size() < 3) n.inputs.resize(3);
  n.inputs[2] = name;
}

}  // namespace qtk::quant::algos
