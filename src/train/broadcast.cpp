#include "train/broadcast.h"

#include <algorithm>

namespace qtk::train {

Expected<Shape> broadcast_shape(const Shape& a, const Shape& b) {
  const size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    const int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    const int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da != db && da != 1 && db != 1)
      return invalid_argument("shapes " + shape_to_string(a) + " and " + shape_to_string(b) + " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

std::vector<int64_t> broadcast_offsets(const Shape& in, const Shape& out) {
  const size_t r = out.size();
  std::vector<int64_t> stride(r, 0);
  int64_t s = 1;
  for (size_t k = in.size(); k-- > 0;) {
    const size_t o = k + (r - in.size());
    stride[o] = in[k] == 1 ? 0 : s;
    s *= in[k];
  }
  const int64_t n = shape_numel(out);
  std::vector<int64_t> offs(static_cast<size_t>(n));
  std::vector<int64_t> idx(r, 0);
  int64_t cur = 0;
  for (int64_t i = 0; i < n; ++i) {
    offs[i] = cur;
    for (size_t d = r; d-- > 0;) {  // odometer step
      ++idx[d];
      cur += stride[d];
      if (idx[d] < out[d]) break;
      cur -= stride[d] * out[d];
      idx[d] = 0;
    }
  }
  return offs;
}

Tensor reduce_to_shape(const Tensor& g, const Shape& target) {
  if (g.shape() == target) return g;
  Tensor r(DType::kFloat32, target);
  float* pr = r.data<float>();
  const float* pg = g.data<float>();
  if (shape_numel(target) == 1) {
    double s = 0;
    for (int64_t i = 0; i < g.numel(); ++i) s += pg[i];
    pr[0] = static_cast<float>(s);
    return r;
  }
  const std::vector<int64_t> off = broadcast_offsets(target, g.shape());
  for (int64_t i = 0; i < g.numel(); ++i) pr[off[i]] += pg[i];
  return r;
}

}  // namespace qtk::train
