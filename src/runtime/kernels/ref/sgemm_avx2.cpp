// AVX2+FMA micro-kernels. Built with a per-function target attribute so the
// rest of the library stays baseline x86-64; sgemm.cpp only calls them when
// the CPU reports avx2 and fma.
#include "runtime/kernels/ref/sgemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace qtk::rt::ref::detail {

#if defined(__x86_64__) || defined(__i386__)

namespace {

// A ROWS x (8 * VECS) tile of the packed 6x16 layout. The full 6x16 tile
// keeps 12 accumulators + 2 B vectors + 1 broadcast A in the 16 ymm
// registers; edge tiles (fewer rows, or at most 8 columns) run a smaller
// instance instead of multiplying zero padding.
template <int ROWS, int VECS>
__attribute__((target("avx2,fma"))) inline void tile(int64_t kc, const float* a, const float* b, float* c,
                                                     int64_t ldc, float alpha, float beta, int mr, int nr) {
  __m256 acc[ROWS][VECS];
#pragma GCC unroll 6
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < VECS; ++v) acc[i][v] = _mm256_setzero_ps();

  // Warm the C tile: it is read (or written) right after the K loop.
  for (int i = 0; i < mr; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + nr - 1), _MM_HINT_T0);
  }

#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; ++p) {
    __m256 bv[VECS];
#pragma GCC unroll 2
    for (int v = 0; v < VECS; ++v) bv[v] = _mm256_load_ps(b + 8 * v);
#pragma GCC unroll 6
    for (int i = 0; i < ROWS; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + i);
#pragma GCC unroll 2
      for (int v = 0; v < VECS; ++v) acc[i][v] = _mm256_fmadd_ps(av, bv[v], acc[i][v]);
    }
    a += kSgemmMR;
    b += kSgemmNR;
  }

  const __m256 valpha = _mm256_set1_ps(alpha);
  const __m256 vbeta = _mm256_set1_ps(beta);
  const bool read_c = beta != 0.f;
  if (mr == ROWS && nr == 8 * VECS) {
#pragma GCC unroll 6
    for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 2
      for (int v = 0; v < VECS; ++v) {
        float* cp = c + i * ldc + 8 * v;
        __m256 r = _mm256_mul_ps(acc[i][v], valpha);
        if (read_c) r = _mm256_fmadd_ps(vbeta, _mm256_loadu_ps(cp), r);
        _mm256_storeu_ps(cp, r);
      }
    return;
  }
  // Partial tile: spill the accumulators and write only the mr x nr corner.
  alignas(32) float t[ROWS][8 * VECS];
#pragma GCC unroll 6
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < VECS; ++v) _mm256_store_ps(t[i] + 8 * v, acc[i][v]);
  for (int i = 0; i < mr; ++i) {
    float* row = c + i * ldc;
    if (read_c) {
      for (int j = 0; j < nr; ++j) row[j] = alpha * t[i][j] + beta * row[j];
    } else {
      for (int j = 0; j < nr; ++j) row[j] = alpha * t[i][j];
    }
  }
}

template <int VECS>
__attribute__((target("avx2,fma"))) void tile_rows(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                                                   float alpha, float beta, int mr, int nr) {
  switch (mr) {
    case 1: return tile<1, VECS>(kc, a, b, c, ldc, alpha, beta, mr, nr);
    case 2: return tile<2, VECS>(kc, a, b, c, ldc, alpha, beta, mr, nr);
    case 3: return tile<3, VECS>(kc, a, b, c, ldc, alpha, beta, mr, nr);
    case 4: return tile<4, VECS>(kc, a, b, c, ldc, alpha, beta, mr, nr);
    case 5: return tile<5, VECS>(kc, a, b, c, ldc, alpha, beta, mr, nr);
    default: return tile<6, VECS>(kc, a, b, c, ldc, alpha, beta, mr, nr);
  }
}

}  // namespace

__attribute__((target("avx2,fma"))) void sgemm_ukernel_6x16_avx2(int64_t kc, const float* a, const float* b,
                                                                 float* c, int64_t ldc, float alpha, float beta,
                                                                 int mr, int nr) {
  if (nr > 8) {
    tile_rows<2>(kc, a, b, c, ldc, alpha, beta, mr, nr);
  } else {
    tile_rows<1>(kc, a, b, c, ldc, alpha, beta, mr, nr);
  }
}

#else  // not x86: never selected (sgemm_avx2_supported() is false); keeps the link whole.

void sgemm_ukernel_6x16_avx2(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                             float beta, int mr, int nr) {
  sgemm_ukernel_6x16_scalar(kc, a, b, c, ldc, alpha, beta, mr, nr);
}

#endif

}  // namespace qtk::rt::ref::detail
