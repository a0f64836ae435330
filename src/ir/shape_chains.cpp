// Shape arithmetic folded with a tiny symbolic evaluator.
//
// Exporters compute reshape targets at run time: PyTorch's x.view(x.size(0),
// -1) becomes Shape(x) → Gather(0) → Unsqueeze → Concat(…, [-1]) → Reshape.
// Each small int64 tensor on such a path is tracked element by element as
// either a known number or "dim i of tensor X". Values that turn out fully
// known become initializers; a Reshape whose target is known except for
// dims copied from its own input gets a constant target using 0, ONNX's
// "copy this dim", so a dynamic batch keeps working.
#include <algorithm>
#include <limits>
#include <optional>
#include <unordered_map>

#include "ir/passes.h"

namespace qtk::ir {

namespace {

// Longest shape-like tensor worth tracking.
constexpr int64_t kMaxElems = 64;

struct SymElem {
  enum Kind { kConst, kDim, kUnknown } kind = kUnknown;
  int64_t value = 0;   // kConst
  std::string tensor;  // kDim: dim `axis` of `tensor`
  int axis = 0;
  std::string param;  // kDim: the dim's symbolic name, if it has one

  static SymElem constant(int64_t v) { return {kConst, v, "", 0, ""}; }
  static SymElem unknown() { return {}; }
  bool is_const() const { return kind == kConst; }
};

// A rank-0 or rank-1 int64 tensor, element by element.
struct SymValue {
  bool scalar = false;
  std::vector<SymElem> elems;

  bool all_const() const {
    return std::all_of(elems.begin(), elems.end(), [](const SymElem& e) { return e.is_const(); });
  }
  Tensor to_tensor() const {
    std::vector<int64_t> v;
    for (const auto& e : elems) v.push_back(e.value);
    return scalar ? Tensor::scalar<int64_t>(v.at(0))
                  : Tensor::from_vector<int64_t>({static_cast<int64_t>(v.size())}, v);
  }
};

class Evaluator {
 public:
  explicit Evaluator(const Model& m) : m_(m), g_(m.graph) {
    for (const auto* list : {&g_.inputs, &g_.outputs, &g_.value_infos})
      for (const auto& v : *list)
        if (v.has_shape && v.is_tensor) shapes_.emplace(v.name, v.shape);
    for (const auto& [name, t] : g_.initializers) {
      std::vector<Dim> s;
      for (int64_t d : t.shape()) s.push_back(Dim{d, ""});
      shapes_[name] = s;
      if (t.dtype() == DType::kInt64 && t.rank() <= 1 && t.numel() <= kMaxElems) {
        SymValue v;
        v.scalar = t.rank() == 0;
        for (int64_t i = 0; i < t.numel(); ++i) v.elems.push_back(SymElem::constant(t.data<int64_t>()[i]));
        values_[name] = v;
      }
    }
  }

  // Evaluates one node (inputs already evaluated, nodes are sorted).
  void visit(const Node& n) {
    if (!is_default_domain(n.domain) || n.outputs.empty() || n.outputs[0].empty()) return;
    std::optional<SymValue> r = eval(n);
    if (r && static_cast<int64_t>(r->elems.size()) <= kMaxElems && (!r->scalar || r->elems.size() == 1))
      values_[n.outputs[0]] = std::move(*r);
  }

  const SymValue* value(const std::string& name) const {
    auto it = values_.find(name);
    return it == values_.end() ? nullptr : &it->second;
  }
  const std::vector<Dim>* shape(const std::string& name) const {
    auto it = shapes_.find(name);
    return it == shapes_.end() ? nullptr : &it->second;
  }

 private:
  const SymValue* in(const Node& n, size_t i) const { return n.has_input(i) ? value(n.inputs[i]) : nullptr; }

  // A fully known input as numbers.
  std::optional<std::vector<int64_t>> const_in(const Node& n, size_t i) const {
    const SymValue* v = in(n, i);
    if (!v || !v->all_const()) return std::nullopt;
    std::vector<int64_t> r;
    for (const auto& e : v->elems) r.push_back(e.value);
    return r;
  }

  std::optional<SymValue> eval(const Node& n) const {
    const std::string& op = n.op_type;
    if (op == "Shape") return eval_shape(n);
    if (op == "Identity") return in(n, 0) ? std::optional<SymValue>(*in(n, 0)) : std::nullopt;
    if (op == "Cast") {
      if (n.attr_int("to", 0) != static_cast<int64_t>(DType::kInt64) || !in(n, 0)) return std::nullopt;
      return *in(n, 0);
    }
    if (op == "Constant") {
      const Attribute* a = n.attr("value");
      if (a && a->type == AttrType::kTensor && a->t.dtype() == DType::kInt64 && a->t.rank() <= 1 &&
          a->t.numel() <= kMaxElems) {
        SymValue v;
        v.scalar = a->t.rank() == 0;
        for (int64_t i = 0; i < a->t.numel(); ++i) v.elems.push_back(SymElem::constant(a->t.data<int64_t>()[i]));
        return v;
      }
      if ((a = n.attr("value_ints")) && a->type == AttrType::kInts) {
        SymValue v;
        for (int64_t x : a->ints) v.elems.push_back(SymElem::constant(x));
        return v;
      }
      if ((a = n.attr("value_int")) && a->type == AttrType::kInt) return SymValue{true, {SymElem::constant(a->i)}};
      return std::nullopt;
    }
    if (op == "Gather") return eval_gather(n);
    if (op == "Unsqueeze") return eval_unsqueeze(n);
    if (op == "Squeeze") return eval_squeeze(n);
    if (op == "Concat") return eval_concat(n);
    if (op == "Slice") return eval_slice(n);
    if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") return eval_arith(n);
    return std::nullopt;
  }

  std::optional<SymValue> eval_shape(const Node& n) const {
    if (!n.has_input(0)) return std::nullopt;
    const std::vector<Dim>* s = shape(n.inputs[0]);
    if (!s) return std::nullopt;
    const int64_t rank = static_cast<int64_t>(s->size());
    // Opset 15 start/end, clamped like Slice.
    int64_t start = n.attr_int("start", 0), end = n.attr_int("end", rank);
    if (start < 0) start += rank;
    if (end < 0) end += rank;
    start = std::clamp<int64_t>(start, 0, rank);
    end = std::clamp<int64_t>(end, 0, rank);
    SymValue v;
    for (int64_t i = start; i < end; ++i) {
      const Dim& d = (*s)[i];
      if (d.is_fixed()) v.elems.push_back(SymElem::constant(d.value));
      else v.elems.push_back({SymElem::kDim, 0, n.inputs[0], static_cast<int>(i), d.param});
    }
    return v;
  }

  std::optional<SymValue> eval_gather(const Node& n) const {
    const SymValue* data = in(n, 0);
    const SymValue* idx = in(n, 1);
    if (!data || data->scalar || !idx || !idx->all_const()) return std::nullopt;
    const int64_t axis = n.attr_int("axis", 0);
    if (axis != 0 && axis != -1) return std::nullopt;
    const int64_t size = static_cast<int64_t>(data->elems.size());
    SymValue r;
    r.scalar = idx->scalar;
    for (const auto& e : idx->elems) {
      int64_t k = e.value < 0 ? e.value + size : e.value;
      if (k < 0 || k >= size) return std::nullopt;  // the kernel reports it
      r.elems.push_back(data->elems[k]);
    }
    return r;
  }

  // Axes from the attribute (opset < 13) or the second input.
  std::optional<std::vector<int64_t>> axes_of(const Node& n) const {
    if (m_.opset(n.domain) >= 13 || n.inputs.size() > 1) {
      if (!n.has_input(1)) return std::vector<int64_t>{};
      return const_in(n, 1);
    }
    return n.attr_ints("axes");
  }

  std::optional<SymValue> eval_unsqueeze(const Node& n) const {
    const SymValue* x = in(n, 0);
    auto axes = axes_of(n);
    // Only scalar → [1]; anything else leaves rank 1.
    if (!x || !x->scalar || !axes || axes->size() != 1 || ((*axes)[0] != 0 && (*axes)[0] != -1)) return std::nullopt;
    return SymValue{false, x->elems};
  }

  std::optional<SymValue> eval_squeeze(const Node& n) const {
    const SymValue* x = in(n, 0);
    auto axes = axes_of(n);
    if (!x || x->scalar || x->elems.size() != 1 || !axes) return std::nullopt;
    if (!axes->empty() && (axes->size() != 1 || ((*axes)[0] != 0 && (*axes)[0] != -1))) return std::nullopt;
    return SymValue{true, x->elems};
  }

  std::optional<SymValue> eval_concat(const Node& n) const {
    const int64_t axis = n.attr_int("axis", 0);
    if (axis != 0 && axis != -1) return std::nullopt;
    SymValue r;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      const SymValue* v = in(n, i);
      if (!v || v->scalar) return std::nullopt;
      r.elems.insert(r.elems.end(), v->elems.begin(), v->elems.end());
    }
    return r;
  }

  std::optional<SymValue> eval_slice(const Node& n) const {
    const SymValue* x = in(n, 0);
    if (!x || x->scalar) return std::nullopt;
    std::vector<int64_t> starts, ends, axes{0}, steps{1};
    if (m_.opset(n.domain) < 10) {
      starts = n.attr_ints("starts");
      ends = n.attr_ints("ends");
      axes = n.attr_ints("axes", {0});
    } else {
      auto s = const_in(n, 1), e = const_in(n, 2);
      if (!s || !e) return std::nullopt;
      starts = *s;
      ends = *e;
      if (n.has_input(3)) {
        auto a = const_in(n, 3);
        if (!a) return std::nullopt;
        axes = *a;
      }
      if (n.has_input(4)) {
        auto st = const_in(n, 4);
        if (!st) return std::nullopt;
        steps = *st;
      }
    }
    if (starts.size() != 1 || ends.size() != 1 || axes.size() != 1 || steps.size() != 1) return std::nullopt;
    if ((axes[0] != 0 && axes[0] != -1) || steps[0] == 0) return std::nullopt;
    const int64_t size = static_cast<int64_t>(x->elems.size()), step = steps[0];
    int64_t start = starts[0], end = ends[0];
    if (start < 0) start += size;
    if (end < 0) end += size;
    // ONNX clamps: [0, size] forwards, [-1, size-1] backwards.
    if (step > 0) {
      start = std::clamp<int64_t>(start, 0, size);
      end = std::clamp<int64_t>(end, 0, size);
    } else {
      start = std::clamp<int64_t>(start, -1, size - 1);
      end = std::clamp<int64_t>(end, -1, size - 1);
    }
    SymValue r;
    for (int64_t i = start; step > 0 ? i < end : i > end; i += step) r.elems.push_back(x->elems[i]);
    return r;
  }

  std::optional<SymValue> eval_arith(const Node& n) const {
    const SymValue* a = in(n, 0);
    const SymValue* b = in(n, 1);
    if (!a || !b) return std::nullopt;
    const size_t na = a->elems.size(), nb = b->elems.size();
    if (na != nb && na != 1 && nb != 1) return std::nullopt;
    const std::string& op = n.op_type;
    SymValue r;
    r.scalar = a->scalar && b->scalar;
    const size_t len = std::max(na, nb);
    for (size_t i = 0; i < len; ++i) {
      const SymElem& x = a->elems[na == 1 ? 0 : i];
      const SymElem& y = b->elems[nb == 1 ? 0 : i];
      if (x.is_const() && y.is_const()) {
        int64_t v = 0;
        bool overflow = false;
        if (op == "Add") overflow = __builtin_add_overflow(x.value, y.value, &v);
        else if (op == "Sub") overflow = __builtin_sub_overflow(x.value, y.value, &v);
        else if (op == "Mul") overflow = __builtin_mul_overflow(x.value, y.value, &v);
        else {
          // Integer Div: only exact, positive cases, where every rounding rule agrees.
          if (y.value <= 0 || x.value < 0 || x.value % y.value != 0) {
            r.elems.push_back(SymElem::unknown());
            continue;
          }
          v = x.value / y.value;
        }
        r.elems.push_back(overflow ? SymElem::unknown() : SymElem::constant(v));
      } else if (y.is_const() && ((y.value == 0 && (op == "Add" || op == "Sub")) ||
                                  (y.value == 1 && (op == "Mul" || op == "Div")))) {
        r.elems.push_back(x);  // x + 0, x * 1, ...
      } else if (x.is_const() && ((x.value == 0 && op == "Add") || (x.value == 1 && op == "Mul"))) {
        r.elems.push_back(y);
      } else {
        r.elems.push_back(SymElem::unknown());
      }
    }
    return r;
  }

  const Model& m_;
  const Graph& g_;
  std::unordered_map<std::string, std::vector<Dim>> shapes_;
  std::unordered_map<std::string, SymValue> values_;
};

// Constant target for Reshape(data, shape) when shape is known except for
// dims that copy `data`'s own dims at the same position.
std::optional<std::vector<int64_t>> reshape_target(const Evaluator& ev, const Node& n, int64_t opset) {
  if (!n.has_input(0) || !n.has_input(1)) return std::nullopt;
  const SymValue* s = ev.value(n.inputs[1]);
  if (!s || s->scalar || s->all_const()) return std::nullopt;  // fully known: plain folding handles it
  if (opset >= 14 && n.attr_int("allowzero", 0) != 0) return std::nullopt;
  const std::string& data = n.inputs[0];
  const std::vector<Dim>* data_shape = ev.shape(data);
  std::vector<int64_t> target;
  int unknown = -1;
  bool has_minus_one = false, all_consts_nonzero = true, copies = false;
  for (size_t p = 0; p < s->elems.size(); ++p) {
    const SymElem& e = s->elems[p];
    if (e.is_const()) {
      target.push_back(e.value);
      has_minus_one |= e.value == -1;
      all_consts_nonzero &= e.value != 0;
      continue;
    }
    bool same = false;
    if (e.kind == SymElem::kDim) {
      same = e.tensor == data && e.axis == static_cast<int>(p);
      // Equal dim_params denote the same size (ONNX's rule for symbolic dims).
      if (!same && !e.param.empty() && data_shape && p < data_shape->size())
        same = (*data_shape)[p].param == e.param;
    }
    if (same) {
      target.push_back(0);
      copies = true;
      continue;
    }
    if (unknown >= 0) return std::nullopt;  // two unknowns: cannot express
    unknown = static_cast<int>(p);
    target.push_back(-1);
  }
  // One unknown becomes -1, inferred from the element count. That inference
  // is exact only when every other dim is a known non-zero number.
  if (unknown >= 0 && (has_minus_one || copies || !all_consts_nonzero)) return std::nullopt;
  return target;
}

}  // namespace

Expected<int> fold_shape_chains(Model& m) {
  Graph& g = m.graph;
  Evaluator ev(m);
  for (const auto& n : g.nodes) ev.visit(n);

  NameTable names(g);
  int changed = 0;
  std::vector<Node> kept;
  kept.reserve(g.nodes.size());
  for (auto& n : g.nodes) {
    // A fully known value: its producer becomes an initializer. Every op
    // the evaluator tracks yields int64 with a single output.
    if (is_default_domain(n.domain) && n.outputs.size() == 1 && !n.outputs[0].empty() && n.op_type != "Constant" &&
        !has_subgraph(n)) {
      const SymValue* v = ev.value(n.outputs[0]);
      if (v && v->all_const()) {
        g.set_initializer(n.outputs[0], v->to_tensor());
        ++changed;
        continue;
      }
    }
    if (is_default_domain(n.domain) && n.op_type == "Reshape") {
      if (auto target = reshape_target(ev, n, m.opset(n.domain))) {
        const std::string name = names.fresh((n.name.empty() ? n.outputs[0] : n.name) + "_shape");
        g.set_initializer(name, Tensor::from_vector<int64_t>({static_cast<int64_t>(target->size())}, *target));
        n.inputs[1] = name;
        ++changed;
      }
    }
    kept.push_back(std::move(n));
  }
  g.nodes = std::move(kept);
  return changed;
}

}  // namespace qtk::ir
