#include "runtime/kernels/ref/quant_params.h"

#include <cmath>

namespace qtk::rt::ref {

Expected<ScaleZp> read_scale_zp(const Shape& data_shape, const Tensor& scale, const Tensor* zero_point, int64_t axis,
                                int64_t block, bool zero_ok) {
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
    if (!(s > 0.f) && !(s < 0.f) && !(zero_ok && s == 0.f)) return invalid_argument("scale must be non-zero");
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

Expected<double> per_tensor_scale(const KernelContext& ctx, size_t i, const std::string& what) {
  if (!ctx.has_input(i)) return invalid_argument(what + " is missing");
  const Tensor& s = ctx.input(i);
  if (s.dtype() != DType::kFloat32) return invalid_argument(what + " must be float32, got " + dtype_name(s.dtype()));
  if (s.numel() != 1) return unsupported(what + " with " + std::to_string(s.numel()) + " values (per tensor only)");
  const double v = s.data<float>()[0];
  if (!(v > 0.0) || !std::isfinite(v)) return invalid_argument(what + " must be positive and finite");
  return v;
}

Expected<int32_t> per_tensor_zero_point(const KernelContext& ctx, size_t i, DType want, const std::string& what,
                                        bool required) {
  if (!ctx.has_input(i)) {
    if (required) return invalid_argument(what + " is missing");
    return 0;
  }
  const Tensor& z = ctx.input(i);
  if (z.dtype() != want) return invalid_argument(what + " must be " + dtype_name(want) + ", got " + dtype_name(z.dtype()));
  if (z.numel() != 1) return unsupported(what + " with " + std::to_string(z.numel()) + " values (per tensor only)");
  return static_cast<int32_t>(z.get_as_int64(0));
}

}  // namespace qtk::rt::ref
