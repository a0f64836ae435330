#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "quant/observers/observer.h"
#include "quant/schemes/linear.h"

namespace qtk::quant {
namespace {

std::vector<float> gaussian(int n, uint32_t seed, float sigma = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double quant_mse(const std::vector<float>& x, ObservedRange r, QFormat f, bool symmetric) {
  QParams p = qparams_linear(r.min, r.max, f, symmetric);
  double e = 0;
  for (float v : x) {
    float y = (quantize_value_linear(v, p, f) - p.zero_point) * p.scale;
    e += (v - y) * (v - y);
  }
  return e / x.size();
}

TEST(Histogram, GrowsWithoutLosingCounts) {
  StreamingHistogram h(256);
  std::vector<float> a = {0.1f, -0.2f, 0.05f};
  h.add(a.data(), 3);
  std::vector<float> b = {100.f, -3.f};
  h.add(b.data(), 2);
  double sum = 0;
  for (double c : h.counts()) sum += c;
  EXPECT_EQ(sum, 5.0);
  EXPECT_GE(h.half_range(), 100.0);
  EXPECT_EQ(h.min(), -3.f);
  EXPECT_EQ(h.max(), 100.f);
}

TEST(Histogram, QuantilesOfUniformData) {
  StreamingHistogram h(2048);
  std::vector<float> v(100000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) / v.size();  // [0,1)
  for (size_t off = 0; off < v.size(); off += 1000) h.add(v.data() + off, 1000);  // in batches
  EXPECT_NEAR(h.quantile(0.5), 0.5, 2e-3);
  EXPECT_NEAR(h.quantile(0.9), 0.9, 2e-3);
}

TEST(Observers, MinMaxIsExactAndSkipsNonFinite) {
  auto o = make_observer({CalibMethod::kMinMax});
  std::vector<float> v = {1.f, NAN, -2.f, INFINITY, 3.f};
  o->observe(v.data(), v.size());
  auto r = o->range(QFormat::kUInt8, false);
  EXPECT_EQ(r.min, -2.f);
  EXPECT_EQ(r.max, 3.f);
  EXPECT_EQ(o->nonfinite_count(), 2);
  EXPECT_EQ(o->finite_count(), 3);
}

TEST(Observers, MovingAverageFollowsBatches) {
  CalibConfig c{CalibMethod::kMovingAverageMinMax};
  c.momentum = 0.5;
  auto o = make_observer(c);
  std::vector<float> a = {0.f, 2.f}, b = {0.f, 4.f};
  o->observe(a.data(), 2);
  o->observe(b.data(), 2);
  EXPECT_FLOAT_EQ(o->range(QFormat::kUInt8, false).max, 3.f);
}

TEST(Observers, PercentileAndEntropyClipOutliers) {
  auto v = gaussian(50000, 1);
  for (int i = 0; i < 5; ++i) v.push_back(40.f);  // rare outliers at 40 sigma
  for (const char* spec : {"percentile:99.9", "entropy", "mse"}) {
    auto cfg = parse_calib_method(spec);
    ASSERT_TRUE(cfg.ok());
    auto o = make_observer(*cfg);
    for (size_t off = 0; off < v.size(); off += 4096) o->observe(v.data() + off, std::min<size_t>(4096, v.size() - off));
    // At 8 bits MSE rightly keeps rare outliers (clipping them costs more
    // than the coarser step); at 4 bits it clips them.
    const QFormat f = std::string(spec) == "mse" ? QFormat::kInt4 : QFormat::kInt8;
    auto r = o->range(f, true);
    EXPECT_LT(r.max, 20.f) << spec << " min " << r.min;
    EXPECT_GT(r.max, 1.5f) << spec;
  }
}

TEST(Observers, MseBeatsMinMaxAtFourBits) {
  auto v = gaussian(40000, 2);
  auto mm = make_observer({CalibMethod::kMinMax});
  auto mse = make_observer({CalibMethod::kMse});
  mm->observe(v.data(), v.size());
  mse->observe(v.data(), v.size());
  for (QFormat f : {QFormat::kInt4, QFormat::kInt3}) {
    double e_mm = quant_mse(v, mm->range(f, true), f, true);
    double e_mse = quant_mse(v, mse->range(f, true), f, true);
    EXPECT_LT(e_mse, e_mm * 0.8) << traits(f).name;
  }
}

TEST(Observers, OneSidedDataStaysOneSided) {
  auto v = gaussian(20000, 3);
  for (auto& x : v) x = std::fabs(x);  // post-ReLU
  auto o = make_observer({CalibMethod::kEntropy});
  o->observe(v.data(), v.size());
  auto r = o->range(QFormat::kUInt8, false);
  EXPECT_GE(r.min, 0.f);
  EXPECT_GT(r.max, 2.f);
}

TEST(Observers, ParseMethod) {
  EXPECT_TRUE(parse_calib_method("minmax").ok());
  auto p = parse_calib_method("percentile:99.5");
  ASSERT_TRUE(p.ok());
  EXPECT_DOUBLE_EQ(p->percentile, 99.5);
  EXPECT_EQ(calib_method_name(*p), "percentile:99.5");
  EXPECT_FALSE(parse_calib_method("percentile:abc").ok());
  EXPECT_FALSE(parse_calib_method("percentile:20").ok());
  EXPECT_FALSE(parse_calib_method("kmeans").ok());
}

}  // namespace
}  // namespace qtk::quant
