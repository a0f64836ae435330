// Elementwise reference kernels: arithmetic, comparison and logic with numpy
// broadcasting, unary math, Where, Cast/CastLike, BitShift.
//
// float16/bfloat16 inputs are widened to float32, computed, and narrowed back
// (per op, as numpy does for half arrays). Integer arithmetic wraps on
// overflow; integer division by zero is an error, not a crash.
#include <cmath>
#include <string>

#include "runtime/kernels/ref/elementwise_common.h"
#include "runtime/op_registry.h"

namespace qtk::rt {
namespace {

using namespace ref;

std::string dtypes_of(const Tensor& a, const Tensor& b) {
  return std::string(dtype_name(a.dtype())) + " and " + dtype_name(b.dtype());
}

Status same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  if (a.dtype() != b.dtype())
    return invalid_argument(std::string(op) + " inputs must have the same dtype, got " + dtypes_of(a, b));
  return Status::Ok();
}

// Opset < 7 binary ops broadcast B onto A only when broadcast=1, and with an
// `axis` attribute B's dimensions line up with A's starting at that axis.
// Reshaping B with trailing 1s turns that into numpy broadcasting.
struct LegacyBroadcast {
  bool enabled = false;
  int64_t axis = 0;
};

LegacyBroadcast read_legacy_broadcast(const KernelInit& init) {
  LegacyBroadcast l;
  if (init.opset > 0 && init.opset < 7 && init.node.attr_int("broadcast", 0) != 0 && init.node.has_attr("axis")) {
    l.enabled = true;
    l.axis = init.node.attr_int("axis", 0);
  }
  return l;
}

Expected<Tensor> legacy_rhs(const LegacyBroadcast& l, const Tensor& a, const Tensor& b) {
  if (!l.enabled) return b;
  const int64_t ra = a.rank(), rb = b.rank();
  const int64_t axis = l.axis < 0 ? l.axis + ra : l.axis;
  if (axis < 0 || axis + rb > ra)
    return invalid_argument("broadcast axis " + std::to_string(l.axis) + " does not fit B " +
                            shape_to_string(b.shape()) + " into A " + shape_to_string(a.shape()));
  Shape s(static_cast<size_t>(ra - axis), 1);
  for (int64_t i = 0; i < rb; ++i) s[i] = b.shape()[i];
  return b.reshaped(s);
}

// ---------------------------------------------------------------------------
// Arithmetic

struct AddOp {
  template <class T> T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) return wrap_add(a, b); else return a + b;
  }
};
struct SubOp {
  template <class T> T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) return wrap_sub(a, b); else return a - b;
  }
};
struct MulOp {
  template <class T> T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) return wrap_mul(a, b); else return a * b;
  }
};
// Integer division truncates toward zero (C semantics, as the ONNX tests
// expect); INT_MIN / -1 wraps. Zero divisors are rejected before the loop.
struct DivOp {
  static constexpr bool kIntegerDivision = true;
  template <class T> T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) {
      if (b == T(-1)) return wrap_neg(a);
      return static_cast<T>(a / b);
    } else {
      return static_cast<T>(a / b);
    }
  }
};
// fmod=1: remainder with the dividend's sign (C fmod / %); fmod=0: with the
// divisor's sign (Python / numpy mod). ONNX asks fmod=1 for floats; fmod=0 on
// floats gets numpy's np.mod meaning rather than an error.
struct ModOp {
  static constexpr bool kIntegerDivision = true;
  bool fmod = false;
  template <class T> T operator()(T a, T b) const {
    if constexpr (std::is_floating_point_v<T>) {
      T r = std::fmod(a, b);
      if (!fmod && r != 0 && ((r < 0) != (b < 0))) r += b;
      return r;
    } else if constexpr (std::is_signed_v<T>) {
      if (b == T(-1)) return T(0);
      T r = static_cast<T>(a % b);
      if (!fmod && r != 0 && ((r < 0) != (b < 0))) r = static_cast<T>(r + b);
      return r;
    } else {
      return static_cast<T>(a % b);
    }
  }
};
// NaN propagates, as np.maximum / np.minimum do.
struct MaxOp {
  template <class T> T operator()(T a, T b) const {
    if constexpr (std::is_floating_point_v<T>)
      if (std::isnan(a) || std::isnan(b)) return a + b;
    return a < b ? b : a;
  }
};
struct MinOp {
  template <class T> T operator()(T a, T b) const {
    if constexpr (std::is_floating_point_v<T>)
      if (std::isnan(a) || std::isnan(b)) return a + b;
    return b < a ? b : a;
  }
};

template <class Op>
constexpr bool divides() {
  if constexpr (requires { Op::kIntegerDivision; }) return Op::kIntegerDivision;
  return false;
}

template <class T>
Status check_no_zero_divisor(const Tensor& b) {
  const T* p = b.data<T>();
  for (int64_t i = 0; i < b.numel(); ++i)
    if (p[i] == T(0)) return invalid_argument("integer division by zero (divisor element " + std::to_string(i) + ")");
  return Status::Ok();
}

// a op b for two tensors of one numeric dtype.
template <class Op>
Expected<Tensor> arith(const Tensor& a, const Tensor& b, ThreadPool* pool, const char* name, Op op) {
  QTK_RETURN_IF_ERROR(same_dtype(a, b, name));
  const DType dt = a.dtype();
  if (is_half_dtype(dt)) {
    QTK_ASSIGN_OR_RETURN(Tensor r, arith(widen_half(a, pool), widen_half(b, pool), pool, name, op));
    return narrow_from_float(r, dt, pool);
  }
  if (!is_numeric_dtype(dt))
    return invalid_argument(std::string(name) + " takes numeric tensors, got " + dtype_name(dt));
  return visit_numeric(dt, [&](auto tag) -> Expected<Tensor> {
    using T = decltype(tag);
    if constexpr (std::is_integral_v<T> && divides<Op>()) QTK_RETURN_IF_ERROR(check_no_zero_divisor<T>(b));
    return eval_binary<T, T, T>(a, b, dt, pool, [op](T x, T y) { return op(x, y); });
  });
}

template <class Op>
KernelFactory binary_arith_factory(const char* name, Op op = {}) {
  return [name, op](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    const LegacyBroadcast legacy = read_legacy_broadcast(init);
    return make_fn_kernel([name, op, legacy](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 2));
      QTK_ASSIGN_OR_RETURN(Tensor b, legacy_rhs(legacy, ctx.input(0), ctx.input(1)));
      return set_single_output(ctx, arith(ctx.input(0), b, ctx.pool, name, op));
    });
  };
}

Status all_inputs_present(const KernelContext& ctx, const char* name) {
  if (ctx.num_inputs() == 0) return invalid_argument(std::string(name) + " needs at least one input");
  for (size_t i = 0; i < ctx.num_inputs(); ++i)
    if (!ctx.has_input(i)) return invalid_argument("input " + std::to_string(i) + " is missing");
  return Status::Ok();
}

// Max, Min, Sum: fold the inputs pairwise (broadcasting is associative).
template <class Op>
KernelFactory variadic_factory(const char* name) {
  return [name](const KernelInit&) -> Expected<std::unique_ptr<Kernel>> {
    return make_fn_kernel([name](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(all_inputs_present(ctx, name));
      Tensor acc = ctx.input(0);
      if (!is_numeric_dtype(acc.dtype()))
        return invalid_argument(std::string(name) + " takes numeric tensors, got " + dtype_name(acc.dtype()));
      if (ctx.num_inputs() == 1) return set_single_output(ctx, acc.clone());
      for (size_t i = 1; i < ctx.num_inputs(); ++i) {
        QTK_ASSIGN_OR_RETURN(acc, arith(acc, ctx.input(i), ctx.pool, name, Op{}));
      }
      return set_single_output(ctx, acc);
    });
  };
}

// Mean: sum in float32/float64 (halves widened once), then divide.
Status run_mean(KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(all_inputs_present(ctx, "Mean"));
  const DType dt = ctx.input(0).dtype();
  if (!is_float_dtype(dt)) return invalid_argument(std::string("Mean takes float tensors, got ") + dtype_name(dt));
  Tensor acc = widen_half(ctx.input(0), ctx.pool);
  if (ctx.num_inputs() == 1) acc = acc.clone();
  for (size_t i = 1; i < ctx.num_inputs(); ++i) {
    QTK_RETURN_IF_ERROR(same_dtype(ctx.input(0), ctx.input(i), "Mean"));
    QTK_ASSIGN_OR_RETURN(acc, arith(acc, widen_half(ctx.input(i), ctx.pool), ctx.pool, "Mean", AddOp{}));
  }
  const double n = static_cast<double>(ctx.num_inputs());
  auto divide = [n](auto x) { return static_cast<decltype(x)>(x / n); };
  QTK_ASSIGN_OR_RETURN(Tensor mean, map_float(acc, ctx.pool, "Mean", divide));
  return set_single_output(ctx, narrow_from_float(mean, dt, ctx.pool));
}

// ---------------------------------------------------------------------------
// Pow: base and exponent may have different dtypes; the output has the base's.

template <class TA, class TB>
TA int_pow(TA base, TB exp) {
  if constexpr (std::is_signed_v<TB>) {
    if (exp < 0) {  // exact value truncated toward zero, as a cast of pow() would give
      if (base == TA(1)) return TA(1);
      if constexpr (std::is_signed_v<TA>)
        if (base == TA(-1)) return (exp % 2 == 0) ? TA(1) : TA(-1);
      return TA(0);
    }
  }
  TA result = 1;
  auto e = static_cast<uint64_t>(exp);
  while (e) {
    if (e & 1u) result = wrap_mul(result, base);
    base = wrap_mul(base, base);
    e >>= 1;
  }
  return result;
}

template <class TA, class TB>
TA pow_one(TA x, TB y) {
  if constexpr (std::is_same_v<TA, float> && std::is_same_v<TB, float>) {
    return std::pow(x, y);
  } else if constexpr (std::is_floating_point_v<TA>) {
    return static_cast<TA>(std::pow(static_cast<double>(x), static_cast<double>(y)));
  } else if constexpr (std::is_integral_v<TB>) {
    return int_pow(x, y);
  } else {
    return float_to_integer<TA>(std::pow(static_cast<double>(x), static_cast<double>(y)));
  }
}

Expected<Tensor> pow_tensors(const Tensor& a, const Tensor& b0, ThreadPool* pool) {
  const DType out_dt = a.dtype();
  if (is_half_dtype(out_dt)) {
    QTK_ASSIGN_OR_RETURN(Tensor r, pow_tensors(widen_half(a, pool), b0, pool));
    return narrow_from_float(r, out_dt, pool);
  }
  const Tensor b = widen_half(b0, pool);
  if (!is_numeric_dtype(a.dtype()) || !is_numeric_dtype(b.dtype()))
    return invalid_argument("Pow takes numeric tensors, got " + dtypes_of(a, b0));
  return visit_numeric(a.dtype(), [&](auto ta) -> Expected<Tensor> {
    using TA = decltype(ta);
    return visit_numeric(b.dtype(), [&](auto tb) -> Expected<Tensor> {
      using TB = decltype(tb);
      return eval_binary<TA, TA, TB>(a, b, out_dt, pool, [](TA x, TB y) { return pow_one<TA, TB>(x, y); });
    });
  });
}

KernelFactory pow_factory() {
  return [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    const LegacyBroadcast legacy = read_legacy_broadcast(init);
    return make_fn_kernel([legacy](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 2));
      QTK_ASSIGN_OR_RETURN(Tensor b, legacy_rhs(legacy, ctx.input(0), ctx.input(1)));
      return set_single_output(ctx, pow_tensors(ctx.input(0), b, ctx.pool));
    });
  };
}

// ---------------------------------------------------------------------------
// Comparison and logic: bool outputs (1 byte per element).

struct EqualOp { template <class T> bool operator()(T a, T b) const { return a == b; } };
struct LessOp { template <class T> bool operator()(T a, T b) const { return a < b; } };
struct GreaterOp { template <class T> bool operator()(T a, T b) const { return a > b; } };
struct LessEqualOp { template <class T> bool operator()(T a, T b) const { return a <= b; } };
struct GreaterEqualOp { template <class T> bool operator()(T a, T b) const { return a >= b; } };

template <class Cmp>
Expected<Tensor> compare(const Tensor& a, const Tensor& b, ThreadPool* pool, const char* name, bool allow_bool) {
  QTK_RETURN_IF_ERROR(same_dtype(a, b, name));
  const DType dt = a.dtype();
  if (is_half_dtype(dt)) return compare<Cmp>(widen_half(a, pool), widen_half(b, pool), pool, name, allow_bool);
  if (dt == DType::kBool && allow_bool)
    return eval_binary<uint8_t, uint8_t, uint8_t>(a, b, DType::kBool, pool, [](uint8_t x, uint8_t y) {
      return static_cast<uint8_t>(Cmp{}(x != 0, y != 0));
    });
  if (!is_numeric_dtype(dt))
    return invalid_argument(std::string(name) + " does not take " + dtype_name(dt) + " tensors");
  return visit_numeric(dt, [&](auto tag) -> Expected<Tensor> {
    using T = decltype(tag);
    return eval_binary<uint8_t, T, T>(a, b, DType::kBool, pool,
                                      [](T x, T y) { return static_cast<uint8_t>(Cmp{}(x, y)); });
  });
}

template <class Cmp>
KernelFactory compare_factory(const char* name, bool allow_bool) {
  return [name, allow_bool](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    const LegacyBroadcast legacy = read_legacy_broadcast(init);
    return make_fn_kernel([name, allow_bool, legacy](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 2));
      QTK_ASSIGN_OR_RETURN(Tensor b, legacy_rhs(legacy, ctx.input(0), ctx.input(1)));
      return set_single_output(ctx, compare<Cmp>(ctx.input(0), b, ctx.pool, name, allow_bool));
    });
  };
}

template <class F>
KernelFactory logic_factory(const char* name, F f) {
  return [name, f](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    const LegacyBroadcast legacy = read_legacy_broadcast(init);
    return make_fn_kernel([name, f, legacy](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 2));
      const Tensor& a = ctx.input(0);
      QTK_ASSIGN_OR_RETURN(Tensor b, legacy_rhs(legacy, a, ctx.input(1)));
      if (a.dtype() != DType::kBool || b.dtype() != DType::kBool)
        return invalid_argument(std::string(name) + " takes bool tensors, got " + dtypes_of(a, b));
      return set_single_output(ctx, eval_binary<uint8_t, uint8_t, uint8_t>(a, b, DType::kBool, ctx.pool,
                                                                           [f](uint8_t x, uint8_t y) {
                                                                             return static_cast<uint8_t>(
                                                                                 f(x != 0, y != 0));
                                                                           }));
    });
  };
}

Status run_not(KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
  const Tensor& x = ctx.input(0);
  if (x.dtype() != DType::kBool) return invalid_argument(std::string("Not takes a bool tensor, got ") + dtype_name(x.dtype()));
  return set_single_output(ctx, eval_unary<uint8_t, uint8_t>(x, DType::kBool, ctx.pool,
                                                             [](uint8_t v) { return static_cast<uint8_t>(v == 0); }));
}

// BitShift (unsigned integers only); shifting by the bit width or more gives 0.
KernelFactory bitshift_factory() {
  return [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    const std::string dir = init.node.attr_string("direction", "");
    if (dir != "LEFT" && dir != "RIGHT") return invalid_argument("BitShift direction must be LEFT or RIGHT, got '" + dir + "'");
    const bool left = dir == "LEFT";
    return make_fn_kernel([left](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 2));
      const Tensor &a = ctx.input(0), &b = ctx.input(1);
      QTK_RETURN_IF_ERROR(same_dtype(a, b, "BitShift"));
      auto run = [&](auto tag) -> Expected<Tensor> {
        using T = decltype(tag);
        return eval_binary<T, T, T>(a, b, a.dtype(), ctx.pool, [left](T x, T s) -> T {
          if (s >= sizeof(T) * 8) return T(0);
          return left ? static_cast<T>(x << s) : static_cast<T>(x >> s);
        });
      };
      switch (a.dtype()) {
        case DType::kUInt8: return set_single_output(ctx, run(uint8_t{}));
        case DType::kUInt16: return set_single_output(ctx, run(uint16_t{}));
        case DType::kUInt32: return set_single_output(ctx, run(uint32_t{}));
        case DType::kUInt64: return set_single_output(ctx, run(uint64_t{}));
        default: return invalid_argument(std::string("BitShift takes unsigned integers, got ") + dtype_name(a.dtype()));
      }
    });
  };
}

// ---------------------------------------------------------------------------
// Unary

template <class F>
KernelFactory unary_float_factory(const char* name, F f) {
  return [name, f](const KernelInit&) -> Expected<std::unique_ptr<Kernel>> {
    return make_fn_kernel([name, f](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
      return set_single_output(ctx, map_float(ctx.input(0), ctx.pool, name, f));
    });
  };
}

template <class F>
KernelFactory unary_numeric_factory(const char* name, F f) {
  return [name, f](const KernelInit&) -> Expected<std::unique_ptr<Kernel>> {
    return make_fn_kernel([name, f](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
      return set_single_output(ctx, map_numeric(ctx.input(0), ctx.pool, name, f));
    });
  };
}

// x -> bool for float tensors (IsNaN, IsInf).
template <class Pred>
Expected<Tensor> float_predicate(const Tensor& x0, ThreadPool* pool, const char* name, Pred pred) {
  const Tensor x = widen_half(x0, pool);
  if (x.dtype() != DType::kFloat32 && x.dtype() != DType::kFloat64)
    return invalid_argument(std::string(name) + " takes a float tensor, got " + dtype_name(x0.dtype()));
  return visit_float(x.dtype(), [&](auto tag) -> Expected<Tensor> {
    using T = decltype(tag);
    return eval_unary<uint8_t, T>(x, DType::kBool, pool, [pred](T v) { return static_cast<uint8_t>(pred(v)); });
  });
}

// ---------------------------------------------------------------------------
// Where: the element type only matters by size, so values are moved as bytes.

template <class E>
void where_loop(const BroadcastPlan<3>& p, const uint8_t* c, const E* x, const E* y, E* o, ThreadPool* pool) {
  const int64_t sc = p.inner_stride(0), sx = p.inner_stride(1), sy = p.inner_stride(2);
  for_each_broadcast_run(p, pool, [&](const std::array<int64_t, 3>& off, int64_t ob, int64_t cnt) {
    const uint8_t* pc = c + off[0];
    const E* px = x + off[1];
    const E* py = y + off[2];
    E* po = o + ob;
    for (int64_t i = 0; i < cnt; ++i) po[i] = pc[i * sc] ? px[i * sx] : py[i * sy];
  });
}

Status run_where(KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(expect_inputs(ctx, 3));
  const Tensor &c = ctx.input(0), &x = ctx.input(1), &y = ctx.input(2);
  if (c.dtype() != DType::kBool)
    return invalid_argument(std::string("Where condition must be bool, got ") + dtype_name(c.dtype()));
  QTK_RETURN_IF_ERROR(same_dtype(x, y, "Where"));
  QTK_ASSIGN_OR_RETURN(BroadcastPlan<3> plan, make_broadcast_plan<3>({&c.shape(), &x.shape(), &y.shape()}));
  Tensor out(x.dtype(), plan.out_shape);
  const auto* pc = c.data<uint8_t>();
  switch (dtype_size(x.dtype())) {
    case 1: where_loop(plan, pc, x.data<uint8_t>(), y.data<uint8_t>(), out.data<uint8_t>(), ctx.pool); break;
    case 2: where_loop(plan, pc, x.data<uint16_t>(), y.data<uint16_t>(), out.data<uint16_t>(), ctx.pool); break;
    case 4: where_loop(plan, pc, x.data<uint32_t>(), y.data<uint32_t>(), out.data<uint32_t>(), ctx.pool); break;
    case 8: where_loop(plan, pc, x.data<uint64_t>(), y.data<uint64_t>(), out.data<uint64_t>(), ctx.pool); break;
    default: return unsupported(std::string("Where on ") + dtype_name(x.dtype()) + " tensors is not supported");
  }
  return set_single_output(ctx, out);
}

// ---------------------------------------------------------------------------
// Cast / CastLike

// Target dtypes Cast may name but qtk cannot hold get kUnsupported; numbers
// that are no ONNX type at all are invalid.
Status check_cast_target(int64_t to) {
  if (to == static_cast<int64_t>(DType::kString)) return unsupported("Cast to string is not supported");
  if (to >= 17 && to <= 20) return unsupported("Cast to float8 types is not supported");
  if (to == 14 || to == 15 || to == 21 || to == 22 || to == 23)
    return unsupported("Cast to ONNX type " + std::to_string(to) + " (complex / 4-bit) is not supported");
  if (to <= 0 || to > 23 || !dtype_is_known(static_cast<int32_t>(to)))
    return invalid_argument("Cast 'to' = " + std::to_string(to) + " is not an ONNX tensor type");
  return Status::Ok();
}

// Float -> bfloat16 rounding: the ONNX reference truncated until opset 19,
// where Cast gained a specification (round to nearest even).
BFloat16Rounding bf16_rounding(int64_t opset) {
  return (opset > 0 && opset < 19) ? BFloat16Rounding::kTruncate : BFloat16Rounding::kNearestEven;
}

KernelFactory cast_factory() {
  return [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    if (!init.node.has_attr("to")) return invalid_argument("Cast needs the 'to' attribute");
    const int64_t to = init.node.attr_int("to", 0);
    QTK_RETURN_IF_ERROR(check_cast_target(to));
    const BFloat16Rounding rounding = bf16_rounding(init.opset);
    return make_fn_kernel([to, rounding](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
      const Tensor& x = ctx.input(0);
      if (x.dtype() == static_cast<DType>(to)) return set_single_output(ctx, x);
      return set_single_output(ctx, convert_dtype(x, static_cast<DType>(to), ctx.pool, rounding));
    });
  };
}

KernelFactory castlike_factory() {
  return [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    const BFloat16Rounding rounding = bf16_rounding(init.opset);
    return make_fn_kernel([rounding](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 2));
      const DType to = ctx.input(1).dtype();
      QTK_RETURN_IF_ERROR(check_cast_target(static_cast<int64_t>(to)));
      const Tensor& x = ctx.input(0);
      if (x.dtype() == to) return set_single_output(ctx, x);
      return set_single_output(ctx, convert_dtype(x, to, ctx.pool, rounding));
    });
  };
}

KernelFactory isinf_factory() {
  return [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    const bool neg = init.node.attr_int("detect_negative", 1) != 0;
    const bool pos = init.node.attr_int("detect_positive", 1) != 0;
    return make_fn_kernel([neg, pos](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
      return set_single_output(ctx, float_predicate(ctx.input(0), ctx.pool, "IsInf", [neg, pos](auto v) {
                                 return std::isinf(v) && ((v > 0 && pos) || (v < 0 && neg));
                               }));
    });
  };
}

template <class Fn>
KernelFactory plain(Fn fn) {
  return [fn](const KernelInit&) -> Expected<std::unique_ptr<Kernel>> { return make_fn_kernel(fn); };
}

}  // namespace

void register_elementwise_ops(OpRegistry& r) {
  r.add("Add", binary_arith_factory<AddOp>("Add"));
  r.add("Sub", binary_arith_factory<SubOp>("Sub"));
  r.add("Mul", binary_arith_factory<MulOp>("Mul"));
  r.add("Div", binary_arith_factory<DivOp>("Div"));
  r.add("Pow", pow_factory());
  r.add("Mod", [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    ModOp op;
    op.fmod = init.node.attr_int("fmod", 0) != 0;
    return binary_arith_factory<ModOp>("Mod", op)(init);
  });
  r.add("Max", variadic_factory<MaxOp>("Max"));
  r.add("Min", variadic_factory<MinOp>("Min"));
  r.add("Sum", variadic_factory<AddOp>("Sum"));
  r.add("Mean", plain(run_mean));

  r.add("Equal", compare_factory<EqualOp>("Equal", /*allow_bool=*/true));
  r.add("Less", compare_factory<LessOp>("Less", false));
  r.add("Greater", compare_factory<GreaterOp>("Greater", false));
  r.add("LessOrEqual", compare_factory<LessEqualOp>("LessOrEqual", false));
  r.add("GreaterOrEqual", compare_factory<GreaterEqualOp>("GreaterOrEqual", false));
  r.add("And", logic_factory("And", [](bool x, bool y) { return x && y; }));
  r.add("Or", logic_factory("Or", [](bool x, bool y) { return x || y; }));
  r.add("Xor", logic_factory("Xor", [](bool x, bool y) { return x != y; }));
  r.add("Not", plain(run_not));
  r.add("BitShift", bitshift_factory());

  r.add("Sqrt", unary_float_factory("Sqrt", [](auto x) { return std::sqrt(x); }));
  r.add("Exp", unary_float_factory("Exp", [](auto x) { return std::exp(x); }));
  r.add("Log", unary_float_factory("Log", [](auto x) { return std::log(x); }));
  r.add("Reciprocal", unary_float_factory("Reciprocal", [](auto x) { return decltype(x)(1) / x; }));
  r.add("Floor", unary_float_factory("Floor", [](auto x) { return std::floor(x); }));
  r.add("Ceil", unary_float_factory("Ceil", [](auto x) { return std::ceil(x); }));
  // Round half to even: nearbyint in the default rounding mode.
  r.add("Round", unary_float_factory("Round", [](auto x) { return std::nearbyint(x); }));
  r.add("Sin", unary_float_factory("Sin", [](auto x) { return std::sin(x); }));
  r.add("Cos", unary_float_factory("Cos", [](auto x) { return std::cos(x); }));
  r.add("Tan", unary_float_factory("Tan", [](auto x) { return std::tan(x); }));
  r.add("Asin", unary_float_factory("Asin", [](auto x) { return std::asin(x); }));
  r.add("Acos", unary_float_factory("Acos", [](auto x) { return std::acos(x); }));
  r.add("Atan", unary_float_factory("Atan", [](auto x) { return std::atan(x); }));
  r.add("Sinh", unary_float_factory("Sinh", [](auto x) { return std::sinh(x); }));
  r.add("Cosh", unary_float_factory("Cosh", [](auto x) { return std::cosh(x); }));
  r.add("Asinh", unary_float_factory("Asinh", [](auto x) { return std::asinh(x); }));
  r.add("Acosh", unary_float_factory("Acosh", [](auto x) { return std::acosh(x); }));
  r.add("Atanh", unary_float_factory("Atanh", [](auto x) { return std::atanh(x); }));

  r.add("Abs", unary_numeric_factory("Abs", [](auto x) {
    using T = decltype(x);
    if constexpr (std::is_unsigned_v<T>) return x;
    else if constexpr (std::is_integral_v<T>) return x < 0 ? wrap_neg(x) : x;
    else return std::abs(x);
  }));
  r.add("Neg", unary_numeric_factory("Neg", [](auto x) {
    using T = decltype(x);
    if constexpr (std::is_integral_v<T>) return wrap_neg(x);
    else return static_cast<T>(-x);
  }));
  r.add("Sign", unary_numeric_factory("Sign", [](auto x) {
    using T = decltype(x);
    if constexpr (std::is_unsigned_v<T>) {
      return static_cast<T>(x != 0);
    } else {
      if constexpr (std::is_floating_point_v<T>)
        if (std::isnan(x)) return x;
      return static_cast<T>(static_cast<int>(T(0) < x) - static_cast<int>(x < T(0)));
    }
  }));
  r.add("IsNaN", plain([](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
    return set_single_output(ctx, float_predicate(ctx.input(0), ctx.pool, "IsNaN", [](auto v) { return std::isnan(v); }));
  }));
  r.add("IsInf", isinf_factory());

  r.add("Where", plain(run_where));
  r.add("Cast", cast_factory());
  r.add("CastLike", castlike_factory());
}

}  // namespace qtk::rt
