#include "quant/algos/smooth_quant.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <set>

#include "quant/algos/capture.h"

namespace qtk::quant::algos {

namespace {

// Scales are kept in this range so that a dead channel (max |X_j| = 0) or a
// zero weight row cannot push the other side towards overflow or denormals.
constexpr float kMinScale = 1e-5f, kMaxScale = 1e5f;

using Readers = std::map<std::string, std::vector<size_t>>;

Readers readers_of(const ir::Graph& g) {
  Readers r;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (const auto& in : g.nodes[i].inputs)
      if (!in.empty()) r[in].push_back(i);
  return r;
}

// A float initializer that only node-input k of n reads (so rescaling it
// changes nothing else).
const Tensor* own_constant(const ir::Graph& g, const Readers& readers, const ir::Node& n, size_t k) {
  if (!n.has_input(k) || g.is_graph_input(n.inputs[k])) return nullptr;
  const Tensor* t = g.find_initializer(n.inputs[k]);
  if (!t || t->dtype() != DType::kFloat32) return nullptr;
  auto it = readers.find(n.inputs[k]);
  if (it == readers.end() || it->second.size() != 1) return nullptr;
  // The same node may read it twice (e.g. as both inputs): not ours alone.
  if (std::count(n.inputs.begin(), n.inputs.end(), n.inputs[k]) != 1) return nullptr;
  return t;
}

// Where input channel j of a consumer's weight lives: W[j, :] (MatMul, Gemm
// transB=0) or W[:, j] (Gemm transB=1). Returns K, or -1 if n is not a
// consumer whose first input is X.
int64_t consumer_channels(const ir::Graph& g, const Readers& readers, const ir::Node& n, const std::string& x,
                          std::string& why) {
  if (!ir::is_default_domain(n.domain) || (n.op_type != "MatMul" && n.op_type != "Gemm")) {
    why = "also read by " + n.describe();
    return -1;
  }
  if (n.inputs.empty() || n.inputs[0] != x || (n.inputs.size() > 1 && n.inputs[1] == x)) {
    why = n.describe() + " reads it as its weight";
    return -1;
  }
  if (n.op_type == "Gemm" && n.attr_int("transA", 0) != 0) {
    why = n.describe() + " has transA=1";
    return -1;
  }
  const Tensor* w = own_constant(g, readers, n, 1);
  if (!w || w->rank() != 2) {
    why = n.describe() + ": weight is not a 2-D float constant of its own";
    return -1;
  }
  const bool tb = n.op_type == "Gemm" && n.attr_int("transB", 0) != 0;
  return tb ? w->dim(1) : w->dim(0);
}

// Output channels of a MatMul/Gemm producer's weight, or -1.
int64_t producer_weight_channels(const ir::Graph& g, const Readers& readers, const ir::Node& n) {
  if (n.op_type == "Gemm" && n.attr_int("transA", 0) != 0) return -1;
  const Tensor* w = own_constant(g, readers, n, 1);
  if (!w || w->rank() != 2) return -1;
  const bool tb = n.op_type == "Gemm" && n.attr_int("transB", 0) != 0;
  return tb ? w->dim(0) : w->dim(1);
}

// The number of channels the producer of x can absorb a scale on, or -1 with why.
int64_t producer_channels(const ir::Graph& g, const Readers& readers, const ir::Node& p, SmoothTarget& t,
                          const std::map<std::string, size_t>& producer_of, std::string& why) {
  if (!ir::is_default_domain(p.domain)) {
    why = "produced by " + p.describe();
    return -1;
  }
  if (p.op_type == "LayerNormalization") {
    if (p.outputs.empty() || p.outputs[0] != t.tensor) {
      why = "not the normalized output of " + p.describe();
      return -1;
    }
    const Tensor* scale = own_constant(g, readers, p, 1);
    if (!scale || scale->rank() != 1) {
      why = p.describe() + ": scale is not a 1-D float constant of its own";
      return -1;
    }
    if (p.has_input(2)) {
      const Tensor* bias = own_constant(g, readers, p, 2);
      if (!bias || bias->numel() != scale->numel()) {
        why = p.describe() + ": bias is not a float constant of its own, one value per channel";
        return -1;
      }
    }
    // A 1-D scale over a normalization of more than the last axis would
    // broadcast along the last one only; that still is per channel of X.
    return scale->numel();
  }
  if (p.op_type == "Gemm") {
    const int64_t c = producer_weight_channels(g, readers, p);
    if (c < 0) {
      why = p.describe() + ": weight is not a 2-D float constant of its own";
      return -1;
    }
    if (p.has_input(2)) {
      const Tensor* bias = own_constant(g, readers, p, 2);
      if (!bias || (bias->numel() != c && bias->numel() != 1) || (bias->rank() == 2 && bias->dim(0) != 1)) {
        why = p.describe() + ": bias is not a float constant of its own, one value per channel";
        return -1;
      }
    }
    return c;
  }
  if (p.op_type == "MatMul") {
    const int64_t c = producer_weight_channels(g, readers, p);
    if (c < 0) why = p.describe() + ": weight is not a 2-D float constant of its own";
    return c;
  }
  // MatMul followed by its bias, as exporters write Linear on 3-D inputs.
  if (p.op_type == "Add" && p.inputs.size() == 2) {
    for (size_t k : {0u, 1u}) {
      const Tensor* bias = own_constant(g, readers, p, 1 - k);
      auto mm = producer_of.find(p.inputs[k]);
      if (!bias || mm == producer_of.end()) continue;
      const ir::Node& m = g.nodes[mm->second];
      auto r = readers.find(p.inputs[k]);
      if (m.op_type != "MatMul" || !ir::is_default_domain(m.domain) || r->second.size() != 1 ||
          g.is_graph_output(p.inputs[k]))
        continue;
      const int64_t c = producer_weight_channels(g, readers, m);
      if (c < 0 || bias->numel() != c || bias->rank() != 1) continue;
      t.bias_add = static_cast<size_t>(&p - g.nodes.data());
      t.producer = mm->second;
      return c;
    }
    why = "produced by " + p.describe() + " (not a MatMul's bias)";
    return -1;
  }
  why = "produced by " + p.describe() + ", which cannot absorb a channel scale";
  return -1;
}

float max_abs_row(const Tensor& w, const ir::Node& n, int64_t j) {
  const bool tb = n.op_type == "Gemm" && n.attr_int("transB", 0) != 0;
  const float* d = w.data<float>();
  float m = 0.f;
  if (tb)
    for (int64_t r = 0; r < w.dim(0); ++r) m = std::max(m, std::fabs(d[r * w.dim(1) + j]));
  else
    for (int64_t c = 0; c < w.dim(1); ++c) m = std::max(m, std::fabs(d[j * w.dim(1) + c]));
  return m;
}

// Multiplies input channel j of a consumer's weight by s[j].
void scale_consumer(ir::Graph& g, const ir::Node& n, const std::vector<float>& s) {
  Tensor w = g.find_initializer(n.inputs[1])->clone();
  const bool tb = n.op_type == "Gemm" && n.attr_int("transB", 0) != 0;
  float* d = w.data<float>();
  for (int64_t r = 0; r < w.dim(0); ++r)
    for (int64_t c = 0; c < w.dim(1); ++c) d[r * w.dim(1) + c] *= s[tb ? c : r];
  g.set_initializer(n.inputs[1], std::move(w));
}

// Divides output channel j of a producer (LayerNormalization scale/bias;
// Gemm/MatMul weight and bias) by s[j].
void scale_producer(ir::Graph& g, const SmoothTarget& t, const std::vector<float>& s) {
  const ir::Node& p = g.nodes[t.producer];
  auto divide = [&](const std::string& name) {
    const Tensor& old = *g.find_initializer(name);
    // A scalar bias becomes one value per channel.
    Tensor v = old.numel() == 1 ? Tensor(DType::kFloat32, {static_cast<int64_t>(s.size())}) : old.clone();
    for (int64_t j = 0; j < v.numel(); ++j)
      v.data<float>()[j] = (old.numel() == 1 ? old.data<float>()[0] : v.data<float>()[j]) / s[j];
    g.set_initializer(name, std::move(v));
  };
  if (p.op_type == "LayerNormalization") {
    divide(p.inputs[1]);
    if (p.has_input(2)) divide(p.inputs[2]);
    return;
  }
  Tensor w = g.find_initializer(p.inputs[1])->clone();
  const bool tb = p.op_type == "Gemm" && p.attr_int("transB", 0) != 0;
  float* d = w.data<float>();
  for (int64_t r = 0; r < w.dim(0); ++r)
    for (int64_t c = 0; c < w.dim(1); ++c) d[r * w.dim(1) + c] /= s[tb ? r : c];
  g.set_initializer(p.inputs[1], std::move(w));
  if (p.op_type == "Gemm" && p.has_input(2)) divide(p.inputs[2]);
  if (t.bias_add != SIZE_MAX) {
    const ir::Node& add = g.nodes[t.bias_add];
    const auto mm_out = p.outputs[0];
    divide(add.inputs[0] == mm_out ? add.inputs[1] : add.inputs[0]);
  }
}

}  // namespace

std::vector<SmoothTarget> find_smooth_targets(const ir::Graph& g, std::vector<std::string>* skipped) {
  const Readers readers = readers_of(g);
  std::map<std::string, size_t> producer_of;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (const auto& o : g.nodes[i].outputs)
      if (!o.empty()) producer_of[o] = i;
  auto skip = [&](const std::string& x, const std::string& why) {
    if (skipped) skipped->push_back(x + ": " + why);
  };
  std::vector<SmoothTarget> targets;
  std::set<std::string> seen;
  for (const ir::Node& n : g.nodes) {
    if ((n.op_type != "MatMul" && n.op_type != "Gemm") || !ir::is_default_domain(n.domain) || !n.has_input(0) ||
        !g.find_initializer(n.inputs.size() > 1 ? n.inputs[1] : "") || g.find_initializer(n.inputs[0]))
      continue;
    const std::string& x = n.inputs[0];
    if (!seen.insert(x).second) continue;
    SmoothTarget t;
    t.tensor = x;
    auto p = producer_of.find(x);
    if (p == producer_of.end() || g.is_graph_input(x)) {
      skip(x, "a graph input");
      continue;
    }
    if (g.is_graph_output(x)) {
      skip(x, "a graph output");
      continue;
    }
    std::string why;
    int64_t k = -1;
    for (size_t r : readers.at(x)) {
      const int64_t c = consumer_channels(g, readers, g.nodes[r], x, why);
      if (c < 0 || (k >= 0 && c != k)) {
        if (c >= 0) why = "its readers disagree on the channel count";
        k = -1;
        break;
      }
      k = c;
      if (std::find(t.consumers.begin(), t.consumers.end(), r) == t.consumers.end()) t.consumers.push_back(r);
    }
    if (k < 0) {
      skip(x, why);
      continue;
    }
    t.producer = p->second;
    const int64_t c = producer_channels(g, readers, g.nodes[p->second], t, producer_of, why);
    if (c < 0) {
      skip(x, why);
      continue;
    }
    if (c != k) {
      skip(x, "the producer has " + std::to_string(c) + " channels, the readers " + std::to_string(k));
      continue;
    }
    t.channels = c;
    targets.push_back(std::move(t));
  }
  return targets;
}

Expected<SmoothQuantInfo> apply_smooth_quant(ir::Graph& g, const std::vector<SmoothTarget>& targets,
                                             const std::map<std::string, std::vector<float>>& act_absmax,
                                             float alpha) {
  if (!(alpha >= 0.f && alpha <= 1.f))
    return invalid_argument("SmoothQuant alpha must be in [0, 1], got " + std::to_string(alpha));
  SmoothQuantInfo info;
  for (const SmoothTarget& t : targets) {
    auto stats = act_absmax.find(t.tensor);
    if (stats == act_absmax.end() || static_cast<int64_t>(stats->second.size()) != t.channels) {
      info.skipped.push_back(t.tensor + ": no per-channel statistics for its " + std::to_string(t.channels) +
                             " channels");
      continue;
    }
    std::vector<float> s(static_cast<size_t>(t.channels), 1.f);
    float lo = kMaxScale, hi = kMinScale;
    for (int64_t j = 0; j < t.channels; ++j) {
      float wmax = 0.f;
      for (size_t c : t.consumers)
        wmax = std::max(wmax, max_abs_row(*g.find_initializer(g.nodes[c].inputs[1]), g.nodes[c], j));
      const float amax = stats->second[j];
      if (!(amax > 0.f) || !(wmax > 0.f) || !std::isfinite(amax) || !std::isfinite(wmax)) continue;
      const double v = std::pow(double(amax), double(alpha)) / std::pow(double(wmax), 1.0 - alpha);
      s[j] = std::clamp(static_cast<float>(v), kMinScale, kMaxScale);
      lo = std::min(lo, s[j]);
      hi = std::max(hi, s[j]);
    }
    scale_producer(g, t, s);
    for (size_t c : t.consumers) scale_consumer(g, g.nodes[c], s);
    info.tensors.push_back(t.tensor);
    char range[64];
    std::snprintf(range, sizeof range, "scales %.3g..%.3g", lo <= hi ? lo : 1.f, lo <= hi ? hi : 1.f);
    info.smoothed.push_back(t.tensor + " (" + g.nodes[t.producer].describe() + " -> " +
                            std::to_string(t.consumers.size()) + " layer" + (t.consumers.size() == 1 ? "" : "s") +
                            "): " + range);
  }
  return info;
}

Expected<SmoothQuantInfo> smooth_quant(ir::Model& m, const CalibrationData& calib, const QuantConfig& config,
                                       float alpha) {
  SmoothQuantInfo info;
  const auto targets = find_smooth_targets(m.graph, &info.skipped);
  if (targets.empty()) return info;
  if (calib.inputs.empty()) return invalid_argument("SmoothQuant needs calibration data");
  std::vector<std::string> names;
  std::map<std::string, std::vector<float>> absmax;
  for (const auto& t : targets) {
    names.push_back(t.tensor);
    absmax[t.tensor].assign(static_cast<size_t>(t.channels), 0.f);
  }
  QTK_RETURN_IF_ERROR(capture_tensors(
      m, names, calib, config, [&](size_t i, const Tensor& v, int64_t) -> Status {
        std::vector<float>& mx = absmax[names[i]];
        const int64_t c = static_cast<int64_t>(mx.size());
        if (v.dtype() != DType::kFloat32 || v.rank() == 0 || v.dim(-1) != c)
          return invalid_argument("SmoothQuant: " + names[i] + " does not have " + std::to_string(c) +
                                  " float channels on its last axis");
        const float* d = v.data<float>();
        for (int64_t k = 0; k < v.numel(); ++k) {
          const float a = std::fabs(d[k]);
          if (std::isfinite(a)) mx[k % c] = std::max(mx[k % c], a);
        }
        return Status::Ok();
      }));
  QTK_ASSIGN_OR_RETURN(auto applied, apply_smooth_quant(m.graph, targets, absmax, alpha));
  applied.skipped.insert(applied.skipped.begin(), info.skipped.begin(), info.skipped.end());
  return applied;
}

}  // namespace qtk::quant::algos
