#include "train/loss.h"

#include <cmath>

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
