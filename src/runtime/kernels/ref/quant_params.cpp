#include "runtime/kernels/ref/quant_params.h"

namespace qtk::rt::ref {

Expected<ScaleZp> read_scale_zp(const Shape& data_shape, const Tensor& scale, const Tensor* zero_point, int64_t axis,
                                int64_t block) {
  if (scale.dtype() != DType::kFloat32) return unsupported(std::string("scale of dtype ") + dtype_name(scale.dtype()));
  ScaleZp sz;
  sz.scale = scale.to_float_vector();
  if (zero_point) {
    if (zero_point->numel() != scale.numel())
      return invalid_argument("zero point has " + std::to_string(zero_point->numel()) + " values, scale has " +
                              std::to_string(scale.numel()));
    sz.zero_point = zero_point->to_int64_vector();
  } else {
    sz.zero_point.assign(sz.scale.size(), 0);
  }
  for (float s : sz.scale)
    if (!(s > 0.f) && !(s < 0.f)) return invalid_argument("scale must be non-zero");
  if (scale.numel() == 1 && block <= 0) return sz;
  const int rank = static_cast<int>(data_shape.size());
  if (rank == 0) return invalid_argument("per-axis scale for a scalar input");
  QTK_ASSIGN_OR_RETURN(int ax, normalize_axis(axis, rank));
  sz.layout = block > 0 ? quant::ParamLayout::per_block(data_shape, ax, block)
                        : quant::ParamLayout::per_axis(data_shape, ax);
  if (scale.numel() != sz.layout.count)
    return invalid_argument("scale has " + std::to_string(scale.numel()) + " values, expected " +
                            std::to_string(sz.layout.count) + " for input " + shape_to_string(data_shape));
  return sz;
}

}  // namespace qtk::rt::ref
