#include "train/loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace qtk::train {

Expected<LossResult> softmax_cross_entropy(const Tensor& logits, const std::vector<int64_t>& labels) {
  if (logits.dtype() != DType::kFloat32 || logits.rank() < 2)
    return invalid_argument("logits must be float32 [N, classes], got " + shape_to_string(logits.shape()));
  const int64_t n = logits.dim(0), k = logits.numel() / std::max<int64_t>(1, n);
  if (static_cast<int64_t>(labels.size()) != n)
    return invalid_argument("got " + std::to_string(labels.size()) + " labels for a batch of " + std::to_string(n));
  LossResult r;
  r.dlogits = Tensor::uninitialized(DType::kFloat32, logits.shape());
  const float* x = logits.data<float>();
  float* d = r.dlogits.data<float>();
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = labels[i];
    if (y < 0 || y >= k)
      return invalid_argument("label " + std::to_string(y) + " of sample " + std::to_string(i) +
                              " is out of range for a model with " + std::to_string(k) + " classes");
    const float* row = x + i * k;
    float* drow = d + i * k;
    int64_t best = 0;
    for (int64_t j = 1; j < k; ++j)
      if (row[j] > row[best]) best = j;
    const float mx = row[best];
    double s = 0;
    for (int64_t j = 0; j < k; ++j) s += std::exp(static_cast<double>(row[j] - mx));
    const double log_s = std::log(s);
    total += log_s - (row[y] - mx);
    r.correct += best == y;
    for (int64_t j = 0; j < k; ++j)
      drow[j] = static_cast<float>((std::exp(row[j] - mx - log_s) - (j == y ? 1.0 : 0.0)) / n);
  }
  r.loss = n ? total / n : 0;
  return r;
}

}  // namespace qtk::train

namespace qtk::train {

Expected<LossResult> distillation_loss(const Tensor& student, const Tensor& teacher,
                                       const std::vector<int64_t>& labels, float temperature, float alpha) {
  if (!(temperature > 0.f) || !std::isfinite(temperature))
    return invalid_argument("distillation temperature must be a positive number");
  if (!(alpha >= 0.f && alpha <= 1.f)) return invalid_argument("distillation alpha must be in [0, 1]");
  if (teacher.dtype() != DType::kFloat32 || teacher.numel() != student.numel())
    return invalid_argument("teacher logits " + shape_to_string(teacher.shape()) +
                            " do not match the student's " + shape_to_string(student.shape()));
  QTK_ASSIGN_OR_RETURN(LossResult r, softmax_cross_entropy(student, labels));
  const int64_t n = student.dim(0), k = student.numel() / std::max<int64_t>(1, n);
  const float* s = student.data<float>();
  const float* t = teacher.data<float>();
  float* d = r.dlogits.data<float>();
  const double inv_t = 1.0 / temperature, t2 = static_cast<double>(temperature) * temperature;
  double kl_total = 0;
  std::vector<double> ps(static_cast<size_t>(k)), pt(static_cast<size_t>(k));
  // Softmax at temperature T of one row, in double for a stable KL.
  auto soft = [&](const float* row, std::vector<double>& p) {
    double mx = row[0] * inv_t, sum = 0;
    for (int64_t j = 1; j < k; ++j) mx = std::max(mx, row[j] * inv_t);
    for (int64_t j = 0; j < k; ++j) sum += p[j] = std::exp(row[j] * inv_t - mx);
    for (int64_t j = 0; j < k; ++j) p[j] /= sum;
  };
  for (int64_t i = 0; i < n; ++i) {
    soft(s + i * k, ps);
    soft(t + i * k, pt);
    for (int64_t j = 0; j < k; ++j) {
      if (pt[j] > 0) kl_total += pt[j] * (std::log(pt[j]) - std::log(std::max(ps[j], 1e-300)));
      // d/ds_j of T^2 * KL = T * (ps_j - pt_j); per-sample mean -> / n.
      const double soft_grad = static_cast<double>(temperature) * (ps[j] - pt[j]) / n;
      d[i * k + j] = static_cast<float>((1.0 - alpha) * d[i * k + j] + alpha * soft_grad);
    }
  }
  r.loss = (1.0 - alpha) * r.loss + alpha * t2 * (n ? kl_total / n : 0);
  return r;
}

}  // namespace qtk::train
