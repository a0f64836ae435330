#include <immintrin.h>

#include "runtime/kernels/x86/qgemm_pack_quads.h"

#define QTK_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

namespace qtk::rt::x86::detail {

// Four rows of 16 codes (lanes past `cols`, and rows past `rows`, zero) as
// 64 bytes: column j's four codes at 4j.
QTK_VNNI static __m512i quad_of(const uint8_t* src, int64_t ld, int rows, __mmask16 cols, bool is_signed) {
  __m128i r[4];
  const __m128i bias = _mm_set1_epi8(static_cast<char>(0x80));
  for (int i = 0; i < 4; ++i) {
    if (i >= rows) {
      r[i] = _mm_setzero_si128();
      continue;
    }
    const __m128i x = _mm_maskz_loadu_epi8(cols, src + i * ld);
    r[i] = is_signed ? x : _mm_mask_sub_epi8(_mm_setzero_si128(), cols, x, bias);  // u8 - 128 where a code lands
  }
  const __m128i a = _mm_unpacklo_epi8(r[0], r[1]), b = _mm_unpackhi_epi8(r[0], r[1]);
  const __m128i c = _mm_unpacklo_epi8(r[2], r[3]), d = _mm_unpackhi_epi8(r[2], r[3]);
  __m512i v = _mm512_setzero_si512();  // (a cast from 256 bits leaves GCC 12 warning of undefined lanes)
  v = _mm512_inserti32x4(v, _mm_unpacklo_epi16(a, c), 0);
  v = _mm512_inserti32x4(v, _mm_unpackhi_epi16(a, c), 1);
  v = _mm512_inserti32x4(v, _mm_unpacklo_epi16(b, d), 2);
  return _mm512_inserti32x4(v, _mm_unpackhi_epi16(b, d), 3);
}

QTK_VNNI void qgemm_pack_quads_rows_avx512(const uint8_t* src, int64_t ld, bool is_signed, int64_t k, int64_t n,
                                           int64_t panels, int64_t panel_len, int8_t* dst, int32_t* colsum) {
  const __m512i ones = _mm512_set1_epi8(1);
  const int64_t kquads = panel_len / 64;  // (k + 3) / 4
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t c0 = p * 16;
    const int64_t cols = n - c0 < 16 ? n - c0 : 16;
    const __mmask16 cmask = static_cast<__mmask16>(cols >= 16 ? 0xFFFF : (1u << cols) - 1);
    int8_t* d = dst + p * panel_len;
    __m512i sum = _mm512_setzero_si512();
    for (int64_t q = 0; q < kquads; ++q) {
      const int rows = static_cast<int>(k - 4 * q < 4 ? k - 4 * q : 4);
      const __m512i v = quad_of(src + 4 * q * ld + c0, ld, rows, cmask, is_signed);
      _mm512_storeu_si512(d + q * 64, v);
      sum = _mm512_dpbusd_epi32(sum, ones, v);  // Σ of the four signed codes per column
    }
    _mm512_storeu_si512(colsum + c0, sum);
  }
}

}  // namespace qtk::rt::x86::detail
