// Which quantization parameter (scale/zero point) an element of a tensor
// uses: one for the tensor, one per index along an axis, or one per block of
// `block` consecutive indices along an axis (ONNX's blocked layout: the
// parameter tensor has the data's shape with the axis dimension divided by
// the block, rounded up).
#pragma once

#include <algorithm>
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
  // How many elements from i on share i's parameter (at least 1): the
  // kernels' inner loops run over such a stretch without a division per
  // element.
  int64_t run_from(int64_t i) const {
    if (count == 1) return INT64_MAX;
    if (block <= 0) return inner - i % inner;
    if (inner > 1) return 1;  // blocks along a non-last axis: the parameter changes every element
    const int64_t a = i % axis_len;
    return std::min(block - a % block, axis_len - a);
  }
  // Shape of the parameter tensor for data of shape s (axis as given to the factory).
  Shape param_shape(const Shape& s, int axis) const;
};

// Calls f(parameter index, begin, end) for the stretches of consecutive
// elements of n that share one parameter, in order: the kernels' loops then
// find no parameter by division per element (per-axis along the last axis
// changes parameter every element).
template <class F>
void for_each_stretch(const ParamLayout& l, int64_t n, F&& f) {
  const int64_t period = l.axis_len * l.inner;
  if (l.count > 1 && l.block <= 0 && period > 0 && n % period == 0) {
    for (int64_t i = 0; i < n;)
      for (int64_t c = 0; c < l.axis_len; ++c, i += l.inner) f(c, i, i + l.inner);
    return;
  }
  for (int64_t i = 0; i < n;) {
    const int64_t end = i + std::min(n - i, l.run_from(i));
    f(l.index_of(i), i, end);
    i = end;
  }
}

}  // namespace qtk::quant
