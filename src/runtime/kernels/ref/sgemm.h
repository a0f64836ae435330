// Single-precision GEMM for the float runtime:
//   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C[M,N]
// Row-major, with leading dimensions; op(X) is X or X^T.
//
// The driver follows the BLIS/GotoBLAS scheme: B is packed in KC x NC panels
// of NR-wide slivers (kept in L3/L2), A in MC x KC blocks of MR-tall slivers
// (kept in L2), and a register-blocked MR x NR micro-kernel streams one A and
// one B sliver from L1. Products with very few rows (batch-1 fully connected
// layers) skip packing and stream B once. The micro-kernel is picked at run
// time: AVX-512 (8 x 32 tile), AVX2+FMA (6 x 16) or portable scalar (6 x 16),
// which always builds; all agree to rounding. Packing buffers are per thread
// and kept between calls (they grow to the largest product a thread has run).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>

namespace qtk::rt {
class ThreadPool;
}

namespace qtk::rt::ref {

enum class SgemmPath {
  kAuto,    // the best path the CPU supports; QTK_SGEMM_SCALAR=1 forces scalar, QTK_SGEMM_AVX2=1 caps at AVX2
  kScalar,  // portable C++ micro-kernel
  kAvx2,    // AVX2+FMA micro-kernel; falls back to scalar on CPUs without it
  kAvx512,  // AVX-512F micro-kernel; falls back to AVX2, then scalar
};

// Whether this CPU runs the AVX2+FMA / AVX-512F micro-kernels.
bool sgemm_avx2_supported();
bool sgemm_avx512_supported();
// The path kAuto resolves to (reads the environment once).
SgemmPath sgemm_auto_path();
// The concrete path a request runs on: kAuto resolved, and a path the CPU
// lacks stepped down to the best one it has. Packed layouts depend on it.
SgemmPath sgemm_resolve_path(SgemmPath p);
const char* sgemm_path_name(SgemmPath p);

// Follows the BLAS convention: when beta == 0, C is not read (NaNs in C do not
// propagate); when alpha == 0 or k == 0, A and B are not read.
// `pool` (may be null) splits large products over its threads; do not pass a
// pool from inside one of its own parallel_for tasks.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc, ThreadPool* pool = nullptr,
           SgemmPath path = SgemmPath::kAuto);

// Pre-packed operands: a layer's constant weights are packed once (at
// session build), and Conv writes its images straight into B's layout. A
// packed operand is only valid for the path it was packed for (same `path`
// argument, resolved by sgemm_resolve_path) at packing and at use.
//
// B: op(B)[K, N] as ceil(N / NR) slivers, NR = sgemm_packed_b_width(path),
// sliver s holding columns [s*NR, s*NR + NR) row by row,
//   packed[s * K * NR + p * NR + (j - s * NR)] = op(B)[p, j],
// columns past N zero. The buffer must be 64-byte aligned.
inline constexpr int kSgemmMaxPackedBWidth = 32;  // the widest NR of any path (and of Conv's tiles)
int sgemm_packed_b_width(SgemmPath path = SgemmPath::kAuto);
int64_t sgemm_packed_b_floats(int64_t k, int64_t n, SgemmPath path = SgemmPath::kAuto);
void sgemm_pack_b(bool trans_b, int64_t k, int64_t n, const float* b, int64_t ldb, float* packed_b,
                  SgemmPath path = SgemmPath::kAuto);
// A: op(A)[M, K] in sgemm's own MR-row sliver layout (opaque to callers).
int64_t sgemm_packed_a_floats(int64_t m, int64_t k, SgemmPath path = SgemmPath::kAuto);
void sgemm_pack_a(bool trans_a, int64_t m, int64_t k, const float* a, int64_t lda, float* packed_a,
                  SgemmPath path = SgemmPath::kAuto);
// Same contract as sgemm, with op(A) and op(B) given packed.
void sgemm_packed(int64_t m, int64_t n, int64_t k, float alpha, const float* packed_a, const float* packed_b,
                  float beta, float* c, int64_t ldc, ThreadPool* pool = nullptr, SgemmPath path = SgemmPath::kAuto);
// Same contract as sgemm, with op(A) plain and op(B) given packed (Gemm and
// MatMul with constant weights).
void sgemm_prepacked_b(bool trans_a, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                       const float* packed_b, float beta, float* c, int64_t ldc, ThreadPool* pool = nullptr,
                       SgemmPath path = SgemmPath::kAuto);

// A growable, 64-byte aligned float buffer (contents are not kept on growth).
// get() returns nullptr if the allocation fails.
class AlignedFloats {
 public:
  float* get(int64_t floats);

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> buf_;
  int64_t capacity_ = 0;
};

namespace detail {
// c[0:mr, 0:nr] = alpha * sum_p a[p*MR + i] * b[p*NR + j] + beta * c (c unread
// when beta == 0). `a` and `b` are packed slivers of the kernel's MR / NR,
// zero-padded; `b` is 64-byte aligned.
using SgemmMicroKernel = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                                  float beta, int mr, int nr);
// A micro-kernel and its tile shape.
struct SgemmKernel {
  int mr, nr;
  SgemmMicroKernel fn;
};
// The kernel of a concrete path (see sgemm_resolve_path).
SgemmKernel sgemm_kernel(SgemmPath concrete);

inline constexpr int kSgemmMR = 6;  // scalar and AVX2 tile
inline constexpr int kSgemmNR = 16;
inline constexpr int kSgemmMR512 = 8;  // AVX-512 tile
inline constexpr int kSgemmNR512 = 32;
void sgemm_ukernel_6x16_scalar(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                               float beta, int mr, int nr);
// Defined in sgemm_avx2.cpp; only call when sgemm_avx2_supported().
void sgemm_ukernel_6x16_avx2(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                             float beta, int mr, int nr);
// Defined in sgemm_avx512.cpp; only call when sgemm_avx512_supported().
void sgemm_ukernel_8x32_avx512(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                               float beta, int mr, int nr);

// Products with at most kSgemmSmallM rows of op(A) (a batch-1 fully
// connected layer) read B once in place instead of packing it. `a` holds the
// m rows of op(A), K floats each, already multiplied by alpha.
inline constexpr int kSgemmSmallM = 4;
// B transposed (rows of B are contiguous over K): dot products,
//   c[i, j] = sum_p a[i, p] * b[j * ldb + p] + beta * c[i, j]   (c unread when beta == 0)
using SgemmSmallMDots = void (*)(int m, int64_t n, int64_t k, const float* a, const float* b, int64_t ldb,
                                 float beta, float* c, int64_t ldc);
// B plain: c[i, j] += sum_p a[i, p] * b[p * ldb + j]   (the caller applies beta first)
using SgemmSmallMRows = void (*)(int m, int64_t n, int64_t k, const float* a, const float* b, int64_t ldb, float* c,
                                 int64_t ldc);
void sgemm_small_m_dots_scalar(int m, int64_t n, int64_t k, const float* a, const float* b, int64_t ldb, float beta,
                               float* c, int64_t ldc);
void sgemm_small_m_rows_scalar(int m, int64_t n, int64_t k, const float* a, const float* b, int64_t ldb, float* c,
                               int64_t ldc);
void sgemm_small_m_dots_avx2(int m, int64_t n, int64_t k, const float* a, const float* b, int64_t ldb, float beta,
                             float* c, int64_t ldc);
void sgemm_small_m_rows_avx2(int m, int64_t n, int64_t k, const float* a, const float* b, int64_t ldb, float* c,
                             int64_t ldc);
}  // namespace detail

}  // namespace qtk::rt::ref
