// AVX-512F micro-kernel: the 8x32 tile and its edge variants. Built with a
// per-function target attribute so the rest of the library stays baseline
// x86-64; sgemm.cpp only calls it when the CPU (and OS) support AVX-512F.
//
// Why 8x32: 16 accumulators (8 rows x 2 zmm) keep both FMA pipes busy past
// the FMA latency, each k step is 2 B loads + 8 broadcasts for 16 FMAs, and
// 8 divides the 16-64 output channels of typical small convolutions exactly.
#include "runtime/kernels/ref/sgemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace qtk::rt::ref::detail {

#if defined(__x86_64__) || defined(__i386__)

namespace {

constexpr int MR = kSgemmMR512;
constexpr int NR = kSgemmNR512;

// Lanes of vector v (16 columns each) that fall inside the nr valid columns.
__attribute__((target("avx512f"))) inline __mmask16 column_mask(int nr, int v) {
  const int valid = nr - 16 * v;
  return valid >= 16 ? static_cast<__mmask16>(0xFFFF)
                     : static_cast<__mmask16>(valid <= 0 ? 0 : (1u << valid) - 1u);
}

// A ROWS x (16 * VECS) tile of the packed 8x32 layout; edge tiles (fewer rows,
// or at most 16 columns) run a smaller instance instead of multiplying zero
// padding, and partial columns are written with masked stores.
template <int ROWS, int VECS>
__attribute__((target("avx512f,avx2,fma"))) inline void tile(int64_t kc, const float* a, const float* b, float* c,
                                                             int64_t ldc, float alpha, float beta, int nr) {
  __m512 acc[ROWS][VECS];
#pragma GCC unroll 8
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < VECS; ++v) acc[i][v] = _mm512_setzero_ps();

#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; ++p) {
    __m512 bv[VECS];
#pragma GCC unroll 2
    for (int v = 0; v < VECS; ++v) bv[v] = _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 8
    for (int i = 0; i < ROWS; ++i) {
      const __m512 av = _mm512_set1_ps(a[i]);
#pragma GCC unroll 2
      for (int v = 0; v < VECS; ++v) acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
    }
    a += MR;
    b += NR;
  }

  const __m512 valpha = _mm512_set1_ps(alpha);
  const __m512 vbeta = _mm512_set1_ps(beta);
  const bool read_c = beta != 0.f;
  __mmask16 mask[VECS];
#pragma GCC unroll 2
  for (int v = 0; v < VECS; ++v) mask[v] = column_mask(nr, v);
#pragma GCC unroll 8
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < VECS; ++v) {
      float* cp = c + i * ldc + 16 * v;
      __m512 r = _mm512_mul_ps(acc[i][v], valpha);
      if (read_c) r = _mm512_fmadd_ps(vbeta, _mm512_maskz_loadu_ps(mask[v], cp), r);
      _mm512_mask_storeu_ps(cp, mask[v], r);
    }
}

template <int VECS>
__attribute__((target("avx512f,avx2,fma"))) void tile_rows(int64_t kc, const float* a, const float* b, float* c,
                                                           int64_t ldc, float alpha, float beta, int mr, int nr) {
  switch (mr) {
    case 1: return tile<1, VECS>(kc, a, b, c, ldc, alpha, beta, nr);
    case 2: return tile<2, VECS>(kc, a, b, c, ldc, alpha, beta, nr);
    case 3: return tile<3, VECS>(kc, a, b, c, ldc, alpha, beta, nr);
    case 4: return tile<4, VECS>(kc, a, b, c, ldc, alpha, beta, nr);
    case 5: return tile<5, VECS>(kc, a, b, c, ldc, alpha, beta, nr);
    case 6: return tile<6, VECS>(kc, a, b, c, ldc, alpha, beta, nr);
    case 7: return tile<7, VECS>(kc, a, b, c, ldc, alpha, beta, nr);
    default: return tile<8, VECS>(kc, a, b, c, ldc, alpha, beta, nr);
  }
}

}  // namespace

__attribute__((target("avx512f,avx2,fma"))) void sgemm_ukernel_8x32_avx512(int64_t kc, const float* a,
                                                                           const float* b, float* c, int64_t ldc,
                                                                           float alpha, float beta, int mr, int nr) {
  if (nr > 16) {
    tile_rows<2>(kc, a, b, c, ldc, alpha, beta, mr, nr);
  } else {
    tile_rows<1>(kc, a, b, c, ldc, alpha, beta, mr, nr);
  }
}

#else  // not x86: never selected (sgemm_avx512_supported() is false); keeps the link whole.

void sgemm_ukernel_8x32_avx512(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                               float beta, int mr, int nr) {
  (void)kc, (void)a, (void)b, (void)c, (void)ldc, (void)alpha, (void)beta, (void)mr, (void)nr;
}

#endif

}  // namespace qtk::rt::ref::detail
