// AVX2+FMA micro-kernels: the 6x16 tile (and its edge variants) and the
// small-M streaming kernels. Built with a per-function target attribute so the
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

// Sum of the 8 lanes.
__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

// M rows of A against each row of B (B transposed), V vector accumulators
// per row so the FMA chains overlap.
template <int M, int V>
__attribute__((target("avx2,fma"))) void small_m_dots(int64_t n, int64_t k, const float* a, const float* b,
                                                      int64_t ldb, float beta, float* c, int64_t ldc) {
  for (int64_t j = 0; j < n; ++j) {
    const float* bj = b + j * ldb;
    __m256 acc[M][V];
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[i][v] = _mm256_setzero_ps();
    int64_t p = 0;
    for (; p + 8 * V <= k; p += 8 * V) {
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) {
        const __m256 bv = _mm256_loadu_ps(bj + p + 8 * v);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) acc[i][v] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i * k + p + 8 * v), bv, acc[i][v]);
      }
    }
    for (; p + 8 <= k; p += 8) {
      const __m256 bv = _mm256_loadu_ps(bj + p);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) acc[i][0] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i * k + p), bv, acc[i][0]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      __m256 t = acc[i][0];
#pragma GCC unroll 4
      for (int v = 1; v < V; ++v) t = _mm256_add_ps(t, acc[i][v]);
      float sum = hsum(t);
      for (int64_t q = p; q < k; ++q) sum += a[i * k + q] * bj[q];
      float& cij = c[i * ldc + j];
      cij = beta == 0.f ? sum : sum + beta * cij;
    }
  }
}

// c[i, :] += sum_p a[i, p] * b[p, :] for M rows, W vectors (8W columns) of C
// held in registers while B's rows stream past.
template <int M, int W>
__attribute__((target("avx2,fma"))) void small_m_rows(int64_t n, int64_t k, const float* a, const float* b,
                                                      int64_t ldb, float* c, int64_t ldc) {
  int64_t j0 = 0;
  for (; j0 + 8 * W <= n; j0 += 8 * W) {
    __m256 acc[M][W];
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
      for (int w = 0; w < W; ++w) acc[i][w] = _mm256_loadu_ps(c + i * ldc + j0 + 8 * w);
    for (int64_t p = 0; p < k; ++p) {
      __m256 bv[W];
#pragma GCC unroll 4
      for (int w = 0; w < W; ++w) bv[w] = _mm256_loadu_ps(b + p * ldb + j0 + 8 * w);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) {
        const __m256 av = _mm256_broadcast_ss(a + i * k + p);
#pragma GCC unroll 4
        for (int w = 0; w < W; ++w) acc[i][w] = _mm256_fmadd_ps(av, bv[w], acc[i][w]);
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
      for (int w = 0; w < W; ++w) _mm256_storeu_ps(c + i * ldc + j0 + 8 * w, acc[i][w]);
  }
  for (; j0 + 8 <= n; j0 += 8) {
    __m256 acc[M];
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) acc[i] = _mm256_loadu_ps(c + i * ldc + j0);
    for (int64_t p = 0; p < k; ++p) {
      const __m256 bv = _mm256_loadu_ps(b + p * ldb + j0);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) acc[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(a + i * k + p), bv, acc[i]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) _mm256_storeu_ps(c + i * ldc + j0, acc[i]);
  }
  for (int64_t j = j0; j < n; ++j)  // the last < 8 columns
    for (int i = 0; i < M; ++i) {
      float sum = 0.f;
      for (int64_t p = 0; p < k; ++p) sum += a[i * k + p] * b[p * ldb + j];
      c[i * ldc + j] += sum;
    }
}

}  // namespace

__attribute__((target("avx2,fma"))) void sgemm_small_m_dots_avx2(int m, int64_t n, int64_t k, const float* a,
                                                                 const float* b, int64_t ldb, float beta, float* c,
                                                                 int64_t ldc) {
  switch (m) {
    case 1: return small_m_dots<1, 4>(n, k, a, b, ldb, beta, c, ldc);
    case 2: return small_m_dots<2, 2>(n, k, a, b, ldb, beta, c, ldc);
    case 3: return small_m_dots<3, 2>(n, k, a, b, ldb, beta, c, ldc);
    default: return small_m_dots<4, 2>(n, k, a, b, ldb, beta, c, ldc);
  }
}

__attribute__((target("avx2,fma"))) void sgemm_small_m_rows_avx2(int m, int64_t n, int64_t k, const float* a,
                                                                 const float* b, int64_t ldb, float* c, int64_t ldc) {
  switch (m) {
    case 1: return small_m_rows<1, 4>(n, k, a, b, ldb, c, ldc);
    case 2: return small_m_rows<2, 4>(n, k, a, b, ldb, c, ldc);
    case 3: return small_m_rows<3, 2>(n, k, a, b, ldb, c, ldc);
    default: return small_m_rows<4, 2>(n, k, a, b, ldb, c, ldc);
  }
}

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
void sgemm_small_m_dots_avx2(int m, int64_t n, int64_t k, const float* a, const float* b, int64_t ldb, float beta,
                             float* c, int64_t ldc) {
  sgemm_small_m_dots_scalar(m, n, k, a, b, ldb, beta, c, ldc);
}
void sgemm_small_m_rows_avx2(int m, int64_t n, int64_t k, const float* a, const float* b, int64_t ldb, float* c,
                             int64_t ldc) {
  sgemm_small_m_rows_scalar(m, n, k, a, b, ldb, c, ldc);
}

#endif

}  // namespace qtk::rt::ref::detail
