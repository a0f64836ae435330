// BiasRequantize's AVX-512 row loop (bias_requant_x86.cpp), for the registry and tests.
#pragma once

#include <cstdint>

#include "runtime/kernels/ref/bias_requant_op.h"

namespace qtk::rt {

// bias_requant_scalar's bytes, 16 codes a step; AVX-512 F/BW/VL CPUs only.
void bias_requant_avx512(const uint8_t* x, int64_t rows, int64_t n, const float* bias, const BiasRequantParams& p,
                         uint8_t* y);
void register_x86_bias_requant_op(OpRegistry& r);

}  // namespace qtk::rt
