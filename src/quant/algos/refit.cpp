#include "quant/algos/refit.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "quant/algos/linalg.h"
#include "runtime/kernels/ref/sgemm.h"

namespace qtk::quant::algos {

bool refit_to_float_outputs(float* w, int64_t rows, int64_t cols, const float* x, const float* y, int64_t n,
                            double ridge, rt::ThreadPool* pool) {
  if (n < 1 || rows < 1 || cols < 1) return false;
  const float inv_n = 1.f / static_cast<float>(n);
  std::vector<float> h(static_cast<size_t>(cols * cols)), r(static_cast<size_t>(rows * cols)),
      t(static_cast<size_t>(rows * cols));
  // H = X^T X / n; R = C - W H with C = Y^T X / n.
  rt::ref::sgemm(true, false, cols, cols, n, inv_n, x, cols, x, cols, 0.f, h.data(), cols, pool);
  rt::ref::sgemm(true, false, rows, cols, n, inv_n, y, rows, x, cols, 0.f, r.data(), cols, pool);
  rt::ref::sgemm(false, false, rows, cols, cols, -1.f, w, cols, h.data(), cols, 1.f, r.data(), cols, pool);
  double mean_diag = 0.0;
  for (int64_t c = 0; c < cols; ++c) mean_diag += h[c * cols + c];
  mean_diag /= static_cast<double>(cols);
  if (!(mean_diag > 0.0) || !std::isfinite(mean_diag)) return false;
  for (int64_t c = 0; c < cols; ++c) h[c * cols + c] += static_cast<float>(ridge * mean_diag);
  // W* = W + R (H + lambda I)^{-1} = W + (R L^{-T}) L^{-1} with H + lambda I = L L^T.
  if (!cholesky_lower(h.data(), cols, pool)) return false;
  invert_lower_triangular(h.data(), cols, pool);
  rt::ref::sgemm(false, true, rows, cols, cols, 1.f, r.data(), cols, h.data(), cols, 0.f, t.data(), cols, pool);
  std::vector<float> refit(w, w + rows * cols);
  rt::ref::sgemm(false, false, rows, cols, cols, 1.f, t.data(), cols, h.data(), cols, 1.f, refit.data(), cols, pool);
  for (float v : refit)
    if (!std::isfinite(v)) return false;
  std::copy(refit.begin(), refit.end(), w);
  return true;
}

}  // namespace qtk::quant::algos
