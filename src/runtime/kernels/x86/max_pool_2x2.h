// 2x2 / stride-2 max pooling of float32 planes with AVX-512 (16 windows per
// step, masked at a row's end), the same fold as ref/max_pool_2x2.h (best =
// lowest, then each tap with `v > best ? v : best`), so the same bits; the
// portable loop where the CPU has no AVX-512.
#pragma once

#include <cstdint>

namespace qtk::rt::x86 {

// `planes` planes of in_h x in_w, one after another, into planes of
// (in_h / 2) x (in_w / 2).
void max_pool_2x2_planes_f32(const float* x, int64_t planes, int64_t in_h, int64_t in_w, float* y);

}  // namespace qtk::rt::x86
