// dtype conversion for Cast and for the float16/bfloat16 compute paths.
#include "runtime/kernels/ref/elementwise_common.h"

#include <cstring>

namespace qtk::rt::ref {

namespace {

// Tag types for the dtypes whose storage type does not say what they hold.
struct F16 { uint16_t bits; };
struct BF16 { uint16_t bits; };
struct Bool8 { uint8_t v; };
static_assert(sizeof(F16) == 2 && sizeof(BF16) == 2 && sizeof(Bool8) == 1);

template <class T> constexpr bool kIsFloatLike =
    std::is_floating_point_v<T> || std::is_same_v<T, F16> || std::is_same_v<T, BF16>;

template <class F>
Status visit_storage(DType dt, F&& f) {
  switch (dt) {
    case DType::kFloat32: f(float{}); break;
    case DType::kFloat64: f(double{}); break;
    case DType::kFloat16: f(F16{}); break;
    case DType::kBFloat16: f(BF16{}); break;
    case DType::kBool: f(Bool8{}); break;
    case DType::kInt8: f(int8_t{}); break;
    case DType::kInt16: f(int16_t{}); break;
    case DType::kInt32: f(int32_t{}); break;
    case DType::kInt64: f(int64_t{}); break;
    case DType::kUInt8: f(uint8_t{}); break;
    case DType::kUInt16: f(uint16_t{}); break;
    case DType::kUInt32: f(uint32_t{}); break;
    case DType::kUInt64: f(uint64_t{}); break;
    default:
      return unsupported(std::string("conversion of dtype ") + dtype_name(dt) + " (ONNX type " +
                         std::to_string(static_cast<int>(dt)) + ") is not supported");
  }
  return Status::Ok();
}

template <class D, class S>
D convert_one(S s, BFloat16Rounding bf16) {
  if constexpr (kIsFloatLike<S>) {
    double v;
    if constexpr (std::is_same_v<S, F16>) v = half_to_float(s.bits);
    else if constexpr (std::is_same_v<S, BF16>) v = bfloat16_to_float(s.bits);
    else v = static_cast<double>(s);
    if constexpr (std::is_same_v<D, float>) {
      return static_cast<float>(v);
    } else if constexpr (std::is_same_v<D, double>) {
      return v;
    } else if constexpr (std::is_same_v<D, F16>) {
      return F16{float_to_half(static_cast<float>(v))};
    } else if constexpr (std::is_same_v<D, BF16>) {
      const float f = static_cast<float>(v);
      if (bf16 == BFloat16Rounding::kTruncate && !std::isnan(f)) {
        uint32_t bits;
        std::memcpy(&bits, &f, 4);
        return BF16{static_cast<uint16_t>(bits >> 16)};
      }
      return BF16{float_to_bfloat16(f)};
    } else if constexpr (std::is_same_v<D, Bool8>) {
      return Bool8{static_cast<uint8_t>(v != 0.0)};
    } else {
      return float_to_integer<D>(v);
    }
  } else {
    // Integer or bool source: exact value as an integer.
    using I = std::conditional_t<std::is_same_v<S, Bool8>, uint8_t, S>;
    I v;
    if constexpr (std::is_same_v<S, Bool8>) v = s.v != 0;
    else v = s;
    if constexpr (std::is_same_v<D, F16>) return F16{float_to_half(static_cast<float>(v))};
    else if constexpr (std::is_same_v<D, BF16>) return BF16{float_to_bfloat16(static_cast<float>(v))};
    else if constexpr (std::is_same_v<D, Bool8>) return Bool8{static_cast<uint8_t>(v != 0)};
    else return static_cast<D>(v);  // float: rounds; integer: wraps (C++20)
  }
}

}  // namespace

Expected<Tensor> convert_dtype(const Tensor& in, DType to, ThreadPool* pool, BFloat16Rounding bf16) {
  if (in.dtype() == to) return in;
  Tensor out;
  Status inner = Status::Ok();
  Status outer = visit_storage(in.dtype(), [&](auto s_tag) {
    using S = decltype(s_tag);
    inner = visit_storage(to, [&](auto d_tag) {
      using D = decltype(d_tag);
      out = Tensor(to, in.shape());
      const S* src = reinterpret_cast<const S*>(in.raw());
      D* dst = reinterpret_cast<D*>(out.raw());
      parallel_range(pool, in.numel(), [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) dst[i] = convert_one<D>(src[i], bf16);
      });
    });
  });
  QTK_RETURN_IF_ERROR(outer);
  QTK_RETURN_IF_ERROR(inner);
  return out;
}

Tensor widen_half(const Tensor& t, ThreadPool* pool) {
  if (!is_half_dtype(t.dtype())) return t;
  auto r = convert_dtype(t, DType::kFloat32, pool);
  return r.ok() ? std::move(r).value() : t;  // cannot fail for float16/bfloat16
}

Expected<Tensor> narrow_from_float(const Tensor& f32, DType dt, ThreadPool* pool) {
  return convert_dtype(f32, dt, pool);
}

Expected<Tensor> one_of_dtype(DType dt) {
  Tensor one = Tensor::scalar<uint8_t>(1);
  return convert_dtype(one, dt);
}

}  // namespace qtk::rt::ref
