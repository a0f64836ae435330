// AVX2 reads of a conv panel's k rows (qgemm_conv.h's QconvPanelSource),
// shared by the int16 and the u8 x s8 panel packers. Include only from
// translation units built for x86 (the functions carry target("avx2")).
#pragma once

#include <immintrin.h>

#include "runtime/kernels/x86/qgemm_conv.h"

namespace qtk::rt::x86::detail {

// masks[r] (r >= 1) selects the lanes from run r on.
__attribute__((target("avx2"))) inline void qconv_run_masks(const QconvPanelSource& s, __m128i* masks) {
  const __m128i lane = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int r = 1; r < s.runs; ++r) masks[r] = _mm_cmpgt_epi8(lane, _mm_set1_epi8(static_cast<char>(s.run_start[r] - 1)));
}

// k-row k's 16 codes: one 16-byte read per run of consecutive pixels, blended.
__attribute__((target("avx2"))) inline __m128i qconv_row_bytes(const QconvPanelSource& s, int64_t k,
                                                              const __m128i* masks) {
  const uint8_t* base = static_cast<const uint8_t*>(s.src) + s.tap_offset[k];
  __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(base + s.lane_offset[0]));
  for (int r = 1; r < s.runs; ++r) {
    const int start = s.run_start[r];
    const __m128i more = _mm_loadu_si128(reinterpret_cast<const __m128i*>(base + s.lane_offset[start] - start));
    bytes = _mm_blendv_epi8(bytes, more, masks[r]);
  }
  return bytes;
}

}  // namespace qtk::rt::x86::detail
