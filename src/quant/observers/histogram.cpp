#include "quant/observers/histogram.h"

#include <algorithm>
#include <cmath>

namespace qtk::quant {

StreamingHistogram::StreamingHistogram(int bins) : counts_(static_cast<size_t>(std::max(4, bins / 4 * 4)), 0.0) {}

void StreamingHistogram::grow_to(double amax) {
  if (half_range_ == 0.0) {
    half_range_ = amax > 0.0 ? amax : 1e-8;
    return;
  }
  const int b = bins();
  while (half_range_ < amax) {
    // Doubling A: old bins 2k, 2k+1 merge into new bin b/4 + k.
    std::vector<double> merged(counts_.size(), 0.0);
    for (int k = 0; k < b / 2; ++k) merged[b / 4 + k] = counts_[2 * k] + counts_[2 * k + 1];
    counts_.swap(merged);
    half_range_ *= 2.0;
  }
}

void StreamingHistogram::add(const float* x, int64_t n) {
  if (n <= 0) return;
  float lo = x[0], hi = x[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  if (total_ == 0.0) {
    min_ = lo;
    max_ = hi;
  } else {
    min_ = std::min(min_, lo);
    max_ = std::max(max_, hi);
  }
  grow_to(std::max(std::fabs(static_cast<double>(lo)), std::fabs(static_cast<double>(hi))));
  const int b = bins();
  const double inv_w = b / (2.0 * half_range_);
  for (int64_t i = 0; i < n; ++i) {
    int k = static_cast<int>((x[i] + half_range_) * inv_w);
    counts_[std::clamp(k, 0, b - 1)] += 1.0;
  }
  total_ += static_cast<double>(n);
}

double StreamingHistogram::quantile(double q) const {
  if (total_ <= 0.0) return 0.0;
  const double target = std::clamp(q, 0.0, 1.0) * total_;
  double acc = 0.0;
  for (int i = 0; i < bins(); ++i) {
    if (acc + counts_[i] >= target && counts_[i] > 0) {
      const double frac = (target - acc) / counts_[i];
      return std::clamp(bin_lo(i) + frac * bin_width(), static_cast<double>(min_), static_cast<double>(max_));
    }
    acc += counts_[i];
  }
  return max_;
}

}  // namespace qtk::quant
