// BatchNormalization (training mode: batch statistics, running-stat update;
// inference mode: the running statistics, as exported) and LayerNormalization.
// BatchNormalization splits its channels over the pool, runs its per-plane
// loops in batch_norm_kernels.h, and may carry the Relu after it
// (ForwardContext::relu_after).
#include <algorithm>
#include <cmath>
#include <functional>

#include "train/batch_norm_kernels.h"
#include "train/conv_geometry.h"
#include "train/grad_op.h"

namespace qtk::train {
namespace {

bool bn_differentiable(int i) { return i <= 2; }
bool bn_state(int i) { return i == 3 || i == 4; }

// Channels split over the pool (each channel's work is independent).
void over_channels(rt::ThreadPool* pool, int64_t ch, const std::function<void(int64_t)>& fn) {
  parallel_chunks(pool, ch, [&](int64_t, int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) fn(k);
  });
}

Status bn_forward(ForwardContext& c) {
  for (size_t i = 0; i < 5; ++i) QTK_RETURN_IF_ERROR(expect_float(c, i));
  const Tensor& x = c.in[0];
  if (x.rank() < 2) return invalid_argument(node_label(c.node) + ": input must have rank >= 2");
  const int64_t n = x.dim(0), ch = x.dim(1), inner = x.numel() / (n * ch);
  for (size_t i = 1; i < 5; ++i)
    if (c.in[i].numel() != ch)
      return invalid_argument(node_label(c.node) + ": input " + std::to_string(i) + " has " +
                              std::to_string(c.in[i].numel()) + " values for " + std::to_string(ch) + " channels");
  const float eps = c.node.attr_float("epsilon", 1e-5f), momentum = c.node.attr_float("momentum", 0.9f);
  const float *px = x.data<float>(), *scale = c.in[1].data<float>(), *bias = c.in[2].data<float>();
  Tensor mean(DType::kFloat32, {ch}), invstd(DType::kFloat32, {ch});
  float *pm = mean.data<float>(), *pi = invstd.data<float>();
  const bool batch_stats = c.training && n * inner > 1;
  Tensor y = Tensor::uninitialized(DType::kFloat32, x.shape());
  float* py = y.data<float>();
  Tensor run_mean, run_var;
  if (batch_stats) {
    run_mean = c.in[3].clone();
    run_var = c.in[4].clone();
  }
  over_channels(c.pool, ch, [&](int64_t k) {
    if (batch_stats) {
      const double count = static_cast<double>(n * inner);
      // Two passes (mean, then centred sums) as before; the second pass's
      // mean of deviations corrects the float mean's rounding.
      double s = 0;
      for (int64_t i = 0; i < n; ++i) {  // the first read of x: from memory
        if (i + 1 < n) bn_prefetch(px + ((i + 1) * ch + k) * inner, inner);
        bn_sum(px + (i * ch + k) * inner, inner, s);
      }
      const float mu0 = static_cast<float>(s / count);
      double d1 = 0, d2 = 0;
      for (int64_t i = 0; i < n; ++i) bn_centered_sums(px + (i * ch + k) * inner, inner, mu0, d1, d2);
      const double dm = d1 / count, var = std::max(0.0, d2 / count - dm * dm);
      pm[k] = static_cast<float>(mu0 + dm);
      pi[k] = static_cast<float>(1.0 / std::sqrt(var + eps));
      // Running variance is the unbiased estimate, as in PyTorch.
      run_mean.data<float>()[k] = momentum * run_mean.data<float>()[k] + (1.f - momentum) * pm[k];
      run_var.data<float>()[k] = momentum * run_var.data<float>()[k] +
                                 (1.f - momentum) * static_cast<float>(var * count / std::max(1.0, count - 1));
    } else {
      pm[k] = c.in[3].data<float>()[k];
      pi[k] = 1.f / std::sqrt(c.in[4].data<float>()[k] + eps);
    }
    const float a = scale[k] * pi[k], b = bias[k] - pm[k] * a;
    for (int64_t i = 0; i < n; ++i)
      bn_affine(px + (i * ch + k) * inner, inner, a, b, c.relu_after, py + (i * ch + k) * inner);
  });
  if (batch_stats) c.state_updates = {{3, run_mean}, {4, run_var}};
  c.out.assign(c.node.outputs.size(), Tensor());
  c.out[0] = y;
  c.saved = {mean, invstd, Tensor::scalar<float>(batch_stats ? 1.f : 0.f)};
  return Status::Ok();
}

Status bn_backward(BackwardContext& c) {
  const Tensor &x = c.in[0], &g = c.dout[0];
  const int64_t n = x.dim(0), ch = x.dim(1), inner = x.numel() / (n * ch);
  const float *px = x.data<float>(), *pg = g.data<float>(), *scale = c.in[1].data<float>();
  const float *pm = c.saved[0].data<float>(), *pi = c.saved[1].data<float>();
  const bool batch_stats = c.saved[2].data<float>()[0] != 0.f;
  const float* relu_out = c.relu_after ? c.out[0].data<float>() : nullptr;
  auto plane_mask = [&](int64_t o) { return relu_out ? relu_out + o : nullptr; };
  Tensor dx, ds(DType::kFloat32, {ch}), db(DType::kFloat32, {ch});
  if (c.need[0]) dx = Tensor::uninitialized(DType::kFloat32, x.shape());
  const double count = static_cast<double>(n * inner);
  over_channels(c.pool, ch, [&](int64_t k) {
    double sg = 0, sgx = 0;  // sum dy, sum dy * xhat
    for (int64_t i = 0; i < n; ++i) {
      if (i + 1 < n) {  // the first read of x and dy: from memory
        const int64_t o = ((i + 1) * ch + k) * inner;
        bn_prefetch(px + o, inner);
        bn_prefetch(pg + o, inner);
        if (relu_out) bn_prefetch(relu_out + o, inner);
      }
      bn_grad_sums(px + (i * ch + k) * inner, pg + (i * ch + k) * inner, plane_mask((i * ch + k) * inner), inner, pm[k],
                   sg, sgx);
    }
    sgx *= pi[k];
    ds.data<float>()[k] = static_cast<float>(sgx);
    db.data<float>()[k] = static_cast<float>(sg);
    if (!c.need[0]) return;
    const float a = scale[k] * pi[k];
    const float mg = batch_stats ? static_cast<float>(sg / count) : 0.f;
    // dx = a * (dy - mg - (x - mean) * f), f = invstd * mean(dy * xhat)
    const float f = batch_stats ? static_cast<float>(sgx / count) * pi[k] : 0.f, m = pm[k];
    for (int64_t i = 0; i < n; ++i) {
      const int64_t o = (i * ch + k) * inner;
      bn_input_grad(px + o, pg + o, plane_mask(o), inner, a, mg, m, f, dx.data<float>() + o);
    }
  });
  if (c.need[0]) c.din[0] = dx;
  if (c.need[1]) c.din[1] = ds.reshaped(c.in[1].shape());
  if (c.need[2]) c.din[2] = db.reshaped(c.in[2].shape());
  return Status::Ok();
}

Expected<int64_t> ln_split(const ir::Node& node, const Tensor& x) {
  int64_t axis = node.attr_int("axis", -1);
  if (axis < -x.rank() || axis >= x.rank()) return invalid_argument(node_label(node) + ": axis out of range");
  if (axis < 0) axis += x.rank();
  int64_t outer = 1;
  for (int64_t i = 0; i < axis; ++i) outer *= x.dim(static_cast<int>(i));
  return outer;
}

Status ln_forward(ForwardContext& c) {
  QTK_RETURN_IF_ERROR(expect_float(c, 0));
  QTK_RETURN_IF_ERROR(expect_float(c, 1));
  const Tensor& x = c.in[0];
  QTK_ASSIGN_OR_RETURN(int64_t outer, ln_split(c.node, x));
  const int64_t d = outer ? x.numel() / outer : 0;
  const bool has_b = c.in.size() > 2 && c.in[2].defined();
  if (c.in[1].numel() != d || (has_b && c.in[2].numel() != d))
    return unsupported(node_label(c.node) + ": training supports Scale and B of the normalized shape only");
  const float eps = c.node.attr_float("epsilon", 1e-5f);
  Tensor y = Tensor::uninitialized(DType::kFloat32, x.shape());
  Tensor mean(DType::kFloat32, {outer}), invstd(DType::kFloat32, {outer});
  const float *px = x.data<float>(), *s = c.in[1].data<float>(), *b = has_b ? c.in[2].data<float>() : nullptr;
  for (int64_t o = 0; o < outer; ++o) {
    const float* p = px + o * d;
    double sum = 0, sum2 = 0;
    for (int64_t j = 0; j < d; ++j) sum += p[j];
    const double mu = sum / d;
    for (int64_t j = 0; j < d; ++j) sum2 += (p[j] - mu) * (p[j] - mu);
    const float m = static_cast<float>(mu), is = static_cast<float>(1.0 / std::sqrt(sum2 / d + eps));
    mean.data<float>()[o] = m;
    invstd.data<float>()[o] = is;
    float* q = y.data<float>() + o * d;
    for (int64_t j = 0; j < d; ++j) q[j] = (p[j] - m) * is * s[j] + (b ? b[j] : 0.f);
  }
  c.out.assign(c.node.outputs.size(), Tensor());
  c.out[0] = y;
  // ONNX's Mean / InvStdDev outputs keep the normalized dims as 1s.
  Shape stat_shape = x.shape();
  for (int64_t i = x.rank() - 1, left = d; i >= 0 && left > 1; --i) {
    left /= stat_shape[i];
    stat_shape[i] = 1;
  }
  if (c.out.size() > 1) c.out[1] = mean.reshaped(stat_shape);
  if (c.out.size() > 2) c.out[2] = invstd.reshaped(stat_shape);
  c.saved = {mean, invstd};
  return Status::Ok();
}

Status ln_backward(BackwardContext& c) {
  const Tensor &x = c.in[0], &g = c.dout[0];
  QTK_ASSIGN_OR_RETURN(int64_t outer, ln_split(c.node, x));
  const int64_t d = x.numel() / outer;
  const float *px = x.data<float>(), *pg = g.data<float>(), *s = c.in[1].data<float>();
  const float *pm = c.saved[0].data<float>(), *pi = c.saved[1].data<float>();
  Tensor dx, ds(DType::kFloat32, c.in[1].shape()), db;
  if (c.need[0]) dx = Tensor::uninitialized(DType::kFloat32, x.shape());
  const bool need_b = c.need.size() > 2 && c.need[2];
  if (need_b) db = Tensor(DType::kFloat32, c.in[2].shape());
  for (int64_t o = 0; o < outer; ++o) {
    const float *p = px + o * d, *q = pg + o * d;
    double sdx = 0, sdxx = 0;
    for (int64_t j = 0; j < d; ++j) {
      const float xh = (p[j] - pm[o]) * pi[o], dxh = q[j] * s[j];
      sdx += dxh;
      sdxx += dxh * xh;
      ds.data<float>()[j] += q[j] * xh;
      if (need_b) db.data<float>()[j] += q[j];
    }
    if (!c.need[0]) continue;
    const float m1 = static_cast<float>(sdx / d), m2 = static_cast<float>(sdxx / d);
    float* r = dx.data<float>() + o * d;
    for (int64_t j = 0; j < d; ++j) {
      const float xh = (p[j] - pm[o]) * pi[o];
      r[j] = pi[o] * (q[j] * s[j] - m1 - xh * m2);
    }
  }
  if (c.need[0]) c.din[0] = dx;
  if (c.need[1]) c.din[1] = ds;
  if (need_b) c.din[2] = db;
  return Status::Ok();
}

}  // namespace

void register_norm_grad_ops(GradOpTable& t) {
  t.push_back({"BatchNormalization", {bn_forward, bn_backward, bn_differentiable, bn_state, true}});
  t.push_back({"LayerNormalization", {ln_forward, ln_backward}});
}

}  // namespace qtk::train
