#include "runtime/kernels/x86/softmax_rows.h"

#include <algorithm>

#include "core/cpu_features.h"
#include "runtime/kernels/x86/row_stats.h"
#include "runtime/kernels/x86/vector_math.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC diagnostic ignored "-Wuninitialized"  // GCC bug 105593, see vector_math.cpp
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define QTK_SOFTMAX_X86 1
#define QTK_AVX512BW __attribute__((target("avx512f,avx512bw,avx512vl")))
#endif

namespace qtk::rt::x86 {

namespace {

// Elements per block: x - max, exp and the scaling of one block stay in L1.
constexpr int64_t kBlockElements = 4096;

void subtract_max(const float* x, float* y, int64_t n) {
  const float mx = row_max_f32(x, n);
  for (int64_t j = 0; j < n; ++j) y[j] = x[j] - mx;
}

void scale_by_inverse_sum(float* y, int64_t n) {
  const float inv = static_cast<float>(1.0 / row_sum_f32(y, n));
  for (int64_t j = 0; j < n; ++j) y[j] *= inv;
}

#ifdef QTK_SOFTMAX_X86
// Rows of 8 to 63: row_max_f32 and row_sum_f32's reductions written out in
// registers (the same chains, element j into chain j % 8, joined pairwise
// in the same order), and no store wider than the row (exact_width).
constexpr int64_t kShortMin = 8, kShortMax = 63;

bool use_short_rows() {
  static const bool ok = cpu_has_avx512bw() && !env_flag_set("QTK_VMATH_SCALAR");
  return ok;
}

QTK_AVX512BW inline __mmask8 low8(int64_t k) { return static_cast<__mmask8>((1u << k) - 1); }

// dst[i] = src[i] - c or src[i] * c over a row, in 16-, 8- and 4-wide
// vectors, then one by one: no store reaches past the row. A masked store
// covers its full width as far as the core's store-to-load checks go, so
// the next row's loads waited for it: with masked tails, 4352 rows of 17
// took 124 us, with these 51 us (one thread, AMD EPYC with AVX-512).
enum class Op { kSubtract, kMultiply };
template <Op kOp>
QTK_AVX512BW inline void exact_width(const float* src, float* dst, int64_t n, __m512 c) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(src + i);
    _mm512_storeu_ps(dst + i, kOp == Op::kSubtract ? _mm512_sub_ps(v, c) : _mm512_mul_ps(v, c));
  }
  if (i + 8 <= n) {
    const __m256 v = _mm256_loadu_ps(src + i), c8 = _mm512_castps512_ps256(c);
    _mm256_storeu_ps(dst + i, kOp == Op::kSubtract ? _mm256_sub_ps(v, c8) : _mm256_mul_ps(v, c8));
    i += 8;
  }
  if (i + 4 <= n) {
    const __m128 v = _mm_loadu_ps(src + i), c4 = _mm512_castps512_ps128(c);
    _mm_storeu_ps(dst + i, kOp == Op::kSubtract ? _mm_sub_ps(v, c4) : _mm_mul_ps(v, c4));
    i += 4;
  }
  const float c1 = _mm512_cvtss_f32(c);
  for (; i < n; ++i) dst[i] = kOp == Op::kSubtract ? src[i] - c1 : src[i] * c1;
}

QTK_AVX512BW void subtract_max_short(const float* x, float* y, int64_t n) {
  // Chains: top = x[0..8), then max(x[j..j+8), top) (a > b ? a : b, a the
  // new element), the last < 8 elements into the first chains.
  __m256 t = _mm256_loadu_ps(x);
  int64_t j = 8;
  for (; j + 8 <= n; j += 8) t = _mm256_max_ps(_mm256_loadu_ps(x + j), t);
  if (j < n) t = _mm256_mask_max_ps(t, low8(n - j), _mm256_maskz_loadu_ps(low8(n - j), x + j), t);
  // Join: (t0 t1) (t2 t3) (t4 t5) (t6 t7), then pairs of those, then the two.
  const __m256 u = _mm256_max_ps(_mm256_shuffle_ps(t, t, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm256_shuffle_ps(t, t, _MM_SHUFFLE(3, 1, 3, 1)));
  const __m256 v = _mm256_max_ps(_mm256_shuffle_ps(u, u, _MM_SHUFFLE(0, 0, 0, 0)),
                                 _mm256_shuffle_ps(u, u, _MM_SHUFFLE(1, 1, 1, 1)));
  const __m512 mx =
      _mm512_broadcastss_ps(_mm_max_ss(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)));
  exact_width<Op::kSubtract>(x, y, n, mx);
}

QTK_AVX512BW void scale_short(float* y, int64_t n) {
  // Chains in double: 0 + y[0..8) + y[8..16) ..., the last < 8 into the
  // first chains; joined ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7)).
  __m512d acc = _mm512_setzero_pd();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm256_loadu_ps(y + j)));
  if (j < n) acc = _mm512_mask_add_pd(acc, low8(n - j), acc, _mm512_cvtps_pd(_mm256_maskz_loadu_ps(low8(n - j), y + j)));
  const __m512d pairs = _mm512_add_pd(_mm512_unpacklo_pd(acc, acc), _mm512_unpackhi_pd(acc, acc));
  alignas(64) double p[8];
  _mm512_store_pd(p, pairs);  // p[0] = p0 + p1, p[2] = p2 + p3, ...
  const double sum = (p[0] + p[2]) + (p[4] + p[6]);
  const __m512 inv = _mm512_set1_ps(static_cast<float>(1.0 / sum));
  exact_width<Op::kMultiply>(y, y, n, inv);
}

QTK_AVX512BW void softmax_short_rows(const float* x, float* y, int64_t rows, int64_t n, int64_t block) {
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t r1 = std::min(rows, r0 + block);
    for (int64_t r = r0; r < r1; ++r) subtract_max_short(x + r * n, y + r * n, n);
    exp_f32(y + r0 * n, y + r0 * n, (r1 - r0) * n);
    for (int64_t r = r0; r < r1; ++r) scale_short(y + r * n, n);
  }
}
#endif

}  // namespace

void softmax_rows_f32(const float* x, float* y, int64_t rows, int64_t n) {
  if (n <= 0) return;
  const int64_t block = std::max<int64_t>(1, kBlockElements / n);
#ifdef QTK_SOFTMAX_X86
  if (n >= kShortMin && n <= kShortMax && use_short_rows()) return softmax_short_rows(x, y, rows, n, block);
#endif
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t r1 = std::min(rows, r0 + block);
    for (int64_t r = r0; r < r1; ++r) subtract_max(x + r * n, y + r * n, n);
    exp_f32(y + r0 * n, y + r0 * n, (r1 - r0) * n);
    for (int64_t r = r0; r < r1; ++r) scale_by_inverse_sum(y + r * n, n);
  }
}

void softmax_row_by_row_f32(const float* x, float* y, int64_t rows, int64_t n) {
  if (n <= 0) return;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    subtract_max(xr, yr, n);
    exp_f32(yr, yr, n);
    scale_by_inverse_sum(yr, n);
  }
}

}  // namespace qtk::rt::x86
