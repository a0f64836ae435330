#include "quant/algos/adaround.h"

#include <algorithm>
#include <cmath>

#include "quant/algos/adaround_kernels.h"
#include "runtime/kernels/ref/sgemm.h"
#include "runtime/thread_pool.h"

namespace qtk::quant::algos {

namespace {

using detail::kGamma;
using detail::kZeta;

void for_range(rt::ThreadPool* pool, int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  if (pool) pool->parallel_for(n, fn, 4096);
  else fn(0, n);
}

}  // namespace

Status adaround_matrix(const float* w, const MatrixGrid& grid, const std::vector<QParams>& params,
                       const ReconstructionData& data, const QuantConfig& config, const AdaRoundOptions& o,
                       int32_t* codes, rt::ThreadPool* pool) {
  if (config.mapping != Mapping::kLinear) return unsupported("AdaRound needs evenly spaced (linear) levels");
  const bool gram_form = data.gram != nullptr;
  if (gram_form ? data.cross == nullptr : (data.x == nullptr || data.y == nullptr || data.n < 1))
    return invalid_argument("AdaRound needs the layer's calibration rows");
  for (const QParams& p : params)
    if (!(p.scale > 0.f) || !std::isfinite(p.scale)) return invalid_argument("weight scale is not positive and finite");
  const int64_t m = grid.rows, k = grid.cols, size = m * k;
  const auto& t = traits(config.weight_format);
  // Per element: floor(w / s), the scale, and the grid limits in scale units.
  std::vector<float> v(size), adam_m(size, 0.f), adam_v(size, 0.f), base(size), scale(size), lo(size), hi(size);
  std::vector<int32_t> zp(size);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < k; ++c) {
      const int64_t i = r * k + c;
      const QParams& p = params[grid.param(r, c)];
      const float q = w[i] / p.scale;
      base[i] = std::floor(q);
      scale[i] = p.scale;
      zp[i] = p.zero_point;
      lo[i] = static_cast<float>(t.qmin - p.zero_point);
      hi[i] = static_cast<float>(t.qmax - p.zero_point);
      // Start at the exact fraction: h(V) = q - floor(q).
      const float rest = std::clamp(q - base[i], 0.01f, 0.99f);
      v[i] = -std::log((kZeta - kGamma) / (rest - kGamma) - 1.f);
    }
  std::vector<float> sig(size), wq(size), grad(size), resid(gram_form ? 0 : static_cast<size_t>(data.n * m));
  std::vector<float> no_cross(gram_form ? 0 : static_cast<size_t>(size), 0.f);
  const float* cross = gram_form ? data.cross : no_cross.data();
  const int warm = static_cast<int>(o.warmup * static_cast<float>(o.iterations));
  detail::AdaStep sp{0.f, 0.f, o.learning_rate, 0.9f, 0.999f, 1.f, 1.f, 1e-8f};
  float b1t = 1.f, b2t = 1.f;
  for (int it = 0; it < o.iterations; ++it) {
    for_range(pool, size, [&](int64_t i0, int64_t i1) {
      detail::ada_soft_round(v.data() + i0, base.data() + i0, scale.data() + i0, lo.data() + i0, hi.data() + i0,
                             sig.data() + i0, wq.data() + i0, i1 - i0);
    });
    // The reconstruction error's gradient over all rows: 2 (Wq G - C) (the
    // cross term is subtracted in the step), or (2 / n) (X Wq^T - Y)^T X.
    if (gram_form) {
      rt::ref::sgemm(false, false, m, k, k, 2.f, wq.data(), k, data.gram, k, 0.f, grad.data(), k, pool);
    } else {
      rt::ref::sgemm(false, true, data.n, m, k, 1.f, data.x, k, wq.data(), k, 0.f, resid.data(), m, pool);
      for (int64_t i = 0; i < data.n * m; ++i) resid[i] -= data.y[i];
      rt::ref::sgemm(true, false, m, k, data.n, 2.f / static_cast<float>(data.n), resid.data(), m, data.x, k, 0.f,
                     grad.data(), k, pool);
    }
    // beta anneals from beta_start to beta_end after the warm-up.
    const float rel = o.iterations > warm ? static_cast<float>(it - warm) / static_cast<float>(o.iterations - warm) : 1.f;
    const float beta = o.beta_end + (o.beta_start - o.beta_end) * std::max(0.f, 1.f - rel);
    sp.reg = it >= warm ? o.reg_lambda * beta : 0.f;
    sp.beta_m1 = beta - 1.f;
    b1t *= sp.b1;
    b2t *= sp.b2;
    sp.b1_correction = 1.f / (1.f - b1t);
    sp.b2_correction = 1.f / (1.f - b2t);
    for_range(pool, size, [&](int64_t i0, int64_t i1) {
      detail::ada_adam_step(grad.data() + i0, cross + i0, sig.data() + i0, base.data() + i0, scale.data() + i0,
                            lo.data() + i0, hi.data() + i0, v.data() + i0, adam_m.data() + i0, adam_v.data() + i0,
                            i1 - i0, sp);
    });
  }
  for (int64_t i = 0; i < size; ++i) {
    const float up = detail::ada_sigmoid(v[i]) * (kZeta - kGamma) + kGamma >= 0.5f ? 1.f : 0.f;
    codes[i] = static_cast<int32_t>(
        std::clamp(base[i] + up + static_cast<float>(zp[i]), static_cast<float>(t.qmin), static_cast<float>(t.qmax)));
  }
  return Status::Ok();
}

}  // namespace qtk::quant::algos
