#include "quant/graph/qoperator_writer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "ir/passes.h"
#include "quant/graph/matmul_nbits_writer.h"

namespace qtk::quant {

namespace {

// Ops that move values without computing on them: between a DQ and a Q with
// the same parameters they run on the quantized tensor itself (where ONNX
// Runtime has a kernel for it: rewrite_data_movement).
const std::set<std::string> kMovesCodes = {"MaxPool", "Reshape",   "Flatten",      "Transpose",
                                           "Squeeze", "Unsqueeze", "DepthToSpace", "SpaceToDepth"};

constexpr const char* kMsDomain = "com.microsoft";

int32_t qmin_of(DType t) { return t == DType::kUInt8 ? 0 : -128; }
int32_t qmax_of(DType t) { return t == DType::kUInt8 ? 255 : 127; }


Tensor scalar_of(DType t, int64_t v) {
  Tensor s(t, {});
  switch (t) {
    case DType::kUInt8: s.data<uint8_t>()[0] = static_cast<uint8_t>(v); break;
    case DType::kInt8: s.data<int8_t>()[0] = static_cast<int8_t>(v); break;
    case DType::kInt32: s.data<int32_t>()[0] = static_cast<int32_t>(v); break;
    default: break;
  }
  return s;
}

// A quantized tensor as a DequantizeLinear reads it or a QuantizeLinear writes it.
struct QTensor {
  std::string q;      // the integer tensor
  std::string scale;  // its scale
  std::string zp;     // its zero point; "" when absent (0)
  DType dtype = DType::kUndefined;
  const Tensor* scale_t = nullptr;  // set when the scale is an initializer
  const Tensor* zp_t = nullptr;     // set when the zero point is an initializer
  int64_t axis = 1;                 // DQ axis attribute (per-axis parameters)

  bool const_params() const { return scale_t && (zp.empty() || zp_t); }
  int64_t count() const { return scale_t ? scale_t->numel() : 1; }  // runtime parameters are scalars
  float scale_at(int64_t i) const { return scale_t->data<float>()[scale_t->numel() == 1 ? 0 : i]; }
  int64_t zp_at(int64_t i) const { return zp_t ? zp_t->get_as_int64(zp_t->numel() == 1 ? 0 : i) : 0; }
};

// Same dtype and the same scale / zero point values (both constant).
bool same_params(const QTensor& a, const QTensor& b) {
  if (!a.const_params() || !b.const_params() || a.dtype != b.dtype || a.count() != b.count()) return false;
  if (a.count() > 1 && a.axis != b.axis) return false;
  for (int64_t i = 0; i < a.count(); ++i)
    if (a.scale_at(i) != b.scale_at(i) || a.zp_at(i) != b.zp_at(i)) return false;
  return true;
}

// The Relu / Clip folded into a pattern's output range, as output codes.
struct OutputPlan {
  QTensor y;                  // from the QuantizeLinear: y.q is its output
  std::vector<size_t> nodes;  // the activation (if any) and the Q: replaced with the anchor
  int32_t lo = 0, hi = 0;     // clamp asked for by the activation
  bool folded = false;        // an activation was folded
  bool clip = false;          // ... and needs an integer Clip node
};

class Rewriter {
 public:
  Rewriter(ir::Model& m, const QOperatorOptions& o) : m_(m), g_(m.graph), opt_(o), names_(m.graph) {}

  Status run() {
    QTK_RETURN_IF_ERROR(ir::topological_sort(g_));
    remove_dq_q_pairs();
    index();
    const size_t n = g_.nodes.size();
    removed_.assign(n, false);
    replacement_.assign(n, {});
    for (const auto& node : g_.nodes) node_names_.insert(node.name);
    for (size_t i = 0; i < n; ++i) {
      if (removed_[i] || !ir::is_default_domain(g_.nodes[i].domain)) continue;
      rewrite(i);
    }
    // The indexes view the nodes' strings, which move below: drop them now
    // (also the build's peak memory: they are the rewrite's largest temporaries).
    drop_index();
    node_names_ = {};
    owned_names_ = {};
    std::vector<ir::Node> nodes;
    nodes.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      for (auto& r : replacement_[i]) nodes.push_back(std::move(r));
      if (!removed_[i]) nodes.push_back(std::move(g_.nodes[i]));
    }
    g_.nodes = std::move(nodes);
    if (used_contrib_ && m_.opset(kMsDomain) == 0) m_.opsets.push_back({kMsDomain, 1});
    QTK_RETURN_IF_ERROR(ir::topological_sort(g_));
    QTK_RETURN_IF_ERROR(ir::remove_dead_nodes(m_).status());
    QTK_RETURN_IF_ERROR(ir::topological_sort(g_));
    if (opt_.stats) *opt_.stats = stats_;
    return Status::Ok();
  }

 private:
  // ---- graph queries ----

  // Who writes and who reads each value. Keys view the graph's own strings
  // (copies of every name were most of a session build's temporary memory):
  // g_.nodes must not change while they are used. With readers = false only
  // the producers (keyed by node outputs, which renaming reads leaves alone).
  void index(bool readers = true) {
    drop_index();
    for (size_t i = 0; i < g_.nodes.size(); ++i)
      for (const auto& o : g_.nodes[i].outputs)
        if (!o.empty()) producer_[o] = i;
    if (!readers) return;
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      const ir::Node& node = g_.nodes[i];
      for (const auto& in : node.inputs)
        if (!in.empty()) {
          readers_[in].push_back(i);
          ++reads_[in];
        }
      for (const auto& a : node.attrs) {  // a subgraph's reads of this graph's values
        if (a.g) count_free_variables(*a.g);
        for (const auto& sg : a.graphs)
          if (sg) count_free_variables(*sg);
      }
    }
    for (const auto& o : g_.outputs) ++reads_[o.name];
  }

  void count_free_variables(const ir::Graph& sub) {
    for (auto& v : ir::free_variables(sub)) ++reads_[owned_names_.emplace_back(std::move(v))];
  }

  void drop_index() {
    producer_ = {};
    readers_ = {};
    reads_ = {};
  }

  const ir::Node* producer(const std::string& name) const {
    auto it = producer_.find(name);
    return it == producer_.end() ? nullptr : &g_.nodes[it->second];
  }

  // The one node reading `name`, when exactly one reads it (and it is no graph output).
  std::optional<size_t> only_reader(const std::string& name) const {
    auto r = reads_.find(name);
    auto it = readers_.find(name);
    if (r == reads_.end() || r->second != 1 || it == readers_.end() || it->second.size() != 1) return std::nullopt;
    if (g_.is_graph_output(name) || removed_[it->second[0]]) return std::nullopt;
    return it->second[0];
  }

  static bool is_op(const ir::Node& n, const char* op) { return n.op_type == op && ir::is_default_domain(n.domain); }

  // Element type of an integer tensor, from wherever the graph says it.
  DType value_dtype(const std::string& name) const {
    if (name.empty()) return DType::kUndefined;
    if (const Tensor* t = g_.find_initializer(name)) return t->dtype();
    if (const ir::Node* p = producer(name)) {
      if (is_op(*p, "DynamicQuantizeLinear") && (p->outputs[0] == name || (p->outputs.size() > 2 && p->outputs[2] == name)))
        return DType::kUInt8;
      if (is_op(*p, "QuantizeLinear")) {
        if (p->has_input(2)) return value_dtype(p->inputs[2]);
        const int64_t od = p->attr_int("output_dtype", 0);
        return od != 0 ? static_cast<DType>(od) : DType::kUInt8;
      }
    }
    if (const ir::ValueInfo* v = g_.find_value_info(name)) return v->dtype;
    return DType::kUndefined;
  }

  // `name` as the output of a DequantizeLinear of an 8-bit tensor, with
  // constant parameters or DynamicQuantizeLinear's runtime scalars.
  std::optional<QTensor> dq_input(const std::string& name) const {
    const ir::Node* d = producer(name);
    if (!d || !is_op(*d, "DequantizeLinear") || !d->has_input(0) || !d->has_input(1)) return std::nullopt;
    if (d->attr_int("block_size", 0) != 0) return std::nullopt;
    QTensor t;
    t.q = d->inputs[0];
    t.scale = d->inputs[1];
    t.zp = d->has_input(2) ? d->inputs[2] : "";
    t.axis = d->attr_int("axis", 1);
    t.scale_t = g_.find_initializer(t.scale);
    t.zp_t = t.zp.empty() ? nullptr : g_.find_initializer(t.zp);
    t.dtype = t.zp.empty() ? value_dtype(t.q) : value_dtype(t.zp);
    if (!is_8bit(t.dtype)) return std::nullopt;
    if (t.scale_t) {
      if (t.scale_t->dtype() != DType::kFloat32 || t.scale_t->numel() < 1 || t.scale_t->rank() > 1) return std::nullopt;
      if (!t.zp.empty() && (!t.zp_t || t.zp_t->numel() != t.scale_t->numel())) return std::nullopt;
      return t;
    }
    const ir::Node* s = producer(t.scale);
    if (!s || !is_op(*s, "DynamicQuantizeLinear") || s->outputs.size() < 3 || s->outputs[1] != t.scale ||
        t.zp != s->outputs[2] || t.q != s->outputs[0])
      return std::nullopt;
    return t;
  }

  std::optional<QTensor> dq_activation(const std::string& name) const {
    auto t = dq_input(name);
    if (!t || t->count() != 1) return std::nullopt;
    return t;
  }

  // A DQ of a constant weight, per tensor or per `channel_axis`.
  std::optional<QTensor> dq_weight(const std::string& name, int channel_axis) const {
    auto t = dq_input(name);
    if (!t || !t->const_params()) return std::nullopt;
    const Tensor* q = g_.find_initializer(t->q);
    if (!q || q->rank() <= channel_axis) return std::nullopt;
    if (t->count() == 1) return t;
    const int64_t axis = t->axis < 0 ? t->axis + q->rank() : t->axis;
    if (axis != channel_axis || t->count() != q->dim(channel_axis)) return std::nullopt;
    return t;
  }

  // Values of a constant float tensor: a float32 initializer, or a DQ of
  // constants (per tensor, or per axis of a 1-D tensor).
  std::optional<std::vector<float>> const_float_values(const std::string& name) const {
    if (const Tensor* t = g_.find_initializer(name)) {
      if (t->dtype() != DType::kFloat32) return std::nullopt;
      return std::vector<float>(t->data<float>(), t->data<float>() + t->numel());
    }
    const ir::Node* d = producer(name);
    if (!d || !is_op(*d, "DequantizeLinear") || !d->has_input(0) || !d->has_input(1)) return std::nullopt;
    const Tensor* q = g_.find_initializer(d->inputs[0]);
    const Tensor* s = g_.find_initializer(d->inputs[1]);
    const Tensor* z = d->has_input(2) ? g_.find_initializer(d->inputs[2]) : nullptr;
    if (!q || !s || s->dtype() != DType::kFloat32 || (d->has_input(2) && !z) || d->attr_int("block_size", 0) != 0)
      return std::nullopt;
    if (s->numel() != 1 && (q->rank() != 1 || s->numel() != q->numel())) return std::nullopt;
    if (z && z->numel() != s->numel()) return std::nullopt;
    std::vector<float> v(static_cast<size_t>(q->numel()));
    for (int64_t i = 0; i < q->numel(); ++i) {
      const int64_t c = s->numel() == 1 ? 0 : i;
      const int64_t zp = z ? z->get_as_int64(c) : 0;
      v[i] = static_cast<float>(q->get_as_int64(i) - zp) * s->data<float>()[c];  // as DequantizeLinear computes
    }
    return v;
  }

  // Output code of the float value v under y's (constant, per-tensor) parameters.
  static std::optional<int32_t> code_of(float v, const QTensor& y) {
    const float t = std::nearbyint(v / y.scale_at(0));
    if (std::isnan(t)) return std::nullopt;
    const double c = static_cast<double>(t) + static_cast<double>(y.zp_at(0));
    return static_cast<int32_t>(std::clamp<double>(c, qmin_of(y.dtype), qmax_of(y.dtype)));
  }

  // Bounds of a Relu / Clip as float values (±inf where unbounded).
  std::optional<std::pair<float, float>> activation_bounds(const ir::Node& a) const {
    const float inf = std::numeric_limits<float>::infinity();
    if (a.op_type == "Relu") return std::make_pair(0.f, inf);
    std::pair<float, float> b{-inf, inf};
    if (m_.opset() < 11) {
      if (a.has_attr("min")) b.first = a.attr_float("min", -inf);
      if (a.has_attr("max")) b.second = a.attr_float("max", inf);
      return b;
    }
    for (int k = 1; k <= 2; ++k) {
      if (!a.has_input(k)) continue;
      const Tensor* t = g_.find_initializer(a.inputs[k]);
      if (!t || t->dtype() != DType::kFloat32 || t->numel() != 1) return std::nullopt;
      (k == 1 ? b.first : b.second) = t->data<float>()[0];
    }
    return b;
  }

  // anchor → [Relu | Clip] → QuantizeLinear (per tensor, constant parameters, 8-bit).
  std::optional<OutputPlan> quantized_output(size_t anchor) const {
    const ir::Node& n = g_.nodes[anchor];
    if (n.outputs.empty() || n.outputs[0].empty()) return std::nullopt;
    for (size_t k = 1; k < n.outputs.size(); ++k)
      if (!n.outputs[k].empty()) return std::nullopt;
    auto next = only_reader(n.outputs[0]);
    if (!next) return std::nullopt;
    OutputPlan p;
    // Up to two: a Relu/Clip of the model, then the Clip that clamps a
    // narrow format held in 8 bits (qdq_writer.cpp).
    std::vector<const ir::Node*> acts;
    std::string value = n.outputs[0];
    while (acts.size() < 2 && (is_op(g_.nodes[*next], "Relu") || is_op(g_.nodes[*next], "Clip"))) {
      const ir::Node* act = &g_.nodes[*next];
      p.nodes.push_back(*next);
      if (act->inputs.empty() || act->inputs[0] != value || act->outputs.size() != 1) return std::nullopt;
      acts.push_back(act);
      value = act->outputs[0];
      next = only_reader(value);
      if (!next) return std::nullopt;
    }
    const ir::Node& q = g_.nodes[*next];
    if (!is_op(q, "QuantizeLinear") || q.inputs[0] != value || !q.has_input(1) || q.outputs.size() != 1)
      return std::nullopt;
    p.nodes.push_back(*next);
    QTensor& y = p.y;
    y.q = q.outputs[0];
    y.scale = q.inputs[1];
    y.zp = q.has_input(2) ? q.inputs[2] : "";
    y.scale_t = g_.find_initializer(y.scale);
    y.zp_t = y.zp.empty() ? nullptr : g_.find_initializer(y.zp);
    if (!y.scale_t || y.scale_t->dtype() != DType::kFloat32 || y.scale_t->numel() != 1) return std::nullopt;
    if (!y.zp.empty() && (!y.zp_t || y.zp_t->numel() != 1)) return std::nullopt;
    y.dtype = value_dtype(y.q);
    if (!is_8bit(y.dtype) || !(y.scale_at(0) > 0.f)) return std::nullopt;
    p.lo = qmin_of(y.dtype);
    p.hi = qmax_of(y.dtype);
    if (!acts.empty()) {
      std::pair<float, float> both{-std::numeric_limits<float>::infinity(), std::numeric_limits<float>::infinity()};
      for (const ir::Node* act : acts) {
        auto bounds = activation_bounds(*act);
        if (!bounds) return std::nullopt;
        both.first = std::max(both.first, bounds->first);
        both.second = std::min(both.second, bounds->second);
      }
      auto lo = code_of(both.first, y), hi = code_of(both.second, y);
      if (!lo || !hi || *lo > *hi) return std::nullopt;
      p.folded = true;
      p.lo = *lo;
      p.hi = *hi;
      p.clip = p.lo > qmin_of(y.dtype) || p.hi < qmax_of(y.dtype);
      if (p.clip && m_.opset() < 12) return std::nullopt;  // integer Clip needs opset 12
    }
    return p;
  }

  // ---- emitting ----

  std::string fresh_node_name(const std::string& base) {
    std::string name = base;
    for (int k = 1; node_names_.count(name); ++k) name = base + "_" + std::to_string(k);
    node_names_.insert(owned_names_.emplace_back(name));
    return name;
  }

  ir::Node& emit(size_t anchor, const std::string& op, std::vector<std::string> in, std::vector<std::string> out,
                 const std::string& domain = "") {
    ir::Node n;
    n.op_type = op;
    n.domain = domain;
    const std::string& base = g_.nodes[anchor].name;
    n.name = fresh_node_name((base.empty() ? op : base) + "_" + op);
    n.inputs = std::move(in);
    n.outputs = std::move(out);
    if (domain == kMsDomain) used_contrib_ = true;
    replacement_[anchor].push_back(std::move(n));
    return replacement_[anchor].back();
  }

  std::string add_initializer(const std::string& base, Tensor t) {
    const std::string name = names_.fresh(base);
    g_.set_initializer(name, std::move(t));
    return name;
  }

  // The zero point's name, made (0 of t's dtype) when the DQ/Q had none.
  std::string zero_point(QTensor& t) {
    if (t.zp.empty()) t.zp = add_initializer(t.q + "_zero_point", scalar_of(t.dtype, 0));
    return t.zp;
  }

  // The zero point for ConvInteger / MatMulInteger: one scalar where every
  // channel has the same value (ONNX Runtime takes no per-channel zero point there).
  std::string integer_op_zero_point(QTensor& t) {
    if (t.zp.empty() || !t.zp_t || t.zp_t->numel() == 1) return t.zp;
    for (int64_t i = 1; i < t.zp_t->numel(); ++i)
      if (t.zp_at(i) != t.zp_at(0)) return t.zp;
    return add_initializer(t.zp + "_scalar", scalar_of(t.dtype, t.zp_at(0)));
  }

  // Name the integer op writes: y itself, or a temporary that an integer
  // Clip (the folded activation) then narrows into y.
  std::string output_target(size_t anchor, const OutputPlan& p, bool fused_clamp = false) {
    for (size_t k : p.nodes) removed_[k] = true;
    if (p.folded) ++stats_.activations_folded;
    if (!p.clip || fused_clamp) return p.y.q;
    ++stats_.integer_clips;
    const std::string pre = names_.fresh(p.y.q + "_unclipped");
    const std::string lo = add_initializer(p.y.q + "_clip_min", scalar_of(p.y.dtype, p.lo));
    const std::string hi = add_initializer(p.y.q + "_clip_max", scalar_of(p.y.dtype, p.hi));
    emit(anchor, "Clip", {pre, lo, hi}, {p.y.q});
    return pre;
  }

  // int32 bias for QLinearConv / QGemm with scale x_scale · w_scale[c]: the
  // DQ'd int32 itself when its scale already is that product, else the float
  // bias rounded onto that scale.
  std::optional<std::string> int32_bias(const std::string& b, const QTensor& x, const QTensor& w, int64_t n) {
    const float xs = x.scale_at(0);
    if (const ir::Node* d = producer(b); d && is_op(*d, "DequantizeLinear") && d->has_input(1)) {
      const Tensor* q = g_.find_initializer(d->inputs[0]);
      const Tensor* s = g_.find_initializer(d->inputs[1]);
      const Tensor* z = d->has_input(2) ? g_.find_initializer(d->inputs[2]) : nullptr;
      bool reuse = q && s && q->dtype() == DType::kInt32 && q->rank() == 1 && q->numel() == n &&
                   s->dtype() == DType::kFloat32 && (s->numel() == 1 || s->numel() == n) &&
                   (!d->has_input(2) || z) && d->attr_int("block_size", 0) == 0;
      for (int64_t c = 0; reuse && c < n; ++c) {
        const float want = xs * w.scale_at(w.count() == 1 ? 0 : c);
        reuse = s->data<float>()[s->numel() == 1 ? 0 : c] == want && (!z || z->get_as_int64(z->numel() == 1 ? 0 : c) == 0);
      }
      if (reuse) return d->inputs[0];
    }
    auto v = const_float_values(b);
    if (!v || static_cast<int64_t>(v->size()) != n) return std::nullopt;
    Tensor q(DType::kInt32, {n});
    for (int64_t c = 0; c < n; ++c) {
      const double s = static_cast<double>(xs) * w.scale_at(w.count() == 1 ? 0 : c);
      const double r = std::nearbyint(static_cast<double>((*v)[c]) / s);
      q.data<int32_t>()[c] = static_cast<int32_t>(std::clamp<double>(r, INT32_MIN + 1.0, INT32_MAX));
    }
    return add_initializer(b + "_int32", q);
  }

  // Float-output form: IntegerOp → Cast → Mul(x_scale · w_scale) [→ Add(bias)].
  // scale_shape: how w's per-channel scales broadcast over the output.
  void emit_integer_accumulate(size_t anchor, const std::string& op, std::vector<std::string> in, QTensor& x,
                               QTensor& w, const Shape& scale_shape, const std::optional<std::vector<float>>& bias,
                               const std::vector<ir::Attribute>& attrs) {
    const std::string y = g_.nodes[anchor].outputs[0];
    const std::string acc = names_.fresh(y + "_int32");
    ir::Node& op_node = emit(anchor, op, std::move(in), {acc});
    op_node.attrs = attrs;
    const std::string accf = names_.fresh(y + "_int32_float");
    emit(anchor, "Cast", {acc}, {accf}).set_attr(ir::attr_int("to", static_cast<int64_t>(DType::kFloat32)));
    const int64_t count = std::max(x.count(), w.count());
    const Shape shape = count == 1 ? Shape{} : scale_shape;
    std::string scale;
    if (x.scale_t && w.scale_t) {
      Tensor s(DType::kFloat32, shape);
      for (int64_t c = 0; c < count; ++c) s.data<float>()[c] = x.scale_at(c) * w.scale_at(c);
      scale = add_initializer(y + "_scale", s);
    } else {
      std::string ws = w.scale;
      if (w.scale_t && w.count() > 1) {
        Tensor s(DType::kFloat32, shape);
        for (int64_t c = 0; c < count; ++c) s.data<float>()[c] = w.scale_at(c);
        ws = add_initializer(w.scale + "_broadcast", s);
      }
      scale = names_.fresh(y + "_scale");
      emit(anchor, "Mul", {x.scale, ws}, {scale});
    }
    if (!bias) {
      emit(anchor, "Mul", {accf, scale}, {y});
    } else {
      const std::string unbiased = names_.fresh(y + "_unbiased");
      emit(anchor, "Mul", {accf, scale}, {unbiased});
      Tensor b(DType::kFloat32, bias->size() == 1 ? Shape{} : scale_shape);
      for (size_t c = 0; c < bias->size(); ++c) b.data<float>()[c] = (*bias)[c];
      emit(anchor, "Add", {unbiased, add_initializer(y + "_bias", b)}, {y});
    }
    ++stats_.integer_accumulate;
  }

  // Optional bias of a Conv / Gemm as constant floats (nullopt in .second
  // when absent); false when present but not constant or of the wrong size.
  bool float_bias(const ir::Node& n, int64_t count, std::optional<std::vector<float>>& out) const {
    out.reset();
    if (!n.has_input(2)) return true;
    out = const_float_values(n.inputs[2]);
    return out && (static_cast<int64_t>(out->size()) == count || out->size() == 1);
  }

  // ---- the rewrites ----

  void rewrite(size_t i) {
    const std::string& op = g_.nodes[i].op_type;
    if (op == "Conv") rewrite_conv(i);
    else if (op == "MatMul") rewrite_matmul(i);
    else if (op == "Gemm") rewrite_gemm(i);
    else if (op == "Add" || op == "Mul") rewrite_binary(i);
    else if (op == "GlobalAveragePool") rewrite_global_average_pool(i);
    else if (op == "Concat") rewrite_concat(i);
    else if (kMovesCodes.count(op))
      rewrite_data_movement(i);
  }

  void rewrite_conv(size_t i) {
    const ir::Node& n = g_.nodes[i];
    if (n.inputs.size() < 2) return;
    auto x = dq_activation(n.inputs[0]);
    auto w = dq_weight(n.inputs[1], 0);
    if (!x || !w) return;
    const Tensor& wq = *g_.find_initializer(w->q);
    if (wq.rank() < 3 || (opt_.max_conv_weight_rank > 0 && wq.rank() > opt_.max_conv_weight_rank)) return;
    const int64_t m = wq.dim(0);
    const std::vector<ir::Attribute> attrs = n.attrs;  // auto_pad, dilations, group, kernel_shape, pads, strides
    if (auto out = quantized_output(i)) {
      std::string bias;
      if (n.has_input(2)) {
        if (!x->scale_t) return;
        auto b = int32_bias(n.inputs[2], *x, *w, m);
        if (!b) return;
        bias = *b;
      }
      removed_[i] = true;
      const bool fuse = opt_.fuse_output_clamp && out->clip;
      const std::string target = output_target(i, *out, fuse);
      std::vector<std::string> in = {x->q, x->scale, zero_point(*x), w->q, w->scale, zero_point(*w),
                                     out->y.scale, zero_point(out->y)};
      if (!bias.empty()) in.push_back(bias);
      ir::Node& conv = emit(i, "QLinearConv", std::move(in), {target});
      conv.attrs = attrs;
      if (fuse) {
        conv.set_attr(ir::attr_int(kOutputMinAttr, out->lo));
        conv.set_attr(ir::attr_int(kOutputMaxAttr, out->hi));
      }
      ++stats_.qlinear_conv;
      return;
    }
    std::optional<std::vector<float>> bias;
    if (!float_bias(n, m, bias)) return;
    removed_[i] = true;
    Shape scale_shape(static_cast<size_t>(wq.rank() - 1), 1);
    scale_shape[0] = m;
    std::vector<std::string> in = {x->q, w->q, x->zp, integer_op_zero_point(*w)};
    while (!in.empty() && in.back().empty()) in.pop_back();
    if (in.size() == 4 && in[2].empty()) in[2] = zero_point(*x);
    emit_integer_accumulate(i, "ConvInteger", std::move(in), *x, *w, scale_shape, bias, attrs);
  }

  void rewrite_matmul(size_t i) {
    const ir::Node& n = g_.nodes[i];
    if (n.inputs.size() != 2) return;
    auto a = dq_activation(n.inputs[0]);
    auto b = dq_input(n.inputs[1]);
    if (!a || !b) return;
    int64_t cols = 1;
    if (const Tensor* bq = g_.find_initializer(b->q)) {
      if (!b->const_params() || bq->rank() < 2) return;
      cols = bq->dim(-1);
      if (b->count() > 1) {  // per column: 2-D weights only (QLinearMatMul's b_scale is [N])
        const int64_t axis = b->axis < 0 ? b->axis + bq->rank() : b->axis;
        if (bq->rank() != 2 || axis != 1 || b->count() != cols) return;
      }
    } else if (b->count() != 1) {
      return;
    }
    if (auto out = quantized_output(i)) {
      removed_[i] = true;
      const std::string target = output_target(i, *out);
      emit(i, "QLinearMatMul",
           {a->q, a->scale, zero_point(*a), b->q, b->scale, zero_point(*b), out->y.scale, zero_point(out->y)},
           {target});
      ++stats_.qlinear_matmul;
      return;
    }
    removed_[i] = true;
    std::vector<std::string> in = {a->q, b->q, zero_point(*a), integer_op_zero_point(*b)};
    if (in[3].empty()) in.pop_back();
    emit_integer_accumulate(i, "MatMulInteger", std::move(in), *a, *b, Shape{cols}, std::nullopt, {});
  }

  void rewrite_gemm(size_t i) {
    const ir::Node& n = g_.nodes[i];
    if (n.inputs.size() < 2 || n.attr_int("transA", 0) != 0 || n.attr_float("alpha", 1.f) != 1.f) return;
    if (n.has_input(2) && n.attr_float("beta", 1.f) != 1.f) return;
    const bool trans_b = n.attr_int("transB", 0) != 0;
    auto a = dq_activation(n.inputs[0]);
    auto w = dq_weight(n.inputs[1], trans_b ? 0 : 1);
    if (!a || !w) return;
    const Tensor& wq = *g_.find_initializer(w->q);
    if (wq.rank() != 2) return;
    const int64_t cols = trans_b ? wq.dim(0) : wq.dim(1), k = trans_b ? wq.dim(1) : wq.dim(0);
    auto out = quantized_output(i);
    if (opt_.contrib_ops && a->scale_t) {  // static: QGemm, integer or float output
      std::string bias;
      if (n.has_input(2)) {
        auto b = int32_bias(n.inputs[2], *a, *w, cols);
        if (!b) return;
        bias = *b;
      }
      removed_[i] = true;
      std::vector<std::string> in = {a->q, a->scale, zero_point(*a), w->q, w->scale, zero_point(*w), bias};
      std::string target = n.outputs[0];
      if (out) {
        target = output_target(i, *out);
        in.push_back(out->y.scale);
        in.push_back(zero_point(out->y));
      }
      while (in.back().empty()) in.pop_back();
      ir::Node& q = emit(i, "QGemm", std::move(in), {target}, kMsDomain);
      q.set_attr(ir::attr_int("transB", trans_b ? 1 : 0));
      ++stats_.qgemm;
      return;
    }
    if (out) return;  // an integer output needs QGemm
    std::optional<std::vector<float>> bias;
    if (!float_bias(n, cols, bias)) return;
    removed_[i] = true;
    std::string b = w->q;
    if (trans_b) {  // MatMulInteger wants [K, N]: transpose the constant once
      Tensor t(wq.dtype(), {k, cols});
      const size_t es = dtype_size(wq.dtype());
      for (int64_t r = 0; r < k; ++r)
        for (int64_t c = 0; c < cols; ++c)
          std::memcpy(static_cast<std::byte*>(t.raw()) + (r * cols + c) * es,
                      static_cast<const std::byte*>(wq.raw()) + (c * k + r) * es, es);
      b = add_initializer(w->q + "_transposed", t);
    }
    std::vector<std::string> in = {a->q, b, zero_point(*a), integer_op_zero_point(*w)};
    if (in[3].empty()) in.pop_back();
    emit_integer_accumulate(i, "MatMulInteger", std::move(in), *a, *w, Shape{cols}, bias, {});
  }

  void rewrite_binary(size_t i) {
    if (!opt_.contrib_ops) return;
    const ir::Node& n = g_.nodes[i];
    if (n.inputs.size() != 2) return;
    auto a = dq_activation(n.inputs[0]);
    auto b = dq_activation(n.inputs[1]);
    if (!a || !b || a->dtype != b->dtype) return;
    auto out = quantized_output(i);
    if (!out || out->y.dtype != a->dtype) return;
    const bool add = n.op_type == "Add";
    removed_[i] = true;
    const std::string target = output_target(i, *out);
    emit(i, add ? "QLinearAdd" : "QLinearMul",
         {a->q, a->scale, zero_point(*a), b->q, b->scale, zero_point(*b), out->y.scale, zero_point(out->y)}, {target},
         kMsDomain);
    ++(add ? stats_.qlinear_add : stats_.qlinear_mul);
  }

  void rewrite_global_average_pool(size_t i) {
    if (!opt_.contrib_ops) return;
    const ir::Node& n = g_.nodes[i];
    auto x = dq_activation(n.inputs.empty() ? std::string() : n.inputs[0]);
    if (!x) return;
    auto out = quantized_output(i);
    if (!out || out->y.dtype != x->dtype) return;
    removed_[i] = true;
    const std::string target = output_target(i, *out);
    emit(i, "QLinearGlobalAveragePool", {x->q, x->scale, zero_point(*x), out->y.scale, zero_point(out->y)}, {target},
         kMsDomain)
        .set_attr(ir::attr_int("channels_last", 0));
    ++stats_.qlinear_global_average_pool;
  }

  // Every input a DQ of an 8-bit tensor with constant parameters of the
  // output's type: com.microsoft QLinearConcat maps each input's codes onto
  // the output's grid (exactly DQ → Concat → Q, see qlinear_concat_ops.cpp).
  void rewrite_concat(size_t i) {
    if (!opt_.contrib_ops) return;
    const ir::Node& n = g_.nodes[i];
    if (n.inputs.empty() || !n.has_attr("axis")) return;
    auto out = quantized_output(i);
    if (!out || out->folded) return;
    std::vector<std::string> in = {out->y.scale, zero_point(out->y)};
    for (const auto& name : n.inputs) {
      auto x = dq_activation(name);
      if (!x || !x->const_params() || x->dtype != out->y.dtype) return;
      in.push_back(x->q);
      in.push_back(x->scale);
      in.push_back(zero_point(*x));
    }
    removed_[i] = true;
    const std::string target = output_target(i, *out);
    emit(i, "QLinearConcat", std::move(in), {target}, kMsDomain).set_attr(ir::attr_int("axis", n.attr_int("axis", 0)));
    ++stats_.qlinear_concat;
  }

  // The op commutes with (de)quantization when input and output share their
  // parameters: op(DQ(x)) quantized again is op(x), exactly.
  void rewrite_data_movement(size_t i) {
    const ir::Node& n = g_.nodes[i];
    if (n.inputs.empty()) return;
    if (n.op_type == "MaxPool" && m_.opset() < 12) return;  // 8-bit MaxPool since opset 12
    // ONNX Runtime's CPU kernels: SpaceToDepth float/double only, DepthToSpace
    // uint8 but not int8. Elsewhere they stay float between their DQ and Q.
    if (n.op_type == "SpaceToDepth") return;
    auto x = dq_activation(n.inputs[0]);
    if (!x || !x->const_params()) return;
    if (n.op_type == "DepthToSpace" && x->dtype != DType::kUInt8) return;
    auto out = quantized_output(i);
    if (!out || out->folded || !same_params(*x, out->y)) return;
    removed_[i] = true;
    ir::Node copy = n;
    copy.inputs[0] = x->q;
    copy.outputs = {output_target(i, *out)};
    copy.name = fresh_node_name((n.name.empty() ? n.op_type : n.name) + "_int");
    replacement_[i].push_back(std::move(copy));
    ++stats_.integer_data_movement;
  }

  // DQ(x) → Q with the same parameters is x itself.
  void remove_dq_q_pairs() {
    index(/*readers=*/false);  // rename_reads below rewrites node inputs
    std::vector<bool> drop(g_.nodes.size(), false);
    for (size_t k = 0; k < g_.nodes.size(); ++k) {
      const ir::Node& q = g_.nodes[k];
      if (!is_op(q, "QuantizeLinear") || !q.has_input(1) || q.outputs.size() != 1 || g_.is_graph_output(q.outputs[0]))
        continue;
      auto x = dq_input(q.inputs[0]);
      if (!x) continue;
      QTensor y;
      y.q = q.outputs[0];
      y.scale = q.inputs[1];
      y.zp = q.has_input(2) ? q.inputs[2] : "";
      y.scale_t = g_.find_initializer(y.scale);
      y.zp_t = y.zp.empty() ? nullptr : g_.find_initializer(y.zp);
      y.axis = q.attr_int("axis", 1);
      y.dtype = value_dtype(y.q);
      if (!y.scale_t || y.scale_t->dtype() != DType::kFloat32 || (!y.zp.empty() && !y.zp_t)) continue;
      if (!same_params(*x, y)) continue;
      ir::rename_reads(g_, y.q, x->q);
      drop[k] = true;
      ++stats_.dq_q_pairs_removed;
    }
    std::vector<ir::Node> kept;
    for (size_t k = 0; k < g_.nodes.size(); ++k)
      if (!drop[k]) kept.push_back(std::move(g_.nodes[k]));
    g_.nodes = std::move(kept);
  }

  ir::Model& m_;
  ir::Graph& g_;
  QOperatorOptions opt_;
  ir::NameTable names_;
  // Views of the graph's strings, or of owned_names_ (names the graph does
  // not hold: new node names, subgraphs' free variables).
  std::unordered_set<std::string_view> node_names_;
  std::unordered_map<std::string_view, size_t> producer_;
  std::unordered_map<std::string_view, std::vector<size_t>> readers_;
  std::unordered_map<std::string_view, int> reads_;
  std::deque<std::string> owned_names_;
  std::vector<bool> removed_;
  std::vector<std::vector<ir::Node>> replacement_;
  QOperatorStats stats_;
  bool used_contrib_ = false;
};

}  // namespace

// 4-bit codes (held one per byte) become int8 / uint8 containers, which the
// QLinear ops take; a DequantizeLinear left over reads them the same.
void widen_4bit_initializers(ir::Graph& g) {
  for (auto& [name, t] : g.initializers) {
    if (t.dtype() != DType::kInt4 && t.dtype() != DType::kUInt4) continue;
    Tensor w(t.dtype() == DType::kInt4 ? DType::kInt8 : DType::kUInt8, t.shape());
    if (t.nbytes()) std::memcpy(w.raw(), t.raw(), t.nbytes());
    t = w;
  }
}

// A QuantizeLinear to a 4-bit type saturates at the 4-bit limits; once its
// zero point is widened to 8 bits it would not. A float Clip to the grid
// points of the 4-bit limits keeps the codes exactly the same, and the
// rewrite folds it into the producer's output clamp: 4-bit activations run on
// the 8-bit kernels as clamped codes, whatever their neighbours' widths.
// Quantizers with non-constant or per-axis parameters keep their 4-bit type.
// `x` is data movement of a DQ with this scale and 4-bit zero point: its
// values are already on the grid, within the limits.
bool moves_same_grid(const ir::Graph& g, const std::string& x, float s, const Tensor& zp) {
  const ir::Node* mover = nullptr;
  for (const auto& n : g.nodes)
    for (const auto& o : n.outputs)
      if (o == x) mover = &n;
  if (!mover || !kMovesCodes.count(mover->op_type) || mover->inputs.empty()) return false;
  for (const auto& d : g.nodes) {
    if (d.outputs.empty() || d.outputs[0] != mover->inputs[0]) continue;
    if (d.op_type != "DequantizeLinear" || !d.has_input(2)) return false;
    const Tensor* ds = g.find_initializer(d.inputs[1]);
    const Tensor* dz = g.find_initializer(d.inputs[2]);
    return ds && dz && ds->dtype() == DType::kFloat32 && ds->numel() == 1 && ds->data<float>()[0] == s &&
           dz->dtype() == zp.dtype() && dz->numel() == 1 && dz->get_as_int64(0) == zp.get_as_int64(0);
  }
  return false;
}

std::set<std::string> clamp_4bit_quantizers(ir::Model& m) {
  ir::Graph& g = m.graph;
  std::set<std::string> keep;  // 4-bit zero points that must not be widened
  ir::NameTable names(g);
  std::set<std::string> node_names;
  for (const auto& n : g.nodes) node_names.insert(n.name);
  std::vector<ir::Node> nodes;  // the graph's nodes with each Clip just before its Q (order stays valid)
  nodes.reserve(g.nodes.size());
  for (auto& n : g.nodes) {
    auto keep_node = [&] { nodes.push_back(n); };  // a copy: later checks read the graph as it was
    if (n.op_type != "QuantizeLinear" || !ir::is_default_domain(n.domain) || !n.has_input(2)) {
      keep_node();
      continue;
    }
    const Tensor* zp = g.find_initializer(n.inputs[2]);
    if (!zp || (zp->dtype() != DType::kInt4 && zp->dtype() != DType::kUInt4)) {
      keep_node();
      continue;
    }
    const Tensor* scale = g.find_initializer(n.inputs[1]);
    if (m.opset() < 11 || !scale || scale->dtype() != DType::kFloat32 || scale->numel() != 1 || zp->numel() != 1 ||
        n.attr_int("block_size", 0) != 0) {
      keep.insert(n.inputs[2]);
      keep_node();
      continue;
    }
    const bool sign = zp->dtype() == DType::kInt4;
    const float s = scale->data<float>()[0];
    const int64_t z = zp->get_as_int64(0);
    if (moves_same_grid(g, n.inputs[0], s, *zp)) {
      keep_node();
      continue;
    }
    const std::string lo = names.fresh(n.inputs[0] + "_clip4_min"), hi = names.fresh(n.inputs[0] + "_clip4_max");
    g.set_initializer(lo, Tensor::scalar<float>(static_cast<float>((sign ? -8 : 0) - z) * s));
    g.set_initializer(hi, Tensor::scalar<float>(static_cast<float>((sign ? 7 : 15) - z) * s));
    ir::Node clip;
    clip.op_type = "Clip";
    clip.name = n.name + "_clip4";
    for (int k = 1; node_names.count(clip.name); ++k) clip.name = n.name + "_clip4_" + std::to_string(k);
    node_names.insert(clip.name);
    const std::string out = names.fresh(n.inputs[0] + "_clamped4");
    clip.inputs = {n.inputs[0], lo, hi};
    clip.outputs = {out};
    n.inputs[0] = out;
    nodes.push_back(std::move(clip));
    keep_node();
  }
  g.nodes = std::move(nodes);
  return keep;
}

Status qdq_to_qoperator(ir::Model& m, const QOperatorOptions& options) {
  const std::set<std::string> keep = clamp_4bit_quantizers(m);
  std::map<std::string, Tensor> kept;
  for (const auto& name : keep) kept[name] = *m.graph.find_initializer(name);
  widen_4bit_initializers(m.graph);
  for (auto& [name, t] : kept) m.graph.set_initializer(name, std::move(t));
  int nbits = 0;
  if (options.contrib_ops)
    QTK_ASSIGN_OR_RETURN(nbits, weight_only_to_matmul_nbits(m, options.matmul_nbits_accuracy_level));
  Status st = Rewriter(m, options).run();
  if (options.stats) options.stats->matmul_nbits = nbits;
  return st;
}

}  // namespace qtk::quant
