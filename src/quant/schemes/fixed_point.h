// Integer-only requantization (Jacob et al. 2018): a real multiplier M is
// stored as a 32-bit fixed-point mantissa and a shift, and int32 accumulators
// are rescaled as round(acc * M) with integer arithmetic alone.
//
// Exact semantics (the integer runtime and its tests rely on them):
//   M = multiplier * 2^(shift - 31), multiplier in [2^30, 2^31) (or 0),
//   requantize(acc) = (acc * multiplier + 2^(n-1)) >> n   with n = 31 - shift,
// computed in int64 with an arithmetic shift: round half toward +infinity,
// one rounding step. n is clamped to [1, 62]; M must be in [0, 2^31).
#pragma once

#include <cstdint>

namespace qtk::quant {

struct FixedPointMultiplier {
  int32_t multiplier = 0;
  int32_t shift = 0;  // real = multiplier * 2^(shift - 31)
};

FixedPointMultiplier quantize_multiplier(double real);

inline int32_t requantize_fixed_point(int32_t acc, FixedPointMultiplier m) {
  int n = 31 - m.shift;
  if (n < 1) n = 1;
  if (n > 62) n = 62;
  const int64_t prod = static_cast<int64_t>(acc) * m.multiplier;
  const int64_t r = (prod + (int64_t{1} << (n - 1))) >> n;
  if (r > INT32_MAX) return INT32_MAX;
  if (r < INT32_MIN) return INT32_MIN;
  return static_cast<int32_t>(r);
}

// acc -> output code: requantize, add the output zero point, clamp to [qmin, qmax].
inline int32_t requantize_to_code(int32_t acc, FixedPointMultiplier m, int32_t zero_point, int32_t qmin,
                                  int32_t qmax) {
  int64_t v = static_cast<int64_t>(requantize_fixed_point(acc, m)) + zero_point;
  return static_cast<int32_t>(v < qmin ? qmin : (v > qmax ? qmax : v));
}

}  // namespace qtk::quant
