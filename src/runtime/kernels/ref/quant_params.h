// Scale / zero-point tensors of the quantized ops, normalised to flat arrays
// with a rule mapping each data element to its parameter index: per tensor,
// per axis, or per block along an axis.
#pragma once

#include <string>
#include <vector>

#include "runtime/kernels/ref/common.h"

namespace qtk::rt::ref {

struct ScaleZp {
  std::vector<float> scale;
  std::vector<int64_t> zero_point;
  // element i -> parameter ((i / inner) % axis_len) / block, or 0 per tensor
  int64_t inner = 1;
  int64_t axis_len = 1;
  int64_t block = 1;

  int64_t index_of(int64_t i) const {
    if (scale.size() == 1) return 0;
    const int64_t outer = i / (inner * axis_len);
    const int64_t a = (i / inner) % axis_len;
    const int64_t per_axis = (axis_len + block - 1) / block;
    // Blocked: parameters are laid out [outer..., axis/block, inner...]
    if (block > 1) return (outer * per_axis + a / block) * inner + i % inner;
    return a;
  }
};

// scale: scalar / [1] for per tensor, [shape[axis]] per axis, or the data
// shape with shape[axis] replaced by ceil(shape[axis]/block) when block > 0.
Expected<ScaleZp> read_scale_zp(const Shape& data_shape, const Tensor& scale, const Tensor* zero_point, int64_t axis,
                                int64_t block);

}  // namespace qtk::rt::ref
