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

#include <algorithm>
#include <cstdint>
#include <optional>

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

// QLinearAdd's rescaling (docs/integer-semantics.md): the two real ratios
// a_scale/c_scale and b_scale/c_scale on one power-of-two grid, ma ≈ ra·2^n,
// mb ≈ rb·2^n, n fixed by the larger ratio (its mantissa keeps 31 bits), so
// the sum of the two rescaled terms is rounded once.
struct SharedShiftMultipliers {
  int64_t ma = 0, mb = 0;
  int n = 31;
};
// nullopt for a ratio of 2^30 or more.
std::optional<SharedShiftMultipliers> shared_shift_multipliers(double ra, double rb);

// One QLinearAdd output code: clamp(((da·ma + db·mb + 2^(n-1)) >> n) + c_zp).
inline int32_t add_to_code(int32_t da, int32_t db, const SharedShiftMultipliers& m, int32_t c_zp, int32_t qmin,
                           int32_t qmax) {
  const int64_t acc = static_cast<int64_t>(da) * m.ma + static_cast<int64_t>(db) * m.mb;
  const int64_t v = ((acc + (int64_t{1} << (m.n - 1))) >> m.n) + c_zp;
  return static_cast<int32_t>(std::clamp<int64_t>(v, qmin, qmax));
}

}  // namespace qtk::quant
