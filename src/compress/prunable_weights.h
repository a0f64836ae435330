// The weights compression works on: the kernel of every Conv, the matrix of
// every Gemm and the constant 2-D operand of every MatMul, each seen as
// `outputs` rows of `reduce` elements (the axis a dot product runs along),
// in graph order.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::compress {

struct WeightLayout {
  std::string name;  // initializer
  std::string node;  // "name (OpType)" of the node reading it
  int64_t outputs = 0;
  int64_t reduce = 0;
  // Element offset of (row o, reduction index r). For Conv the reduction
  // index runs over input channels fastest (r = k * C + c, k the kernel
  // position), so N:M groups are consecutive input channels, as sparse
  // tensor cores want them.
  int64_t conv_channels = 0;  // C per group for Conv; 0 otherwise
  int64_t conv_kernel = 0;    // kh * kw for Conv
  int64_t row_stride = 0, reduce_stride = 0;  // Gemm/MatMul
  int64_t index(int64_t o, int64_t r) const {
    if (conv_channels > 0) {
      const int64_t c = r % conv_channels, k = r / conv_channels;
      return o * reduce + c * conv_kernel + k;
    }
    return o * row_stride + r * reduce_stride;
  }
};

// Float32 weight initializers of Conv/Gemm/MatMul, in node order; a weight
// read by several nodes is listed once (first reader).
std::vector<WeightLayout> prunable_weights(const ir::Graph& g);

}  // namespace qtk::compress
