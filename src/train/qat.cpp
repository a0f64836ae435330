#include "train/qat.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

#include "quant/schemes/qformat.h"
#include "train/fake_quant.h"
#include "train/grad_op.h"

namespace qtk::train {
namespace {

bool is_op(const ir::Node& n, const char* op) { return n.op_type == op && ir::is_default_domain(n.domain); }

// Full code range of a storage type.
bool storage_range(DType t, int64_t& lo, int64_t& hi) {
  switch (t) {
    case DType::kInt8: lo = -128; hi = 127; return true;
    case DType::kUInt8: lo = 0; hi = 255; return true;
    case DType::kInt4: lo = -8; hi = 7; return true;
    case DType::kUInt4: lo = 0; hi = 15; return true;
    case DType::kInt16: lo = -32768; hi = 32767; return true;
    case DType::kUInt16: lo = 0; hi = 65535; return true;
    default: return false;
  }
}

void set_code(Tensor& t, int64_t i, int64_t v) {
  switch (t.dtype()) {
    case DType::kInt8: case DType::kInt4: t.data<int8_t>()[i] = static_cast<int8_t>(v); break;
    case DType::kUInt8: case DType::kUInt4: t.data<uint8_t>()[i] = static_cast<uint8_t>(v); break;
    case DType::kInt16: t.data<int16_t>()[i] = static_cast<int16_t>(v); break;
    case DType::kUInt16: t.data<uint16_t>()[i] = static_cast<uint16_t>(v); break;
    case DType::kInt32: t.data<int32_t>()[i] = static_cast<int32_t>(v); break;
    default: break;
  }
}

Tensor float_tensor(const std::vector<float>& v, const Shape& s) {
  Tensor t(DType::kFloat32, s);
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

struct Names {
  std::set<std::string> used;
  explicit Names(const ir::Graph& g) {
    for (const auto& [k, _] : g.initializers) used.insert(k);
    for (const auto& v : g.inputs) used.insert(v.name);
    for (const auto& n : g.nodes) {
      used.insert(n.name);
      for (const auto& o : n.outputs) used.insert(o);
    }
  }
  std::string unique(const std::string& base) {
    std::string s = base;
    for (int i = 1; used.count(s); ++i) s = base + "_" + std::to_string(i);
    used.insert(s);
    return s;
  }
};

// DequantizeLinear's zero point as floats (zeros when absent).
std::vector<float> zero_points(const ir::Graph& g, const ir::Node& dq, int64_t n) {
  if (dq.has_input(2))
    if (const Tensor* z = g.find_initializer(dq.inputs[2])) return z->to_float_vector();
  return std::vector<float>(static_cast<size_t>(n), 0.f);
}

// Formats of weights from the PTQ report ("int2 sym per-channel(axis 0)"),
// keyed by the codes initializer the writer names "<weight>_quantized".
std::map<std::string, std::pair<int64_t, int64_t>> weight_ranges(const QuantReport* report) {
  std::map<std::string, std::pair<int64_t, int64_t>> r;
  if (!report) return r;
  for (const auto& t : report->tensors) {
    if (t.kind != "weight") continue;
    std::istringstream in(t.scheme);
    std::string name;
    in >> name;
    auto f = quant::qformat_from_name(name);
    if (!f) continue;
    const auto& tr = quant::traits(*f);
    r[t.tensor + "_quantized"] = {tr.qmin, tr.qmax};
  }
  return r;
}

std::map<std::string, std::vector<size_t>> consumers_of(const ir::Graph& g) {
  std::map<std::string, std::vector<size_t>> c;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (const auto& in : g.nodes[i].inputs)
      if (!in.empty()) c[in].push_back(i);
  return c;
}

std::map<std::string, size_t> producers_of(const ir::Graph& g) {
  std::map<std::string, size_t> p;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (const auto& o : g.nodes[i].outputs) p[o] = i;
  return p;
}

// Constant Clip bounds (opset >= 11 inputs, or the old attributes).
bool clip_bounds(const ir::Graph& g, const ir::Node& clip, float& lo, float& hi) {
  lo = -INFINITY;
  hi = INFINITY;
  if (clip.has_attr("min") || clip.has_attr("max")) {
    lo = clip.attr_float("min", lo);
    hi = clip.attr_float("max", hi);
  }
  for (size_t k = 1; k <= 2; ++k) {
    if (!clip.has_input(k)) continue;
    const Tensor* t = g.find_initializer(clip.inputs[k]);
    if (!t || t->numel() != 1) return false;
    (k == 1 ? lo : hi) = t->to_float_vector()[0];
  }
  return true;
}

ir::Node fake_quant_node(const std::string& name, const std::vector<std::string>& inputs, const std::string& out,
                         int64_t qmin, int64_t qmax, const ir::Node& dq) {
  ir::Node n;
  n.name = name;
  n.op_type = "FakeQuant";
  n.domain = kQtkDomain;
  n.inputs = inputs;
  n.outputs = {out};
  n.set_attr(ir::attr_int("qmin", qmin));
  n.set_attr(ir::attr_int("qmax", qmax));
  n.set_attr(ir::attr_int("axis", dq.attr_int("axis", 1)));
  if (dq.attr_int("block_size", 0) > 0) n.set_attr(ir::attr_int("block_size", dq.attr_int("block_size", 0)));
  return n;
}

}  // namespace

Expected<QatModel> to_qat_model(const ir::Model& qdq, const QuantReport* report) {
  QatModel r;
  r.qdq = qdq;
  QTK_RETURN_IF_ERROR(ir::topological_sort(r.qdq.graph));
  ir::Model m = r.qdq;
  ir::Graph& g = m.graph;
  Names names(g);
  const auto wranges = weight_ranges(report);
  const auto consumers = consumers_of(g);
  const auto producers = producers_of(g);
  std::vector<bool> drop(g.nodes.size(), false);
  std::map<size_t, ir::Node> replace;  // node index -> its FakeQuant
  std::map<std::string, size_t> quantized;  // DQ output -> its record (weights, activations)
  std::vector<std::pair<size_t, std::string>> biases;  // record, DQ output
  std::set<std::string> bias_covered;

  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const ir::Node& dq = g.nodes[i];
    if (!is_op(dq, "DequantizeLinear") || !dq.has_input(1) || dq.outputs.size() != 1) continue;
    const Tensor* scale = g.find_initializer(dq.inputs[1]);
    if (!scale) return unsupported(dq.describe() + ": QAT needs a constant scale (dynamic quantization cannot be trained)");
    if (scale->dtype() != DType::kFloat32) return unsupported(dq.describe() + ": QAT needs a float32 scale");
    const Tensor* codes = g.find_initializer(dq.inputs[0]);
    const std::string& out = dq.outputs[0];
    const std::vector<float> s = scale->to_float_vector();
    const std::vector<float> zp = zero_points(g, dq, scale->numel());
    if (static_cast<int64_t>(zp.size()) != scale->numel())
      return invalid_argument(dq.describe() + ": zero point and scale differ in size");

    if (codes) {  // a weight or a bias
      QTK_ASSIGN_OR_RETURN(ScaleMap map, make_scale_map(codes->shape(), scale->numel(), dq.attr_int("axis", 1),
                                                         dq.attr_int("block_size", 0), dq.describe()));
      const std::vector<float> q = codes->to_float_vector();
      std::vector<float> w(q.size());
      for (size_t k = 0; k < q.size(); ++k) {
        const int64_t j = map.index(static_cast<int64_t>(k));
        w[k] = (q[k] - zp[j]) * s[j];
      }
      QatTensor t;
      t.dq_node = dq.name;
      if (codes->dtype() == DType::kInt32) {
        // The bias becomes a float parameter; a FakeQuant at s_x * s_w is
        // added below, once the scales of its layer are known.
        t.kind = QatTensor::Kind::kBias;
        t.value = names.unique(out + "_qat_bias");
        g.set_initializer(t.value, float_tensor(w, codes->shape()));
        drop[i] = true;
        biases.push_back({r.tensors.size(), out});
      } else {
        t.kind = QatTensor::Kind::kWeight;
        if (!storage_range(codes->dtype(), t.qmin, t.qmax))
          return unsupported(dq.describe() + ": weight codes of type " + dtype_name(codes->dtype()) +
                             " are not supported for QAT");
        if (auto it = wranges.find(dq.inputs[0]); it != wranges.end()) std::tie(t.qmin, t.qmax) = it->second;
        t.value = names.unique(out + "_qat_weight");
        t.scale = names.unique(out + "_qat_scale");
        t.scale_base = names.unique(out + "_qat_scale_base");
        const std::string zn = names.unique(out + "_qat_zero_point");
        g.set_initializer(t.value, float_tensor(w, codes->shape()));
        g.set_initializer(t.scale, float_tensor(std::vector<float>(s.size(), 1.f), scale->shape()));
        g.set_initializer(t.scale_base, scale->clone());
        g.set_initializer(zn, float_tensor(zp, scale->shape()));
        replace[i] = fake_quant_node(names.unique(dq.name + "_FakeQuant"), {t.value, t.scale, zn, t.scale_base}, out,
                                     t.qmin, t.qmax, dq);
      }
      quantized[out] = r.tensors.size();
      r.tensors.push_back(t);
      continue;
    }

    // An activation: [Clip ->] QuantizeLinear -> this DequantizeLinear.
    auto pq = producers.find(dq.inputs[0]);
    if (pq == producers.end() || !is_op(g.nodes[pq->second], "QuantizeLinear"))
      return unsupported(dq.describe() + ": its input is neither a constant nor a QuantizeLinear output");
    const size_t qi = pq->second;
    const ir::Node& qn = g.nodes[qi];
    if (consumers.at(qn.outputs[0]).size() != 1 || g.is_graph_output(qn.outputs[0]))
      return unsupported(qn.describe() + ": QAT needs each QuantizeLinear read by exactly one DequantizeLinear");
    const Tensor* qscale = qn.has_input(1) ? g.find_initializer(qn.inputs[1]) : nullptr;
    if (!qscale || qscale->to_float_vector() != s)
      return unsupported(qn.describe() + ": QuantizeLinear and DequantizeLinear '" + dq.name + "' use different scales");
    QatTensor t;
    t.kind = QatTensor::Kind::kActivation;
    t.dq_node = dq.name;
    const Tensor* qzp = qn.has_input(2) ? g.find_initializer(qn.inputs[2]) : nullptr;
    if (!storage_range(qzp ? qzp->dtype() : DType::kUInt8, t.qmin, t.qmax))
      return unsupported(qn.describe() + ": unsupported quantized type");
    std::string x = qn.inputs[0];
    // A Clip to the grid limits before Q (codes narrower than their container)
    // becomes FakeQuant's range.
    if (auto pc = producers.find(x); pc != producers.end() && s.size() == 1 && is_op(g.nodes[pc->second], "Clip") &&
                                     consumers.at(x).size() == 1 && !g.is_graph_output(x)) {
      float lo, hi;
      const ir::Node& clip = g.nodes[pc->second];
      if (clip_bounds(g, clip, lo, hi)) {
        if (std::isfinite(lo)) t.qmin = std::max<int64_t>(t.qmin, static_cast<int64_t>(std::nearbyint(lo / s[0] + zp[0])));
        if (std::isfinite(hi)) t.qmax = std::min<int64_t>(t.qmax, static_cast<int64_t>(std::nearbyint(hi / s[0] + zp[0])));
        x = clip.inputs[0];
        drop[pc->second] = true;
      }
    }
    if (t.qmin >= t.qmax) return unsupported(qn.describe() + ": empty code range");
    t.scale = names.unique(out + "_qat_scale");
    t.scale_base = names.unique(out + "_qat_scale_base");
    const std::string zn = names.unique(out + "_qat_zero_point");
    g.set_initializer(t.scale, float_tensor(std::vector<float>(s.size(), 1.f), scale->shape()));
    g.set_initializer(t.scale_base, scale->clone());
    g.set_initializer(zn, float_tensor(zp, scale->shape()));
    drop[qi] = true;
    replace[i] =
        fake_quant_node(names.unique(dq.name + "_FakeQuant"), {x, t.scale, zn, t.scale_base}, out, t.qmin, t.qmax, dq);
    quantized[out] = r.tensors.size();
    r.tensors.push_back(t);
  }

  // Biases: int32 codes at s_x * s_w, with the learned scales of the layer's
  // input and weight, as the export writes them (so training sees the bias
  // rounding, which is coarse when s_x * s_w is, e.g. at W2A4).
  std::vector<ir::Node> bias_nodes;
  for (const auto& [index, out] : biases) {
    const QatTensor& t = r.tensors[index];
    auto cs = consumers.find(out);
    if (cs == consumers.end() || cs->second.size() != 1) continue;
    const ir::Node& layer = g.nodes[cs->second[0]];
    if (layer.inputs.size() < 2) continue;
    auto ix = quantized.find(layer.inputs[0]), iw = quantized.find(layer.inputs[1]);
    if (ix == quantized.end() || iw == quantized.end()) continue;
    const QatTensor &tx = r.tensors[ix->second], &tw = r.tensors[iw->second];
    if (tx.kind != QatTensor::Kind::kActivation || tw.kind != QatTensor::Kind::kWeight) continue;
    if (g.find_initializer(tx.scale)->numel() != 1) continue;
    const int64_t nw = g.find_initializer(tw.scale)->numel(), nb = g.find_initializer(t.value)->numel();
    if (nw != 1 && nw != nb) continue;
    auto mul = [&](const std::string& a, const std::string& b, const std::string& base) {
      ir::Node n;
      n.name = names.unique(base);
      n.op_type = "Mul";
      n.inputs = {a, b};
      n.outputs = {n.name};
      bias_nodes.push_back(n);
      return n.outputs[0];
    };
    const std::string sx = mul(tx.scale, tx.scale_base, out + "_qat_sx");
    const std::string sw = mul(tw.scale, tw.scale_base, out + "_qat_sw");
    const std::string sb = mul(sx, sw, out + "_qat_sb");
    const std::string zn = names.unique(out + "_qat_zero_point");
    g.set_initializer(zn, Tensor(DType::kFloat32, g.find_initializer(tw.scale)->shape()));
    ir::Node fq;
    fq.name = names.unique(out + "_FakeQuant");
    fq.op_type = "FakeQuant";
    fq.domain = kQtkDomain;
    fq.inputs = {t.value, sb, zn};
    fq.outputs = {out};
    fq.set_attr(ir::attr_int("qmin", INT32_MIN + 1));
    fq.set_attr(ir::attr_int("qmax", INT32_MAX));
    fq.set_attr(ir::attr_int("axis", 0));
    bias_nodes.push_back(fq);
    bias_covered.insert(out);
  }
  for (const auto& [index, out] : biases)
    if (!bias_covered.count(out)) g.set_initializer(out, g.find_initializer(r.tensors[index].value)->clone());

  std::vector<ir::Node> nodes;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (auto it = replace.find(i); it != replace.end()) nodes.push_back(std::move(it->second));
    else if (!drop[i]) nodes.push_back(std::move(g.nodes[i]));
  }
  for (auto& n : bias_nodes) nodes.push_back(std::move(n));
  g.nodes = std::move(nodes);
  // Drop the codes and scales nothing reads any more.
  std::set<std::string> read;
  for (const auto& n : g.nodes)
    for (const auto& in : n.inputs) read.insert(in);
  for (const auto& o : g.outputs) read.insert(o.name);
  std::vector<std::string> unused;
  for (const auto& name : g.initializer_order)
    if (!read.count(name) && !g.is_graph_input(name)) unused.push_back(name);
  for (const auto& name : unused) g.remove_initializer(name);
  // Value infos of the removed integer tensors would contradict the float graph.
  std::erase_if(g.value_infos, [&](const ir::ValueInfo& v) { return v.dtype != DType::kFloat32; });
  if (m.opset(kQtkDomain) == 0) m.opsets.push_back({kQtkDomain, 1});
  QTK_RETURN_IF_ERROR(ir::topological_sort(g));
  r.model = std::move(m);
  return r;
}

Expected<ir::Model> from_qat_model(const QatModel& qat, const ir::Model& trained) {
  ir::Model out = qat.qdq;
  ir::Graph& g = out.graph;
  std::map<std::string, size_t> by_name;
  for (size_t i = 0; i < g.nodes.size(); ++i) by_name[g.nodes[i].name] = i;
  const auto producers = producers_of(g);
  auto trained_tensor = [&](const std::string& name) -> Expected<Tensor> {
    const Tensor* t = trained.graph.find_initializer(name);
    if (!t || t->dtype() != DType::kFloat32) return invalid_argument("trained model lacks float tensor '" + name + "'");
    return *t;
  };
  auto learned_scale = [&](const QatTensor& t) -> Expected<std::vector<float>> {
    QTK_ASSIGN_OR_RETURN(Tensor s, trained_tensor(t.scale));
    QTK_ASSIGN_OR_RETURN(Tensor b, trained_tensor(t.scale_base));
    std::vector<float> v = s.to_float_vector();
    const std::vector<float> base = b.to_float_vector();
    if (v.size() != base.size()) return invalid_argument("learned scale '" + t.scale + "' changed size");
    for (size_t k = 0; k < v.size(); ++k) {
      if (!std::isfinite(v[k])) return invalid_argument("learned scale '" + t.scale + "' is not finite");
      v[k] = std::max(v[k] * base[k], kMinScale);  // as qtk.FakeQuant computes it
    }
    return v;
  };
  // Float parameters the QDQ model keeps as they are (layers left in float,
  // float biases) trained too.
  for (const auto& name : out.graph.initializer_order) {
    Tensor* t = g.initializers.count(name) ? &g.initializers.at(name) : nullptr;
    const Tensor* u = trained.graph.find_initializer(name);
    if (t && u && t->dtype() == DType::kFloat32 && u->dtype() == DType::kFloat32 && t->shape() == u->shape())
      *t = u->clone();
  }
  // Learned scales by the DQ output they quantize (biases need their inputs').
  std::map<std::string, std::vector<float>> scale_of;
  for (const auto& t : qat.tensors) {
    auto it = by_name.find(t.dq_node);
    if (it == by_name.end()) return internal_error("QAT record names missing node '" + t.dq_node + "'");
    ir::Node& dq = g.nodes[it->second];
    if (t.kind == QatTensor::Kind::kBias) continue;
    QTK_ASSIGN_OR_RETURN(std::vector<float> s, learned_scale(t));
    const Tensor* old_scale = g.find_initializer(dq.inputs[1]);
    g.set_initializer(dq.inputs[1], float_tensor(s, old_scale->shape()));
    const std::vector<float> zp = zero_points(g, dq, static_cast<int64_t>(s.size()));
    if (t.kind == QatTensor::Kind::kWeight) {
      QTK_ASSIGN_OR_RETURN(Tensor w, trained_tensor(t.value));
      const Tensor& old = *g.find_initializer(dq.inputs[0]);
      QTK_ASSIGN_OR_RETURN(ScaleMap map, make_scale_map(old.shape(), static_cast<int64_t>(s.size()),
                                                         dq.attr_int("axis", 1), dq.attr_int("block_size", 0),
                                                         dq.describe()));
      Tensor codes(old.dtype(), old.shape());
      const float* pw = w.data<float>();
      for (int64_t k = 0; k < codes.numel(); ++k) {
        const int64_t j = map.index(k);
        float q = std::nearbyint(pw[k] / s[j]) + zp[j];
        q = std::min(std::max(q, static_cast<float>(t.qmin)), static_cast<float>(t.qmax));
        set_code(codes, k, static_cast<int64_t>(q));
      }
      g.set_initializer(dq.inputs[0], codes);
    } else {
      auto pq = producers.find(dq.inputs[0]);
      if (pq == producers.end()) return internal_error(dq.describe() + ": its QuantizeLinear is missing");
      ir::Node& qn = g.nodes[pq->second];
      g.set_initializer(qn.inputs[1], float_tensor(s, old_scale->shape()));
      // The code Clip before Q (when there is one) moves with the scale.
      if (auto pc = producers.find(qn.inputs[0]); pc != producers.end() && is_op(g.nodes[pc->second], "Clip")) {
        ir::Node& clip = g.nodes[pc->second];
        float lo, hi;
        if (s.size() == 1 && clip_bounds(g, clip, lo, hi)) {
          const float nlo = (static_cast<float>(t.qmin) - zp[0]) * s[0];
          const float nhi = (static_cast<float>(t.qmax) - zp[0]) * s[0];
          if (clip.has_attr("min")) clip.set_attr(ir::attr_float("min", nlo));
          if (clip.has_attr("max")) clip.set_attr(ir::attr_float("max", nhi));
          if (clip.has_input(1)) g.set_initializer(clip.inputs[1], Tensor::scalar<float>(nlo));
          if (clip.has_input(2)) g.set_initializer(clip.inputs[2], Tensor::scalar<float>(nhi));
        }
      }
    }
    scale_of[dq.outputs[0]] = std::move(s);
  }
  // Biases: int32 at s_x * s_w of the layer that reads them.
  std::map<std::string, std::vector<size_t>> consumers = consumers_of(g);
  for (const auto& t : qat.tensors) {
    if (t.kind != QatTensor::Kind::kBias) continue;
    ir::Node& dq = g.nodes[by_name.at(t.dq_node)];
    auto cs = consumers.find(dq.outputs[0]);
    if (cs == consumers.end() || cs->second.size() != 1)
      return unsupported(dq.describe() + ": QAT export needs the bias read by one layer");
    const ir::Node& layer = g.nodes[cs->second[0]];
    auto sx = layer.inputs.size() >= 2 ? scale_of.find(layer.inputs[0]) : scale_of.end();
    auto sw = layer.inputs.size() >= 2 ? scale_of.find(layer.inputs[1]) : scale_of.end();
    if (sx == scale_of.end() || sw == scale_of.end() || sx->second.size() != 1)
      return unsupported(layer.describe() + ": int32 bias without a quantized input and weight");
    QTK_ASSIGN_OR_RETURN(Tensor b, trained_tensor(t.value));
    const Tensor& old = *g.find_initializer(dq.inputs[0]);
    if (b.numel() != old.numel() || (sw->second.size() != 1 && static_cast<int64_t>(sw->second.size()) != b.numel()))
      return invalid_argument(dq.describe() + ": bias and weight scales differ in size");
    Tensor codes(DType::kInt32, old.shape());
    std::vector<float> sb(static_cast<size_t>(b.numel()));
    for (int64_t k = 0; k < b.numel(); ++k) {
      const float s = sx->second[0] * sw->second[sw->second.size() == 1 ? 0 : k];
      const double v = std::nearbyint(static_cast<double>(b.data<float>()[k]) / s);
      codes.data<int32_t>()[k] = static_cast<int32_t>(std::clamp<double>(v, INT32_MIN + 1.0, INT32_MAX));
      sb[k] = s;
    }
    g.set_initializer(dq.inputs[0], codes);
    g.set_initializer(dq.inputs[1], float_tensor(sb, g.find_initializer(dq.inputs[1])->shape()));
  }
  return out;
}

}  // namespace qtk::train
