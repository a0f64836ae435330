#include "quant/schemes/linear.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace qtk::quant {

QParams qparams_linear(float rmin, float rmax, QFormat f, bool symmetric) {
  const auto& t = traits(f);
  if (!std::isfinite(rmin)) rmin = 0.f;
  if (!std::isfinite(rmax)) rmax = 0.f;
  rmin = std::min(rmin, 0.f);
  rmax = std::max(rmax, 0.f);
  QParams p;
  if (symmetric) {
    const float absmax = std::max(-rmin, rmax);
    const int32_t half = (1 << (t.bits - 1)) - 1;  // 127, 7, 3, 1
    p.scale = absmax > 0.f ? absmax / static_cast<float>(half) : 1.f;
    p.zero_point = t.is_signed ? 0 : (1 << (t.bits - 1));
    return p;
  }
  const float span = rmax - rmin;
  if (span <= 0.f) {
    p.scale = 1.f;
    p.zero_point = t.is_signed ? 0 : t.qmin;
    return p;
  }
  p.scale = span / static_cast<float>(t.qmax - t.qmin);
  const double zp = std::nearbyint(static_cast<double>(t.qmin) - static_cast<double>(rmin) / p.scale);
  p.zero_point = static_cast<int32_t>(std::clamp<double>(zp, t.qmin, t.qmax));
  return p;
}

int32_t quantize_value_linear(float x, QParams p, QFormat f) {
  const auto& t = traits(f);
  const float v = std::nearbyint(x / p.scale);  // default FP env: ties to even
  if (std::isnan(v)) return std::clamp(p.zero_point, t.qmin, t.qmax);
  const double q = static_cast<double>(v) + p.zero_point;
  return static_cast<int32_t>(std::clamp<double>(q, t.qmin, t.qmax));
}

void quantize_row_linear_ref(const float* x, int64_t n, QParams p, QFormat f, int32_t* q) {
  for (int64_t i = 0; i < n; ++i) q[i] = quantize_value_linear(x[i], p, f);
}

void dequantize_row_linear_ref(const int32_t* q, int64_t n, QParams p, float* x) {
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(q[i] - p.zero_point) * p.scale;
}

float qparams_log2_scale(float rmin, float rmax) {
  float m = std::max(std::fabs(std::isfinite(rmin) ? rmin : 0.f), std::fabs(std::isfinite(rmax) ? rmax : 0.f));
  return m > 0.f ? m : 1.f;
}

int32_t quantize_value_log2(float x, float scale, QFormat f) {
  const int32_t qmax = traits(f).qmax;
  const float a = std::fabs(x);
  if (!(a > 0.f) || !(scale > 0.f)) return 0;  // 0 and NaN map to 0
  const int sign = x < 0.f ? -1 : 1;
  // Levels are scale*2^(m-qmax), m in [1, qmax]; find the nearest.
  const double r = static_cast<double>(a) / scale;
  if (r >= 1.0) return sign * qmax;
  int m = static_cast<int>(std::floor(std::log2(r))) + qmax;  // level at or below
  if (m < 1) {
    // Below the smallest level: 0 or the smallest level, whichever is nearer.
    const double smallest = std::ldexp(1.0, 1 - qmax);
    return r * 2.0 >= smallest ? sign : 0;
  }
  const double lo = std::ldexp(1.0, m - qmax), hi = lo * 2.0;
  if (m < qmax && (r - lo) > (hi - r)) ++m;
  return sign * m;
}

float dequantize_value_log2(int32_t q, float scale, QFormat f) {
  if (q == 0) return 0.f;
  const int32_t m = q < 0 ? -q : q;
  const float v = static_cast<float>(std::ldexp(static_cast<double>(scale), m - traits(f).qmax));
  return q < 0 ? -v : v;
}

double sqnr_db(const float* x, const float* y, int64_t n) {
  double sig = 0, noise = 0;
  for (int64_t i = 0; i < n; ++i) {
    sig += static_cast<double>(x[i]) * x[i];
    const double d = static_cast<double>(x[i]) - y[i];
    noise += d * d;
  }
  if (noise == 0) return std::numeric_limits<double>::infinity();
  if (sig == 0) return -std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(sig / noise);
}

}  // namespace qtk::quant
