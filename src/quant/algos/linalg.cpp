#include "quant/algos/linalg.h"

#include <algorithm>
#include <cmath>

#include "runtime/kernels/ref/sgemm.h"

namespace qtk::quant::algos {

namespace {

// Block size of the blocked factorizations: diagonal blocks are factored in
// double, everything off the diagonal is sgemm.
constexpr int64_t kBlock = 128;

// Unblocked Cholesky of the b x b lower triangle in d (double, row-major).
bool cholesky_small(std::vector<double>& d, int64_t b) {
  for (int64_t c = 0; c < b; ++c) {
    double s = d[c * b + c];
    for (int64_t p = 0; p < c; ++p) s -= d[c * b + p] * d[c * b + p];
    if (!(s > 0.0) || !std::isfinite(s)) return false;
    const double l = std::sqrt(s);
    d[c * b + c] = l;
    for (int64_t r = c + 1; r < b; ++r) {
      double t = d[r * b + c];
      for (int64_t p = 0; p < c; ++p) t -= d[r * b + p] * d[c * b + p];
      d[r * b + c] = t / l;
    }
  }
  return true;
}

// Inverse of the b x b lower triangular l (double) into x (double, zeroed above).
void invert_lower_small(const std::vector<double>& l, int64_t b, std::vector<double>& x) {
  x.assign(static_cast<size_t>(b * b), 0.0);
  for (int64_t c = 0; c < b; ++c) {
    x[c * b + c] = 1.0 / l[c * b + c];
    for (int64_t r = c + 1; r < b; ++r) {
      double s = 0.0;
      for (int64_t p = c; p < r; ++p) s += l[r * b + p] * x[p * b + c];
      x[r * b + c] = -s / l[r * b + r];
    }
  }
}

}  // namespace

bool cholesky_lower(float* a, int64_t n, rt::ThreadPool* pool) {
  std::vector<double> d, dinv;
  std::vector<float> linv, panel;
  for (int64_t j = 0; j < n; j += kBlock) {
    const int64_t jb = std::min(kBlock, n - j);
    d.assign(static_cast<size_t>(jb * jb), 0.0);
    for (int64_t r = 0; r < jb; ++r)
      for (int64_t c = 0; c <= r; ++c) d[r * jb + c] = a[(j + r) * n + j + c];
    if (!cholesky_small(d, jb)) return false;
    for (int64_t r = 0; r < jb; ++r)
      for (int64_t c = 0; c < jb; ++c) a[(j + r) * n + j + c] = c <= r ? static_cast<float>(d[r * jb + c]) : 0.f;
    const int64_t rest = n - j - jb;
    if (rest == 0) break;
    // Panel: A21 <- A21 L11^{-T}.
    invert_lower_small(d, jb, dinv);
    linv.assign(dinv.begin(), dinv.end());
    panel.resize(static_cast<size_t>(rest * jb));
    float* a21 = a + (j + jb) * n + j;
    rt::ref::sgemm(false, true, rest, jb, jb, 1.f, a21, n, linv.data(), jb, 0.f, panel.data(), jb, pool);
    for (int64_t r = 0; r < rest; ++r) std::copy_n(panel.data() + r * jb, jb, a21 + r * n);
    // Trailing update A22 -= A21 A21^T, lower block triangle only.
    for (int64_t rb = j + jb; rb < n; rb += kBlock) {
      const int64_t rbs = std::min(kBlock, n - rb);
      rt::ref::sgemm(false, true, rbs, rb + rbs - (j + jb), jb, -1.f, a + rb * n + j, n, a21, n, 1.f,
                     a + rb * n + j + jb, n, pool);
    }
  }
  for (int64_t r = 0; r < n; ++r) std::fill(a + r * n + r + 1, a + (r + 1) * n, 0.f);
  return true;
}

void invert_lower_triangular(float* l, int64_t n, rt::ThreadPool* pool) {
  std::vector<float> x(static_cast<size_t>(n * n), 0.f), t;
  std::vector<double> d, dinv;
  for (int64_t i = 0; i < n; i += kBlock) {
    const int64_t ib = std::min(kBlock, n - i);
    d.assign(static_cast<size_t>(ib * ib), 0.0);
    for (int64_t r = 0; r < ib; ++r)
      for (int64_t c = 0; c <= r; ++c) d[r * ib + c] = l[(i + r) * n + i + c];
    invert_lower_small(d, ib, dinv);
    for (int64_t r = 0; r < ib; ++r)
      for (int64_t c = 0; c <= r; ++c) x[(i + r) * n + i + c] = static_cast<float>(dinv[r * ib + c]);
    if (i == 0) continue;
    // X[i, 0:i] = -X_ii (L[i, 0:i] X[0:i, 0:i]); X is lower, so column block
    // cb of the product only needs L[i, cb:i] X[cb:i, cb].
    t.resize(static_cast<size_t>(ib * i));
    for (int64_t cb = 0; cb < i; cb += kBlock) {
      const int64_t cbs = std::min(kBlock, i - cb);
      rt::ref::sgemm(false, false, ib, cbs, i - cb, 1.f, l + i * n + cb, n, x.data() + cb * n + cb, n, 0.f,
                     t.data() + cb, i, pool);
    }
    rt::ref::sgemm(false, false, ib, i, ib, -1.f, x.data() + i * n + i, n, t.data(), i, 0.f, x.data() + i * n, n,
                   pool);
  }
  std::copy(x.begin(), x.end(), l);
}

bool inverse_upper_cholesky(const float* a, int64_t n, std::vector<float>& u, rt::ThreadPool* pool) {
  std::vector<float> f(static_cast<size_t>(n * n));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < n; ++c) f[r * n + c] = a[(n - 1 - r) * n + (n - 1 - c)];
  if (!cholesky_lower(f.data(), n, pool)) return false;
  invert_lower_triangular(f.data(), n, pool);
  u.resize(static_cast<size_t>(n * n));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < n; ++c) u[r * n + c] = f[(n - 1 - r) * n + (n - 1 - c)];
  for (float v : u)
    if (!std::isfinite(v)) return false;
  return true;
}

}  // namespace qtk::quant::algos
