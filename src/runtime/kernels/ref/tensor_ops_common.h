// Helpers shared by the data-movement kernels (shape_ops.cpp, tensor_ops*.cpp,
// resize.cpp). These kernels never look at element values: they move
// dtype_size(dtype) bytes at a time, so every fixed-size dtype (int64, bool,
// uint8, float16, ...) takes the same path.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qtk/status.h"
#include "qtk/tensor.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk::rt::ref {

// A strided view of a source buffer, in elements: the element at output index
// (i0, ..., ik) is read from element `base + sum(i_d * strides[d])` of the
// source. Strides may be negative (Slice with negative steps) or zero
// (Expand's broadcast dimensions).
struct StridedView {
  Shape shape;
  std::vector<int64_t> strides;
  int64_t base = 0;
};

// Row-major strides of a contiguous tensor of this shape.
std::vector<int64_t> contiguous_strides(const Shape& shape);

// The view of a contiguous tensor of `shape` with its axes permuted:
// output axis d is input axis perm[d]. perm must be a valid permutation.
StridedView permuted_view(const Shape& shape, const std::vector<int64_t>& perm);

// A zero-initialised tensor, or an error value (never an exception) when the
// shape has a negative dimension, its byte size overflows, or the memory
// cannot be had. Kernels whose output size comes from input values (Expand,
// Tile, Pad, Resize) allocate through this.
Expected<Tensor> new_tensor(DType dt, const Shape& shape);

// Copies the view of `src` into a fresh contiguous tensor of src's dtype.
// The caller guarantees that every offset the view reaches is inside src.
Expected<Tensor> materialize(const Tensor& src, const StridedView& view, ThreadPool* pool);

// Gathers along every axis at once: output element (o0, ..., ok) is
// src[maps[0][o0], ..., maps[k][ok]], or `fill` (dtype_size bytes) where any
// of those map entries is -1. maps[d] has one entry per output position on
// axis d, each in [-1, src.dim(d)). Used by Pad and nearest-mode Resize.
Expected<Tensor> copy_by_axis_maps(const Tensor& src, const std::vector<std::vector<int64_t>>& maps,
                         const std::vector<std::byte>& fill, ThreadPool* pool);

// kUnsupported for dtypes qtk stores no bytes for (string, undefined).
Status expect_fixed_size(DType dt, const char* what = "input");

// Reads an integer tensor (int32 or int64, any shape) as int64 values.
Expected<std::vector<int64_t>> read_int_values(const Tensor& t, const char* what);

// Reads a 1-D (or scalar) float tensor (float32/float64/float16) as doubles.
Expected<std::vector<double>> read_float_values(const Tensor& t, const char* what);

// The bytes of `value` converted to dtype `dt` (for Pad's fill value and
// Resize's extrapolation value). Fails for dtypes without a numeric value.
Expected<std::vector<std::byte>> scalar_bytes(DType dt, double value);

// Families registered by register_tensor_ops (tensor_ops.cpp).
void register_gather_scatter_ops(OpRegistry& r);  // tensor_ops_gather.cpp
void register_pad_ops(OpRegistry& r);             // tensor_ops_pad.cpp
void register_space_depth_ops(OpRegistry& r);     // tensor_ops_space.cpp
void register_resize_ops(OpRegistry& r);          // resize.cpp

}  // namespace qtk::rt::ref
