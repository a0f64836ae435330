// AdaRound's per-weight loops (soft rounding, the regularizer and the Adam
// step), which take as long as its GEMM: written with GCC vector types, 8
// lanes at a time, so they run as AVX2 where the CPU has it (picked at run
// time) and as SSE pairs elsewhere, with the same arithmetic (no FMA
// contraction) and therefore the same results on both paths.
#pragma once

#include <cstdint>

namespace qtk::quant::algos::detail {

inline constexpr float kZeta = 1.1f, kGamma = -0.1f;  // the rectified sigmoid's stretch

struct AdaStep {
  float reg;      // lambda * beta after the warm-up, else 0
  float beta_m1;  // beta - 1
  float lr, b1, b2, b1_correction, b2_correction, eps;
};

// sig = sigmoid(v); wq = scale * clip(base + h(v), lo, hi) with
// h = clip(sig * (zeta - gamma) + gamma, 0, 1).
void ada_soft_round(const float* v, const float* base, const float* scale, const float* lo, const float* hi,
                    float* sig, float* wq, int64_t n);

// One Adam step on v from the reconstruction gradient (grad - 2 cross) and
// the rounding regularizer lambda * sum(1 - |2h - 1|^beta). No gradient
// where h is clipped to 0 or 1, or the rounded value is saturated.
void ada_adam_step(const float* grad, const float* cross, const float* sig, const float* base, const float* scale,
                   const float* lo, const float* hi, float* v, float* m, float* s2, int64_t n, const AdaStep& p);

// sigmoid(v) with the same arithmetic as the vector loops.
float ada_sigmoid(float v);

}  // namespace qtk::quant::algos::detail
