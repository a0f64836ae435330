// A streaming histogram over [-A, A] with a fixed number of bins. When data
// falls outside, A doubles and adjacent bins merge pairwise, so counts stay
// exact and memory stays constant however much data is observed.
#pragma once

#include <cstdint>
#include <vector>

namespace qtk::quant {

class StreamingHistogram {
 public:
  explicit StreamingHistogram(int bins = 2048);  // bins: a multiple of 4

  void add(const float* x, int64_t n);  // non-finite values are skipped by the caller

  int bins() const { return static_cast<int>(counts_.size()); }
  double half_range() const { return half_range_; }  // A
  double bin_width() const { return 2.0 * half_range_ / bins(); }
  double bin_lo(int i) const { return -half_range_ + i * bin_width(); }
  double bin_center(int i) const { return bin_lo(i) + 0.5 * bin_width(); }
  const std::vector<double>& counts() const { return counts_; }
  double total() const { return total_; }
  float min() const { return min_; }
  float max() const { return max_; }

  // Value below which a fraction q of the mass lies (linear inside a bin).
  double quantile(double q) const;

 private:
  void grow_to(double amax);

  std::vector<double> counts_;
  double half_range_ = 0.0;
  double total_ = 0.0;
  float min_ = 0.f, max_ = 0.f;
};

}  // namespace qtk::quant
