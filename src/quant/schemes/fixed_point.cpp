#include "quant/schemes/fixed_point.h"

#include <cmath>

namespace qtk::quant {

FixedPointMultiplier quantize_multiplier(double real) {
  FixedPointMultiplier m;
  if (!(real > 0.0) || !std::isfinite(real)) return m;
  int exp = 0;
  const double mant = std::frexp(real, &exp);  // real = mant * 2^exp, mant in [0.5, 1)
  int64_t q = std::llround(mant * static_cast<double>(int64_t{1} << 31));
  if (q == (int64_t{1} << 31)) {  // mantissa rounded up to 1.0
    q /= 2;
    ++exp;
  }
  if (exp < -31) return m;  // too small to matter: multiplies to 0
  if (exp > 30) exp = 30, q = INT32_MAX;
  m.multiplier = static_cast<int32_t>(q);
  m.shift = exp;
  return m;
}

std::optional<SharedShiftMultipliers> shared_shift_multipliers(double ra, double rb) {
  const FixedPointMultiplier f = quantize_multiplier(std::max(ra, rb));
  SharedShiftMultipliers r;
  if (f.multiplier == 0) {  // both ratios below 2^-31: every term rounds to 0
    r.n = 62;
    return r;
  }
  r.n = 31 - f.shift;
  if (r.n < 1) return std::nullopt;
  r.n = std::min(r.n, 62);
  r.ma = std::llround(std::ldexp(ra, r.n));
  r.mb = std::llround(std::ldexp(rb, r.n));
  return r;
}

}  // namespace qtk::quant
