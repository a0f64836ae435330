// AVX-512 twins of ref/approx_math.h: the same float operations in the same
// order, lane by lane (built with -ffp-contract=off: no fused multiply-add,
// see CMakeLists.txt), the branches as blends.
#include "runtime/kernels/x86/vector_math.h"

#include <algorithm>

#include "core/cpu_features.h"
#include "runtime/kernels/ref/approx_math.h"

#if defined(__x86_64__) || defined(__i386__)
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the unused
// merge operand, which -W(maybe-)uninitialized reports (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define QTK_VMATH_X86 1
#endif

namespace qtk::rt::x86 {

namespace approx = ref::approx;

namespace {

bool use_avx512() {
  static const bool ok = cpu_has_avx512f() && !env_flag_set("QTK_VMATH_SCALAR");
  return ok;
}

#ifdef QTK_VMATH_X86
#define QTK_AVX512 __attribute__((target("avx512f")))

QTK_AVX512 inline __m512 pow2i(__m512i e) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(e, _mm512_set1_epi32(127)), 23));
}

QTK_AVX512 inline __attribute__((always_inline)) __m512 exp16(__m512 x) {
  const __m512 hi = _mm512_set1_ps(approx::kExpHi), lo = _mm512_set1_ps(approx::kExpLo);
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  const __mmask16 over = _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ), under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  const __m512 xc = _mm512_min_ps(_mm512_max_ps(x, lo), hi);  // in range: unchanged
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(approx::kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_sub_ps(xc, _mm512_mul_ps(n, _mm512_set1_ps(approx::kLn2Hi)));
  r = _mm512_sub_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(approx::kLn2Lo)));
  __m512 p = _mm512_set1_ps(approx::kExpPoly[0]);
  for (int i = 1; i < 6; ++i) p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(approx::kExpPoly[i]));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.f));
  const __m512i ni = _mm512_cvtps_epi32(n);
  // ni / 2 rounded toward zero, as C++ divides.
  const __m512i half = _mm512_srai_epi32(_mm512_add_epi32(ni, _mm512_srli_epi32(ni, 31)), 1);
  __m512 y = _mm512_mul_ps(_mm512_mul_ps(p, pow2i(_mm512_sub_epi32(ni, half))), pow2i(half));
  y = _mm512_mask_mov_ps(y, over, _mm512_set1_ps(__builtin_inff()));
  y = _mm512_mask_mov_ps(y, under, _mm512_setzero_ps());
  return _mm512_mask_mov_ps(y, nan, x);
}

// erf16 in two parts, so the costly 1 <= |x| < 4 branch (a division, two
// polynomials and exp) runs only on the lanes that take it, gathered from
// many vectors (erf_avx512). Each lane gets the same operations as in
// ref/approx_math.h; a lane's result does not depend on its neighbours.
//
// Every lane but 1 <= |x| < 4 (its result there is a placeholder); `mid`
// gets those lanes.
QTK_AVX512 inline __attribute__((always_inline)) __m512 erf16_outer(__m512 x, __mmask16& mid) {
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  const __m512 z = _mm512_abs_ps(x), one = _mm512_set1_ps(1.f);
  const __mmask16 small = _mm512_cmp_ps_mask(z, one, _CMP_LT_OQ);
  mid = _mm512_cmp_ps_mask(z, _mm512_set1_ps(4.f), _CMP_LT_OQ) & ~small;
  // |x| < 1: the series.
  const __m512 z2 = _mm512_mul_ps(x, x);
  __m512 s = _mm512_set1_ps(approx::kErfSeries[0]);
  for (int i = 1; i < 11; ++i) s = _mm512_add_ps(_mm512_mul_ps(s, z2), _mm512_set1_ps(approx::kErfSeries[i]));
  const __m512 series = _mm512_mul_ps(s, x);
  // |x| >= 4: 1; then the sign.
  const __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  __m512 y = _mm512_mask_sub_ps(one, negative, _mm512_setzero_ps(), one);
  y = _mm512_mask_mov_ps(y, small, series);
  return _mm512_mask_mov_ps(y, nan, x);
}

// 1 <= |x| < 4 (every lane): 1 - erfc, then the sign.
QTK_AVX512 inline __attribute__((always_inline)) __m512 erf16_mid(__m512 x) {
  const __m512 z = _mm512_abs_ps(x), one = _mm512_set1_ps(1.f);
  const __m512 t = _mm512_div_ps(one, _mm512_add_ps(one, _mm512_mul_ps(_mm512_set1_ps(0.5f), z)));
  __m512 p = _mm512_set1_ps(approx::kErfcPoly[0]);
  for (int i = 1; i < 10; ++i) p = _mm512_add_ps(_mm512_mul_ps(p, t), _mm512_set1_ps(approx::kErfcPoly[i]));
  const __m512 y = _mm512_sub_ps(one, _mm512_mul_ps(t, exp16(_mm512_sub_ps(p, _mm512_mul_ps(z, z)))));
  const __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  return _mm512_mask_sub_ps(y, negative, _mm512_setzero_ps(), y);
}

// Per block: every lane's outer result, and the 1 <= |x| < 4 lanes packed
// (compress); then erf16_mid on the packed lanes only; then those results
// put back in place (expand). Register compress/expand, not the memory
// forms (slow on some cores).
QTK_AVX512 void erf_avx512(const float* x, float* y, int64_t n) {
  constexpr int64_t kBlock = 1024;  // x, y and the packed lanes stay in L1
  alignas(64) float packed[kBlock + 16];
  __mmask16 mids[kBlock / 16];
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t m = std::min(kBlock, n - b);
    const float* xb = x + b;
    float* yb = y + b;
    int64_t count = 0;
    for (int64_t i = 0, v = 0; i < m; i += 16, ++v) {
      const __mmask16 live = i + 16 <= m ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (m - i)) - 1);
      const __m512 xv = _mm512_maskz_loadu_ps(live, xb + i);
      __mmask16 mid;
      _mm512_mask_storeu_ps(yb + i, live, erf16_outer(xv, mid));
      mid &= live;
      mids[v] = mid;
      _mm512_storeu_ps(packed + count, _mm512_maskz_compress_ps(mid, xv));
      count += __builtin_popcount(mid);
    }
    for (int64_t i = 0; i < count; i += 16) {
      const __mmask16 live =
          i + 16 <= count ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (count - i)) - 1);
      _mm512_mask_storeu_ps(packed + i, live, erf16_mid(_mm512_maskz_loadu_ps(live, packed + i)));
    }
    int64_t next = 0;
    for (int64_t i = 0, v = 0; i < m; i += 16, ++v) {
      const __mmask16 mid = mids[v];
      if (mid == 0) continue;
      const int k = __builtin_popcount(mid);
      const __m512 lanes = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << k) - 1), packed + next);
      _mm512_mask_storeu_ps(yb + i, mid, _mm512_maskz_expand_ps(mid, lanes));
      next += k;
    }
  }
}

template <__m512 (*F)(__m512)>
QTK_AVX512 void map16(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, F(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, F(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

QTK_AVX512 void exp_avx512(const float* x, float* y, int64_t n) { map16<exp16>(x, y, n); }
#endif

}  // namespace

void exp_f32(const float* x, float* y, int64_t n) {
#ifdef QTK_VMATH_X86
  if (use_avx512()) return exp_avx512(x, y, n);
#endif
  for (int64_t i = 0; i < n; ++i) y[i] = approx::exp_f32(x[i]);
}

void erf_f32(const float* x, float* y, int64_t n) {
#ifdef QTK_VMATH_X86
  if (use_avx512()) return erf_avx512(x, y, n);
#endif
  for (int64_t i = 0; i < n; ++i) y[i] = approx::erf_f32(x[i]);
}

}  // namespace qtk::rt::x86
