// Calibration observers: see activations batch by batch, keep bounded state
// (a min/max pair or a fixed-size histogram, never the data), and propose a
// clipping range for a target integer format.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "qtk/status.h"
#include "quant/observers/histogram.h"
#include "quant/schemes/qformat.h"

namespace qtk::quant {

enum class CalibMethod { kMinMax, kMovingAverageMinMax, kPercentile, kEntropy, kMse };

struct CalibConfig {
  CalibMethod method = CalibMethod::kMinMax;
  double percentile = 99.99;  // kPercentile: keep this share of the mass
  double momentum = 0.01;     // kMovingAverageMinMax: weight of each new batch
  int bins = 2048;            // histogram methods
};

// "minmax" | "ma-minmax" | "percentile" | "percentile:99.9" | "entropy" | "mse"
Expected<CalibConfig> parse_calib_method(const std::string& spec);
std::string calib_method_name(const CalibConfig& c);

struct ObservedRange {
  float min = 0.f;
  float max = 0.f;
};

class Observer {
 public:
  virtual ~Observer() = default;
  // Non-finite values are skipped and counted.
  void observe(const float* x, int64_t n);
  int64_t finite_count() const { return finite_; }
  int64_t nonfinite_count() const { return nonfinite_; }
  // Clipping range for `f`; symmetric if the quantizer will use a symmetric scale.
  virtual ObservedRange range(QFormat f, bool symmetric) const = 0;

 protected:
  virtual void observe_finite(const float* x, int64_t n) = 0;

 private:
  int64_t finite_ = 0, nonfinite_ = 0;
};

std::unique_ptr<Observer> make_observer(const CalibConfig& config);

// The histogram-based choices, exposed for tests and for reuse by algorithms.
ObservedRange range_percentile(const StreamingHistogram& h, double percentile);
ObservedRange range_entropy(const StreamingHistogram& h, QFormat f, bool symmetric);
ObservedRange range_mse(const StreamingHistogram& h, QFormat f, bool symmetric);

}  // namespace qtk::quant
