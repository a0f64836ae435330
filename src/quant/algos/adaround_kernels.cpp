#include "quant/algos/adaround_kernels.h"
#include "core/cpu_features.h"

#include <cmath>
#include <cstring>

// 32-byte vector types only pass between always-inlined helpers, never
// through a call, so the ABI note GCC gives for them does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace qtk::quant::algos::detail {

namespace {

typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));
constexpr int kLanes = 8;

#define QTK_INLINE __attribute__((always_inline)) inline

QTK_INLINE vf splat(float x) { return vf{} + x; }
QTK_INLINE vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
QTK_INLINE void store(float* p, const vf& v) { std::memcpy(p, &v, sizeof v); }
QTK_INLINE vf vmin(const vf& a, const vf& b) { return a < b ? a : b; }
QTK_INLINE vf vmax(const vf& a, const vf& b) { return a > b ? a : b; }
QTK_INLINE vf clip(const vf& x, const vf& lo, const vf& hi) { return vmin(vmax(x, lo), hi); }

// 2^x to ~1e-7 relative: nearest integer by the 1.5 * 2^23 trick, then the
// Taylor series of e^(f ln 2) on [-0.5, 0.5], scaled through the exponent bits.
QTK_INLINE vf exp2v(const vf& in) {
  const vf x = clip(in, splat(-126.f), splat(126.f));
  const vf r = (x + 12582912.f) - 12582912.f;
  const vf f = x - r;
  vf p = splat(1.5252733e-5f);
  p = p * f + 1.5403530e-4f;
  p = p * f + 1.3333558e-3f;
  p = p * f + 9.6181291e-3f;
  p = p * f + 5.5504109e-2f;
  p = p * f + 2.4022651e-1f;
  p = p * f + 6.9314718e-1f;
  p = p * f + 1.f;
  return reinterpret_cast<vf>(reinterpret_cast<vi>(p) + (__builtin_convertvector(r, vi) << 23));
}

// log2 of x > 0 (normal floats) to ~2e-6: exponent plus the atanh series of the mantissa.
QTK_INLINE vf log2v(const vf& x) {
  const vi bits = reinterpret_cast<vi>(x);
  const vf e = __builtin_convertvector(((bits >> 23) & 255) - 127, vf);
  const vf m = reinterpret_cast<vf>((bits & 0x7fffff) | 0x3f800000);
  const vf t = (m - 1.f) / (m + 1.f), t2 = t * t;
  const vf series = t * (2.f + t2 * (2.f / 3.f + t2 * (2.f / 5.f + t2 * (2.f / 7.f + t2 * (2.f / 9.f)))));
  return e + series * 1.44269504f;
}

QTK_INLINE vf sigmoidv(const vf& v) { return 1.f / (1.f + exp2v(v * -1.44269504f)); }

QTK_INLINE vf sqrtv(const vf& x) {
  vf r;
  for (int l = 0; l < kLanes; ++l) r[l] = std::sqrt(x[l]);
  return r;
}

QTK_INLINE void soft_round_lanes(const float* v, const float* base, const float* scale, const float* lo,
                                 const float* hi, float* sig, float* wq) {
  const vf s = sigmoidv(load(v));
  store(sig, s);
  const vf h = clip(s * (kZeta - kGamma) + kGamma, splat(0.f), splat(1.f));
  store(wq, load(scale) * clip(load(base) + h, load(lo), load(hi)));
}

QTK_INLINE void adam_lanes(const float* grad, const float* cross, const float* sig, const float* base,
                           const float* scale, const float* lo, const float* hi, float* v, float* m, float* s2,
                           const AdaStep& p) {
  const vf one = splat(1.f), zero = splat(0.f);
  const vf s = load(sig);
  const vf hraw = s * (kZeta - kGamma) + kGamma;
  const vf q = load(base) + hraw;
  const vi live = (hraw > 0.f) & (hraw < 1.f) & (q >= load(lo)) & (q <= load(hi));
  const vf rec = (load(grad) - 2.f * load(cross)) * load(scale);
  const vf d = 2.f * hraw - 1.f;
  const vf a = vmax(d < 0.f ? -d : d, splat(1e-30f));
  const vf round = p.reg * exp2v(p.beta_m1 * log2v(a)) * (d >= 0.f ? splat(2.f) : splat(-2.f));
  // Inside the grid both terms count; saturated, only the regularizer (as
  // the clipped rounding no longer moves the output).
  const vi in_h = (hraw > 0.f) & (hraw < 1.f);
  const vf g = (live ? rec - round : (in_h ? -round : zero)) * s * (one - s) * (kZeta - kGamma);
  const vf mm = p.b1 * load(m) + (1.f - p.b1) * g;
  const vf ss = p.b2 * load(s2) + (1.f - p.b2) * g * g;
  store(m, mm);
  store(s2, ss);
  store(v, load(v) - p.lr * (mm * p.b1_correction) / (sqrtv(ss * p.b2_correction) + p.eps));
}

// The last n % 8 weights, through the same lanes on padded copies.
template <int N>
struct Padded {
  float a[N][kLanes];
  Padded(const float* const (&src)[N], int64_t count, const float (&fill)[N]) {
    for (int k = 0; k < N; ++k)
      for (int l = 0; l < kLanes; ++l) a[k][l] = l < count ? src[k][l] : fill[k];
  }
};

QTK_INLINE void soft_round_all(const float* v, const float* base, const float* scale, const float* lo, const float* hi,
                    float* sig, float* wq, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    soft_round_lanes(v + i, base + i, scale + i, lo + i, hi + i, sig + i, wq + i);
  if (i == n) return;
  const int64_t r = n - i;
  Padded<5> in({v + i, base + i, scale + i, lo + i, hi + i}, r, {0.f, 0.f, 1.f, -1.f, 1.f});
  float s[kLanes], w[kLanes];
  soft_round_lanes(in.a[0], in.a[1], in.a[2], in.a[3], in.a[4], s, w);
  std::memcpy(sig + i, s, r * sizeof(float));
  std::memcpy(wq + i, w, r * sizeof(float));
}

QTK_INLINE void adam_all(const float* grad, const float* cross, const float* sig, const float* base, const float* scale,
              const float* lo, const float* hi, float* v, float* m, float* s2, int64_t n, const AdaStep& p) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    adam_lanes(grad + i, cross + i, sig + i, base + i, scale + i, lo + i, hi + i, v + i, m + i, s2 + i, p);
  if (i == n) return;
  const int64_t r = n - i;
  Padded<10> in({grad + i, cross + i, sig + i, base + i, scale + i, lo + i, hi + i, v + i, m + i, s2 + i}, r,
                {0.f, 0.f, 0.5f, 0.f, 1.f, -1.f, 1.f, 0.f, 0.f, 0.f});
  adam_lanes(in.a[0], in.a[1], in.a[2], in.a[3], in.a[4], in.a[5], in.a[6], in.a[7], in.a[8], in.a[9], p);
  std::memcpy(v + i, in.a[7], r * sizeof(float));
  std::memcpy(m + i, in.a[8], r * sizeof(float));
  std::memcpy(s2 + i, in.a[9], r * sizeof(float));
}

// The same bodies compiled for AVX2 (no FMA: identical rounding to the
// generic build, which GCC lowers to pairs of SSE operations).
__attribute__((target("avx2"))) void soft_round_avx2(const float* v, const float* base, const float* scale,
                                                     const float* lo, const float* hi, float* sig, float* wq,
                                                     int64_t n) {
  soft_round_all(v, base, scale, lo, hi, sig, wq, n);
}

__attribute__((target("avx2"))) void adam_avx2(const float* grad, const float* cross, const float* sig,
                                               const float* base, const float* scale, const float* lo,
                                               const float* hi, float* v, float* m, float* s2, int64_t n,
                                               const AdaStep& p) {
  adam_all(grad, cross, sig, base, scale, lo, hi, v, m, s2, n, p);
}

void soft_round_generic(const float* v, const float* base, const float* scale, const float* lo, const float* hi,
                        float* sig, float* wq, int64_t n) {
  soft_round_all(v, base, scale, lo, hi, sig, wq, n);
}

void adam_generic(const float* grad, const float* cross, const float* sig, const float* base, const float* scale,
                  const float* lo, const float* hi, float* v, float* m, float* s2, int64_t n, const AdaStep& p) {
  adam_all(grad, cross, sig, base, scale, lo, hi, v, m, s2, n, p);
}

bool has_avx2() { return cpu_has_avx2(); }

}  // namespace

void ada_soft_round(const float* v, const float* base, const float* scale, const float* lo, const float* hi,
                    float* sig, float* wq, int64_t n) {
  if (has_avx2()) soft_round_avx2(v, base, scale, lo, hi, sig, wq, n);
  else soft_round_generic(v, base, scale, lo, hi, sig, wq, n);
}

void ada_adam_step(const float* grad, const float* cross, const float* sig, const float* base, const float* scale,
                   const float* lo, const float* hi, float* v, float* m, float* s2, int64_t n, const AdaStep& p) {
  if (has_avx2()) adam_avx2(grad, cross, sig, base, scale, lo, hi, v, m, s2, n, p);
  else adam_generic(grad, cross, sig, base, scale, lo, hi, v, m, s2, n, p);
}

float ada_sigmoid(float v) {
  float in[kLanes] = {v}, out[kLanes];
  store(out, sigmoidv(load(in)));
  return out[0];
}

}  // namespace qtk::quant::algos::detail
