#include "quant/schemes/param_layout.h"

namespace qtk::quant {

ParamLayout ParamLayout::per_axis(const Shape& s, int axis) {
  ParamLayout p;
  p.axis_len = s[axis];
  for (size_t d = axis + 1; d < s.size(); ++d) p.inner *= s[d];
  p.count = p.axis_len;
  return p;
}

ParamLayout ParamLayout::per_block(const Shape& s, int axis, int64_t block) {
  ParamLayout p = per_axis(s, axis);
  p.block = block;
  p.count = shape_numel(s) / p.axis_len * ((p.axis_len + block - 1) / block);
  return p;
}

Shape ParamLayout::param_shape(const Shape& s, int axis) const {
  if (count == 1) return {};
  if (block <= 0) return {axis_len};
  Shape r = s;
  r[axis] = (axis_len + block - 1) / block;
  return r;
}

}  // namespace qtk::quant
