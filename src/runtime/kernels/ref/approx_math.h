// exp and erf on float32 as fixed sequences of float operations, so a
// vector kernel (x86/vector_math.cpp) can give the same bits as this scalar
// reference; every step rounds separately (no fused multiply-add).
//
// exp: x = n·ln2 + r (Cody-Waite, n = round(x·log2 e)), e^r by its Taylor
// polynomial to r^7 (|r| <= 0.35: truncation below 1e-8 relative), times
// 2^n as two exact power-of-two factors. Below ln(FLT_MIN) the result is 0
// (no subnormals), above ln(FLT_MAX) +inf; NaN passes through.
//
// erf: |x| < 1 by its Maclaurin series to x^21 (terms below 2e-8);
// 1 <= |x| < 4 as 1 - erfc with erfc(z) = t·exp(-z² + P(t)), t = 1/(1 + z/2),
// the Chebyshev fit of Press et al., Numerical Recipes §6.2 (relative error
// below 1.2e-7); ±1 beyond (erf(4) rounds to 1 in float32). Measured against
// std::erf over [-5, 5]: within 3e-7 absolute (tests/unit/vector_math_test).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace qtk::rt::ref::approx {

inline constexpr float kExpHi = 88.3762626647949f;   // ln(FLT_MAX), rounded down
inline constexpr float kExpLo = -87.3365447505531f;  // ln(FLT_MIN)
inline constexpr float kLog2e = 1.44269504088896341f;
inline constexpr float kLn2Hi = 0.693359375f;  // ln 2 = hi + lo, hi with few bits: n·hi exact
inline constexpr float kLn2Lo = -2.12194440e-4f;
// 1/k!, k = 7 .. 2 (Horner from the highest power).
inline constexpr float kExpPoly[6] = {1.f / 5040, 1.f / 720, 1.f / 120, 1.f / 24, 1.f / 6, 0.5f};

// 2/√π · (-1)^k / (k! (2k + 1)), k = 10 .. 0.
inline constexpr double kTwoOverSqrtPi = 1.1283791670955126;
inline constexpr float kErfSeries[11] = {
    static_cast<float>(kTwoOverSqrtPi / (3628800.0 * 21)), static_cast<float>(-kTwoOverSqrtPi / (362880.0 * 19)),
    static_cast<float>(kTwoOverSqrtPi / (40320.0 * 17)),   static_cast<float>(-kTwoOverSqrtPi / (5040.0 * 15)),
    static_cast<float>(kTwoOverSqrtPi / (720.0 * 13)),     static_cast<float>(-kTwoOverSqrtPi / (120.0 * 11)),
    static_cast<float>(kTwoOverSqrtPi / (24.0 * 9)),       static_cast<float>(-kTwoOverSqrtPi / (6.0 * 7)),
    static_cast<float>(kTwoOverSqrtPi / (2.0 * 5)),        static_cast<float>(-kTwoOverSqrtPi / 3.0),
    static_cast<float>(kTwoOverSqrtPi)};
// Numerical Recipes' erfc fit: exponent -z² + P(t), P's coefficients from t^9 down.
inline constexpr float kErfcPoly[10] = {0.17087277f,  -0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f,
                                        -0.18628806f, 0.09678418f,  0.37409196f, 1.00002368f,  -1.26551223f};

inline float pow2i(int32_t e) {  // 2^e for -126 <= e <= 127
  const uint32_t bits = static_cast<uint32_t>(e + 127) << 23;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline float exp_f32(float x) {
  if (std::isnan(x)) return x;
  if (x > kExpHi) return std::numeric_limits<float>::infinity();
  if (x < kExpLo) return 0.f;
  const float n = std::nearbyint(x * kLog2e);
  float r = x - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = kExpPoly[0];
  for (int i = 1; i < 6; ++i) p = p * r + kExpPoly[i];
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t ni = static_cast<int32_t>(n), half = ni / 2;  // both factors normal
  return p * pow2i(ni - half) * pow2i(half);
}

inline float erf_f32(float x) {
  if (std::isnan(x)) return x;
  const float z = std::fabs(x);
  float y;
  if (z < 1.f) {
    const float z2 = x * x;
    float s = kErfSeries[0];
    for (int i = 1; i < 11; ++i) s = s * z2 + kErfSeries[i];
    return s * x;
  }
  if (z < 4.f) {
    const float t = 1.f / (1.f + 0.5f * z);
    float p = kErfcPoly[0];
    for (int i = 1; i < 10; ++i) p = p * t + kErfcPoly[i];
    y = 1.f - t * exp_f32(p - z * z);
  } else {
    y = 1.f;
  }
  return x < 0.f ? -y : y;
}

}  // namespace qtk::rt::ref::approx
