// AVX2 packing of the convolution's 16-pixel column panels (qgemm_conv.h):
// per k one 16-byte read per run of consecutive pixels (blended where a panel
// wraps an output row), widened to int16 minus the zero point, and k pairs
// interleaved into the GEMM's B panel layout; or, from a quad or pair image
// (channels interleaved per pixel once per image), a copy per run.
#include "runtime/kernels/x86/qgemm_conv.h"

#include <cstring>

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

// Pixels [0, n) of two channel rows as int16 pairs (code - zero point) at
// out + 4 * pixel: 8 at a time, the last step overlapping the one before
// (reads stay inside the rows).
template <bool kSigned>
QTK_AVX2 inline void pair_eight(const uint8_t* c0, const uint8_t* c1, __m128i zp, uint8_t* out) {
  const __m128i a0 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(c0));
  const __m128i b0 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(c1));
  const __m128i a = _mm_sub_epi16(kSigned ? _mm_cvtepi8_epi16(a0) : _mm_cvtepu8_epi16(a0), zp);
  const __m128i b = _mm_sub_epi16(kSigned ? _mm_cvtepi8_epi16(b0) : _mm_cvtepu8_epi16(b0), zp);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_unpacklo_epi16(a, b));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16), _mm_unpackhi_epi16(a, b));
}

template <bool kSigned>
QTK_AVX2 void pair_row(const uint8_t* c0, const uint8_t* c1, int64_t n, int32_t zero_point, uint8_t* out) {
  if (n < 8) {
    for (int64_t i = 0; i < n; ++i) {
      const int32_t a = kSigned ? static_cast<int8_t>(c0[i]) : c0[i], b = kSigned ? static_cast<int8_t>(c1[i]) : c1[i];
      const int16_t pair[2] = {static_cast<int16_t>(a - zero_point), static_cast<int16_t>(b - zero_point)};
      std::memcpy(out + 4 * i, pair, 4);
    }
    return;
  }
  const __m128i zp = _mm_set1_epi16(static_cast<int16_t>(zero_point));
  for (int64_t i = 0; i + 8 < n; i += 8) pair_eight<kSigned>(c0 + i, c1 + i, zp, out + 4 * i);
  pair_eight<kSigned>(c0 + n - 8, c1 + n - 8, zp, out + 4 * (n - 8));
}

}  // namespace

QTK_AVX2 void qconv_fill_pair_image_avx2(const uint8_t* planes, int64_t pairs, int64_t plane, bool is_signed,
                                         int32_t zero_point, uint8_t* dst) {
  for (int64_t p = 0; p < pairs; ++p) {
    const uint8_t* c0 = planes + 2 * p * plane;
    uint8_t* out = dst + kQconvQuadFront + p * plane * 4;
    if (is_signed) pair_row<true>(c0, c0 + plane, plane, zero_point, out);
    else pair_row<false>(c0, c0 + plane, plane, zero_point, out);
  }
}

QTK_AVX2 void qconv_fill_pair_image_s1_avx2(const QconvGeometry& g, const QconvLayout& l, const uint8_t* x,
                                            bool is_signed, int32_t zero_point, uint8_t* dst, QconvImageRows rows) {
  const int64_t c2 = g.in_c / g.group / 2, in_hw = g.in_h * g.in_w;
  int64_t r_begin = 0, r_end = 0;  // input rows in range
  qconv_clear_image_rows(g, l, c2, rows, 0, l.pair_bytes, dst, r_begin, r_end);
  for (int64_t p = 0; p < c2; ++p)
    for (int64_t r = r_begin; r < r_end; ++r) {
      const uint8_t* c0 = x + 2 * p * in_hw + r * g.in_w;
      uint8_t* out = dst + kQconvQuadFront + ((p * l.hph + r + g.pad_top) * l.wph + g.pad_left) * 4;
      if (is_signed) pair_row<true>(c0, c0 + in_hw, g.in_w, zero_point, out);
      else pair_row<false>(c0, c0 + in_hw, g.in_w, zero_point, out);
    }
}

QTK_AVX2 void qconv_pack_panel_copy_avx2(const uint8_t* image, const int64_t* offset, int64_t entries,
                                         const QconvPanelSource& s, uint8_t* panel) {
  const int64_t first = 4 * s.lane_offset[0];
  if (s.runs == 1) {  // the common case: one run, two loads an entry
    for (int64_t q = 0; q < entries; ++q, panel += 64) {
      const uint8_t* src = image + offset[q] + first;
      _mm256_store_si256(reinterpret_cast<__m256i*>(panel),
                         _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src)));
      _mm256_store_si256(reinterpret_cast<__m256i*>(panel + 32),
                         _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32)));
    }
    return;
  }
  // Run r's lanes from its own reads: dword masks of the lanes from run r on,
  // and where run r's lane 0 would be.
  const __m256i lane_lo = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), lane_hi = _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15);
  __m256i mask_lo[kQgemmNR], mask_hi[kQgemmNR];
  int64_t start[kQgemmNR];
  for (int r = 1; r < s.runs; ++r) {
    const __m256i from = _mm256_set1_epi32(s.run_start[r] - 1);
    mask_lo[r] = _mm256_cmpgt_epi32(lane_lo, from);
    mask_hi[r] = _mm256_cmpgt_epi32(lane_hi, from);
    start[r] = 4 * (s.lane_offset[s.run_start[r]] - s.run_start[r]);
  }
  for (int64_t q = 0; q < entries; ++q, panel += 64) {
    const uint8_t* base = image + offset[q];
    __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + first));
    __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + first + 32));
    for (int r = 1; r < s.runs; ++r) {
      lo = _mm256_blendv_epi8(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + start[r])), mask_lo[r]);
      hi = _mm256_blendv_epi8(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + start[r] + 32)), mask_hi[r]);
    }
    _mm256_store_si256(reinterpret_cast<__m256i*>(panel), lo);
    _mm256_store_si256(reinterpret_cast<__m256i*>(panel + 32), hi);
  }
}

void qconv_pack_panel_avx2(const QconvPanelSource& s, int16_t* panel) {
  // Lane-by-lane reads (no slack to read into, or a partial panel): rare, scalar.
  if (!s.contiguous_reads) return qconv_pack_panel_scalar(s, panel);
  if (s.is_signed) pack_contiguous<true>(s, panel);
  else pack_contiguous<false>(s, panel);
}

#else

void qconv_pack_panel_avx2(const QconvPanelSource& s, int16_t* panel) { qconv_pack_panel_scalar(s, panel); }
void qconv_pack_panel_copy_avx2(const uint8_t*, const int64_t*, int64_t, const QconvPanelSource&, uint8_t*) {}
void qconv_fill_pair_image_avx2(const uint8_t*, int64_t, int64_t, bool, int32_t, uint8_t*) {}
void qconv_fill_pair_image_s1_avx2(const QconvGeometry&, const QconvLayout&, const uint8_t*, bool, int32_t, uint8_t*,
                                   QconvImageRows) {}

#endif

}  // namespace qtk::rt::x86::detail
