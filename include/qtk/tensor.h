// Dense tensors: a dtype, a shape and shared, 64-byte aligned storage.
// Copies are shallow (they share storage); clone() makes a deep copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace qtk {

// Values match ONNX TensorProto.DataType so conversion is a cast.
enum class DType : int32_t {
  kUndefined = 0,
  kFloat32 = 1,
  kUInt8 = 2,
  kInt8 = 3,
  kUInt16 = 4,
  kInt16 = 5,
  kInt32 = 6,
  kInt64 = 7,
  kString = 8,
  kBool = 9,
  kFloat16 = 10,
  kFloat64 = 11,
  kUInt32 = 12,
  kUInt64 = 13,
  kBFloat16 = 16,
  // 4-bit integers (ONNX 1.16+ types). Held unpacked in memory, one value per
  // byte (sign-extended for kInt4), so kernels index them like 8-bit data;
  // packed two per byte only on disk (src/onnx/tensor_proto.cpp).
  kUInt4 = 21,
  kInt4 = 22,
};

// Element size in bytes; 0 for dtypes qtk cannot hold (string, undefined).
size_t dtype_size(DType t);
const char* dtype_name(DType t);
bool dtype_is_known(int32_t onnx_type);
// uint8 or int8: the integer kernels' code types.
inline constexpr bool is_8bit(DType t) { return t == DType::kUInt8 || t == DType::kInt8; }

template <class T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::kFloat32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::kFloat64; };
template <> struct DTypeOf<uint8_t> { static constexpr DType value = DType::kUInt8; };
template <> struct DTypeOf<int8_t> { static constexpr DType value = DType::kInt8; };
template <> struct DTypeOf<uint16_t> { static constexpr DType value = DType::kUInt16; };
template <> struct DTypeOf<int16_t> { static constexpr DType value = DType::kInt16; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::kInt32; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::kInt64; };
template <> struct DTypeOf<uint32_t> { static constexpr DType value = DType::kUInt32; };
template <> struct DTypeOf<uint64_t> { static constexpr DType value = DType::kUInt64; };
template <> struct DTypeOf<bool> { static constexpr DType value = DType::kBool; };
template <class T> inline constexpr DType dtype_of = DTypeOf<T>::value;

// IEEE half <-> float, round to nearest even.
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
float bfloat16_to_float(uint16_t h);
uint16_t float_to_bfloat16(float f);

using Shape = std::vector<int64_t>;
int64_t shape_numel(const Shape& s);
std::string shape_to_string(const Shape& s);

class Tensor {
 public:
  Tensor() = default;
  // Zero-initialised tensor.
  Tensor(DType dtype, Shape shape);
  // A tensor whose elements are left unset: only for kernels that write every
  // element of their output (it saves the zero-fill, a measurable share of a
  // large batch). Sanitizer builds fill it with 0xFF bytes (NaN as float32) so
  // an element a kernel forgot to write shows up in tests.
  static Tensor uninitialized(DType dtype, Shape shape);

  template <class T>
  static Tensor from_vector(Shape shape, const std::vector<T>& values) {
    Tensor t(dtype_of<T>, std::move(shape));
    for (size_t i = 0; i < values.size() && i < static_cast<size_t>(t.numel()); ++i) t.data<T>()[i] = values[i];
    return t;
  }
  template <class T>
  static Tensor scalar(T v) { return from_vector<T>({}, std::vector<T>{v}); }

  bool defined() const { return dtype_ != DType::kUndefined; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }

  void* raw() { return storage_.get(); }
  const void* raw() const { return storage_.get(); }
  template <class T> T* data() { return reinterpret_cast<T*>(storage_.get()); }
  template <class T> const T* data() const { return reinterpret_cast<const T*>(storage_.get()); }

  // Same storage, new shape (numel must match; caller checks).
  Tensor reshaped(Shape shape) const;
  Tensor clone() const;
  // No other tensor shares this one's storage (views included): what a
  // runtime checks before writing an output over a dying input.
  bool sole_owner() const { return storage_ && storage_.use_count() == 1; }
  // Element i converted to double / int64 whatever the dtype (for small
  // shape tensors and tests, not hot loops).
  double get_as_double(int64_t i) const;
  int64_t get_as_int64(int64_t i) const;
  std::vector<int64_t> to_int64_vector() const;
  std::vector<float> to_float_vector() const;

 private:
  DType dtype_ = DType::kUndefined;
  Shape shape_;
  int64_t numel_ = 0;
  std::shared_ptr<std::byte[]> storage_;
};

}  // namespace qtk
