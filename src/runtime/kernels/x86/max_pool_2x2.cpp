#include "runtime/kernels/x86/max_pool_2x2.h"

#include <limits>

#include "core/cpu_features.h"
#include "runtime/kernels/ref/max_pool_2x2.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC bug 105593, see qgemm_vnni_avx512.cpp
#include <immintrin.h>
#define QTK_POOL_X86 1
#endif

namespace qtk::rt::x86 {

namespace {

#ifdef QTK_POOL_X86
__attribute__((target("avx512f"))) void planes_avx512(const float* x, int64_t planes, int64_t in_h, int64_t in_w,
                                                      float* y) {
  const int64_t out_h = in_h / 2, out_w = in_w / 2;
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  const __m512 lowest = _mm512_set1_ps(std::numeric_limits<float>::lowest());
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* xp = x + pl * in_h * in_w;
    float* yp = y + pl * out_h * out_w;
    for (int64_t oh = 0; oh < out_h; ++oh) {
      const float* r0 = xp + 2 * oh * in_w;
      const float* r1 = r0 + in_w;
      float* out = yp + oh * out_w;
      for (int64_t ow = 0; ow < out_w; ow += 16) {
        const int64_t n = out_w - ow < 16 ? out_w - ow : 16;  // windows this step
        // The 2n inputs of each row: two masked loads of 16.
        const __mmask16 lo = static_cast<__mmask16>(n >= 8 ? 0xFFFF : (1u << (2 * n)) - 1);
        const __mmask16 hi = static_cast<__mmask16>(n > 8 ? (1u << (2 * (n - 8))) - 1 : 0);
        const __m512 a0 = _mm512_maskz_loadu_ps(lo, r0 + 2 * ow), a1 = _mm512_maskz_loadu_ps(hi, r0 + 2 * ow + 16);
        const __m512 b0 = _mm512_maskz_loadu_ps(lo, r1 + 2 * ow), b1 = _mm512_maskz_loadu_ps(hi, r1 + 2 * ow + 16);
        // maxps(v, best) is `v > best ? v : best`; taps in the reference's order.
        __m512 best = _mm512_max_ps(_mm512_permutex2var_ps(a0, even, a1), lowest);
        best = _mm512_max_ps(_mm512_permutex2var_ps(a0, odd, a1), best);
        best = _mm512_max_ps(_mm512_permutex2var_ps(b0, even, b1), best);
        best = _mm512_max_ps(_mm512_permutex2var_ps(b0, odd, b1), best);
        _mm512_mask_storeu_ps(out + ow, static_cast<__mmask16>((1u << n) - 1), best);
      }
    }
  }
}
#endif

}  // namespace

void max_pool_2x2_planes_f32(const float* x, int64_t planes, int64_t in_h, int64_t in_w, float* y) {
#ifdef QTK_POOL_X86
  static const bool avx512 = cpu_has_avx512f();
  if (avx512) return planes_avx512(x, planes, in_h, in_w, y);
#endif
  const int64_t out_plane = (in_h / 2) * (in_w / 2);
  for (int64_t pl = 0; pl < planes; ++pl) ref::max_pool_2x2_plane(in_h, in_w, x + pl * in_h * in_w, y + pl * out_plane);
}

}  // namespace qtk::rt::x86
