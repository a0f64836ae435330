// Shared machinery of the elementwise, activation and generator kernels:
// parallel ranges, multidirectional (numpy) broadcasting with collapsed
// dimensions, dtype visitors and dtype conversion (Cast and the float16 /
// bfloat16 paths, which compute in float32).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "runtime/kernels/ref/common.h"
#include "runtime/thread_pool.h"

namespace qtk::rt::ref {

// Below this many elements a loop runs on the calling thread: waking the
// pool costs more than it saves.
inline constexpr int64_t kElementwiseGrain = int64_t{1} << 15;

// fn(begin, end) over [0, n); split over the pool when n is large.
template <class F>
void parallel_range(ThreadPool* pool, int64_t n, F&& fn, int64_t grain = kElementwiseGrain) {
  if (n <= 0) return;
  if (pool == nullptr || pool->size() <= 1 || n < 2 * grain) {
    fn(int64_t{0}, n);
    return;
  }
  pool->parallel_for(n, [&fn](int64_t b, int64_t e) { fn(b, e); }, grain);
}

// ---------------------------------------------------------------------------
// dtype helpers

inline bool is_float_dtype(DType t) {
  return t == DType::kFloat32 || t == DType::kFloat64 || t == DType::kFloat16 || t == DType::kBFloat16;
}
inline bool is_half_dtype(DType t) { return t == DType::kFloat16 || t == DType::kBFloat16; }
inline bool is_integer_dtype(DType t) {
  switch (t) {
    case DType::kInt8: case DType::kInt16: case DType::kInt32: case DType::kInt64:
    case DType::kUInt8: case DType::kUInt16: case DType::kUInt32: case DType::kUInt64:
      return true;
    default:
      return false;
  }
}
inline bool is_numeric_dtype(DType t) { return is_float_dtype(t) || is_integer_dtype(t); }

// Calls f(T{}) for the C++ type T of a numeric dtype (not float16/bfloat16,
// which callers widen to float32 first) and returns its result; R must be
// constructible from a Status.
template <class F>
auto visit_numeric(DType dt, F&& f) -> decltype(f(float{})) {
  using R = decltype(f(float{}));
  switch (dt) {
    case DType::kFloat32: return f(float{});
    case DType::kFloat64: return f(double{});
    case DType::kInt64: return f(int64_t{});
    case DType::kInt32: return f(int32_t{});
    case DType::kInt16: return f(int16_t{});
    case DType::kInt8: return f(int8_t{});
    case DType::kUInt8: return f(uint8_t{});
    case DType::kUInt16: return f(uint16_t{});
    case DType::kUInt32: return f(uint32_t{});
    case DType::kUInt64: return f(uint64_t{});
    default: return R(unsupported(std::string("dtype ") + dtype_name(dt) + " is not supported here"));
  }
}

// Same, for float32 / float64 only.
template <class F>
auto visit_float(DType dt, F&& f) -> decltype(f(float{})) {
  using R = decltype(f(float{}));
  switch (dt) {
    case DType::kFloat32: return f(float{});
    case DType::kFloat64: return f(double{});
    default: return R(unsupported(std::string("dtype ") + dtype_name(dt) + " is not supported here"));
  }
}

// Wrapping integer arithmetic: ONNX integer ops wrap on overflow, C++ signed
// overflow is undefined, so compute in the unsigned type of at least int width.
template <class T>
using WrapType = std::conditional_t<(sizeof(T) < sizeof(unsigned)), unsigned, std::make_unsigned_t<T>>;
template <class T> T wrap_add(T a, T b) { return static_cast<T>(static_cast<WrapType<T>>(a) + static_cast<WrapType<T>>(b)); }
template <class T> T wrap_sub(T a, T b) { return static_cast<T>(static_cast<WrapType<T>>(a) - static_cast<WrapType<T>>(b)); }
template <class T> T wrap_mul(T a, T b) { return static_cast<T>(static_cast<WrapType<T>>(a) * static_cast<WrapType<T>>(b)); }
template <class T> T wrap_neg(T a) { return static_cast<T>(WrapType<T>{0} - static_cast<WrapType<T>>(a)); }

// Float to integer: truncate toward zero. The C++ cast is undefined outside
// the target range, so NaN maps to 0 and values are first brought into the
// int64 (uint64) range, then narrowed with wrap-around as numpy does.
template <class I>
I float_to_integer(double v) {
  if (std::isnan(v)) return I{0};
  if constexpr (std::is_same_v<I, uint64_t>) {
    if (v >= 18446744073709551616.0) return std::numeric_limits<uint64_t>::max();
    if (v > -1.0) return static_cast<uint64_t>(v);
  }
  if (v >= 9223372036854775807.0) return static_cast<I>(std::numeric_limits<int64_t>::max());
  if (v <= -9223372036854775808.0) return static_cast<I>(std::numeric_limits<int64_t>::min());
  return static_cast<I>(static_cast<int64_t>(v));
}

// Assigns a kernel's only output (or returns the error that replaced it).
inline Status set_single_output(KernelContext& ctx, Expected<Tensor> r) {
  if (!r.ok()) return r.status();
  if (ctx.outputs.empty()) return invalid_argument("node has no output");
  ctx.outputs[0] = std::move(r).value();
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Broadcasting

// K input shapes broadcast to one output. Output dimensions of size 1 are
// dropped and neighbouring dimensions that every input walks contiguously
// (or broadcasts together) are merged, so [64,256,8,8]+[64,256,8,8] is one
// run of 1M elements and [N,C,H,W]+[C,1,1] is rows of H*W against a scalar.
template <size_t K>
struct BroadcastPlan {
  Shape out_shape;
  int64_t numel = 0;
  std::vector<int64_t> dims;                    // collapsed output dims, never empty
  std::array<std::vector<int64_t>, K> strides;  // element strides per input, per collapsed dim
  int64_t inner() const { return dims.back(); }
  // 1 when input k walks the innermost run, 0 when it is broadcast along it.
  int64_t inner_stride(size_t k) const { return strides[k].back(); }
};

template <size_t K>
Expected<BroadcastPlan<K>> make_broadcast_plan(const std::array<const Shape*, K>& shapes) {
  BroadcastPlan<K> p;
  Shape out = *shapes[0];
  for (size_t k = 1; k < K; ++k) {
    auto s = broadcast_shapes(out, *shapes[k]);
    if (!s.ok()) {
      std::string all;
      for (size_t j = 0; j < K; ++j) all += (j ? " and " : "") + shape_to_string(*shapes[j]);
      return invalid_argument("input shapes " + all + " are not broadcastable");
    }
    out = std::move(s).value();
  }
  std::array<std::vector<int64_t>, K> full;
  for (size_t k = 0; k < K; ++k) full[k] = broadcast_strides(*shapes[k], out);
  for (size_t d = 0; d < out.size(); ++d) {
    if (out[d] == 1) continue;
    if (!p.dims.empty()) {
      bool merge = true;
      for (size_t k = 0; k < K; ++k) merge = merge && p.strides[k].back() == full[k][d] * out[d];
      if (merge) {
        p.dims.back() *= out[d];
        for (size_t k = 0; k < K; ++k) p.strides[k].back() = full[k][d];
        continue;
      }
    }
    p.dims.push_back(out[d]);
    for (size_t k = 0; k < K; ++k) p.strides[k].push_back(full[k][d]);
  }
  if (p.dims.empty()) {
    p.dims.push_back(1);
    for (size_t k = 0; k < K; ++k) p.strides[k].push_back(0);
  }
  p.numel = shape_numel(out);
  p.out_shape = std::move(out);
  return p;
}

// Calls fn(offsets, out_begin, count) for runs of consecutive output elements
// within one innermost row: input k starts at element offsets[k] and advances
// by p.inner_stride(k) per element. Runs are split over the pool.
template <size_t K, class F>
void for_each_broadcast_run(const BroadcastPlan<K>& p, ThreadPool* pool, F&& fn) {
  const int64_t n = p.inner();
  const size_t outer_rank = p.dims.size() - 1;
  if (p.numel <= 0 || n <= 0) return;
  parallel_range(pool, p.numel, [&](int64_t begin, int64_t end) {
    int64_t row = begin / n, col = begin % n;
    std::vector<int64_t> idx(outer_rank, 0);
    for (size_t d = outer_rank; d-- > 0;) {
      idx[d] = row % p.dims[d];
      row /= p.dims[d];
    }
    std::array<int64_t, K> off;
    while (begin < end) {
      for (size_t k = 0; k < K; ++k) {
        int64_t o = col * p.strides[k][outer_rank];
        for (size_t d = 0; d < outer_rank; ++d) o += idx[d] * p.strides[k][d];
        off[k] = o;
      }
      const int64_t cnt = std::min(n - col, end - begin);
      fn(off, begin, cnt);
      begin += cnt;
      col = 0;
      for (size_t d = outer_rank; d-- > 0;) {
        if (++idx[d] < p.dims[d]) break;
        idx[d] = 0;
      }
    }
  });
}

// out[i] = f(a[i], b[i]) with broadcasting. The four inner loops (both
// walking, one broadcast, both broadcast) keep the hot loop free of strides
// so the compiler vectorises it.
template <class TA, class TB, class TO, class F>
void binary_broadcast_loop(const BroadcastPlan<2>& p, const TA* a, const TB* b, TO* o, ThreadPool* pool, F f) {
  const int64_t sa = p.inner_stride(0), sb = p.inner_stride(1);
  for_each_broadcast_run(p, pool, [&](const std::array<int64_t, 2>& off, int64_t ob, int64_t cnt) {
    const TA* __restrict pa = a + off[0];
    const TB* __restrict pb = b + off[1];
    TO* __restrict po = o + ob;
    if (sa != 0 && sb != 0) {
      for (int64_t i = 0; i < cnt; ++i) po[i] = f(pa[i], pb[i]);
    } else if (sa != 0) {
      const TB vb = *pb;
      for (int64_t i = 0; i < cnt; ++i) po[i] = f(pa[i], vb);
    } else if (sb != 0) {
      const TA va = *pa;
      for (int64_t i = 0; i < cnt; ++i) po[i] = f(va, pb[i]);
    } else {
      const TO v = f(*pa, *pb);
      for (int64_t i = 0; i < cnt; ++i) po[i] = v;
    }
  });
}

// Broadcasts a and b, allocates the output of dtype `out_dtype` (C++ type TO)
// and fills it with f(a, b).
template <class TO, class TA, class TB, class F>
Expected<Tensor> eval_binary(const Tensor& a, const Tensor& b, DType out_dtype, ThreadPool* pool, F f) {
  QTK_ASSIGN_OR_RETURN(BroadcastPlan<2> plan, make_broadcast_plan<2>({&a.shape(), &b.shape()}));
  Tensor out = Tensor::uninitialized(out_dtype, plan.out_shape);  // the loop writes every element
  binary_broadcast_loop(plan, a.data<TA>(), b.data<TB>(), out.data<TO>(), pool, f);
  return out;
}

// out[i] = f(x[i]) over a contiguous tensor.
template <class TO, class TI, class F>
Tensor eval_unary(const Tensor& x, DType out_dtype, ThreadPool* pool, F f) {
  Tensor y = Tensor::uninitialized(out_dtype, x.shape());  // every element is written below
  const TI* __restrict in = x.data<TI>();
  TO* __restrict out = y.data<TO>();
  parallel_range(pool, x.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) out[i] = f(in[i]);
  });
  return y;
}

// ---------------------------------------------------------------------------
// dtype conversion (elementwise_common.cpp)

enum class BFloat16Rounding { kNearestEven, kTruncate };

// Every element of `in` converted to `to`, with ONNX Cast semantics: to bool
// is "!= 0"; float to integer truncates toward zero (NaN gives 0, values past
// the int64 range saturate before narrowing); integer narrowing wraps.
// Fails (kUnsupported) for dtypes qtk cannot hold.
Expected<Tensor> convert_dtype(const Tensor& in, DType to, ThreadPool* pool = nullptr,
                               BFloat16Rounding bf16 = BFloat16Rounding::kNearestEven);

// A float16/bfloat16 tensor widened to float32; other tensors unchanged.
Tensor widen_half(const Tensor& t, ThreadPool* pool = nullptr);

// One element of value 1 (true for bool) of dtype `dt`.
Expected<Tensor> one_of_dtype(DType dt);

// A float32 result narrowed back to dtype `dt` (a no-op for float32).
Expected<Tensor> narrow_from_float(const Tensor& f32, DType dt, ThreadPool* pool = nullptr);

// out = f(x) for float tensors (float32/float64; float16/bfloat16 computed in
// float32 and narrowed back). f is called with float or double.
template <class F>
Expected<Tensor> map_float(const Tensor& x, ThreadPool* pool, const char* op, F f) {
  const DType dt = x.dtype();
  if (is_half_dtype(dt)) {
    Tensor y = eval_unary<float, float>(widen_half(x, pool), DType::kFloat32, pool, f);
    return narrow_from_float(y, dt, pool);
  }
  if (dt == DType::kFloat32) return eval_unary<float, float>(x, dt, pool, f);
  if (dt == DType::kFloat64) return eval_unary<double, double>(x, dt, pool, f);
  return invalid_argument(std::string(op) + " takes a float tensor, got " + dtype_name(dt));
}

// out = f(x) for numeric tensors (halves computed in float32).
template <class F>
Expected<Tensor> map_numeric(const Tensor& x, ThreadPool* pool, const char* op, F f) {
  const DType dt = x.dtype();
  if (is_half_dtype(dt)) {
    Tensor y = eval_unary<float, float>(widen_half(x, pool), DType::kFloat32, pool, f);
    return narrow_from_float(y, dt, pool);
  }
  if (!is_numeric_dtype(dt)) return invalid_argument(std::string(op) + " takes a numeric tensor, got " + dtype_name(dt));
  return visit_numeric(dt, [&](auto tag) -> Expected<Tensor> {
    using T = decltype(tag);
    return eval_unary<T, T>(x, dt, pool, f);
  });
}

}  // namespace qtk::rt::ref
