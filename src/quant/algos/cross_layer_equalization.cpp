#include "quant/algos/cross_layer_equalization.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>

namespace qtk::quant::algos {

namespace {

constexpr int kMaxSweeps = 20;
constexpr double kSettled = 1e-4;  // stop when every scale is within this of 1
// Scales are kept in this range so that a nearly dead channel cannot push
// the other layer's weights towards overflow or denormals.
constexpr float kMinScale = 1e-3f, kMaxScale = 1e3f;

// The flat indices of one channel of a weight tensor:
//   base(c) + o * outer_stride + i, o < outer, i < inner * inner_stride step inner_stride
// with base(c) = (c / per_group) * group_stride + (c % per_group) * local_stride.
struct ChannelMap {
  int64_t channels = 0, per_group = 1, group_stride = 0, local_stride = 0;
  int64_t outer = 1, outer_stride = 0, inner = 1, inner_stride = 1;
  template <class F>
  void for_each(int64_t c, F&& f) const {
    const int64_t base = (c / per_group) * group_stride + (c % per_group) * local_stride;
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) f(base + o * outer_stride + i * inner_stride);
  }
};

// Output channels of A (Conv: axis 0; Gemm: rows with transB=1, else columns).
bool output_channels(const ir::Node& n, const Tensor& w, ChannelMap& m) {
  if (n.op_type == "Conv") {
    m.channels = w.dim(0);
    m.per_group = m.channels;
    m.local_stride = w.numel() / w.dim(0);
    m.inner = m.local_stride;
    return true;
  }
  if (n.op_type != "Gemm" || w.rank() != 2) return false;
  const bool tb = n.attr_int("transB", 0) != 0;
  m.channels = tb ? w.dim(0) : w.dim(1);
  m.per_group = m.channels;
  m.local_stride = tb ? w.dim(1) : 1;
  m.inner = tb ? w.dim(1) : w.dim(0);
  m.inner_stride = tb ? 1 : w.dim(1);
  return true;
}

// Input channels of B (Conv: per group, axis 1; Gemm: columns with transB=1, else rows).
bool input_channels(const ir::Node& n, const Tensor& w, ChannelMap& m) {
  if (n.op_type == "Conv") {
    const int64_t groups = n.attr_int("group", 1);
    if (groups < 1 || w.dim(0) % groups != 0) return false;
    const int64_t rows = w.dim(0) / groups, cin = w.dim(1), ksz = w.numel() / (w.dim(0) * w.dim(1));
    m.channels = cin * groups;
    m.per_group = cin;
    m.group_stride = rows * cin * ksz;
    m.local_stride = ksz;
    m.outer = rows;
    m.outer_stride = cin * ksz;
    m.inner = ksz;
    return true;
  }
  if (n.op_type != "Gemm" || w.rank() != 2 || n.attr_int("transA", 0) != 0) return false;
  const bool tb = n.attr_int("transB", 0) != 0;
  m.channels = tb ? w.dim(1) : w.dim(0);
  m.per_group = m.channels;
  m.local_stride = tb ? 1 : w.dim(1);
  m.inner = tb ? w.dim(0) : w.dim(1);
  m.inner_stride = tb ? w.dim(1) : 1;
  return true;
}

bool unbounded_or_zero(double v) { return v == 0.0 || std::fabs(v) >= 1e38 || std::isinf(v); }

// Whether f(x / s) = f(x) / s for every s > 0, so scales pass through it.
bool homogeneous(const ir::Node& n, const ir::Graph& g, std::string& why) {
  if (n.op_type == "Relu" || n.op_type == "LeakyRelu" || n.op_type == "PRelu") return true;
  if (n.op_type != "Clip") {
    why = n.op_type + " between the layers";
    return false;
  }
  double lo = -std::numeric_limits<double>::infinity(), hi = std::numeric_limits<double>::infinity();
  if (n.has_attr("min")) lo = n.attr_float("min", 0.f);
  if (n.has_attr("max")) hi = n.attr_float("max", 0.f);
  for (int k : {1, 2}) {
    if (!n.has_input(k)) continue;
    const Tensor* t = g.find_initializer(n.inputs[k]);
    if (!t || t->numel() != 1) {
      why = "Clip bound is not a constant";
      return false;
    }
    (k == 1 ? lo : hi) = t->get_as_double(0);
  }
  if (unbounded_or_zero(lo) && unbounded_or_zero(hi)) return true;
  char bounds[64];
  std::snprintf(bounds, sizeof bounds, "Clip(%g, %g)", lo, hi);
  why = std::string(bounds) + " does not commute with channel scaling (ReLU6-like)";
  return false;
}

struct Pair {
  size_t a, b;
  ChannelMap out_a, in_b;
};

}  // namespace

Expected<EqualizationInfo> equalize_cross_layer(ir::Graph& g) {
  EqualizationInfo info;
  std::map<std::string, std::vector<size_t>> readers;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (const auto& in : g.nodes[i].inputs)
      if (!in.empty()) readers[in].push_back(i);
  auto single_reader = [&](const std::string& t) -> const ir::Node* {
    auto it = readers.find(t);
    if (it == readers.end() || it->second.size() != 1 || g.is_graph_output(t)) return nullptr;
    return &g.nodes[it->second[0]];
  };
  auto own_initializer = [&](const ir::Node& n, size_t k) {
    return n.has_input(k) && g.find_initializer(n.inputs[k]) && readers[n.inputs[k]].size() == 1 &&
           g.find_initializer(n.inputs[k])->dtype() == DType::kFloat32 && !g.is_graph_input(n.inputs[k]);
  };
  std::vector<Pair> pairs;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const ir::Node& a = g.nodes[i];
    if ((a.op_type != "Conv" && a.op_type != "Gemm") || !ir::is_default_domain(a.domain) || !own_initializer(a, 1) ||
        a.outputs.empty())
      continue;
    // Through a short chain of activations (Relu then Clip, as exporters
    // write ReLU6 after BN), each of which must let the scales through.
    const ir::Node* next = single_reader(a.outputs[0]);
    std::string why;
    for (int hops = 0; next && next->op_type != "Conv" && next->op_type != "Gemm" && hops < 3; ++hops) {
      if (!homogeneous(*next, g, why) || next->outputs.empty()) {
        if (next->op_type == "Clip") info.skipped.push_back(a.name + ": " + why);
        next = nullptr;
        break;
      }
      next = single_reader(next->outputs[0]);
    }
    if (!next) continue;
    const ir::Node& b = *next;
    if ((b.op_type != "Conv" && b.op_type != "Gemm") || b.op_type != a.op_type) continue;
    const std::string label = a.name + " -> " + b.name;
    if (!own_initializer(b, 1)) {
      info.skipped.push_back(label + ": weight shared or not a constant");
      continue;
    }
    if (a.has_input(2) && !own_initializer(a, 2)) {
      info.skipped.push_back(label + ": bias shared or not a constant");
      continue;
    }
    Pair p{i, static_cast<size_t>(&b - g.nodes.data()), {}, {}};
    const Tensor& wa = *g.find_initializer(a.inputs[1]);
    const Tensor& wb = *g.find_initializer(b.inputs[1]);
    if (!output_channels(a, wa, p.out_a) || !input_channels(b, wb, p.in_b) || p.out_a.channels != p.in_b.channels) {
      info.skipped.push_back(label + ": channels do not line up");
      continue;
    }
    if (a.has_input(2) && g.find_initializer(a.inputs[2])->numel() != p.out_a.channels) {
      info.skipped.push_back(label + ": bias is not one value per channel");
      continue;
    }
    pairs.push_back(p);
  }
  if (pairs.empty()) return info;

  for (info.sweeps = 1; info.sweeps <= kMaxSweeps; ++info.sweeps) {
    double worst = 0.0;
    for (const Pair& p : pairs) {
      ir::Node& a = g.nodes[p.a];
      ir::Node& b = g.nodes[p.b];
      Tensor wa = g.find_initializer(a.inputs[1])->clone();
      Tensor wb = g.find_initializer(b.inputs[1])->clone();
      Tensor bias = a.has_input(2) ? g.find_initializer(a.inputs[2])->clone() : Tensor();
      float* da = wa.data<float>();
      float* db = wb.data<float>();
      for (int64_t c = 0; c < p.out_a.channels; ++c) {
        float r1 = 0.f, r2 = 0.f;
        p.out_a.for_each(c, [&](int64_t k) { r1 = std::max(r1, std::fabs(da[k])); });
        p.in_b.for_each(c, [&](int64_t k) { r2 = std::max(r2, std::fabs(db[k])); });
        if (!(r1 > 0.f) || !(r2 > 0.f) || !std::isfinite(r1) || !std::isfinite(r2)) continue;
        const float s = std::clamp(std::sqrt(r1 * r2) / r2, kMinScale, kMaxScale);
        worst = std::max(worst, std::fabs(static_cast<double>(s) - 1.0));
        p.out_a.for_each(c, [&](int64_t k) { da[k] /= s; });
        p.in_b.for_each(c, [&](int64_t k) { db[k] *= s; });
        if (bias.defined()) bias.data<float>()[c] /= s;
      }
      g.set_initializer(a.inputs[1], std::move(wa));
      g.set_initializer(b.inputs[1], std::move(wb));
      if (bias.defined()) g.set_initializer(a.inputs[2], std::move(bias));
    }
    if (worst < kSettled) break;
  }
  info.sweeps = std::min(info.sweeps, kMaxSweeps);
  info.pairs = static_cast<int>(pairs.size());
  return info;
}

}  // namespace qtk::quant::algos
