// Which scale (and zero point) each element of a quantized tensor uses, for
// the three layouts of DequantizeLinear: one scale, one per channel along
// `axis`, or blocks of `block` values along `axis` (opset 21 block_size).
// Shared by qtk.FakeQuant (grad_ops_quant.cpp) and the QAT conversion (qat.cpp).
#pragma once

#include <string>

#include "qtk/status.h"
#include "qtk/tensor.h"

namespace qtk::train {

// Smallest step size qtk.FakeQuant uses (a learned scale driven to zero or
// below would divide by zero); the QAT export applies the same floor.
inline constexpr float kMinScale = 1e-12f;

struct ScaleMap {
  int64_t outer = 1, channels = 1, inner = 1, block = 0;
  bool per_tensor = true;
  int64_t index(int64_t i) const {
    if (per_tensor) return 0;
    const int64_t c = (i / inner) % channels;
    if (block <= 0) return c;
    const int64_t o = i / (inner * channels), blocks = channels / block;
    return (o * blocks + c / block) * inner + i % inner;
  }
};

// Fails (naming `label`) when the scale's size does not fit the layout.
Expected<ScaleMap> make_scale_map(const Shape& x, int64_t scale_numel, int64_t axis, int64_t block,
                                  const std::string& label);

}  // namespace qtk::train
