// exp and erf over float32 arrays: 16 lanes at a time on AVX-512, the same
// bits as the scalar reference (ref/approx_math.h) that runs elsewhere.
#pragma once

#include <cstdint>

namespace qtk::rt::x86 {

void exp_f32(const float* x, float* y, int64_t n);
void erf_f32(const float* x, float* y, int64_t n);

}  // namespace qtk::rt::x86
