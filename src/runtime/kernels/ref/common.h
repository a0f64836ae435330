// Small helpers shared by the reference kernels.
#pragma once

#include <string>
#include <vector>

#include "qtk/status.h"
#include "qtk/tensor.h"
#include "runtime/kernel.h"

namespace qtk::rt::ref {

// Maps a possibly negative axis into [0, rank); error if out of range.
inline Expected<int> normalize_axis(int64_t axis, int rank, const char* what = "axis") {
  if (axis < -rank || axis >= rank)
    return invalid_argument(std::string(what) + " " + std::to_string(axis) + " is out of range for rank " +
                            std::to_string(rank));
  return static_cast<int>(axis < 0 ? axis + rank : axis);
}

// Numpy-style broadcast of two shapes; error names both shapes.
inline Expected<Shape> broadcast_shapes(const Shape& a, const Shape& b) {
  const size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da != db && da != 1 && db != 1)
      return invalid_argument("shapes " + shape_to_string(a) + " and " + shape_to_string(b) + " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// Row-major strides of `in` as seen from broadcast shape `out` (0 where broadcast).
inline std::vector<int64_t> broadcast_strides(const Shape& in, const Shape& out) {
  std::vector<int64_t> s(out.size(), 0);
  int64_t stride = 1;
  for (size_t k = in.size(); k-- > 0;) {
    size_t o = k + (out.size() - in.size());
    s[o] = in[k] == 1 ? 0 : stride;
    stride *= in[k];
  }
  return s;
}

// For each index of the broadcast batch shape `batch`, which matrix of a
// (batch dims a_batch) and of b (batch dims b_batch) it uses, counted in
// matrices; broadcast dims repeat one matrix.
struct BatchOffsets {
  std::vector<int64_t> a, b;
};
inline BatchOffsets broadcast_batch_offsets(const Shape& a_batch, const Shape& b_batch, const Shape& batch) {
  const std::vector<int64_t> sa = broadcast_strides(a_batch, batch), sb = broadcast_strides(b_batch, batch);
  const int64_t n = shape_numel(batch);
  BatchOffsets r{std::vector<int64_t>(static_cast<size_t>(n)), std::vector<int64_t>(static_cast<size_t>(n))};
  for (int64_t i = 0; i < n; ++i) {
    int64_t rem = i, oa = 0, ob = 0;
    for (size_t t = batch.size(); t-- > 0;) {
      const int64_t idx = rem % batch[t];
      rem /= batch[t];
      oa += idx * sa[t];
      ob += idx * sb[t];
    }
    r.a[i] = oa;
    r.b[i] = ob;
  }
  return r;
}

inline Status expect_dtype(const Tensor& t, DType want, const char* what) {
  if (t.dtype() != want)
    return invalid_argument(std::string(what) + " must be " + dtype_name(want) + ", got " + dtype_name(t.dtype()));
  return Status::Ok();
}

inline Status expect_inputs(const KernelContext& ctx, size_t required) {
  for (size_t i = 0; i < required; ++i)
    if (!ctx.has_input(i)) return invalid_argument("required input " + std::to_string(i) + " is missing");
  return Status::Ok();
}

// Calls f(T{}) with T the C++ type of `dt`, for the numeric dtypes.
template <class F>
Status dispatch_numeric(DType dt, F&& f) {
  switch (dt) {
    case DType::kFloat32: f(float{}); return Status::Ok();
    case DType::kFloat64: f(double{}); return Status::Ok();
    case DType::kInt64: f(int64_t{}); return Status::Ok();
    case DType::kInt32: f(int32_t{}); return Status::Ok();
    case DType::kInt16: f(int16_t{}); return Status::Ok();
    case DType::kInt8: f(int8_t{}); return Status::Ok();
    case DType::kUInt8: f(uint8_t{}); return Status::Ok();
    case DType::kUInt16: f(uint16_t{}); return Status::Ok();
    case DType::kUInt32: f(uint32_t{}); return Status::Ok();
    case DType::kUInt64: f(uint64_t{}); return Status::Ok();
    default: return unsupported(std::string("dtype ") + dtype_name(dt) + " is not supported here");
  }
}

}  // namespace qtk::rt::ref
