// Reduce* and ArgMax/ArgMin reference kernels.
//
// Version differences handled here:
//  - axes is an attribute before opset 18 (ReduceSum: before opset 13) and an
//    optional int64 input from then on, together with noop_with_empty_axes;
//  - ReduceMax/ReduceMin accept bool from opset 20;
//  - ArgMax/ArgMin gained select_last_index at opset 12.
// Reductions over an empty set give the identity of the reduction (0 for sums,
// 1 for products, -inf/+inf or the type's extreme for Max/Min, NaN for Mean,
// -inf for LogSum/LogSumExp), as the ONNX spec asks from opset 18.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "runtime/kernels/ref/common.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk::rt {

namespace {

using ref::dispatch_numeric;
using ref::expect_inputs;
using ref::normalize_axis;

enum class ReduceKind { kSum, kMean, kMax, kMin, kProd, kSumSquare, kL1, kL2, kLogSum, kLogSumExp };

// Element offsets, in row-major order, of every coordinate of the dims in
// `dims` (others held at 0). Empty when one of those dims is 0.
std::vector<int64_t> offsets_over(const Shape& shape, const std::vector<int64_t>& strides,
                                  const std::vector<int>& dims) {
  int64_t count = 1;
  for (int d : dims) count *= shape[d];
  std::vector<int64_t> offs;
  if (count == 0) return offs;
  offs.reserve(static_cast<size_t>(count));
  std::vector<int64_t> coord(dims.size(), 0);
  int64_t off = 0;
  for (int64_t i = 0; i < count; ++i) {
    offs.push_back(off);
    // Odometer increment, last dim fastest.
    for (size_t k = dims.size(); k-- > 0;) {
      const int d = dims[k];
      if (++coord[k] < shape[d]) {
        off += strides[d];
        break;
      }
      off -= (shape[d] - 1) * strides[d];
      coord[k] = 0;
    }
  }
  return offs;
}

std::vector<int64_t> row_major_strides(const Shape& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (size_t k = s.size(); k-- > 1;) st[k - 1] = st[k] * s[k];
  return st;
}

// Accumulator type: double for floats, 64-bit integers of the same
// signedness otherwise (so int sums wrap only where the output type would).
template <class T>
using Acc = std::conditional_t<std::is_floating_point_v<T>, double,
                               std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>>;

// double -> T; for integer outputs a non-finite value (log(0), say) becomes 0
// instead of an undefined conversion.
template <class T>
T from_double(double v) {
  if constexpr (!std::is_floating_point_v<T>) {
    if (!std::isfinite(v)) return T{0};
  }
  return static_cast<T>(v);
}

template <class T>
T reduce_one(ReduceKind kind, const T* x, int64_t base, const std::vector<int64_t>& offs) {
  using A = Acc<T>;
  constexpr bool kFloat = std::is_floating_point_v<T>;
  const size_t n = offs.size();
  switch (kind) {
    case ReduceKind::kSum: {
      A acc = 0;
      for (size_t r = 0; r < n; ++r) acc += static_cast<A>(x[base + offs[r]]);
      return static_cast<T>(acc);
    }
    case ReduceKind::kMean: {
      A acc = 0;
      for (size_t r = 0; r < n; ++r) acc += static_cast<A>(x[base + offs[r]]);
      if constexpr (kFloat) {
        return static_cast<T>(n == 0 ? std::numeric_limits<double>::quiet_NaN() : acc / static_cast<double>(n));
      } else {
        return static_cast<T>(n == 0 ? 0 : acc / static_cast<A>(n));  // no NaN for integers
      }
    }
    case ReduceKind::kProd: {
      A acc = 1;
      for (size_t r = 0; r < n; ++r) acc *= static_cast<A>(x[base + offs[r]]);
      return static_cast<T>(acc);
    }
    case ReduceKind::kSumSquare: {
      A acc = 0;
      for (size_t r = 0; r < n; ++r) {
        A v = static_cast<A>(x[base + offs[r]]);
        acc += v * v;
      }
      return static_cast<T>(acc);
    }
    case ReduceKind::kL1: {
      A acc = 0;
      for (size_t r = 0; r < n; ++r) {
        A v = static_cast<A>(x[base + offs[r]]);
        if constexpr (std::is_signed_v<A>) v = v < 0 ? -v : v;
        acc += v;
      }
      return static_cast<T>(acc);
    }
    case ReduceKind::kL2: {
      double acc = 0;
      for (size_t r = 0; r < n; ++r) {
        double v = static_cast<double>(x[base + offs[r]]);
        acc += v * v;
      }
      return from_double<T>(std::sqrt(acc));
    }
    case ReduceKind::kLogSum: {
      double acc = 0;
      for (size_t r = 0; r < n; ++r) acc += static_cast<double>(x[base + offs[r]]);
      return from_double<T>(std::log(acc));
    }
    case ReduceKind::kLogSumExp: {
      // Shift by the maximum so exp() cannot overflow.
      double m = -std::numeric_limits<double>::infinity();
      for (size_t r = 0; r < n; ++r) m = std::max(m, static_cast<double>(x[base + offs[r]]));
      if (n == 0 || std::isinf(m)) return from_double<T>(m);
      double acc = 0;
      for (size_t r = 0; r < n; ++r) acc += std::exp(static_cast<double>(x[base + offs[r]]) - m);
      return from_double<T>(std::log(acc) + m);
    }
    case ReduceKind::kMax:
    case ReduceKind::kMin: {
      const bool is_max = kind == ReduceKind::kMax;
      T acc;
      if constexpr (kFloat)
        acc = is_max ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity();
      else
        acc = is_max ? std::numeric_limits<T>::lowest() : std::numeric_limits<T>::max();
      for (size_t r = 0; r < n; ++r) {
        const T v = x[base + offs[r]];
        if constexpr (kFloat) {
          if (std::isnan(v)) return v;  // NaN propagates, as in numpy
        }
        if (is_max ? v > acc : v < acc) acc = v;
      }
      return acc;
    }
  }
  return T{};
}

struct ReduceAttrs {
  ReduceKind kind;
  bool keepdims;
  bool noop_with_empty_axes;
  bool axes_from_input;
  std::vector<int64_t> attr_axes;
  bool has_attr_axes;
};

Status run_reduce(const ReduceAttrs& a, KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
  const Tensor& x = ctx.input(0);
  const int rank = x.rank();

  std::vector<int64_t> axes;
  bool axes_given = false;
  if (a.axes_from_input) {
    if (ctx.has_input(1)) {
      const Tensor& t = ctx.input(1);
      if (t.dtype() != DType::kInt64 && t.dtype() != DType::kInt32)
        return invalid_argument(std::string("axes must be int64, got ") + dtype_name(t.dtype()));
      if (t.rank() > 1) return invalid_argument("axes must be a 1-D tensor, got shape " + shape_to_string(t.shape()));
      axes = t.to_int64_vector();
      axes_given = !axes.empty();
    }
  } else {
    axes = a.attr_axes;
    axes_given = a.has_attr_axes && !axes.empty();
  }

  // Which dims are reduced. With no axes: every dim, or none for the noop form
  // (reducing over no axes is the element-wise form of the reduction, e.g.
  // x*x for ReduceSumSquare, which is also what ONNX's reference does).
  std::vector<bool> reduced(rank, false);
  if (axes_given) {
    for (int64_t ax : axes) {
      QTK_ASSIGN_OR_RETURN(int d, normalize_axis(ax, rank, "reduce axis"));
      if (reduced[d]) return invalid_argument("axis " + std::to_string(ax) + " is listed twice");
      reduced[d] = true;
    }
  } else if (!(a.axes_from_input && a.noop_with_empty_axes)) {
    std::fill(reduced.begin(), reduced.end(), true);
  }

  std::vector<int> kept_dims, red_dims;
  Shape out_shape;
  for (int d = 0; d < rank; ++d) {
    if (reduced[d]) {
      red_dims.push_back(d);
      if (a.keepdims) out_shape.push_back(1);
    } else {
      kept_dims.push_back(d);
      out_shape.push_back(x.shape()[d]);
    }
  }
  const auto strides = row_major_strides(x.shape());
  const auto bases = offsets_over(x.shape(), strides, kept_dims);
  const auto offs = offsets_over(x.shape(), strides, red_dims);

  const bool is_bool = x.dtype() == DType::kBool;
  if (is_bool && a.kind != ReduceKind::kMax && a.kind != ReduceKind::kMin)
    return unsupported("bool input is only defined for ReduceMax and ReduceMin");
  Tensor y(x.dtype(), out_shape);
  const int64_t n_out = static_cast<int64_t>(bases.size());
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, static_cast<int64_t>(offs.size())));
  auto body = [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    ctx.pool->parallel_for(
        n_out,
        [&](int64_t b, int64_t e) {
          for (int64_t o = b; o < e; ++o) yp[o] = reduce_one<T>(a.kind, xp, bases[o], offs);
        },
        grain);
  };
  if (is_bool) {
    body(uint8_t{});  // max = any, min = all on 0/1 bytes
  } else {
    QTK_RETURN_IF_ERROR(dispatch_numeric(x.dtype(), body));
  }
  ctx.outputs[0] = std::move(y);
  return Status::Ok();
}

KernelFactory reduce_factory(ReduceKind kind, int axes_input_since) {
  return [kind, axes_input_since](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    ReduceAttrs a;
    a.kind = kind;
    a.keepdims = init.node.attr_int("keepdims", 1) != 0;
    a.noop_with_empty_axes = init.node.attr_int("noop_with_empty_axes", 0) != 0;
    a.axes_from_input = init.opset >= axes_input_since;
    a.has_attr_axes = init.node.has_attr("axes");
    a.attr_axes = init.node.attr_ints("axes");
    if (a.axes_from_input && a.has_attr_axes)
      return invalid_argument("axes is an input from opset " + std::to_string(axes_input_since) +
                              ", not an attribute");
    return make_fn_kernel([a](KernelContext& ctx) { return run_reduce(a, ctx); });
  };
}

// ---- ArgMax / ArgMin -------------------------------------------------------

struct ArgAttrs {
  bool is_max;
  int64_t axis;
  bool keepdims;
  bool select_last;
};

Status run_arg(const ArgAttrs& a, KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
  const Tensor& x = ctx.input(0);
  const int rank = x.rank();
  if (rank == 0) return invalid_argument("ArgMax/ArgMin input must have rank >= 1");
  QTK_ASSIGN_OR_RETURN(int axis, normalize_axis(a.axis, rank));
  const int64_t len = x.shape()[axis];
  if (len == 0) return invalid_argument("cannot take the arg of an empty axis " + std::to_string(axis));
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < axis; ++d) outer *= x.shape()[d];
  for (int d = axis + 1; d < rank; ++d) inner *= x.shape()[d];
  Shape out_shape = x.shape();
  if (a.keepdims)
    out_shape[axis] = 1;
  else
    out_shape.erase(out_shape.begin() + axis);
  Tensor y(DType::kInt64, out_shape);
  int64_t* yp = y.data<int64_t>();

  auto body = [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        const T* row = xp + o * len * inner + i;
        int64_t best = 0;
        T bv = row[0];
        for (int64_t k = 1; k < len; ++k) {
          const T v = row[k * inner];
          if constexpr (std::is_floating_point_v<T>) {
            if (std::isnan(bv)) break;  // the first NaN wins, as in numpy
            if (std::isnan(v)) {
              best = k;
              bv = v;
              break;
            }
          }
          const bool better = a.is_max ? (v > bv || (a.select_last && v == bv))
                                       : (v < bv || (a.select_last && v == bv));
          if (better) {
            best = k;
            bv = v;
          }
        }
        yp[o * inner + i] = best;
      }
  };
  QTK_RETURN_IF_ERROR(dispatch_numeric(x.dtype(), body));
  ctx.outputs[0] = std::move(y);
  return Status::Ok();
}

KernelFactory arg_factory(bool is_max) {
  return [is_max](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    ArgAttrs a{is_max, init.node.attr_int("axis", 0), init.node.attr_int("keepdims", 1) != 0,
               init.node.attr_int("select_last_index", 0) != 0};
    return make_fn_kernel([a](KernelContext& ctx) { return run_arg(a, ctx); });
  };
}

}  // namespace

void register_reduce_ops(OpRegistry& r) {
  const struct {
    const char* name;
    ReduceKind kind;
    int axes_input_since;
  } ops[] = {
      {"ReduceSum", ReduceKind::kSum, 13},
      {"ReduceMean", ReduceKind::kMean, 18},
      {"ReduceMax", ReduceKind::kMax, 18},
      {"ReduceMin", ReduceKind::kMin, 18},
      {"ReduceProd", ReduceKind::kProd, 18},
      {"ReduceSumSquare", ReduceKind::kSumSquare, 18},
      {"ReduceL1", ReduceKind::kL1, 18},
      {"ReduceL2", ReduceKind::kL2, 18},
      {"ReduceLogSum", ReduceKind::kLogSum, 18},
      {"ReduceLogSumExp", ReduceKind::kLogSumExp, 18},
  };
  for (const auto& op : ops) r.add(op.name, reduce_factory(op.kind, op.axes_input_since));
  r.add("ArgMax", arg_factory(true));
  r.add("ArgMin", arg_factory(false));
}

}  // namespace qtk::rt
