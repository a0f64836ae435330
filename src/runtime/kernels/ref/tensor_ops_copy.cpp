// The byte-moving core of the data-movement kernels: strided copies and the
// small input readers they share.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>

#include "runtime/kernels/ref/tensor_ops_common.h"

namespace qtk::rt::ref {

namespace {

// Drops size-1 axes and merges neighbours that are contiguous with each other,
// so the inner loop of materialize() runs as long as it can.
StridedView simplify(const StridedView& v) {
  StridedView r;
  r.base = v.base;
  for (size_t d = 0; d < v.shape.size(); ++d) {
    if (v.shape[d] == 1) continue;
    if (!r.shape.empty() && r.strides.back() == v.strides[d] * v.shape[d]) {
      r.shape.back() *= v.shape[d];
      r.strides.back() = v.strides[d];
    } else {
      r.shape.push_back(v.shape[d]);
      r.strides.push_back(v.strides[d]);
    }
  }
  if (r.shape.empty()) {
    r.shape.push_back(1);
    r.strides.push_back(1);
  }
  return r;
}

template <class T>
void copy_row_typed(const std::byte* src, int64_t stride, int64_t n, std::byte* dst) {
  const T* s = reinterpret_cast<const T*>(src);
  T* d = reinterpret_cast<T*>(dst);
  for (int64_t i = 0; i < n; ++i) d[i] = s[i * stride];
}

// Copies n elements of `esize` bytes, `stride` elements apart, to dst.
void copy_row(const std::byte* src, int64_t stride, int64_t n, size_t esize, std::byte* dst) {
  if (stride == 1) {
    std::memcpy(dst, src, static_cast<size_t>(n) * esize);
    return;
  }
  switch (esize) {
    case 1: copy_row_typed<uint8_t>(src, stride, n, dst); return;
    case 2: copy_row_typed<uint16_t>(src, stride, n, dst); return;
    case 4: copy_row_typed<uint32_t>(src, stride, n, dst); return;
    case 8: copy_row_typed<uint64_t>(src, stride, n, dst); return;
    default:
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(dst + static_cast<size_t>(i) * esize, src + i * stride * static_cast<int64_t>(esize), esize);
  }
}

}  // namespace

std::vector<int64_t> contiguous_strides(const Shape& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (size_t d = shape.size(); d-- > 1;) s[d - 1] = s[d] * shape[d];
  return s;
}

StridedView permuted_view(const Shape& shape, const std::vector<int64_t>& perm) {
  const std::vector<int64_t> in_strides = contiguous_strides(shape);
  StridedView v;
  for (int64_t p : perm) {
    v.shape.push_back(shape[static_cast<size_t>(p)]);
    v.strides.push_back(in_strides[static_cast<size_t>(p)]);
  }
  return v;
}

Expected<Tensor> new_tensor(DType dt, const Shape& shape) {
  // Stay far below where numel * element size could overflow.
  constexpr int64_t kMaxBytes = int64_t{1} << 44;
  int64_t bytes = static_cast<int64_t>(dtype_size(dt));
  for (int64_t d : shape) {
    if (d < 0) return invalid_argument("negative dimension in output shape " + shape_to_string(shape));
    if (d == 0) return Tensor(dt, shape);
    if (bytes > kMaxBytes / d) return invalid_argument("output shape " + shape_to_string(shape) + " is too large");
    bytes *= d;
  }
  try {
    return Tensor(dt, shape);
  } catch (const std::bad_alloc&) {
    return invalid_argument("cannot allocate " + std::to_string(bytes) + " bytes for output shape " +
                            shape_to_string(shape));
  }
}

Expected<Tensor> materialize(const Tensor& src, const StridedView& view, ThreadPool* pool) {
  QTK_ASSIGN_OR_RETURN(Tensor out, new_tensor(src.dtype(), view.shape));
  const int64_t n = out.numel();
  if (n == 0) return out;
  const StridedView v = simplify(view);
  const size_t esize = dtype_size(src.dtype());
  const int rank = static_cast<int>(v.shape.size());
  const int64_t inner = v.shape.back();
  const int64_t inner_stride = v.strides.back();
  const int64_t rows = n / inner;
  const auto* in = static_cast<const std::byte*>(src.raw());
  auto* dst = static_cast<std::byte*>(out.raw());

  auto copy_rows = [&](int64_t begin, int64_t end) {
    // Odometer over the outer axes, started at row `begin`.
    std::vector<int64_t> idx(static_cast<size_t>(rank - 1), 0);
    int64_t offset = v.base;
    for (int64_t r = begin, d = rank - 2; d >= 0; --d) {
      idx[d] = r % v.shape[d];
      r /= v.shape[d];
      offset += idx[d] * v.strides[d];
    }
    for (int64_t row = begin; row < end; ++row) {
      copy_row(in + offset * static_cast<int64_t>(esize), inner_stride, inner, esize,
               dst + static_cast<size_t>(row * inner) * esize);
      for (int d = rank - 2; d >= 0; --d) {
        offset += v.strides[d];
        if (++idx[d] < v.shape[d]) break;
        offset -= idx[d] * v.strides[d];
        idx[d] = 0;
      }
    }
  };
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(inner, 1));
  if (pool) pool->parallel_for(rows, copy_rows, grain);
  else copy_rows(0, rows);
  return out;
}

namespace {

template <class T>
void map_rows(const T* src, T* dst, T fill, const Shape& out_shape, const std::vector<std::vector<int64_t>>& maps,
              const std::vector<int64_t>& in_strides, int64_t begin, int64_t end) {
  const int r = static_cast<int>(out_shape.size());
  const int64_t inner = out_shape.back();
  const std::vector<int64_t>& last = maps.back();
  for (int64_t row = begin; row < end; ++row) {
    int64_t rest = row, offset = 0;
    bool inside = true;
    for (int d = r - 2; d >= 0; --d) {
      const int64_t o = rest % out_shape[static_cast<size_t>(d)];
      rest /= out_shape[static_cast<size_t>(d)];
      const int64_t i = maps[static_cast<size_t>(d)][static_cast<size_t>(o)];
      if (i < 0) inside = false;
      offset += i * in_strides[static_cast<size_t>(d)];
    }
    T* out = dst + row * inner;
    if (!inside) {
      for (int64_t k = 0; k < inner; ++k) out[k] = fill;
      continue;
    }
    const T* in = src + offset;
    for (int64_t k = 0; k < inner; ++k) {
      const int64_t i = last[static_cast<size_t>(k)];
      out[k] = i < 0 ? fill : in[i];
    }
  }
}

template <class T>
void map_copy(const Tensor& x, Tensor& out, const std::vector<std::byte>& fill_bytes,
              const std::vector<std::vector<int64_t>>& maps, ThreadPool* pool) {
  T fill{};
  std::memcpy(&fill, fill_bytes.data(), std::min(sizeof(T), fill_bytes.size()));
  const std::vector<int64_t> in_strides = contiguous_strides(x.shape());
  const int64_t inner = out.shape().back();
  const int64_t rows = out.numel() / inner;
  const T* src = x.data<T>();
  T* dst = out.data<T>();
  auto body = [&](int64_t b, int64_t e) { map_rows<T>(src, dst, fill, out.shape(), maps, in_strides, b, e); };
  const int64_t grain = std::max<int64_t>(1, 8192 / inner);
  if (pool) pool->parallel_for(rows, body, grain);
  else body(0, rows);
}

}  // namespace

Expected<Tensor> copy_by_axis_maps(const Tensor& src, const std::vector<std::vector<int64_t>>& maps,
                                   const std::vector<std::byte>& fill, ThreadPool* pool) {
  Shape out_shape;
  for (const auto& m : maps) out_shape.push_back(static_cast<int64_t>(m.size()));
  if (maps.empty()) return src.clone();
  QTK_ASSIGN_OR_RETURN(Tensor out, new_tensor(src.dtype(), out_shape));
  if (out.numel() == 0) return out;
  switch (dtype_size(src.dtype())) {
    case 1: map_copy<uint8_t>(src, out, fill, maps, pool); break;
    case 2: map_copy<uint16_t>(src, out, fill, maps, pool); break;
    case 4: map_copy<uint32_t>(src, out, fill, maps, pool); break;
    default: map_copy<uint64_t>(src, out, fill, maps, pool); break;
  }
  return out;
}

Status expect_fixed_size(DType dt, const char* what) {
  if (dtype_size(dt) == 0)
    return unsupported(std::string(what) + " dtype " + dtype_name(dt) + " is not supported");
  return Status::Ok();
}

Expected<std::vector<int64_t>> read_int_values(const Tensor& t, const char* what) {
  if (t.dtype() != DType::kInt64 && t.dtype() != DType::kInt32)
    return invalid_argument(std::string(what) + " must be int64 or int32, got " + dtype_name(t.dtype()));
  return t.to_int64_vector();
}

Expected<std::vector<double>> read_float_values(const Tensor& t, const char* what) {
  if (t.dtype() != DType::kFloat32 && t.dtype() != DType::kFloat64 && t.dtype() != DType::kFloat16)
    return invalid_argument(std::string(what) + " must be a float tensor, got " + dtype_name(t.dtype()));
  std::vector<double> r(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) r[static_cast<size_t>(i)] = t.get_as_double(i);
  return r;
}

namespace {
template <class T>
std::vector<std::byte> bytes_of(T v) {
  std::vector<std::byte> b(sizeof(T));
  std::memcpy(b.data(), &v, sizeof(T));
  return b;
}
// Float to integer as a C cast would, but defined for NaN and out-of-range values.
template <class T>
T saturate_cast(double v) {
  if (std::isnan(v)) return T{0};
  const double lo = static_cast<double>(std::numeric_limits<T>::lowest());
  const double hi = static_cast<double>(std::numeric_limits<T>::max());
  if (v <= lo) return std::numeric_limits<T>::lowest();
  if (v >= hi) return std::numeric_limits<T>::max();
  return static_cast<T>(v);
}
}  // namespace

Expected<std::vector<std::byte>> scalar_bytes(DType dt, double value) {
  switch (dt) {
    case DType::kFloat32: return bytes_of(static_cast<float>(value));
    case DType::kFloat64: return bytes_of(value);
    case DType::kFloat16: return bytes_of(float_to_half(static_cast<float>(value)));
    case DType::kBFloat16: return bytes_of(float_to_bfloat16(static_cast<float>(value)));
    case DType::kInt8: return bytes_of(saturate_cast<int8_t>(value));
    case DType::kUInt8: return bytes_of(saturate_cast<uint8_t>(value));
    case DType::kInt16: return bytes_of(saturate_cast<int16_t>(value));
    case DType::kUInt16: return bytes_of(saturate_cast<uint16_t>(value));
    case DType::kInt32: return bytes_of(saturate_cast<int32_t>(value));
    case DType::kUInt32: return bytes_of(saturate_cast<uint32_t>(value));
    case DType::kInt64: return bytes_of(saturate_cast<int64_t>(value));
    case DType::kUInt64: return bytes_of(saturate_cast<uint64_t>(value));
    case DType::kBool: return bytes_of(static_cast<uint8_t>(value != 0.0));
    default: return unsupported(std::string("dtype ") + dtype_name(dt) + " has no numeric value");
  }
}

}  // namespace qtk::rt::ref
