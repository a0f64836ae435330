// Single-precision GEMM for the float runtime:
//   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C[M,N]
// Row-major, with leading dimensions; op(X) is X or X^T.
//
// The driver follows the BLIS/GotoBLAS scheme: B is packed in KC x NC panels
// of NR-wide slivers (kept in L3/L2), A in MC x KC blocks of MR-tall slivers
// (kept in L2), and a register-blocked MR x NR micro-kernel streams one A and
// one B sliver from L1. The AVX2+FMA micro-kernel is picked at run time; a
// portable scalar one always builds and gives the same results to rounding.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>

namespace qtk::rt {
class ThreadPool;
}

namespace qtk::rt::ref {

enum class SgemmPath {
  kAuto,    // best path the CPU supports, unless QTK_SGEMM_SCALAR=1 is set
  kScalar,  // portable C++ micro-kernel
  kAvx2,    // AVX2+FMA micro-kernel; falls back to scalar on CPUs without it
};

// Whether this CPU runs the AVX2+FMA micro-kernel.
bool sgemm_avx2_supported();
// The path kAuto resolves to (reads QTK_SGEMM_SCALAR once).
SgemmPath sgemm_auto_path();
const char* sgemm_path_name(SgemmPath p);

// Follows the BLAS convention: when beta == 0, C is not read (NaNs in C do not
// propagate); when alpha == 0 or k == 0, A and B are not read.
// `pool` (may be null) splits large products over its threads; do not pass a
// pool from inside one of its own parallel_for tasks.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc, ThreadPool* pool = nullptr,
           SgemmPath path = SgemmPath::kAuto);

// Pre-packed B, for producers that can write GEMM's packing layout directly
// (Conv's im2col) and so skip one pass over B. op(B)[K, N] is stored as
// ceil(N / NR) slivers, sliver s holding columns [s*NR, s*NR + NR) row by row:
//   packed[s * K * NR + p * NR + (j - s * NR)] = op(B)[p, j]
// with columns past N zero. The buffer must be 32-byte aligned.
inline constexpr int kSgemmPackedBWidth = 16;  // NR
int64_t sgemm_packed_b_floats(int64_t k, int64_t n);
void sgemm_pack_b(bool trans_b, int64_t k, int64_t n, const float* b, int64_t ldb, float* packed_b);
// Same contract as sgemm, with op(B) given packed.
void sgemm_packed_b(bool trans_a, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
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
// Micro-kernel tile shape shared by the packing code and every micro-kernel.
inline constexpr int kSgemmMR = 6;
inline constexpr int kSgemmNR = kSgemmPackedBWidth;

// c[0:mr, 0:nr] = alpha * sum_p a[p*MR + i] * b[p*NR + j] + beta * c (c unread
// when beta == 0). `a` and `b` are packed slivers, zero-padded to MR / NR;
// `b` is 32-byte aligned.
using SgemmMicroKernel = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                                  float beta, int mr, int nr);
void sgemm_ukernel_6x16_scalar(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                               float beta, int mr, int nr);
// Defined in sgemm_avx2.cpp; only call when sgemm_avx2_supported().
void sgemm_ukernel_6x16_avx2(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                             float beta, int mr, int nr);
}  // namespace detail

}  // namespace qtk::rt::ref
