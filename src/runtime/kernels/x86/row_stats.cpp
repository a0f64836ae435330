#include "runtime/kernels/x86/row_stats.h"

#include <cmath>

#include "core/cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC diagnostic ignored "-Wuninitialized"  // GCC bug 105593, see vector_math.cpp
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define QTK_ROWS_X86 1
#define QTK_AVX512 __attribute__((target("avx512f")))
#endif

namespace qtk::rt::x86 {

namespace {

bool use_avx512() {
  static const bool ok = cpu_has_avx512f() && !env_flag_set("QTK_VMATH_SCALAR");
  return ok;
}

float larger(float a, float b) { return a > b ? a : b; }

// The chains' last elements, x[j..n) (fewer than 8), then the pairwise join.
float finish_max(float top[8], const float* x, int64_t j, int64_t n) {
  for (int k = 0; j < n; ++j, ++k) top[k] = larger(x[j], top[k]);
  return larger(larger(larger(top[0], top[1]), larger(top[2], top[3])),
                larger(larger(top[4], top[5]), larger(top[6], top[7])));
}

double sum_chains_finish(double part[8]) {
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

#ifdef QTK_ROWS_X86
QTK_AVX512 float row_max_avx512(const float* x, int64_t n) {
  float top[8];
  for (int k = 0; k < 8; ++k) top[k] = x[k < n ? k : 0];
  int64_t j = 8;
  __m256 t = _mm256_loadu_ps(top);
  for (; j + 8 <= n; j += 8) t = _mm256_max_ps(_mm256_loadu_ps(x + j), t);  // maxps(a, b): a > b ? a : b
  _mm256_storeu_ps(top, t);
  return finish_max(top, x, j, n);
}

QTK_AVX512 double row_sum_avx512(const float* x, int64_t n) {
  __m512d acc = _mm512_setzero_pd();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm256_loadu_ps(x + j)));
  double part[8];
  _mm512_storeu_pd(part, acc);
  for (int k = 0; j < n; ++j, ++k) part[k] += x[j];
  return sum_chains_finish(part);
}

QTK_AVX512 double row_squares_avx512(const float* x, int64_t n, double mean) {
  const __m512d m = _mm512_set1_pd(mean);
  __m512d acc = _mm512_setzero_pd();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m512d d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + j)), m);
    acc = _mm512_add_pd(acc, _mm512_mul_pd(d, d));
  }
  double part[8];
  _mm512_storeu_pd(part, acc);
  for (int k = 0; j < n; ++j, ++k) part[k] += (static_cast<double>(x[j]) - mean) * (static_cast<double>(x[j]) - mean);
  return sum_chains_finish(part);
}

QTK_AVX512 void layer_norm_row_avx512(const float* x, int64_t n, double mean, double inv_std, const double* scale,
                                      const double* bias, float* y) {
  const __m512d m = _mm512_set1_pd(mean), s = _mm512_set1_pd(inv_std);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m512d v = _mm512_mul_pd(_mm512_mul_pd(_mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), m), s),
                              _mm512_loadu_pd(scale + i));
    if (bias != nullptr) v = _mm512_add_pd(v, _mm512_loadu_pd(bias + i));
    _mm256_storeu_ps(y + i, _mm512_cvtpd_ps(v));
  }
  scalar_rows::layer_norm_row_f32(x + i, n - i, mean, inv_std, scale + i, bias != nullptr ? bias + i : nullptr, y + i);
}
#endif

}  // namespace

namespace scalar_rows {

float row_max_f32(const float* x, int64_t n) {
  float top[8];
  for (int k = 0; k < 8; ++k) top[k] = x[k < n ? k : 0];
  int64_t j = 8;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; ++k) top[k] = larger(x[j + k], top[k]);
  return finish_max(top, x, j, n);
}

double row_sum_f32(const float* x, int64_t n) {
  double part[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; ++k) part[k] += x[j + k];
  for (int k = 0; j < n; ++j, ++k) part[k] += x[j];
  return sum_chains_finish(part);
}

void row_moments_f32(const float* x, int64_t n, double eps, double& mean, double& inv_std) {
  mean = n > 0 ? row_sum_f32(x, n) / static_cast<double>(n) : 0.0;
  double part[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; ++k) part[k] += (static_cast<double>(x[j + k]) - mean) * (static_cast<double>(x[j + k]) - mean);
  for (int k = 0; j < n; ++j, ++k) part[k] += (static_cast<double>(x[j]) - mean) * (static_cast<double>(x[j]) - mean);
  const double var = n > 0 ? sum_chains_finish(part) / static_cast<double>(n) : 0.0;
  inv_std = 1.0 / std::sqrt(var + eps);
}

void layer_norm_row_f32(const float* x, int64_t n, double mean, double inv_std, const double* scale,
                        const double* bias, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    double v = (static_cast<double>(x[i]) - mean) * inv_std * scale[i];
    if (bias != nullptr) v += bias[i];
    y[i] = static_cast<float>(v);
  }
}

}  // namespace scalar_rows

float row_max_f32(const float* x, int64_t n) {
#ifdef QTK_ROWS_X86
  if (use_avx512()) return row_max_avx512(x, n);
#endif
  return scalar_rows::row_max_f32(x, n);
}

double row_sum_f32(const float* x, int64_t n) {
#ifdef QTK_ROWS_X86
  if (use_avx512()) return row_sum_avx512(x, n);
#endif
  return scalar_rows::row_sum_f32(x, n);
}

void row_moments_f32(const float* x, int64_t n, double eps, double& mean, double& inv_std) {
#ifdef QTK_ROWS_X86
  if (use_avx512()) {
    mean = n > 0 ? row_sum_avx512(x, n) / static_cast<double>(n) : 0.0;
    const double var = n > 0 ? row_squares_avx512(x, n, mean) / static_cast<double>(n) : 0.0;
    inv_std = 1.0 / std::sqrt(var + eps);
    return;
  }
#endif
  scalar_rows::row_moments_f32(x, n, eps, mean, inv_std);
}

void layer_norm_row_f32(const float* x, int64_t n, double mean, double inv_std, const double* scale,
                        const double* bias, float* y) {
#ifdef QTK_ROWS_X86
  if (use_avx512()) return layer_norm_row_avx512(x, n, mean, inv_std, scale, bias, y);
#endif
  scalar_rows::layer_norm_row_f32(x, n, mean, inv_std, scale, bias, y);
}

}  // namespace qtk::rt::x86
