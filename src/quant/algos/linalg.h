// Dense symmetric positive definite algebra for GPTQ: blocked Cholesky and
// triangular inversion in float, with the large products on the runtime's
// sgemm (the O(n^3) parts of a 4096-column layer run at GEMM speed) and the
// small diagonal blocks in double.
#pragma once

#include <cstdint>
#include <vector>

namespace qtk::rt {
class ThreadPool;
}

namespace qtk::quant::algos {

// In place: the lower Cholesky factor L (A = L L^T) of the symmetric positive
// definite n x n row-major matrix a (only its lower triangle is read); the
// strict upper triangle is zeroed. Returns false (a is then garbage) when a
// pivot is not positive and finite.
bool cholesky_lower(float* a, int64_t n, rt::ThreadPool* pool);

// In place: the inverse of the lower triangular n x n matrix l (nonzero diagonal).
void invert_lower_triangular(float* l, int64_t n, rt::ThreadPool* pool);

// The upper triangular U with U^T U = A^{-1} for SPD `a` (n x n), which GPTQ
// reads its error propagation from, without forming A^{-1}: with P the
// index reversal, chol(P A P) = L gives A^{-1} = (L^{-1} P)^T (L^{-1} P), so
// U = P L^{-1} P. Returns false when `a` is not positive definite.
bool inverse_upper_cholesky(const float* a, int64_t n, std::vector<float>& u, rt::ThreadPool* pool);

}  // namespace qtk::quant::algos
