// Which quantization parameter (scale/zero point) an element of a tensor
// uses: one for the tensor, one per index along an axis, or one per block of
// `block` consecutive indices along an axis (ONNX's blocked layout: the
// parameter tensor has the data's shape with the axis dimension divided by
// the block, rounded up).
#pragma once

#include <cstdint>
#include <vector>

#include "qtk/tensor.h"

namespace qtk::quant {

struct ParamLayout {
  int64_t inner = 1;     // product of dims after the axis
  int64_t axis_len = 1;  // dim of the axis (1 for per tensor)
  int64_t block = 0;     // 0: per axis (or per tensor when axis_len == 1)
  int64_t count = 1;     // number of parameters

  static ParamLayout per_tensor() { return {}; }
  static ParamLayout per_axis(const Shape& s, int axis);
  static ParamLayout per_block(const Shape& s, int axis, int64_t block);

  int64_t index_of(int64_t i) const {
    if (count == 1) return 0;
    const int64_t a = (i / inner) % axis_len;
    if (block <= 0) return a;
    const int64_t outer = i / (inner * axis_len);
    const int64_t per_axis = (axis_len + block - 1) / block;
    return (outer * per_axis + a / block) * inner + i % inner;
  }
  // Shape of the parameter tensor for data of shape s (axis as given to the factory).
  Shape param_shape(const Shape& s, int axis) const;
};

}  // namespace qtk::quant
