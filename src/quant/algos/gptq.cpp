#include "quant/algos/gptq.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "quant/algos/linalg.h"
#include "runtime/kernels/ref/sgemm.h"
#include "runtime/thread_pool.h"

namespace qtk::quant::algos {

namespace {

void for_rows(rt::ThreadPool* pool, int64_t rows, const std::function<void(int64_t, int64_t)>& fn) {
  if (pool) pool->parallel_for(rows, fn, 8);
  else fn(0, rows);
}

}  // namespace

Expected<GptqInfo> gptq_quantize_matrix(float* w, std::vector<float>& h, const MatrixGrid& grid,
                                        std::vector<QParams>& params, std::vector<uint8_t>& fitted,
                                        const QuantConfig& config, const GptqOptions& options, int32_t* codes,
                                        rt::ThreadPool* pool) {
  const int64_t rows = grid.rows, cols = grid.cols;
  if (static_cast<int64_t>(h.size()) != cols * cols) return internal_error("Hessian size does not match the weight");
  if (grid.params_shared_by_rows && std::find(fitted.begin(), fitted.end(), 0) != fitted.end())
    return internal_error("parameters shared by rows must be fitted before GPTQ");
  GptqInfo info;

  // Inputs never seen nonzero: their weights meet nothing in calibration;
  // a unit diagonal makes them plain rounding with no error propagation.
  std::vector<float> diag(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) {
    diag[c] = h[c * cols + c];
    if (!(diag[c] > 0.f)) {
      h[c * cols + c] = 1.f;
      ++info.dead_columns;
    }
  }

  // Column order: by decreasing diag(H) with act-order (ties keep order).
  std::vector<int64_t> perm(static_cast<size_t>(cols)), pos(static_cast<size_t>(cols));
  std::iota(perm.begin(), perm.end(), 0);
  if (options.act_order)
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return diag[a] > diag[b]; });
  for (int64_t i = 0; i < cols; ++i) pos[perm[i]] = i;
  std::vector<float> wp(static_cast<size_t>(rows * cols)), hp(static_cast<size_t>(cols * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < cols; ++i) wp[r * cols + i] = w[r * cols + perm[i]];
  double mean_diag = 0.0;
  for (int64_t i = 0; i < cols; ++i) {
    for (int64_t j = 0; j < cols; ++j) hp[i * cols + j] = h[perm[i] * cols + perm[j]];
    mean_diag += hp[i * cols + i];
  }
  mean_diag /= static_cast<double>(std::max<int64_t>(1, cols));

  // Damping: lambda = damp * mean diag, raised x10 until H + lambda I factors.
  std::vector<float> u, damped;
  double lambda = options.damp * (mean_diag > 0.0 ? mean_diag : 1.0);
  for (;; lambda *= 10.0, ++info.damp_raises) {
    if (info.damp_raises > options.max_damp_raises)
      return invalid_argument("Hessian not positive definite even with damping " + std::to_string(lambda / 10.0));
    damped = hp;
    for (int64_t i = 0; i < cols; ++i) damped[i * cols + i] += static_cast<float>(lambda);
    if (inverse_upper_cholesky(damped.data(), cols, u, pool)) break;
  }
  info.damp = lambda;
  damped.clear();
  damped.shrink_to_fit();

  const QFormat f = config.weight_format;
  // Fits group `p` of row r from its columns' current values.
  auto fit = [&](int64_t r, int64_t c, int64_t p) {
    const auto& cols_of = grid.members[grid.col_group[c]];
    std::vector<float> vals, weights;
    vals.reserve(cols_of.size());
    weights.reserve(cols_of.size());
    for (int32_t m : cols_of) {
      vals.push_back(wp[r * cols + pos[m]]);
      weights.push_back(diag[m] > 0.f ? diag[m] : 0.f);
    }
    // All-zero importance (dead inputs) would make every range equally good.
    if (std::all_of(weights.begin(), weights.end(), [](float v) { return v == 0.f; }))
      std::fill(weights.begin(), weights.end(), 1.f);
    params[p] = choose_weight_params(vals, weights, f, config);
    fitted[p] = 1;
  };

  const int64_t block = std::max<int64_t>(1, options.block);
  std::vector<float> err(static_cast<size_t>(rows * block));
  for (int64_t i1 = 0; i1 < cols; i1 += block) {
    const int64_t i2 = std::min(cols, i1 + block), b = i2 - i1;
    // Within the block, rows are independent: each row is quantized column
    // by column with exact error propagation inside the block.
    for_rows(pool, rows, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float* wr = wp.data() + r * cols;
        float* er = err.data() + r * b;
        for (int64_t i = i1; i < i2; ++i) {
          const int64_t c = perm[i];
          const int64_t p = grid.param(r, c);
          if (!fitted[p]) fit(r, c, p);
          const int32_t code = quantize_code(wr[i], params[p], config);
          const float dq = dequantize_code(code, params[p], config);
          const float* ui = u.data() + i * cols;
          const float e = (wr[i] - dq) / ui[i];
          for (int64_t j = i + 1; j < i2; ++j) wr[j] -= e * ui[j];
          er[i - i1] = e;
          wr[i] = dq;
          codes[r * cols + c] = code;
        }
      }
    });
    // The block's errors reach all later columns in one product.
    if (i2 < cols)
      rt::ref::sgemm(false, false, rows, cols - i2, b, -1.f, err.data(), b, u.data() + i1 * cols + i2, cols, 1.f,
                     wp.data() + i2, cols, pool);
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < cols; ++i) w[r * cols + perm[i]] = wp[r * cols + i];
  return info;
}

}  // namespace qtk::quant::algos
