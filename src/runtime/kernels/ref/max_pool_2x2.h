// The classic CNN pool (2x2 windows, stride 2, no pads or dilation) on one
// plane, shared by MaxPool and by a Conv that absorbed the MaxPool after it
// (rt::fuse_conv_epilogues), so both give the same bits: best = lowest, then
// each tap row by row with `v > best ? v : best` (NaN never wins).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace qtk::rt::ref {

// x: in_h x in_w, y: (in_h / 2) x (in_w / 2); a last odd row or column is
// in no window.
template <class T>
void max_pool_2x2_plane(int64_t in_h, int64_t in_w, const T* x, T* __restrict y) {
  const int64_t out_h = in_h / 2, out_w = in_w / 2;
  for (int64_t oh = 0; oh < out_h; ++oh) {
    const T* r0 = x + 2 * oh * in_w;
    const T* r1 = r0 + in_w;
    T* out = y + oh * out_w;
    int64_t ow = 0;
#if defined(__SSE2__)
    // Four windows at a time, the same fold: maxps(v, best) is
    // `v > best ? v : best` (NaN or equal keeps best), tap by tap in order.
    if constexpr (std::is_same_v<T, float>) {
      const __m128 lowest = _mm_set1_ps(std::numeric_limits<float>::lowest());
      for (; ow + 4 <= out_w; ow += 4) {
        const __m128 a0 = _mm_loadu_ps(r0 + 2 * ow), a1 = _mm_loadu_ps(r0 + 2 * ow + 4);
        const __m128 b0 = _mm_loadu_ps(r1 + 2 * ow), b1 = _mm_loadu_ps(r1 + 2 * ow + 4);
        __m128 best = _mm_max_ps(_mm_shuffle_ps(a0, a1, _MM_SHUFFLE(2, 0, 2, 0)), lowest);
        best = _mm_max_ps(_mm_shuffle_ps(a0, a1, _MM_SHUFFLE(3, 1, 3, 1)), best);
        best = _mm_max_ps(_mm_shuffle_ps(b0, b1, _MM_SHUFFLE(2, 0, 2, 0)), best);
        best = _mm_max_ps(_mm_shuffle_ps(b0, b1, _MM_SHUFFLE(3, 1, 3, 1)), best);
        _mm_storeu_ps(out + ow, best);
      }
    }
#endif
    for (; ow < out_w; ++ow) {
      T best = std::numeric_limits<T>::lowest();
      for (const T v : {r0[2 * ow], r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1]}) best = v > best ? v : best;
      out[ow] = best;
    }
  }
}

}  // namespace qtk::rt::ref
