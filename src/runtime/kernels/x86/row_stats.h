// Row reductions of float32 Softmax and LayerNormalization, each written
// once in its scalar order (eight chains: element i into chain i % 8, the
// chains joined pairwise) with an AVX-512 twin that keeps the same bits: the
// eight chains are eight lanes (built with -ffp-contract=off, CMakeLists.txt).
#pragma once

#include <cstdint>

namespace qtk::rt::x86 {

// The largest of x[0..n) (n >= 1) as `a > b ? a : b` folds. With a NaN in
// the row the result is one of its values, which one depending on the NaN's
// place (Softmax's sum is NaN then anyway).
float row_max_f32(const float* x, int64_t n);
// Σ x[i] in double.
double row_sum_f32(const float* x, int64_t n);
// The mean and 1 / sqrt(var + eps) of x[0..n) in double (two passes: the
// mean, then the squared deviations).
void row_moments_f32(const float* x, int64_t n, double eps, double& mean, double& inv_std);
// y[i] = float(((double(x[i]) - mean) * inv_std) * scale[i] + bias[i]) (no
// bias term when bias is null).
void layer_norm_row_f32(const float* x, int64_t n, double mean, double inv_std, const double* scale,
                        const double* bias, float* y);

// The scalar forms, for tests (the functions above take them without AVX-512).
namespace scalar_rows {
float row_max_f32(const float* x, int64_t n);
double row_sum_f32(const float* x, int64_t n);
void row_moments_f32(const float* x, int64_t n, double eps, double& mean, double& inv_std);
void layer_norm_row_f32(const float* x, int64_t n, double mean, double inv_std, const double* scale,
                        const double* bias, float* y);
}  // namespace scalar_rows

}  // namespace qtk::rt::x86
