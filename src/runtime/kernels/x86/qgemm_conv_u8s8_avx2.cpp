// AVX2 kernels of the u8 x s8 convolution path (qgemm_conv_u8s8.h): the
// pixel panels as u8 quads and the MR x 16 vpmaddubsw micro-kernel.
#include "runtime/kernels/x86/qgemm_conv_u8s8.h"

#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "runtime/kernels/x86/qgemm_conv_rows_avx2.h"
#define QTK_QCONV_U8S8_X86 1
#endif

namespace qtk::rt::x86::detail {

#ifdef QTK_QCONV_U8S8_X86

namespace {

#define QTK_AVX2 __attribute__((target("avx2")))

// k-row k's 16 codes, xor flip for int8 codes.
template <bool kFlip>
QTK_AVX2 inline __m128i load_row(const QconvPanelSource& s, int64_t k, const __m128i* masks, __m128i flip) {
  const __m128i bytes = qconv_row_bytes(s, k, masks);
  return kFlip ? _mm_xor_si128(bytes, flip) : bytes;
}

// 16 pixels of 4 k rows (r0..r3) as quads: pixel j's 4 bytes at out + 4j.
QTK_AVX2 inline void store_quads(__m128i r0, __m128i r1, __m128i r2, __m128i r3, uint8_t* out) {
  const __m128i p01l = _mm_unpacklo_epi8(r0, r1), p01h = _mm_unpackhi_epi8(r0, r1);
  const __m128i p23l = _mm_unpacklo_epi8(r2, r3), p23h = _mm_unpackhi_epi8(r2, r3);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_unpacklo_epi16(p01l, p23l));       // pixels 0-3
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16), _mm_unpackhi_epi16(p01l, p23l));  // 4-7
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 32), _mm_unpacklo_epi16(p01h, p23h));  // 8-11
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 48), _mm_unpackhi_epi16(p01h, p23h));  // 12-15
}

// ROWS x 16 tile: 2 * ROWS accumulators, two panel vectors and one
// broadcast weight quad per k quad; vpmaddubsw's pair sums are exact under
// the pair bound, vpmaddwd by ones adds them into int32.
template <int ROWS>
QTK_AVX2 void ukernel_rows(int64_t kquads, const uint8_t* a, const uint8_t* b, const int32_t* corr, int32_t* acc) {
  __m256i c[ROWS][2];
#pragma GCC unroll 6
  for (int i = 0; i < ROWS; ++i) c[i][0] = c[i][1] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t q = 0; q < kquads; ++q) {
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b));
    const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + 32));
#pragma GCC unroll 6
    for (int i = 0; i < ROWS; ++i) {
      int32_t word;
      std::memcpy(&word, a + 4 * i, sizeof(word));
      const __m256i av = _mm256_set1_epi32(word);
      c[i][0] = _mm256_add_epi32(c[i][0], _mm256_madd_epi16(_mm256_maddubs_epi16(b0, av), ones));
      c[i][1] = _mm256_add_epi32(c[i][1], _mm256_madd_epi16(_mm256_maddubs_epi16(b1, av), ones));
    }
    a += 4 * kQgemmMR;
    b += 4 * kQgemmNR;
  }
#pragma GCC unroll 6
  for (int i = 0; i < ROWS; ++i) {
    const __m256i z = _mm256_set1_epi32(corr[i]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(acc + i * kQgemmNR), _mm256_sub_epi32(c[i][0], z));
    _mm256_store_si256(reinterpret_cast<__m256i*>(acc + i * kQgemmNR + 8), _mm256_sub_epi32(c[i][1], z));
  }
}

// ukernel_rows<6> in assembly: GCC (13) schedules the intrinsics version
// with all six broadcasts and twelve vpmaddubsw first and spills ten of the
// twelve accumulators to the stack (measured no faster than the int16 path).
// Here: ymm0-11 the accumulators, ymm12-13 the panel, ymm14 the weight quad,
// ymm15 the product; ones as a memory operand.
#define QTK_U8S8_ROW(off, c0, c1)                                                        \
  "vpbroadcastd " #off "(%[a]), %%ymm14\n\t"                                          \
  "vpmaddubsw %%ymm14, %%ymm12, %%ymm15\n\t"                                          \
  "vpmaddwd %[ones], %%ymm15, %%ymm15\n\t"                                            \
  "vpaddd %%ymm15, %%" #c0 ", %%" #c0 "\n\t"                                          \
  "vpmaddubsw %%ymm14, %%ymm13, %%ymm15\n\t"                                          \
  "vpmaddwd %[ones], %%ymm15, %%ymm15\n\t"                                            \
  "vpaddd %%ymm15, %%" #c1 ", %%" #c1 "\n\t"
#define QTK_U8S8_STORE(off, c0, c1)                                                      \
  "vpbroadcastd " #off "(%[corr]), %%ymm14\n\t"                                       \
  "vpsubd %%ymm14, %%" #c0 ", %%" #c0 "\n\t"                                          \
  "vpsubd %%ymm14, %%" #c1 ", %%" #c1 "\n\t"                                          \
  "vmovdqa %%" #c0 ", 16*" #off "(%[acc])\n\t"                                        \
  "vmovdqa %%" #c1 ", 16*" #off "+32(%[acc])\n\t"

QTK_AVX2 void ukernel6(int64_t kquads, const uint8_t* a, const uint8_t* b, const int32_t* corr, int32_t* acc) {
  static_assert(kQgemmMR == 6 && kQgemmNR == 16, "6 rows x 16 pixels");
  alignas(32) static const int16_t ones[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  __asm__ volatile(
      "vpxor %%xmm0, %%xmm0, %%xmm0\n\t vpxor %%xmm1, %%xmm1, %%xmm1\n\t"
      "vpxor %%xmm2, %%xmm2, %%xmm2\n\t vpxor %%xmm3, %%xmm3, %%xmm3\n\t"
      "vpxor %%xmm4, %%xmm4, %%xmm4\n\t vpxor %%xmm5, %%xmm5, %%xmm5\n\t"
      "vpxor %%xmm6, %%xmm6, %%xmm6\n\t vpxor %%xmm7, %%xmm7, %%xmm7\n\t"
      "vpxor %%xmm8, %%xmm8, %%xmm8\n\t vpxor %%xmm9, %%xmm9, %%xmm9\n\t"
      "vpxor %%xmm10, %%xmm10, %%xmm10\n\t vpxor %%xmm11, %%xmm11, %%xmm11\n\t"
      "test %[n], %[n]\n\t"
      "jle 2f\n\t"
      "1:\n\t"
      "vmovdqa (%[b]), %%ymm12\n\t"
      "vmovdqa 32(%[b]), %%ymm13\n\t"
      QTK_U8S8_ROW(0, ymm0, ymm1) QTK_U8S8_ROW(4, ymm2, ymm3) QTK_U8S8_ROW(8, ymm4, ymm5)
      QTK_U8S8_ROW(12, ymm6, ymm7) QTK_U8S8_ROW(16, ymm8, ymm9) QTK_U8S8_ROW(20, ymm10, ymm11)
      "add $24, %[a]\n\t"
      "add $64, %[b]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      QTK_U8S8_STORE(0, ymm0, ymm1) QTK_U8S8_STORE(4, ymm2, ymm3) QTK_U8S8_STORE(8, ymm4, ymm5)
      QTK_U8S8_STORE(12, ymm6, ymm7) QTK_U8S8_STORE(16, ymm8, ymm9) QTK_U8S8_STORE(20, ymm10, ymm11)
      "vzeroupper\n\t"
      : [a] "+r"(a), [b] "+r"(b), [n] "+r"(kquads)
      : [corr] "r"(corr), [acc] "r"(acc), [ones] "m"(ones)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
        "xmm13", "xmm14", "xmm15", "memory", "cc");
}
#undef QTK_U8S8_ROW
#undef QTK_U8S8_STORE

template <bool kFlip>
QTK_AVX2 void pack_panel(const QconvPanelSource& s, uint8_t flip, uint8_t* panel) {
  __m128i masks[kQgemmNR + 1];
  qconv_run_masks(s, masks);
  const __m128i f = _mm_set1_epi8(static_cast<char>(flip));
  const int64_t kquads = qgemm_kquads(s.k);
  for (int64_t q = 0; q < kquads; ++q) {
    const int64_t k0 = 4 * q;
    // Rows past k: zeros (their weights are 0 too).
    const __m128i r0 = load_row<kFlip>(s, k0, masks, f);
    const __m128i r1 = k0 + 1 < s.k ? load_row<kFlip>(s, k0 + 1, masks, f) : _mm_setzero_si128();
    const __m128i r2 = k0 + 2 < s.k ? load_row<kFlip>(s, k0 + 2, masks, f) : _mm_setzero_si128();
    const __m128i r3 = k0 + 3 < s.k ? load_row<kFlip>(s, k0 + 3, masks, f) : _mm_setzero_si128();
    store_quads(r0, r1, r2, r3, panel + q * 4 * kQgemmNR);
  }
}

}  // namespace

QTK_AVX2 void qconv_interleave_quads_avx2(const uint8_t* planes, int64_t groups4, int64_t plane, uint8_t flip,
                                          uint8_t* dst) {
  const __m128i f = _mm_set1_epi8(static_cast<char>(flip));
  for (int64_t g = 0; g < groups4; ++g) {
    const uint8_t* p0 = planes + 4 * g * plane;
    uint8_t* out = dst + kQconvQuadFront + g * plane * 4;
    // 16 pixels a step; the last step reads and writes past the plane (slack).
    for (int64_t i = 0; i < plane; i += 16, out += 64) {
      auto row = [&](int t) {
        return _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p0 + t * plane + i)), f);
      };
      store_quads(row(0), row(1), row(2), row(3), out);
    }
  }
}

QTK_AVX2 void qconv_fill_quad_image_s1_avx2(const QconvGeometry& g, const QconvLayout& l, const uint8_t* x,
                                            uint8_t flip, uint8_t pad_u8, uint8_t* dst, QconvImageRows rows) {
  const int64_t c4 = g.in_c / g.group / 4, in_hw = g.in_h * g.in_w, w = g.in_w;
  int64_t r_begin = 0, r_end = 0;  // input rows in range
  qconv_clear_image_rows(g, l, c4, rows, pad_u8, l.quad_bytes, dst, r_begin, r_end);
  const __m128i f = _mm_set1_epi8(static_cast<char>(flip));
  for (int64_t cq = 0; cq < c4; ++cq)
    for (int64_t r = r_begin; r < r_end; ++r) {
      const uint8_t* src = x + 4 * cq * in_hw + r * w;
      uint8_t* out = dst + kQconvQuadFront + ((cq * l.hph + r + g.pad_top) * l.wph + g.pad_left) * 4;
      // 16 pixels of the 4 channels' rows; the last step overlaps the one before.
      auto sixteen = [&](int64_t i) {
        auto row = [&](int t) {
          return _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + t * in_hw + i)), f);
        };
        store_quads(row(0), row(1), row(2), row(3), out + 4 * i);
      };
      // Rows of 4-15 pixels (a small net's later stages): 8 or 4 pixels a
      // step from 8- or 4-byte loads, the last step overlapping the one before.
      auto few = [&](int64_t i, int n) {
        auto row = [&](int t) {
          const uint8_t* p = src + t * in_hw + i;
          __m128i v;
          if (n == 8) v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
          else {
            int32_t word;
            std::memcpy(&word, p, 4);
            v = _mm_cvtsi32_si128(word);
          }
          return _mm_xor_si128(v, f);
        };
        const __m128i p01 = _mm_unpacklo_epi8(row(0), row(1)), p23 = _mm_unpacklo_epi8(row(2), row(3));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 4 * i), _mm_unpacklo_epi16(p01, p23));  // pixels 0-3
        if (n == 8) _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 4 * i + 16), _mm_unpackhi_epi16(p01, p23));
      };
      if (w >= 16) {
        for (int64_t i = 0; i + 16 < w; i += 16) sixteen(i);
        sixteen(w - 16);
      } else if (w >= 4) {
        const int n = w >= 8 ? 8 : 4;
        for (int64_t i = 0; i + n < w; i += n) few(i, n);
        few(w - n, n);
      } else {
        for (int64_t i = 0; i < w; ++i)
          for (int t = 0; t < 4; ++t) out[4 * i + t] = src[t * in_hw + i] ^ flip;
      }
    }
}

QTK_AVX2 void qconv_pack_panel_u8_avx2(const QconvPanelSource& s, uint8_t flip, uint8_t* panel) {
  static_assert(kQgemmNR == 16, "a k row is 16 bytes");
  // Lane-by-lane reads (no slack to read into, or a partial panel): rare, scalar.
  if (!s.contiguous_reads) return qconv_pack_panel_u8_scalar(s, flip, panel);
  if (flip) pack_panel<true>(s, flip, panel);
  else pack_panel<false>(s, flip, panel);
}

QTK_AVX2 void qconv_ukernel_u8s8_few_avx2(int rows, int nr, int64_t kquads, const uint8_t* a, const uint8_t* panel,
                                          const int32_t* corr, int32_t* acc) {
  static_assert(kQgemmMR == 6 && kQgemmNR == 16, "a k quad of the tile is 24 bytes, of the panel 64");
  // The tile's 6 weight quads of a k quad as lanes 0-5 of one vector (lanes
  // 6-7 read the next quad, or the tile's slack: ignored), against each
  // pixel's activation quad broadcast: one vpmaddubsw per pixel per k quad,
  // where the 16-lane kernel spends twelve on the whole panel.
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i c[kQconvFewLanes];
  for (int j = 0; j < kQconvFewLanes; ++j) c[j] = _mm256_setzero_si256();
  for (int64_t q = 0; q < kquads; ++q, a += 4 * kQgemmMR, panel += 4 * kQgemmNR) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a));
#pragma GCC unroll 8
    for (int j = 0; j < kQconvFewLanes; ++j) {
      if (j >= nr) break;
      int32_t word;
      std::memcpy(&word, panel + 4 * j, sizeof(word));
      c[j] = _mm256_add_epi32(c[j], _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi32(word), w), ones));
    }
  }
  for (int j = 0; j < nr; ++j) {
    alignas(32) int32_t lanes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), c[j]);
    for (int i = 0; i < rows; ++i)
      acc[i * kQgemmNR + j] = static_cast<int32_t>(static_cast<uint32_t>(lanes[i]) - static_cast<uint32_t>(corr[i]));
  }
}

QTK_AVX2 void qconv_ukernel_u8s8_avx2(int rows, int64_t kquads, const uint8_t* a, const uint8_t* panel,
                                      const int32_t* corr, int32_t* acc) {
  static_assert(kQgemmMR == 6, "one instance per row count");
  // 5 rows take the 6-row kernel (the tile's sixth row is zeros): the
  // intrinsics version spills at 10 accumulators.
  switch (rows) {
    case 1: ukernel_rows<1>(kquads, a, panel, corr, acc); break;
    case 2: ukernel_rows<2>(kquads, a, panel, corr, acc); break;
    case 3: ukernel_rows<3>(kquads, a, panel, corr, acc); break;
    case 4: ukernel_rows<4>(kquads, a, panel, corr, acc); break;
    default: ukernel6(kquads, a, panel, corr, acc); break;
  }
}

#else  // no x86: qconv never takes this path (qgemm_avx2_supported() is false), but it must link.

void qconv_interleave_quads_avx2(const uint8_t*, int64_t, int64_t, uint8_t, uint8_t*) {}
void qconv_fill_quad_image_s1_avx2(const QconvGeometry&, const QconvLayout&, const uint8_t*, uint8_t, uint8_t,
                                   uint8_t*, QconvImageRows) {}

void qconv_pack_panel_u8_avx2(const QconvPanelSource& s, uint8_t flip, uint8_t* panel) {
  qconv_pack_panel_u8_scalar(s, flip, panel);
}
void qconv_ukernel_u8s8_avx2(int rows, int64_t kquads, const uint8_t* a, const uint8_t* panel, const int32_t* corr,
                             int32_t* acc) {
  (void)rows, (void)kquads, (void)a, (void)panel, (void)corr, (void)acc;
}
void qconv_ukernel_u8s8_few_avx2(int rows, int nr, int64_t kquads, const uint8_t* a, const uint8_t* panel,
                                 const int32_t* corr, int32_t* acc) {
  (void)rows, (void)nr, (void)kquads, (void)a, (void)panel, (void)corr, (void)acc;
}

#endif

}  // namespace qtk::rt::x86::detail
