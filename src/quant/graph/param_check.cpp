#include "quant/graph/param_check.h"

#include <cmath>
#include <optional>
#include <string>
#include <vector>

namespace qtk::quant {

namespace {

// One (scale, zero point) pair of an op: input positions, a name for errors,
// and the data input whose dtype the zero point must share (or none).
struct ParamPair {
  size_t scale, zero_point;
  const char* what;
  std::optional<size_t> data;  // zero point's dtype must equal this input's
};

bool is_quantized_type(DType t) {
  switch (t) {
    case DType::kInt8:
    case DType::kUInt8:
    case DType::kInt16:
    case DType::kUInt16:
    case DType::kInt4:
    case DType::kUInt4:
    case DType::kInt32:  // DequantizeLinear of int32 biases
      return true;
    default:
      return false;
  }
}

class Checker {
 public:
  Checker(const ir::Graph& g, const ir::Node& n) : g_(g), n_(n) {}

  Status fail(const std::string& what) const {
    return invalid_argument("node '" + n_.name + "' (" + n_.op_type + "): " + what);
  }

  const Tensor* constant(size_t i) const { return n_.has_input(i) ? g_.find_initializer(n_.inputs[i]) : nullptr; }

  // Rank and dims of input i when known (initializer or fixed value_info).
  std::optional<std::vector<int64_t>> shape(size_t i) const {
    if (const Tensor* t = constant(i)) return t->shape();
    if (!n_.has_input(i)) return std::nullopt;
    const ir::ValueInfo* v = g_.find_value_info(n_.inputs[i]);
    if (!v || !v->has_shape) return std::nullopt;
    std::vector<int64_t> s;
    for (const auto& d : v->shape) s.push_back(d.value);  // -1 where not fixed
    return s;
  }

  // allowed: scale lengths that are fine besides 1 (empty: only 1).
  Status check(const ParamPair& p, const std::vector<int64_t>& allowed = {}) const {
    const Tensor* scale = constant(p.scale);
    if (scale) {
      if (scale->dtype() != DType::kFloat32 && scale->dtype() != DType::kFloat16 &&
          scale->dtype() != DType::kFloat64 && scale->dtype() != DType::kBFloat16)
        return fail(std::string(p.what) + "_scale must be a float tensor, got " + dtype_name(scale->dtype()));
      const std::vector<float> v = scale->to_float_vector();
      for (size_t i = 0; i < v.size(); ++i)
        if (!std::isfinite(v[i]) || !(v[i] > 0.f))
          return fail(std::string(p.what) + "_scale[" + std::to_string(i) + "] is " + std::to_string(v[i]) +
                      "; scales must be positive and finite");
      if (scale->numel() != 1) {
        bool ok = false;
        for (int64_t a : allowed) ok = ok || a == scale->numel() || a < 0;  // a < 0: length not known here
        if (!ok) {
          std::string want = "1";
          for (int64_t a : allowed) want += " or " + std::to_string(a);
          return fail(std::string(p.what) + "_scale has " + std::to_string(scale->numel()) + " values, expected " +
                      want);
        }
      }
    }
    const Tensor* zp = constant(p.zero_point);
    if (!zp) return Status::Ok();
    if (!is_quantized_type(zp->dtype()))
      return fail(std::string(p.what) + "_zero_point must be a 4-, 8-, 16- or 32-bit integer, got " +
                  dtype_name(zp->dtype()));
    if (scale && zp->numel() != scale->numel())
      return fail(std::string(p.what) + "_zero_point has " + std::to_string(zp->numel()) + " values but " + p.what +
                  "_scale has " + std::to_string(scale->numel()));
    if (p.data && n_.has_input(*p.data)) {
      const Tensor* data = constant(*p.data);
      const ir::ValueInfo* v = data ? nullptr : g_.find_value_info(n_.inputs[*p.data]);
      const DType t = data ? data->dtype() : (v ? v->dtype : DType::kUndefined);
      if (t != DType::kUndefined && t != zp->dtype())
        return fail(std::string(p.what) + "_zero_point is " + dtype_name(zp->dtype()) + " but " + p.what + " is " +
                    dtype_name(t));
    }
    return Status::Ok();
  }

  // The length of dimension `axis` (negative: from the end) of input i; -1 if unknown.
  int64_t dim(size_t i, int64_t axis) const {
    const auto s = shape(i);
    if (!s || s->empty()) return -1;
    const int64_t r = static_cast<int64_t>(s->size());
    if (axis < 0) axis += r;
    return axis >= 0 && axis < r ? (*s)[static_cast<size_t>(axis)] : -1;
  }

 private:
  const ir::Graph& g_;
  const ir::Node& n_;
};

Status check_node(const ir::Graph& g, const ir::Node& n) {
  const Checker c(g, n);
  const bool ms = n.domain == "com.microsoft";
  if (ir::is_default_domain(n.domain) && (n.op_type == "QuantizeLinear" || n.op_type == "DequantizeLinear")) {
    if (n.attr_int("block_size", 0) > 0) return c.check({1, 2, "x", std::nullopt}, {-1});  // blocked: kernel checks
    const bool dq = n.op_type == "DequantizeLinear";
    return c.check({1, 2, dq ? "x" : "y", dq ? std::optional<size_t>(0) : std::nullopt},
                   {c.dim(0, n.attr_int("axis", 1))});
  }
  if (ir::is_default_domain(n.domain) && n.op_type == "QLinearConv") {
    QTK_RETURN_IF_ERROR(c.check({1, 2, "x", 0}));
    QTK_RETURN_IF_ERROR(c.check({4, 5, "w", 3}, {c.dim(3, 0)}));
    return c.check({6, 7, "y", std::nullopt});
  }
  if (ir::is_default_domain(n.domain) && n.op_type == "QLinearMatMul") {
    QTK_RETURN_IF_ERROR(c.check({1, 2, "a", 0}));
    QTK_RETURN_IF_ERROR(c.check({4, 5, "b", 3}, {c.dim(3, -1)}));
    return c.check({6, 7, "y", std::nullopt});
  }
  if (ms && (n.op_type == "QLinearAdd" || n.op_type == "QLinearMul")) {
    QTK_RETURN_IF_ERROR(c.check({1, 2, "A", 0}));
    QTK_RETURN_IF_ERROR(c.check({4, 5, "B", 3}));
    return c.check({6, 7, "C", 0});
  }
  if (ms && n.op_type == "QLinearGlobalAveragePool") {
    QTK_RETURN_IF_ERROR(c.check({1, 2, "x", 0}));
    return c.check({3, 4, "y", 0});
  }
  if (ms && n.op_type == "QGemm") {
    QTK_RETURN_IF_ERROR(c.check({1, 2, "a", 0}));
    const int64_t n_cols = c.dim(3, n.attr_int("transB", 0) ? 0 : -1);
    QTK_RETURN_IF_ERROR(c.check({4, 5, "b", 3}, {n_cols}));
    return c.check({7, 8, "y", std::nullopt});
  }
  return Status::Ok();
}

}  // namespace

Status check_quantization_params(const ir::Graph& g) {
  for (const auto& n : g.nodes) QTK_RETURN_IF_ERROR(check_node(g, n));
  return Status::Ok();
}

}  // namespace qtk::quant
