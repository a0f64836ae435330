// Numpy-style broadcasting for the training ops: the forward walk over two
// operands and its adjoint, summing a gradient back to an operand's shape.
#pragma once

#include <vector>

#include "qtk/status.h"
#include "qtk/tensor.h"

namespace qtk::train {

Expected<Shape> broadcast_shape(const Shape& a, const Shape& b);

// Element offsets into a tensor of shape `in` for every element of the
// broadcast shape `out`, in row-major order of `out`.
std::vector<int64_t> broadcast_offsets(const Shape& in, const Shape& out);

// Sums g (of a broadcast shape) down to `target` (a shape it broadcast from).
Tensor reduce_to_shape(const Tensor& g, const Shape& target);

// Element-wise binary op with broadcasting: out = f(a, b).
template <class F>
Expected<Tensor> broadcast_binary(const Tensor& a, const Tensor& b, F f) {
  QTK_ASSIGN_OR_RETURN(Shape s, broadcast_shape(a.shape(), b.shape()));
  Tensor out = Tensor::uninitialized(DType::kFloat32, s);
  float* o = out.data<float>();
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  const int64_t n = out.numel();
  if (a.shape() == s && b.shape() == s) {
    for (int64_t i = 0; i < n; ++i) o[i] = f(pa[i], pb[i]);
  } else if (b.numel() == 1 && a.shape() == s) {
    for (int64_t i = 0; i < n; ++i) o[i] = f(pa[i], pb[0]);
  } else {
    const std::vector<int64_t> oa = broadcast_offsets(a.shape(), s), ob = broadcast_offsets(b.shape(), s);
    for (int64_t i = 0; i < n; ++i) o[i] = f(pa[oa[i]], pb[ob[i]]);
  }
  return out;
}

}  // namespace qtk::train
