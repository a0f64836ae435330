#include "train/batch_norm_kernels.h"

#include "runtime/kernels/ref/sgemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QTK_TRAIN_X86 1
#define QTK_AVX512 __attribute__((target("avx512f")))
#endif

namespace qtk::train {

namespace {
constexpr int kLanes = 8;

// Whether the vector kernels run: the CPU has AVX-512F and sgemm is not
// capped below it (QTK_SGEMM_AVX2 / QTK_SGEMM_SCALAR), read once.
bool use_avx512() {
  static const bool on = rt::ref::sgemm_resolve_path(rt::ref::SgemmPath::kAuto) == rt::ref::SgemmPath::kAvx512;
  return on;
}
}  // namespace

void bn_centered_sums_reference(const float* p, int64_t n, float mu, double& s1, double& s2) {
  float a[kLanes] = {}, b[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const float d = p[j + l] - mu;
      a[l] += d;
      b[l] += d * d;
    }
  for (; j < n; ++j) {
    const float d = p[j] - mu;
    a[0] += d;
    b[0] += d * d;
  }
  for (int l = 0; l < kLanes; ++l) {
    s1 += a[l];
    s2 += b[l];
  }
}

void bn_sum_reference(const float* p, int64_t n, double& s) {
  double unused = 0;
  bn_centered_sums_reference(p, n, 0.f, s, unused);
}

void bn_grad_sums_reference(const float* x, const float* g, const float* relu_out, int64_t n, float mu, double& sg,
                            double& sgx) {
  float a[kLanes] = {}, b[kLanes] = {};
  auto grad = [&](int64_t j) { return relu_out && !(relu_out[j] > 0.f) ? 0.f : g[j]; };
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      a[l] += grad(j + l);
      b[l] += grad(j + l) * (x[j + l] - mu);
    }
  for (; j < n; ++j) {
    a[0] += grad(j);
    b[0] += grad(j) * (x[j] - mu);
  }
  for (int l = 0; l < kLanes; ++l) {
    sg += a[l];
    sgx += b[l];
  }
}

void bn_affine_reference(const float* x, int64_t n, float a, float b, bool relu, float* y) {
  for (int64_t j = 0; j < n; ++j) {
    const float v = x[j] * a + b;
    y[j] = relu && !(v > 0.f) ? 0.f : v;
  }
}

void bn_input_grad_reference(const float* x, const float* g, const float* relu_out, int64_t n, float a, float mg,
                             float m, float f, float* dx) {
  for (int64_t j = 0; j < n; ++j) {
    const float gj = relu_out && !(relu_out[j] > 0.f) ? 0.f : g[j];
    dx[j] = a * (gj - mg - (x[j] - m) * f);
  }
}

#ifdef QTK_TRAIN_X86
namespace {
__mmask16 tail_mask(int64_t left) { return static_cast<__mmask16>((1u << left) - 1); }

// The 16 lanes of v added in double. (The maskz forms: GCC 12's plain ones
// trip -Wuninitialized.)
QTK_AVX512 double fold(__m512 v) {
  constexpr __mmask8 kAll = 0xFF;
  const __m512d vd = _mm512_castps_pd(v);
  const __m512d lo = _mm512_maskz_cvtps_pd(kAll, _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(kAll, vd, 0)));
  const __m512d hi = _mm512_maskz_cvtps_pd(kAll, _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(kAll, vd, 1)));
  alignas(64) double t[8];
  _mm512_store_pd(t, _mm512_add_pd(lo, hi));
  return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

// Four independent accumulators per sum hide the add latency (a plane is
// 49 to 784 floats in resnet20).
QTK_AVX512 void centered_sums_avx512(const float* p, int64_t n, float mu, double& s1, double& s2) {
  const __m512 m = _mm512_set1_ps(mu);
  __m512 a[4], b[4];
  for (int k = 0; k < 4; ++k) a[k] = b[k] = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 64 <= n; j += 64)
    for (int k = 0; k < 4; ++k) {
      const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(p + j + 16 * k), m);
      a[k] = _mm512_add_ps(a[k], d);
      b[k] = _mm512_fmadd_ps(d, d, b[k]);
    }
  for (int k = 0; j < n; j += 16, k = (k + 1) & 3) {
    const __mmask16 mk = n - j >= 16 ? __mmask16(0xFFFF) : tail_mask(n - j);
    const __m512 d = _mm512_maskz_sub_ps(mk, _mm512_maskz_loadu_ps(mk, p + j), m);
    a[k] = _mm512_add_ps(a[k], d);
    b[k] = _mm512_fmadd_ps(d, d, b[k]);
  }
  s1 += fold(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
  s2 += fold(_mm512_add_ps(_mm512_add_ps(b[0], b[1]), _mm512_add_ps(b[2], b[3])));
}

QTK_AVX512 void sum_avx512(const float* p, int64_t n, double& s) {
  __m512 a[4];
  for (auto& v : a) v = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 64 <= n; j += 64)
    for (int k = 0; k < 4; ++k) a[k] = _mm512_add_ps(a[k], _mm512_loadu_ps(p + j + 16 * k));
  for (int k = 0; j < n; j += 16, k = (k + 1) & 3) {
    const __mmask16 mk = n - j >= 16 ? __mmask16(0xFFFF) : tail_mask(n - j);
    a[k] = _mm512_add_ps(a[k], _mm512_maskz_loadu_ps(mk, p + j));
  }
  s += fold(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
}

// g where relu_out > 0 (all of g without a fused Relu).
QTK_AVX512 inline __m512 masked_grad(const float* g, const float* relu_out, int64_t j, __mmask16 mk) {
  if (relu_out) mk = _mm512_mask_cmp_ps_mask(mk, _mm512_maskz_loadu_ps(mk, relu_out + j), _mm512_setzero_ps(), _CMP_GT_OQ);
  return _mm512_maskz_loadu_ps(mk, g + j);
}

QTK_AVX512 void grad_sums_avx512(const float* x, const float* g, const float* relu_out, int64_t n, float mu,
                                 double& sg, double& sgx) {
  const __m512 m = _mm512_set1_ps(mu);
  __m512 a[4], b[4];
  for (int k = 0; k < 4; ++k) a[k] = b[k] = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 64 <= n; j += 64)
    for (int k = 0; k < 4; ++k) {
      const __m512 q = masked_grad(g, relu_out, j + 16 * k, 0xFFFF);
      a[k] = _mm512_add_ps(a[k], q);
      b[k] = _mm512_fmadd_ps(q, _mm512_sub_ps(_mm512_loadu_ps(x + j + 16 * k), m), b[k]);
    }
  for (int k = 0; j < n; j += 16, k = (k + 1) & 3) {
    const __mmask16 mk = n - j >= 16 ? __mmask16(0xFFFF) : tail_mask(n - j);
    const __m512 q = masked_grad(g, relu_out, j, mk);
    a[k] = _mm512_add_ps(a[k], q);
    b[k] = _mm512_fmadd_ps(q, _mm512_sub_ps(_mm512_maskz_loadu_ps(mk, x + j), m), b[k]);
  }
  sg += fold(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
  sgx += fold(_mm512_add_ps(_mm512_add_ps(b[0], b[1]), _mm512_add_ps(b[2], b[3])));
}

template <bool kRelu>
QTK_AVX512 void affine_avx512(const float* x, int64_t n, float a, float b, float* y) {
  const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
  auto one = [&](__m512 v) QTK_AVX512 {
    v = _mm512_fmadd_ps(v, va, vb);
    return kRelu ? _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ), v) : v;
  };
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) _mm512_storeu_ps(y + j, one(_mm512_loadu_ps(x + j)));
  if (j < n) {
    const __mmask16 mk = tail_mask(n - j);
    _mm512_mask_storeu_ps(y + j, mk, one(_mm512_maskz_loadu_ps(mk, x + j)));
  }
}

QTK_AVX512 void input_grad_avx512(const float* x, const float* g, const float* relu_out, int64_t n, float a,
                                  float mg, float m, float f, float* dx) {
  const __m512 va = _mm512_set1_ps(a), vmg = _mm512_set1_ps(mg), vm = _mm512_set1_ps(m), vf = _mm512_set1_ps(f);
  auto one = [&](__m512 xv, __m512 gv) QTK_AVX512 {
    return _mm512_mul_ps(va, _mm512_fnmadd_ps(_mm512_sub_ps(xv, vm), vf, _mm512_sub_ps(gv, vmg)));
  };
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    _mm512_storeu_ps(dx + j, one(_mm512_loadu_ps(x + j), masked_grad(g, relu_out, j, 0xFFFF)));
  if (j < n) {
    const __mmask16 mk = tail_mask(n - j);
    _mm512_mask_storeu_ps(dx + j, mk, one(_mm512_maskz_loadu_ps(mk, x + j), masked_grad(g, relu_out, j, mk)));
  }
}
}  // namespace
#endif

void bn_prefetch(const float* p, int64_t n) {
#ifdef QTK_TRAIN_X86
  for (int64_t j = 0; j < n; j += 16) _mm_prefetch(reinterpret_cast<const char*>(p + j), _MM_HINT_T0);
#else
  (void)p;
  (void)n;
#endif
}

void bn_centered_sums(const float* p, int64_t n, float mu, double& s1, double& s2) {
#ifdef QTK_TRAIN_X86
  if (use_avx512()) return centered_sums_avx512(p, n, mu, s1, s2);
#endif
  bn_centered_sums_reference(p, n, mu, s1, s2);
}

void bn_sum(const float* p, int64_t n, double& s) {
#ifdef QTK_TRAIN_X86
  if (use_avx512()) return sum_avx512(p, n, s);
#endif
  bn_sum_reference(p, n, s);
}

void bn_grad_sums(const float* x, const float* g, const float* relu_out, int64_t n, float mu, double& sg,
                  double& sgx) {
#ifdef QTK_TRAIN_X86
  if (use_avx512()) return grad_sums_avx512(x, g, relu_out, n, mu, sg, sgx);
#endif
  bn_grad_sums_reference(x, g, relu_out, n, mu, sg, sgx);
}

void bn_affine(const float* x, int64_t n, float a, float b, bool relu, float* y) {
#ifdef QTK_TRAIN_X86
  if (use_avx512()) return relu ? affine_avx512<true>(x, n, a, b, y) : affine_avx512<false>(x, n, a, b, y);
#endif
  bn_affine_reference(x, n, a, b, relu, y);
}

void bn_input_grad(const float* x, const float* g, const float* relu_out, int64_t n, float a, float mg, float m,
                   float f, float* dx) {
#ifdef QTK_TRAIN_X86
  if (use_avx512()) return input_grad_avx512(x, g, relu_out, n, a, mg, m, f, dx);
#endif
  bn_input_grad_reference(x, g, relu_out, n, a, mg, m, f, dx);
}

}  // namespace qtk::train
