// Scale / zero-point tensors of the quantized ops, normalised to flat arrays
// with a rule mapping each data element to its parameter index: per tensor,
// per axis, or per block along an axis.
#pragma once

#include <string>
#include <vector>

#include "quant/schemes/param_layout.h"
#include "runtime/kernels/ref/common.h"

namespace qtk::rt::ref {

struct ScaleZp {
  std::vector<float> scale;
  std::vector<int64_t> zero_point;
  quant::ParamLayout layout;

  int64_t index_of(int64_t i) const { return layout.index_of(i); }
};

// scale: scalar / [1] for per tensor, [shape[axis]] per axis, or the data
// shape with shape[axis] replaced by ceil(shape[axis]/block) when block > 0.
// A scale of 0 is refused unless zero_ok (DequantizeLinear: y = 0, as a
// DynamicQuantizeLinear of an all-zero tensor gives; QuantizeLinear divides by it).
Expected<ScaleZp> read_scale_zp(const Shape& data_shape, const Tensor& scale, const Tensor* zero_point, int64_t axis,
                                int64_t block, bool zero_ok = false);

// Input i of a com.microsoft quantized op as a per-tensor scale: float32,
// one value, positive and finite; `what` names it in errors.
Expected<double> per_tensor_scale(const KernelContext& ctx, size_t i, const std::string& what);
// Input i as a per-tensor zero point of dtype `want`. Absent: 0, or an
// error when `required` (QLinearConcat's signature needs every one).
Expected<int32_t> per_tensor_zero_point(const KernelContext& ctx, size_t i, DType want, const std::string& what,
                                        bool required = false);

}  // namespace qtk::rt::ref
