// Portable micro-kernels: the 6x16 tile and the small-M streaming kernels.
// They always build and are what runs on CPUs without AVX2 (or with
// QTK_SGEMM_SCALAR=1); the SIMD kernels agree with them to rounding.
#include "runtime/kernels/ref/sgemm.h"

namespace qtk::rt::ref {

namespace detail {

void sgemm_ukernel_6x16_scalar(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                               float beta, int mr, int nr) {
  // Two passes of 6x8 so the accumulators fit the 16 SSE registers of a
  // baseline x86-64 build once the compiler vectorizes the j loop.
  constexpr int kHalf = kSgemmNR / 2;
  for (int jh = 0; jh < nr; jh += kHalf) {
    float acc[kSgemmMR][kHalf] = {};
    for (int64_t p = 0; p < kc; ++p) {
      const float* ap = a + p * kSgemmMR;
      const float* bp = b + p * kSgemmNR + jh;
#pragma GCC unroll 6
      for (int i = 0; i < kSgemmMR; ++i) {
        const float av = ap[i];
#pragma GCC unroll 8
        for (int j = 0; j < kHalf; ++j) acc[i][j] += av * bp[j];
      }
    }
    const int nj = nr - jh < kHalf ? nr - jh : kHalf;
    for (int i = 0; i < mr; ++i) {
      float* row = c + i * ldc + jh;
      if (beta == 0.f) {
        for (int j = 0; j < nj; ++j) row[j] = alpha * acc[i][j];
      } else {
        for (int j = 0; j < nj; ++j) row[j] = alpha * acc[i][j] + beta * row[j];
      }
    }
  }
}

void sgemm_small_m_dots_scalar(int m, int64_t n, int64_t k, const float* a, const float* b, int64_t ldb, float beta,
                               float* c, int64_t ldc) {
  for (int64_t j = 0; j < n; ++j) {
    const float* bj = b + j * ldb;
    for (int i = 0; i < m; ++i) {
      const float* ai = a + i * k;
      float s = 0.f;
      for (int64_t p = 0; p < k; ++p) s += ai[p] * bj[p];
      float& cij = c[i * ldc + j];
      cij = beta == 0.f ? s : s + beta * cij;
    }
  }
}

void sgemm_small_m_rows_scalar(int m, int64_t n, int64_t k, const float* a, const float* b, int64_t ldb, float* c,
                               int64_t ldc) {
  for (int64_t p = 0; p < k; ++p) {
    const float* bp = b + p * ldb;
    for (int i = 0; i < m; ++i) {
      const float av = a[i * k + p];
      float* ci = c + i * ldc;
      for (int64_t j = 0; j < n; ++j) ci[j] += av * bp[j];
    }
  }
}

}  // namespace detail

}  // namespace qtk::rt::ref
