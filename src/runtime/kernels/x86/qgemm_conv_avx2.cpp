// AVX2 packing of the convolution's 16-pixel column panels (qgemm_conv.h):
// per k one 16-byte read per run of consecutive pixels (blended where a panel
// wraps an output row), widened to int16 minus the zero point, and k pairs
// interleaved into the GEMM's B panel layout.
#include "runtime/kernels/x86/qgemm_conv.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "runtime/kernels/x86/qgemm_conv_rows_avx2.h"
#define QTK_QCONV_X86 1
#endif

namespace qtk::rt::x86::detail {

#ifdef QTK_QCONV_X86

namespace {

#define QTK_AVX2 __attribute__((target("avx2")))

// k-row k as 16 int16 values (src - zero point).
template <bool kSigned>
QTK_AVX2 inline __m256i load_row(const QconvPanelSource& s, int64_t k, const __m128i* masks, __m256i zp) {
  const __m128i bytes = qconv_row_bytes(s, k, masks);
  const __m256i wide = kSigned ? _mm256_cvtepi8_epi16(bytes) : _mm256_cvtepu8_epi16(bytes);
  return _mm256_sub_epi16(wide, zp);
}

template <bool kSigned>
QTK_AVX2 void pack_contiguous(const QconvPanelSource& s, int16_t* panel) {
  __m128i masks[kQgemmNR + 1];
  qconv_run_masks(s, masks);
  const __m256i zp = _mm256_set1_epi16(static_cast<int16_t>(s.zero_point));
  const int64_t full = s.k / 2;
  for (int64_t q = 0; q < full; ++q) {
    const __m256i r0 = load_row<kSigned>(s, 2 * q, masks, zp);
    const __m256i r1 = load_row<kSigned>(s, 2 * q + 1, masks, zp);
    // unpack works per 128-bit lane: lo = columns 0-3 | 8-11, hi = 4-7 | 12-15.
    const __m256i lo = _mm256_unpacklo_epi16(r0, r1), hi = _mm256_unpackhi_epi16(r0, r1);
    _mm256_store_si256(reinterpret_cast<__m256i*>(panel + q * 2 * kQgemmNR), _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_store_si256(reinterpret_cast<__m256i*>(panel + q * 2 * kQgemmNR + 16),
                       _mm256_permute2x128_si256(lo, hi, 0x31));
  }
  if (s.k % 2) {
    const __m256i r0 = load_row<kSigned>(s, s.k - 1, masks, zp), r1 = _mm256_setzero_si256();
    const __m256i lo = _mm256_unpacklo_epi16(r0, r1), hi = _mm256_unpackhi_epi16(r0, r1);
    _mm256_store_si256(reinterpret_cast<__m256i*>(panel + full * 2 * kQgemmNR),
                       _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_store_si256(reinterpret_cast<__m256i*>(panel + full * 2 * kQgemmNR + 16),
                       _mm256_permute2x128_si256(lo, hi, 0x31));
  }
}

}  // namespace

void qconv_pack_panel_avx2(const QconvPanelSource& s, int16_t* panel) {
  // Lane-by-lane reads (no slack to read into, or a partial panel): rare, scalar.
  if (!s.contiguous_reads) return qconv_pack_panel_scalar(s, panel);
  if (s.is_signed) pack_contiguous<true>(s, panel);
  else pack_contiguous<false>(s, panel);
}

#else

void qconv_pack_panel_avx2(const QconvPanelSource& s, int16_t* panel) { qconv_pack_panel_scalar(s, panel); }

#endif

}  // namespace qtk::rt::x86::detail
