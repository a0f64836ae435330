#include "quant/observers/observer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "quant/schemes/linear.h"

namespace qtk::quant {

void Observer::observe(const float* x, int64_t n) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) bad += !std::isfinite(x[i]);
  if (bad == 0) {
    observe_finite(x, n);
  } else {
    std::vector<float> clean;
    clean.reserve(static_cast<size_t>(n - bad));
    for (int64_t i = 0; i < n; ++i)
      if (std::isfinite(x[i])) clean.push_back(x[i]);
    if (!clean.empty()) observe_finite(clean.data(), static_cast<int64_t>(clean.size()));
  }
  finite_ += n - bad;
  nonfinite_ += bad;
}

namespace {

class MinMaxObserver final : public Observer {
 public:
  ObservedRange range(QFormat, bool) const override { return r_; }

 protected:
  void observe_finite(const float* x, int64_t n) override {
    if (n == 0) return;
    auto [lo, hi] = std::minmax_element(x, x + n);
    if (!seen_) r_ = {*lo, *hi};
    else r_ = {std::min(r_.min, *lo), std::max(r_.max, *hi)};
    seen_ = true;
  }

 private:
  ObservedRange r_;
  bool seen_ = false;
};

class MovingAverageObserver final : public Observer {
 public:
  explicit MovingAverageObserver(double momentum) : c_(momentum) {}
  ObservedRange range(QFormat, bool) const override { return {static_cast<float>(lo_), static_cast<float>(hi_)}; }

 protected:
  void observe_finite(const float* x, int64_t n) override {
    if (n == 0) return;
    auto [lo, hi] = std::minmax_element(x, x + n);
    if (!seen_) {
      lo_ = *lo;
      hi_ = *hi;
    } else {
      lo_ += c_ * (*lo - lo_);
      hi_ += c_ * (*hi - hi_);
    }
    seen_ = true;
  }

 private:
  double c_, lo_ = 0, hi_ = 0;
  bool seen_ = false;
};

class HistogramObserver final : public Observer {
 public:
  explicit HistogramObserver(CalibConfig c) : c_(c), h_(c.bins) {}
  ObservedRange range(QFormat f, bool symmetric) const override {
    switch (c_.method) {
      case CalibMethod::kPercentile: return range_percentile(h_, c_.percentile);
      case CalibMethod::kEntropy: return range_entropy(h_, f, symmetric);
      default: return range_mse(h_, f, symmetric);
    }
  }

 protected:
  void observe_finite(const float* x, int64_t n) override { h_.add(x, n); }

 private:
  CalibConfig c_;
  StreamingHistogram h_;
};

}  // namespace

std::unique_ptr<Observer> make_observer(const CalibConfig& config) {
  switch (config.method) {
    case CalibMethod::kMinMax: return std::make_unique<MinMaxObserver>();
    case CalibMethod::kMovingAverageMinMax: return std::make_unique<MovingAverageObserver>(config.momentum);
    default: return std::make_unique<HistogramObserver>(config);
  }
}

ObservedRange range_percentile(const StreamingHistogram& h, double percentile) {
  const double keep = std::clamp(percentile, 50.0, 100.0) / 100.0;
  ObservedRange r{h.min(), h.max()};
  if (h.total() <= 0) return r;
  r.max = h.max() > 0 ? static_cast<float>(h.quantile(keep)) : h.max();
  r.min = h.min() < 0 ? static_cast<float>(h.quantile(1.0 - keep)) : h.min();
  return r;
}

namespace {

// |x| histogram: fold the signed one around zero.
std::vector<double> fold_abs(const StreamingHistogram& h) {
  const int half = h.bins() / 2;
  std::vector<double> a(static_cast<size_t>(half));
  for (int k = 0; k < half; ++k) a[k] = h.counts()[half + k] + h.counts()[half - 1 - k];
  return a;
}

// KL(P || Q) where Q is P quantized to `levels` groups (TensorRT's recipe).
double kl_for_threshold(const std::vector<double>& hist, int i, int levels) {
  std::vector<double> p(hist.begin(), hist.begin() + i);
  double outliers = 0;
  for (size_t k = i; k < hist.size(); ++k) outliers += hist[k];
  p[i - 1] += outliers;
  std::vector<double> q(static_cast<size_t>(i), 0.0);
  for (int g = 0; g < levels; ++g) {
    const int b = static_cast<int>(static_cast<int64_t>(g) * i / levels);
    const int e = static_cast<int>(static_cast<int64_t>(g + 1) * i / levels);
    double mass = 0;
    int nonzero = 0;
    for (int k = b; k < e; ++k) {
      mass += hist[k];
      nonzero += hist[k] > 0;
    }
    for (int k = b; k < e; ++k)
      if (hist[k] > 0) q[k] = mass / nonzero;
  }
  double ps = 0, qs = 0;
  for (int k = 0; k < i; ++k) {
    ps += p[k];
    qs += q[k];
  }
  if (ps <= 0 || qs <= 0) return std::numeric_limits<double>::infinity();
  double kl = 0;
  for (int k = 0; k < i; ++k) {
    if (p[k] <= 0) continue;
    const double pk = p[k] / ps;
    const double qk = q[k] > 0 ? q[k] / qs : 1e-12;  // smoothing where Q is empty
    kl += pk * std::log(pk / qk);
  }
  return kl;
}

}  // namespace

ObservedRange range_entropy(const StreamingHistogram& h, QFormat f, bool symmetric) {
  ObservedRange r{h.min(), h.max()};
  if (h.total() <= 0) return r;
  const auto& t = traits(f);
  const bool one_sided = h.min() >= 0.f || h.max() <= 0.f;
  // Levels available to one side of zero.
  const int levels = (one_sided && !symmetric) ? (1 << t.bits) - 1 : (1 << (t.bits - 1)) - 1;
  std::vector<double> hist = fold_abs(h);
  const int n = static_cast<int>(hist.size());
  int last = n;
  while (last > 1 && hist[last - 1] == 0) --last;
  const int start = std::min(std::max(levels, 1), last);
  double best = std::numeric_limits<double>::infinity();
  int best_i = last;
  for (int i = start; i <= last; ++i) {
    const double kl = kl_for_threshold(hist, i, std::min(levels, i));
    if (kl < best) {
      best = kl;
      best_i = i;
    }
  }
  const double w = h.half_range() / n;
  const float th = static_cast<float>(best_i * w);
  r.max = std::min(h.max(), th);
  r.min = std::max(h.min(), -th);
  return r;
}

ObservedRange range_mse(const StreamingHistogram& h, QFormat f, bool symmetric) {
  ObservedRange full{h.min(), h.max()};
  if (h.total() <= 0) return full;
  double best = std::numeric_limits<double>::infinity();
  ObservedRange best_r = full;
  // Clip factors from 1 down to ~0.01, geometrically: heavy-tailed
  // activations can want a range far below their max.
  for (int step = 0; step <= 150; ++step) {
    const float a = static_cast<float>(std::pow(0.97, step));
    ObservedRange r{full.min * a, full.max * a};
    QParams p = qparams_linear(r.min, r.max, f, symmetric);
    const auto& t = traits(f);
    const double lo = (t.qmin - p.zero_point) * static_cast<double>(p.scale);
    const double hi = (t.qmax - p.zero_point) * static_cast<double>(p.scale);
    const double rounding = static_cast<double>(p.scale) * p.scale / 12.0;
    double err = 0;
    for (int i = 0; i < h.bins(); ++i) {
      const double c = h.counts()[i];
      if (c == 0) continue;
      const double x = h.bin_center(i);
      const double d = x < lo ? lo - x : (x > hi ? x - hi : 0.0);
      err += c * (d > 0 ? d * d : rounding);
    }
    if (err < best) {
      best = err;
      best_r = r;
    }
  }
  return best_r;
}

Expected<CalibConfig> parse_calib_method(const std::string& spec) {
  CalibConfig c;
  if (spec == "minmax") c.method = CalibMethod::kMinMax;
  else if (spec == "ma-minmax" || spec == "moving-average") c.method = CalibMethod::kMovingAverageMinMax;
  else if (spec == "entropy" || spec == "kl") c.method = CalibMethod::kEntropy;
  else if (spec == "mse") c.method = CalibMethod::kMse;
  else if (spec.rfind("percentile", 0) == 0) {
    c.method = CalibMethod::kPercentile;
    if (spec.size() > 10) {
      if (spec[10] != ':') return invalid_argument("bad calibration method '" + spec + "'");
      try {
        size_t used = 0;
        c.percentile = std::stod(spec.substr(11), &used);
        if (used != spec.size() - 11) throw std::invalid_argument("trailing");
      } catch (const std::exception&) {
        return invalid_argument("bad percentile in '" + spec + "' (e.g. percentile:99.99)");
      }
      if (!(c.percentile > 50.0 && c.percentile <= 100.0))
        return invalid_argument("percentile must be in (50, 100], got " + spec.substr(11));
    }
  } else {
    return invalid_argument("unknown calibration method '" + spec + "' (minmax, ma-minmax, percentile[:P], entropy, mse)");
  }
  return c;
}

std::string calib_method_name(const CalibConfig& c) {
  switch (c.method) {
    case CalibMethod::kMinMax: return "minmax";
    case CalibMethod::kMovingAverageMinMax: return "ma-minmax";
    case CalibMethod::kPercentile: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "percentile:%g", c.percentile);
      return buf;
    }
    case CalibMethod::kEntropy: return "entropy";
    case CalibMethod::kMse: return "mse";
  }
  return "?";
}

}  // namespace qtk::quant
