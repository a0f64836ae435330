// BiasRequantize (domain "qtk", runtime/bias_requant_fusion.h):
//   y = QuantizeLinear(DequantizeLinear(x, s1, z1) + bias[column], s2, z2)
// per element, with the column the last dimension. The kernel is shared by
// the reference table and the x86 override, which differ only in the row loop.
#pragma once

#include <cstdint>
#include <memory>

#include "runtime/kernel.h"

namespace qtk::rt {

class OpRegistry;

// The constants of one node.
struct BiasRequantParams {
  float x_scale = 1.f, y_scale = 1.f;
  int32_t x_zero_point = 0, y_zero_point = 0, qmin = 0, qmax = 255;
  bool x_signed = false, y_signed = false;
};

// rows × n codes (x and y row-major); bias[n].
using BiasRequantFn = void (*)(const uint8_t* x, int64_t rows, int64_t n, const float* bias,
                               const BiasRequantParams& p, uint8_t* y);
// The reference order of operations, one element at a time.
void bias_requant_scalar(const uint8_t* x, int64_t rows, int64_t n, const float* bias, const BiasRequantParams& p,
                         uint8_t* y);

Expected<std::unique_ptr<Kernel>> make_bias_requant_kernel(const KernelInit& init, BiasRequantFn fn);

void register_bias_requant_op(OpRegistry& r);

}  // namespace qtk::rt
