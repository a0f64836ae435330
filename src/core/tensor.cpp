#include "qtk/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "core/alloc_hook.h"

namespace qtk {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kFloat32: case DType::kInt32: case DType::kUInt32: return 4;
    case DType::kUInt8: case DType::kInt8: case DType::kBool: case DType::kUInt4: case DType::kInt4: return 1;
    case DType::kUInt16: case DType::kInt16: case DType::kFloat16: case DType::kBFloat16: return 2;
    case DType::kInt64: case DType::kFloat64: case DType::kUInt64: return 8;
    default: return 0;
  }
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFloat32: return "float32";
    case DType::kUInt8: return "uint8";
    case DType::kInt8: return "int8";
    case DType::kUInt16: return "uint16";
    case DType::kInt16: return "int16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kString: return "string";
    case DType::kBool: return "bool";
    case DType::kFloat16: return "float16";
    case DType::kFloat64: return "float64";
    case DType::kUInt32: return "uint32";
    case DType::kUInt64: return "uint64";
    case DType::kBFloat16: return "bfloat16";
    case DType::kUInt4: return "uint4";
    case DType::kInt4: return "int4";
    default: return "undefined";
  }
}

bool dtype_is_known(int32_t onnx_type) {
  return dtype_size(static_cast<DType>(onnx_type)) != 0;
}

float half_to_float(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) { mant <<= 1; --exp; }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0));
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (absx < 0x38800000u) {  // subnormal or zero in half
    float af;
    std::memcpy(&af, &absx, 4);
    // scale so that the half subnormal step (2^-24) becomes 1, round to even
    float scaled = af * 16777216.0f;
    auto m = static_cast<uint32_t>(std::nearbyint(scaled));
    return static_cast<uint16_t>(sign | m);
  }
  uint32_t mant = absx & 0x7fffffu;
  uint32_t exp = (absx >> 23) - 127 + 15;
  uint32_t h = (exp << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float bfloat16_to_float(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_bfloat16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_to_string(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ",";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

// Recycles large tensor blocks. Freed megabyte-sized blocks otherwise go back
// to the OS (glibc unmaps them or trims the heap top), and every inference then
// pays a page fault per 4 KiB of each new activation: about a fifth of a
// batch-64 ResNet-20 run before this pool. Blocks are matched by size (the
// same shapes recur run after run); at most kMaxIdleBytes wait here. Sanitizer
// builds bypass it so that use-after-free on a tensor is still caught.
class BlockPool {
 public:
  static constexpr size_t kMinBytes = size_t{16} << 10;  // malloc serves smaller blocks without trimming
  static constexpr size_t kMaxIdleBytes = size_t{128} << 20;
  static constexpr size_t kMaxIdleBlocks = 64;

  // An idle block of capacity in [bytes, bytes * 5 / 4], best fit; else null.
  std::byte* take(size_t bytes, size_t& capacity) {
    std::lock_guard<std::mutex> lk(mu_);
    size_t best = idle_.size();
    for (size_t i = 0; i < idle_.size(); ++i)
      if (idle_[i].first >= bytes && idle_[i].first <= bytes + bytes / 4 &&
          (best == idle_.size() || idle_[i].first < idle_[best].first))
        best = i;
    if (best == idle_.size()) return nullptr;
    std::byte* p = idle_[best].second;
    capacity = idle_[best].first;
    idle_bytes_ -= capacity;
    idle_[best] = idle_.back();
    idle_.pop_back();
    return p;
  }
  // Takes the idle block at p back (null when the pool does not keep it).
  std::byte* take_at(const void* p) {
    std::lock_guard<std::mutex> lk(mu_);
    for (size_t i = 0; i < idle_.size(); ++i)
      if (idle_[i].second == p) {
        std::byte* q = idle_[i].second;
        idle_bytes_ -= idle_[i].first;
        idle_[i] = idle_.back();
        idle_.pop_back();
        return q;
      }
    return nullptr;
  }
  // Keeps the block for reuse; false (the caller frees it) when the pool is full.
  bool give(std::byte* p, size_t capacity) {
    std::lock_guard<std::mutex> lk(mu_);
    if (idle_.size() >= kMaxIdleBlocks || idle_bytes_ + capacity > kMaxIdleBytes) return false;
    idle_.emplace_back(capacity, p);
    idle_bytes_ += capacity;
    return true;
  }

 private:
  std::mutex mu_;
  std::vector<std::pair<size_t, std::byte*>> idle_;  // (capacity, block)
  size_t idle_bytes_ = 0;
};

BlockPool& block_pool() {
  // Never destroyed: tensors held in other statics may be freed after main.
  static BlockPool* pool = new BlockPool;
  return *pool;
}

void free_block(std::byte* p) { ::operator delete[](p, std::align_val_t(64)); }

thread_local core::AllocationHook* t_allocation_hook = nullptr;

// 64-byte aligned storage of at least nbytes, contents unspecified.
std::shared_ptr<std::byte[]> allocate_block(size_t nbytes) {
  size_t padded = ((nbytes + 63) / 64) * 64;
  if (padded == 0) padded = 64;
  if (t_allocation_hook != nullptr)
    if (auto planned = t_allocation_hook->allocate(padded)) return planned;
  if (kSanitized || padded < BlockPool::kMinBytes) {
    return std::shared_ptr<std::byte[]>(static_cast<std::byte*>(::operator new[](padded, std::align_val_t(64))),
                                        free_block);
  }
  size_t capacity = 0;
  std::byte* p = block_pool().take(padded, capacity);
  if (p == nullptr) {
    capacity = padded;
    p = static_cast<std::byte*>(::operator new[](capacity, std::align_val_t(64)));
  }
  return std::shared_ptr<std::byte[]>(p, [capacity](std::byte* q) {
    if (!block_pool().give(q, capacity)) free_block(q);
  });
}

}  // namespace

namespace core {
AllocationHook* current_allocation_hook() { return t_allocation_hook; }
ScopedAllocationHook::ScopedAllocationHook(AllocationHook* hook) : previous_(t_allocation_hook) {
  t_allocation_hook = hook;
}
ScopedAllocationHook::~ScopedAllocationHook() { t_allocation_hook = previous_; }
void release_free_heap_pages() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}
void discard_pages(void* p, size_t bytes) {
#if defined(__linux__)
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t at = reinterpret_cast<uintptr_t>(p);
  const uintptr_t begin = (at + page - 1) / page * page, end = (at + bytes) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
#else
  (void)p;
  (void)bytes;
#endif
}
void free_idle_block(const void* p) {
  if (std::byte* q = block_pool().take_at(p)) free_block(q);
}
}  // namespace core

Tensor::Tensor(DType dtype, Shape shape) : dtype_(dtype), shape_(std::move(shape)) {
  numel_ = shape_numel(shape_);
  if (numel_ < 0) numel_ = 0;
  storage_ = allocate_block(nbytes());
  std::memset(storage_.get(), 0, std::max<size_t>((nbytes() + 63) / 64 * 64, 64));  // the padding too, as before
}

Tensor Tensor::uninitialized(DType dtype, Shape shape) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.numel_ = std::max<int64_t>(shape_numel(t.shape_), 0);
  t.storage_ = allocate_block(t.nbytes());
  if (kSanitized) std::memset(t.storage_.get(), 0xFF, t.nbytes());
  return t;
}

Tensor Tensor::reshaped(Shape shape) const {
  Tensor t = *this;
  t.shape_ = std::move(shape);
  t.numel_ = shape_numel(t.shape_);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t(dtype_, shape_);
  if (nbytes()) std::memcpy(t.raw(), raw(), nbytes());
  return t;
}

double Tensor::get_as_double(int64_t i) const {
  switch (dtype_) {
    case DType::kFloat32: return data<float>()[i];
    case DType::kFloat64: return data<double>()[i];
    case DType::kUInt8: case DType::kUInt4: return data<uint8_t>()[i];
    case DType::kInt8: case DType::kInt4: return data<int8_t>()[i];
    case DType::kUInt16: return data<uint16_t>()[i];
    case DType::kInt16: return data<int16_t>()[i];
    case DType::kInt32: return data<int32_t>()[i];
    case DType::kInt64: return static_cast<double>(data<int64_t>()[i]);
    case DType::kUInt32: return data<uint32_t>()[i];
    case DType::kUInt64: return static_cast<double>(data<uint64_t>()[i]);
    case DType::kBool: return data<uint8_t>()[i] ? 1.0 : 0.0;
    case DType::kFloat16: return half_to_float(data<uint16_t>()[i]);
    case DType::kBFloat16: return bfloat16_to_float(data<uint16_t>()[i]);
    default: return 0.0;
  }
}

int64_t Tensor::get_as_int64(int64_t i) const {
  switch (dtype_) {
    case DType::kInt64: return data<int64_t>()[i];
    case DType::kInt32: return data<int32_t>()[i];
    case DType::kUInt64: return static_cast<int64_t>(data<uint64_t>()[i]);
    default: {
      double d = get_as_double(i);
      if (!(d > -9.2e18 && d < 9.2e18)) return 0;
      return static_cast<int64_t>(d);
    }
  }
}

std::vector<int64_t> Tensor::to_int64_vector() const {
  std::vector<int64_t> v(static_cast<size_t>(numel_));
  for (int64_t i = 0; i < numel_; ++i) v[i] = get_as_int64(i);
  return v;
}

std::vector<float> Tensor::to_float_vector() const {
  std::vector<float> v(static_cast<size_t>(numel_));
  for (int64_t i = 0; i < numel_; ++i) v[i] = static_cast<float>(get_as_double(i));
  return v;
}

}  // namespace qtk
