#include "quant/graph/qdq_writer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_map>

#include "quant/graph/opset_upgrade.h"
#include "quant/graph/weight_quantizer.h"
#include "quant/schemes/linear.h"

namespace qtk::quant {

namespace {

// The same values under a 4-bit type: 4-bit tensors are held one value per
// byte, so codes in an int8/uint8 container carry over unchanged.
Tensor retyped(const Tensor& codes, DType type) {
  Tensor t(type, codes.shape());
  if (codes.nbytes()) std::memcpy(t.raw(), codes.raw(), codes.nbytes());
  return t;
}

class QdqWriter {
 public:
  QdqWriter(ir::Model& m, const QuantPlan& plan, const QuantConfig& c, QuantReport& r)
      : m_(m), g_(m.graph), plan_(plan), c_(c), report_(r) {}

  std::string unique(const std::string& base) {
    std::string name = base;
    for (int k = 1; taken(name); ++k) name = base + "_" + std::to_string(k);
    names_.insert(name);
    return name;
  }

  ir::Node& add_node(const std::string& op, std::vector<std::string> in, std::vector<std::string> out,
                     const std::string& base) {
    ir::Node n;
    n.op_type = op;
    n.name = unique(base);
    n.inputs = std::move(in);
    n.outputs = std::move(out);
    new_nodes_.push_back(std::move(n));
    return new_nodes_.back();
  }

  void add_initializer(const std::string& name, Tensor t) {
    names_.insert(name);
    g_.set_initializer(name, std::move(t));
  }

  // Bias correction: the rounding of W shifts each output channel's mean by
  // sum_k (W - Wq)[m, k] E[x_k]; add that back into the bias.
  bool correct_bias(ir::Node& node, const WeightUse& use, const Tensor& w, const Tensor& dq,
                    const std::vector<float>& mean) {
    if (static_cast<int64_t>(mean.size()) != w.dim(use.reduction_axis)) return false;
    const int64_t m = w.dim(use.channel_axis);
    const auto ch = ParamLayout::per_axis(w.shape(), use.channel_axis);
    const auto k = ParamLayout::per_axis(w.shape(), use.reduction_axis);
    std::vector<double> delta(static_cast<size_t>(m), 0.0);
    for (int64_t i = 0; i < w.numel(); ++i)
      delta[ch.index_of(i)] += (static_cast<double>(w.data<float>()[i]) - dq.data<float>()[i]) * mean[k.index_of(i)];
    return add_to_bias(node, std::vector<float>(delta.begin(), delta.end()));
  }

  // Adds delta (one value per output channel) to the node's bias, creating
  // one if it has none; false where the bias is not a plain vector.
  bool add_to_bias(ir::Node& node, const std::vector<float>& delta) {
    if (node.op_type != "Conv" && node.op_type != "Gemm") return false;
    if (node.op_type == "Gemm" && (node.attr_float("beta", 1.f) != 1.f || node.attr_float("alpha", 1.f) != 1.f))
      return false;
    const int64_t m = static_cast<int64_t>(delta.size());
    Tensor bias(DType::kFloat32, {m});
    std::string base = node.name + "_bias";
    if (node.has_input(2)) {
      const Tensor* old = g_.find_initializer(node.inputs[2]);
      if (!old || old->dtype() != DType::kFloat32 || old->numel() != m || old->rank() != 1) return false;
      bias = old->clone();
      base = node.inputs[2];
    }
    for (int64_t i = 0; i < m; ++i) bias.data<float>()[i] += delta[i];
    const std::string name = unique(base + "_corrected");
    add_initializer(name, bias);
    if (node.inputs.size() < 3) node.inputs.resize(3);
    node.inputs[2] = name;
    return true;
  }

  Status weights(const QuantPlan& plan, const std::map<std::string, std::vector<float>>& importance,
                 const std::map<std::string, std::vector<float>>& input_mean, const AlgoWeights& algo) {
    std::unordered_map<std::string, std::string> done;  // weight name -> replacement
    for (const auto& use : plan.weights) {
      ir::Node& node = g_.nodes[use.node];
      const std::string w = node.inputs[use.input];
      if (auto it = done.find(w); it != done.end()) {
        node.inputs[use.input] = it->second;
        continue;
      }
      const Tensor& wt = *g_.find_initializer(w);
      TensorQuantReport rep;
      rep.tensor = w;
      rep.node = node.name;
      rep.op_type = node.op_type;
      rep.kind = "weight";
      std::string replacement;
      if (c_.fp16_weights) {
        Tensor h(DType::kFloat16, wt.shape());
        Tensor back(DType::kFloat32, wt.shape());
        for (int64_t i = 0; i < wt.numel(); ++i) {
          h.data<uint16_t>()[i] = float_to_half(wt.data<float>()[i]);
          back.data<float>()[i] = half_to_float(h.data<uint16_t>()[i]);
        }
        const std::string stored = unique(w + "_fp16");
        add_initializer(stored, h);
        replacement = unique(w + "_float");
        add_node("Cast", {stored}, {replacement}, w + "_cast").set_attr(ir::attr_int("to", 1));
        rep.scheme = "fp16";
        rep.sqnr_db = sqnr_db(wt.data<float>(), back.data<float>(), wt.numel());
      } else {
        Expected<QuantizedWeight> q = internal_error("unset");
        const auto by_algo = algo.find(w);
        if (by_algo != algo.end()) {
          // GPTQ / AdaRound chose the codes; their bias correction also
          // covers the mean shift of the quantized layers before.
          q = by_algo->second.q;
          rep.method = by_algo->second.method;
          rep.method_seconds = by_algo->second.seconds;
          rep.scheme = q->scheme + " " + rep.method;
          if (!by_algo->second.bias_delta.empty() && add_to_bias(node, by_algo->second.bias_delta))
            rep.scheme += " bias-corrected";
        } else {
          auto imp = importance.find(node.inputs[0]);
          QuantConfig layer = c_;  // this node's weight format (layer_precision)
          layer.weight_format = use.format;
          if (use.per_tensor) layer.granularity = Granularity::kPerTensor;
          q = quantize_weight(wt, use.channel_axis, use.reduction_axis, layer,
                              imp == importance.end() ? nullptr : &imp->second);
          if (!q.ok()) return q.status().with_context(node.describe() + " weight '" + w + "'");
          rep.method = "rtn";
          rep.scheme = q->scheme;
          if (auto mean = input_mean.find(node.inputs[0]); mean != input_mean.end())
            if (correct_bias(node, use, wt, q->dequantized, mean->second)) rep.scheme += " bias-corrected";
        }
        rep.sqnr_db = q->sqnr_db;
        const auto s = q->scale.to_float_vector();
        const auto z = q->zero_point.to_int64_vector();
        rep.scale_min = *std::min_element(s.begin(), s.end());
        rep.scale_max = *std::max_element(s.begin(), s.end());
        rep.zero_point_min = *std::min_element(z.begin(), z.end());
        rep.zero_point_max = *std::max_element(z.begin(), z.end());
        if (c_.mapping == Mapping::kLog2) {
          // No standard op dequantizes power-of-two codes: store the levels
          // themselves (exact in float) so any runtime computes the same.
          replacement = unique(w + "_log2");
          add_initializer(replacement, q->dequantized);
        } else {
          const std::string qn = unique(w + "_quantized"), sn = unique(w + "_scale"), zn = unique(w + "_zero_point");
          const DType packed = traits(use.format).onnx_type;
          const bool four_bit = c_.int4_types && (packed == DType::kInt4 || packed == DType::kUInt4);
          add_initializer(qn, four_bit ? retyped(q->codes, packed) : q->codes);
          add_initializer(sn, q->scale);
          add_initializer(zn, four_bit ? retyped(q->zero_point, packed) : q->zero_point);
          if (four_bit) needs_opset21_ = true;
          replacement = unique(w + "_dequantized");
          ir::Node& dq = add_node("DequantizeLinear", {qn, sn, zn}, {replacement}, w + "_DequantizeLinear");
          if (q->layout.count > 1) dq.set_attr(ir::attr_int("axis", q->axis));
          if (q->layout.block > 0) {
            dq.set_attr(ir::attr_int("block_size", q->layout.block));
            needs_opset21_ = true;
          }
          weight_scales_[w] = s;
        }
      }
      done[w] = replacement;
      node.inputs[use.input] = replacement;
      report_.tensors.push_back(rep);
    }
    return Status::Ok();
  }

  QFormat format_of(const std::string& t) const { return activation_format_of(plan_, c_, t); }

  QParams activation_params(const std::string& t, const ActivationRanges& ranges) const {
    auto it = ranges.find(t);
    return qparams_linear(it->second.min, it->second.max, format_of(t), c_.activation_symmetric);
  }

  // The type a static activation's codes are stored in: the format's own
  // (8/16 bits; INT4/UINT4 with int4_types, opset 21), else the 8-bit container.
  DType activation_storage(QFormat f) const {
    const auto& t = traits(f);
    if (t.bits >= 8) return t.onnx_type;
    if (c_.int4_types && (t.onnx_type == DType::kInt4 || t.onnx_type == DType::kUInt4)) return t.onnx_type;
    return t.container;
  }

  // Whether `name` holds only values already on its grid: a data-movement
  // output whose source is quantized in the same format and range.
  bool on_grid(const std::string& name, const ActivationRanges& ranges) const {
    auto src = plan_.same_range.find(name);
    if (src == plan_.same_range.end()) return false;
    const std::string& from = src->second;
    if (!plan_.activations.count(from) || g_.is_graph_output(from) || !ranges.count(from)) return false;
    if (format_of(from) != format_of(name)) return false;
    const auto a = ranges.at(from), b = ranges.at(name);
    return a.min == b.min && a.max == b.max;
  }

  // x clamped to the codes [qmin, qmax] of a format narrower than its 8-bit
  // container: Q then saturates only at the container's limits. Clip(x, lo, hi)
  // in float with lo/hi on the grid gives exactly clamp(Q(x), qmin, qmax); the
  // QOperator rewrite folds it into the producer's output range.
  std::string clamp_to_format(const std::string& name, const QParams& p, QFormat f) {
    const auto& t = traits(f);
    const float lo = static_cast<float>(t.qmin - p.zero_point) * p.scale;
    const float hi = static_cast<float>(t.qmax - p.zero_point) * p.scale;
    const std::string out = unique(name + "_clamped");
    if (m_.opset() < 11) {
      ir::Node& n = add_node("Clip", {name}, {out}, name + "_Clip");
      n.set_attr(ir::attr_float("min", lo));
      n.set_attr(ir::attr_float("max", hi));
    } else {
      const std::string ln = unique(name + "_clip_min"), hn = unique(name + "_clip_max");
      add_initializer(ln, Tensor::scalar<float>(lo));
      add_initializer(hn, Tensor::scalar<float>(hi));
      add_node("Clip", {name, ln, hn}, {out}, name + "_Clip");
    }
    return out;
  }

  Status biases(const QuantPlan& plan, const ActivationRanges& ranges) {
    for (const auto& b : plan.biases) {
      ir::Node& node = g_.nodes[b.node];
      auto ws = weight_scales_.find(b.weight);
      if (ws == weight_scales_.end() || c_.granularity == Granularity::kPerGroup) continue;  // stays float
      if (!ranges.count(b.activation) || !node.has_input(b.input)) continue;
      const std::string bn = node.inputs[b.input];
      if (!g_.find_initializer(bn)) continue;
      const Tensor& bias = *g_.find_initializer(bn);
      const int64_t n = bias.numel();
      if (n == 0) continue;
      if (ws->second.size() != 1 && static_cast<int64_t>(ws->second.size()) != n) continue;
      const float s_in = activation_params(b.activation, ranges).scale;
      Tensor q(DType::kInt32, {n}), scale(DType::kFloat32, {n}), zp(DType::kInt32, {n});
      std::vector<float> back(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        const float s = s_in * ws->second[ws->second.size() == 1 ? 0 : i];
        const double v = std::nearbyint(static_cast<double>(bias.data<float>()[i]) / s);
        q.data<int32_t>()[i] = static_cast<int32_t>(std::clamp<double>(v, INT32_MIN + 1.0, INT32_MAX));
        scale.data<float>()[i] = s;
        back[i] = static_cast<float>(q.data<int32_t>()[i]) * s;
      }
      const std::string qn = unique(bn + "_quantized"), sn = unique(bn + "_scale"), zn = unique(bn + "_zero_point");
      add_initializer(qn, q);
      // One weight scale: one bias scale, a scalar (DequantizeLinear before
      // opset 13 has no axis and takes only scalars).
      const bool per_tensor = ws->second.size() == 1;
      add_initializer(sn, per_tensor ? Tensor::scalar<float>(scale.data<float>()[0]) : scale);
      add_initializer(zn, per_tensor ? Tensor::scalar<int32_t>(0) : zp);
      const std::string out = unique(bn + "_dequantized");
      ir::Node& dq = add_node("DequantizeLinear", {qn, sn, zn}, {out}, bn + "_DequantizeLinear");
      if (!per_tensor) dq.set_attr(ir::attr_int("axis", 0));
      node.inputs[b.input] = out;
      TensorQuantReport rep;
      rep.tensor = bn;
      rep.node = node.name;
      rep.op_type = node.op_type;
      rep.kind = "bias";
      rep.scheme = "int32 scale=s_in*s_w";
      rep.scale_min = *std::min_element(scale.data<float>(), scale.data<float>() + n);
      rep.scale_max = *std::max_element(scale.data<float>(), scale.data<float>() + n);
      rep.sqnr_db = sqnr_db(bias.data<float>(), back.data(), n);
      report_.tensors.push_back(rep);
    }
    return Status::Ok();
  }

  void activations(const QuantPlan& plan, const ActivationRanges& ranges, const std::map<std::string, Tensor>& samples) {
    const bool dynamic = c_.activations == ActivationMode::kDynamic;
    for (const auto& name : plan.activations) {
      if (g_.is_graph_output(name)) continue;  // graph outputs stay float
      if (!dynamic && !ranges.count(name)) continue;
      const std::string dq_out = unique(name + "_dequantized");
      if (dynamic) {
        const std::string q = unique(name + "_quantized"), s = unique(name + "_scale"), z = unique(name + "_zero_point");
        add_node("DynamicQuantizeLinear", {name}, {q, s, z}, name + "_DynamicQuantizeLinear");
        add_node("DequantizeLinear", {q, s, z}, {dq_out}, name + "_DequantizeLinear");
      } else {
        const QFormat f = format_of(name);
        const auto& t = traits(f);
        const QParams p = activation_params(name, ranges);
        const std::string sn = unique(name + "_scale"), zn = unique(name + "_zero_point"), q = unique(name + "_quantized");
        add_initializer(sn, Tensor::scalar<float>(p.scale));
        DType storage = activation_storage(f);
        // Data movement of 4-bit values (MaxPool, Flatten, ...) is re-quantized
        // into the 8-bit container: same codes, and ONNX Runtime then does not
        // move the op onto the 4-bit tensor (it has no 4-bit MaxPool).
        if ((storage == DType::kInt4 || storage == DType::kUInt4) && on_grid(name, ranges)) storage = t.container;
        Tensor zp(storage, {});
        switch (storage) {
          case DType::kUInt8: case DType::kUInt4: zp.data<uint8_t>()[0] = static_cast<uint8_t>(p.zero_point); break;
          case DType::kInt8: case DType::kInt4: zp.data<int8_t>()[0] = static_cast<int8_t>(p.zero_point); break;
          case DType::kUInt16: zp.data<uint16_t>()[0] = static_cast<uint16_t>(p.zero_point); break;
          case DType::kInt16: zp.data<int16_t>()[0] = static_cast<int16_t>(p.zero_point); break;
          default: break;
        }
        // QuantizeLinear / DequantizeLinear take 4- and 16-bit types from opset 21.
        if (storage == DType::kInt4 || storage == DType::kUInt4 || storage == DType::kInt16 ||
            storage == DType::kUInt16)
          needs_opset21_ = true;
        const bool in_container = storage == t.container && t.bits < 8;
        add_initializer(zn, zp);
        const std::string q_in = in_container && !on_grid(name, ranges) ? clamp_to_format(name, p, f) : name;
        add_node("QuantizeLinear", {q_in, sn, zn}, {q}, name + "_QuantizeLinear");
        add_node("DequantizeLinear", {q, sn, zn}, {dq_out}, name + "_DequantizeLinear");
        TensorQuantReport rep;
        rep.tensor = name;
        rep.kind = "activation";
        rep.scheme = std::string(t.name) + (c_.activation_symmetric ? " sym" : " asym") + " per-tensor";
        if (in_container) rep.scheme += std::string(" in ") + dtype_name(storage);
        rep.scale_min = rep.scale_max = p.scale;
        rep.zero_point_min = rep.zero_point_max = p.zero_point;
        rep.range_min = ranges.at(name).min;
        rep.range_max = ranges.at(name).max;
        for (const auto& n : g_.nodes)
          for (const auto& o : n.outputs)
            if (o == name) {
              rep.node = n.name;
              rep.op_type = n.op_type;
            }
        if (auto it = samples.find(name); it != samples.end()) {
          const Tensor& x = it->second;
          std::vector<float> y(static_cast<size_t>(x.numel()));
          for (int64_t i = 0; i < x.numel(); ++i)
            y[i] = (quantize_value_linear(x.data<float>()[i], p, f) - p.zero_point) * p.scale;
          rep.sqnr_db = sqnr_db(x.data<float>(), y.data(), x.numel());
        }
        report_.tensors.push_back(rep);
      }
      // Every original reader now reads the dequantized value.
      for (auto& n : g_.nodes)
        for (auto& in : n.inputs)
          if (in == name) in = dq_out;
    }
  }

  Status finish() {
    for (auto& n : new_nodes_) g_.nodes.push_back(std::move(n));
    new_nodes_.clear();
    // 4-bit types and blocked DequantizeLinear need opset 21, per-axis
    // DequantizeLinear 13; per-tensor 8-bit QDQ is valid from opset 10.
    const auto name = [this](const std::string& base) { return unique(base); };
    if (needs_opset21_) QTK_RETURN_IF_ERROR(upgrade_opset(m_, 21, name));
    else if (m_.opset() < 13 && c_.granularity != Granularity::kPerTensor)
      QTK_RETURN_IF_ERROR(upgrade_opset(m_, 13, name).with_context(
          "per-channel quantization needs opset 13 (--granularity tensor keeps the model's opset)"));
    return ir::topological_sort(g_);
  }

 private:
  bool taken(const std::string& n) {
    if (names_.empty()) collect_names(g_);
    return names_.count(n) > 0;
  }

  // Every name in g and in the If/Loop/Scan bodies inside it: a name added at
  // the top (or in a body, by the opset upgrade) must not shadow one there.
  void collect_names(const ir::Graph& g) {
    for (const auto& [k, v] : g.initializers) names_.insert(k);
    for (const auto& v : g.inputs) names_.insert(v.name);
    for (const auto& v : g.outputs) names_.insert(v.name);
    for (const auto& nd : g.nodes) {
      names_.insert(nd.name);
      for (const auto& o : nd.outputs) names_.insert(o);
      for (const auto& a : nd.attrs) {
        if (a.g) collect_names(*a.g);
        for (const auto& body : a.graphs) collect_names(*body);
      }
    }
  }

  ir::Model& m_;
  ir::Graph& g_;
  const QuantPlan& plan_;
  const QuantConfig& c_;
  QuantReport& report_;
  std::vector<ir::Node> new_nodes_;
  std::set<std::string> names_;
  std::unordered_map<std::string, std::vector<float>> weight_scales_;
  bool needs_opset21_ = false;
};

}  // namespace

Status write_qdq(ir::Model& m, const QuantPlan& plan, const CalibrationFacts& facts, const QuantConfig& config,
                 QuantReport& report) {
  QdqWriter w(m, plan, config, report);
  QTK_RETURN_IF_ERROR(w.weights(plan, facts.importance, facts.input_mean, facts.algo_weights));
  if (config.activations == ActivationMode::kStatic) QTK_RETURN_IF_ERROR(w.biases(plan, facts.ranges));
  if (config.activations != ActivationMode::kWeightOnly) w.activations(plan, facts.ranges, facts.samples);
  return w.finish();
}

}  // namespace qtk::quant
