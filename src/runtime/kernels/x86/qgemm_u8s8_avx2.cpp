// The MR x 16 micro-kernel of the AVX2 tier's u8 x s8 GEMM (qgemm_u8s8.h):
// a row's u8 quad broadcast against the panel's two vectors of s8 quads,
// vpmaddubsw (exact under the pair bound) -> vpmaddwd by ones -> vpaddd.
#include "runtime/kernels/x86/qgemm_u8s8.h"

#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QTK_QGEMM_U8S8_X86 1
#endif

namespace qtk::rt::x86::detail {

#ifdef QTK_QGEMM_U8S8_X86

namespace {

#define QTK_AVX2 __attribute__((target("avx2")))

// Fewer than MR rows (the last tile, GEMV).
template <int ROWS>
QTK_AVX2 void ukernel_rows(int64_t kquads, const uint8_t* a, const int8_t* b, const int32_t* corr, int32_t* acc) {
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
      c[i][0] = _mm256_add_epi32(c[i][0], _mm256_madd_epi16(_mm256_maddubs_epi16(av, b0), ones));
      c[i][1] = _mm256_add_epi32(c[i][1], _mm256_madd_epi16(_mm256_maddubs_epi16(av, b1), ones));
    }
    a += 4 * kQgemmMR;
    b += 4 * kQgemmNR;
  }
  const __m256i z0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(corr));
  const __m256i z1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(corr + 8));
#pragma GCC unroll 6
  for (int i = 0; i < ROWS; ++i) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(acc + i * kQgemmNR), _mm256_sub_epi32(c[i][0], z0));
    _mm256_store_si256(reinterpret_cast<__m256i*>(acc + i * kQgemmNR + 8), _mm256_sub_epi32(c[i][1], z1));
  }
}

// All MR rows, in assembly for the reason given in qgemm_conv_u8s8_avx2.cpp
// (GCC spills the intrinsics version's accumulators). ymm0-11 the
// accumulators, ymm12-13 the panel, ymm14 the row's quad, ymm15 the product.
#define QTK_U8S8_ROW(off, c0, c1)                       \
  "vpbroadcastd " #off "(%[a]), %%ymm14\n\t"           \
  "vpmaddubsw %%ymm12, %%ymm14, %%ymm15\n\t"           \
  "vpmaddwd %[ones], %%ymm15, %%ymm15\n\t"             \
  "vpaddd %%ymm15, %%" #c0 ", %%" #c0 "\n\t"           \
  "vpmaddubsw %%ymm13, %%ymm14, %%ymm15\n\t"           \
  "vpmaddwd %[ones], %%ymm15, %%ymm15\n\t"             \
  "vpaddd %%ymm15, %%" #c1 ", %%" #c1 "\n\t"
#define QTK_U8S8_STORE(off, c0, c1)                     \
  "vpsubd %%ymm12, %%" #c0 ", %%" #c0 "\n\t"           \
  "vpsubd %%ymm13, %%" #c1 ", %%" #c1 "\n\t"           \
  "vmovdqa %%" #c0 ", 16*" #off "(%[acc])\n\t"         \
  "vmovdqa %%" #c1 ", 16*" #off "+32(%[acc])\n\t"

QTK_AVX2 void ukernel6(int64_t kquads, const uint8_t* a, const int8_t* b, const int32_t* corr, int32_t* acc) {
  static_assert(kQgemmMR == 6 && kQgemmNR == 16, "6 rows x 16 columns");
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
      "vmovdqu (%[corr]), %%ymm12\n\t"
      "vmovdqu 32(%[corr]), %%ymm13\n\t"
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

}  // namespace

QTK_AVX2 void qgemm_u8s8_pack_a_tile_avx2(const QgemmCodes& a, int64_t m0, int rows, int64_t k, uint8_t flip,
                                          uint8_t* tile) {
  static_assert(kQgemmMR == 6, "four rows transposed, two interleaved");
  if (a.stride_j != 1) return qgemm_u8s8_pack_a_tile(a, m0, rows, k, flip, tile);
  // 4 quads of 6 rows a step: a 4 x 4 transpose of 32-bit quads for rows
  // 0-3 (16 bytes a quad) and rows 4-5 interleaved (8 bytes a quad). Rows
  // past `rows` are zeros; quads past the steps go the scalar way.
  const int64_t steps = (k / 4) / 4;
  const __m128i f = _mm_set1_epi8(static_cast<char>(flip));
  const __m128i zero = _mm_setzero_si128();
  const uint8_t* row[kQgemmMR];
  for (int i = 0; i < kQgemmMR; ++i)
    row[i] = i < rows ? static_cast<const uint8_t*>(a.data) + (m0 + i) * a.stride_i : nullptr;
  auto load = [&](int i, int64_t s) {
    return row[i] ? _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row[i] + 16 * s)), f) : zero;
  };
  for (int64_t s = 0; s < steps; ++s) {
    const __m128i r0 = load(0, s), r1 = load(1, s), r2 = load(2, s), r3 = load(3, s), r4 = load(4, s), r5 = load(5, s);
    const __m128i t01l = _mm_unpacklo_epi32(r0, r1), t01h = _mm_unpackhi_epi32(r0, r1);
    const __m128i t23l = _mm_unpacklo_epi32(r2, r3), t23h = _mm_unpackhi_epi32(r2, r3);
    const __m128i q[4] = {_mm_unpacklo_epi64(t01l, t23l), _mm_unpackhi_epi64(t01l, t23l),
                          _mm_unpacklo_epi64(t01h, t23h), _mm_unpackhi_epi64(t01h, t23h)};
    const __m128i t45l = _mm_unpacklo_epi32(r4, r5), t45h = _mm_unpackhi_epi32(r4, r5);
    const __m128i p[4] = {t45l, _mm_unpackhi_epi64(t45l, t45l), t45h, _mm_unpackhi_epi64(t45h, t45h)};
    uint8_t* dst = tile + s * 4 * 4 * kQgemmMR;
    for (int j = 0; j < 4; ++j) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j * 4 * kQgemmMR), q[j]);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + j * 4 * kQgemmMR + 16), p[j]);
    }
  }
  qgemm_u8s8_pack_a_tile(a, m0, rows, k, flip, tile, 4 * steps);
}

QTK_AVX2 void qgemm_ukernel_u8s8_avx2(int rows, int64_t kquads, const uint8_t* a, const int8_t* panel,
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

#else  // no x86: qgemm never takes this path (qgemm_avx2_supported() is false), but it must link.

void qgemm_u8s8_pack_a_tile_avx2(const QgemmCodes& a, int64_t m0, int rows, int64_t k, uint8_t flip, uint8_t* tile) {
  qgemm_u8s8_pack_a_tile(a, m0, rows, k, flip, tile);
}

void qgemm_ukernel_u8s8_avx2(int rows, int64_t kquads, const uint8_t* a, const int8_t* panel, const int32_t* corr,
                             int32_t* acc) {
  (void)rows, (void)kquads, (void)a, (void)panel, (void)corr, (void)acc;
}

#endif

}  // namespace qtk::rt::x86::detail
