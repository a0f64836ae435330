// SmoothQuant: the float function is unchanged (1e-5 relative) for
// LayerNormalization, Gemm and MatMul+Add producers; with alpha 0.5 every
// smoothed channel ends with equal activation and weight ranges, so the
// outlier channel is scaled down the most; producers that cannot absorb a
// scale (Relu, a residual reader, a graph input) leave the graph untouched;
// and int8 per-tensor activations lose less after it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "qtk/quantize.h"
#include "qtk/session.h"
#include "quant/algos/smooth_quant.h"
#include "test_models.h"

namespace qtk::quant::algos {
namespace {

ir::ValueInfo info(const std::string& name) { return testing::float_info(name); }

Tensor randn(Shape s, std::mt19937& rng, float sd = 1.f) {
  Tensor t(DType::kFloat32, std::move(s));
  std::normal_distribution<float> nd(0.f, sd);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = nd(rng);
  return t;
}

void add(ir::Model& m, const std::string& op, std::vector<std::string> in, const std::string& out,
         std::vector<ir::Attribute> attrs = {}) {
  ir::Node n;
  n.op_type = op;
  n.name = out + "_" + op;
  n.inputs = std::move(in);
  n.outputs = {out};
  n.attrs = std::move(attrs);
  m.graph.nodes.push_back(std::move(n));
}

constexpr int64_t kD = 8, kOutlier = 3;

// x [N, 4, 8] -> LayerNormalization (channel 3's scale 25x the others, the
// outlier SmoothQuant is for) -> y -> MatMul(w1 [8, 6]) -> a
//                                  -> MatMul(w2 [8, 5]) -> Add(b2) -> b
// With `residual`, y is also added to x (a reader that cannot take a scale).
ir::Model layernorm_model(uint32_t seed, bool residual = false) {
  std::mt19937 rng(seed);
  ir::Model m;
  m.opsets = {{"", 17}};
  m.graph.inputs.push_back(info("x"));
  m.graph.outputs.push_back(info("a"));
  m.graph.outputs.push_back(info(residual ? "r" : "b"));
  Tensor gamma = randn({kD}, rng, 0.3f);
  for (int64_t j = 0; j < kD; ++j) gamma.data<float>()[j] += 1.f;
  gamma.data<float>()[kOutlier] = 25.f;
  m.graph.set_initializer("gamma", gamma);
  m.graph.set_initializer("beta", randn({kD}, rng, 0.2f));
  m.graph.set_initializer("w1", randn({kD, 6}, rng, 0.4f));
  m.graph.set_initializer("w2", randn({kD, 5}, rng, 0.4f));
  m.graph.set_initializer("b2", randn({5}, rng, 0.1f));
  add(m, "LayerNormalization", {"x", "gamma", "beta"}, "y", {ir::attr_int("axis", -1)});
  add(m, "MatMul", {"y", "w1"}, "a");
  if (residual) {
    add(m, "Add", {"x", "y"}, "r");
  } else {
    add(m, "MatMul", {"y", "w2"}, "bm");
    add(m, "Add", {"bm", "b2"}, "b");
  }
  return m;
}

Tensor inputs(Shape s, uint32_t seed) {
  std::mt19937 rng(seed);
  return randn(std::move(s), rng, 2.f);
}

std::vector<Tensor> run(const ir::Model& m, const Tensor& x) { return testing::run_model(m, x); }

// max |a - b| over max |a|.
double rel_diff(const Tensor& a, const Tensor& b) {
  double diff = 0, mag = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    diff = std::max(diff, std::fabs(double(a.data<float>()[i]) - b.data<float>()[i]));
    mag = std::max(mag, std::fabs(double(a.data<float>()[i])));
  }
  return diff / std::max(mag, 1e-30);
}

void expect_same_function(const ir::Model& before, const ir::Model& after, const Tensor& x) {
  const auto y0 = run(before, x), y1 = run(after, x);
  ASSERT_EQ(y0.size(), y1.size());
  ASSERT_FALSE(y0.empty());
  for (size_t k = 0; k < y0.size(); ++k) EXPECT_LT(rel_diff(y0[k], y1[k]), 1e-5) << "output " << k;
}

// Per-channel max |value| of tensor t over its last axis, computed by running m.
std::vector<float> channel_absmax(ir::Model m, const std::string& t, const Tensor& x) {
  m.graph.outputs = {info(t)};
  const auto out = run(m, x);
  std::vector<float> mx(static_cast<size_t>(out.at(0).dim(-1)), 0.f);
  for (int64_t i = 0; i < out[0].numel(); ++i)
    mx[i % mx.size()] = std::max(mx[i % mx.size()], std::fabs(out[0].data<float>()[i]));
  return mx;
}

float row_absmax(const Tensor& w, int64_t j) {
  float m = 0.f;
  for (int64_t c = 0; c < w.dim(1); ++c) m = std::max(m, std::fabs(w.data<float>()[j * w.dim(1) + c]));
  return m;
}

TEST(SmoothQuant, LayerNormToMatMulKeepsFunctionAndBalancesRanges) {
  const ir::Model before = layernorm_model(1);
  ir::Model m = before;
  const Tensor calib = inputs({64, 4, kD}, 2);
  QuantConfig cfg;
  cfg.calib_batch = 16;
  auto sq = smooth_quant(m, CalibrationData{{calib}}, cfg, 0.5f);
  ASSERT_TRUE(sq.ok()) << sq.status().message();
  ASSERT_EQ(sq->tensors, std::vector<std::string>{"y"});
  ASSERT_EQ(sq->smoothed.size(), 1u);
  EXPECT_NE(sq->smoothed[0].find("2 layers"), std::string::npos) << sq->smoothed[0];

  expect_same_function(before, m, inputs({5, 4, kD}, 3));

  // alpha 0.5: max|X'_j| = max|X_j| / s_j and max|W'_j| = max|W_j| s_j meet at sqrt(max|X_j| max|W_j|).
  const auto act = channel_absmax(m, "y", calib);
  const Tensor& w1 = *m.graph.find_initializer("w1");
  const Tensor& w2 = *m.graph.find_initializer("w2");
  for (int64_t j = 0; j < kD; ++j) {
    const float wmax = std::max(row_absmax(w1, j), row_absmax(w2, j));
    EXPECT_NEAR(act[j], wmax, 1e-3f * wmax) << "channel " << j;
  }
  // The outlier channel got the largest scale, and it really was divided out of gamma.
  std::vector<float> s(kD);
  const Tensor& g0 = *before.graph.find_initializer("gamma");
  const Tensor& g1 = *m.graph.find_initializer("gamma");
  for (int64_t j = 0; j < kD; ++j) s[j] = g0.data<float>()[j] / g1.data<float>()[j];
  EXPECT_EQ(std::max_element(s.begin(), s.end()) - s.begin(), kOutlier);
  EXPECT_GT(s[kOutlier], 2.f);
  const auto act0 = channel_absmax(before, "y", calib);
  EXPECT_LT(act[kOutlier] / act0[kOutlier], 0.5f);
  // Weights rows and the LayerNorm bias moved with it.
  const Tensor& b0 = *before.graph.find_initializer("beta");
  const Tensor& b1 = *m.graph.find_initializer("beta");
  const Tensor& w1_0 = *before.graph.find_initializer("w1");
  for (int64_t j = 0; j < kD; ++j) {
    EXPECT_NEAR(b1.data<float>()[j] * s[j], b0.data<float>()[j], 1e-5f) << j;
    EXPECT_NEAR(w1.data<float>()[j * 6], w1_0.data<float>()[j * 6] * s[j], 1e-4f * std::fabs(w1.data<float>()[j * 6]) + 1e-6f);
  }
}

TEST(SmoothQuant, GemmAndMatMulAddProducersKeepFunction) {
  // x [N, 8] -> Gemm(w0 [8, 8] transB=1, c0) -> h -> Gemm(w1 [8, 4], transB=0) -> a
  // x -> MatMul(w2 [8, 8]) -> Add(b2) -> k -> Gemm(w3 [4, 8], transB=1) -> b
  std::mt19937 rng(7);
  ir::Model m;
  m.opsets = {{"", 17}};
  m.graph.inputs.push_back(info("x"));
  m.graph.outputs = {info("a"), info("b")};
  Tensor w0 = randn({kD, kD}, rng, 0.5f);
  for (int64_t i = 0; i < kD; ++i) w0.data<float>()[kOutlier * kD + i] *= 30.f;  // output channel 3 large
  m.graph.set_initializer("w0", w0);
  m.graph.set_initializer("c0", randn({kD}, rng, 0.2f));
  m.graph.set_initializer("w1", randn({kD, 4}, rng, 0.5f));
  m.graph.set_initializer("w2", randn({kD, kD}, rng, 0.5f));
  m.graph.set_initializer("b2", randn({kD}, rng, 0.2f));
  m.graph.set_initializer("w3", randn({4, kD}, rng, 0.5f));
  add(m, "Gemm", {"x", "w0", "c0"}, "h", {ir::attr_int("transB", 1)});
  add(m, "Gemm", {"h", "w1"}, "a");
  add(m, "MatMul", {"x", "w2"}, "km");
  add(m, "Add", {"km", "b2"}, "k");
  add(m, "Gemm", {"k", "w3"}, "b", {ir::attr_int("transB", 1)});
  const ir::Model before = m;
  QuantConfig cfg;
  auto sq = smooth_quant(m, CalibrationData{{inputs({32, kD}, 8)}}, cfg, 0.5f);
  ASSERT_TRUE(sq.ok()) << sq.status().message();
  EXPECT_EQ(sq->tensors, (std::vector<std::string>{"h", "k"}));
  expect_same_function(before, m, inputs({6, kD}, 9));
  // Output channel 3 of w0 (the outlier) shrank the most.
  const Tensor& w0s = *m.graph.find_initializer("w0");
  float best = 0.f;
  int64_t arg = -1;
  for (int64_t j = 0; j < kD; ++j) {
    const float s = w0.data<float>()[j * kD] / w0s.data<float>()[j * kD];
    if (s > best) best = s, arg = j;
  }
  EXPECT_EQ(arg, kOutlier);
}

TEST(SmoothQuant, ProducerThatCannotAbsorbLeavesGraphAlone) {
  // x -> Relu -> MatMul: Relu has no per-channel scale to fold 1/s into.
  ir::Model m;
  std::mt19937 rng(3);
  m.opsets = {{"", 17}};
  m.graph.inputs.push_back(info("x"));
  m.graph.outputs.push_back(info("a"));
  m.graph.set_initializer("w", randn({kD, 3}, rng));
  m.graph.set_initializer("v", randn({kD, 3}, rng));
  add(m, "Relu", {"x"}, "r");
  add(m, "MatMul", {"r", "w"}, "a");
  add(m, "MatMul", {"x", "v"}, "unused");  // a graph input: nothing to fold into either
  m.graph.outputs.push_back(info("unused"));
  const ir::Model before = m;
  QuantConfig cfg;
  auto sq = smooth_quant(m, CalibrationData{{inputs({16, kD}, 4)}}, cfg, 0.5f);
  ASSERT_TRUE(sq.ok()) << sq.status().message();
  EXPECT_TRUE(sq->tensors.empty());
  ASSERT_EQ(sq->skipped.size(), 2u);
  EXPECT_NE(sq->skipped[0].find("Relu"), std::string::npos) << sq->skipped[0];
  EXPECT_NE(sq->skipped[1].find("graph input"), std::string::npos) << sq->skipped[1];
  for (const char* w : {"w", "v"}) {
    const Tensor& a = *before.graph.find_initializer(w);
    const Tensor& b = *m.graph.find_initializer(w);
    for (int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(a.data<float>()[i], b.data<float>()[i]) << w;
  }

  // A LayerNorm output also read by a residual Add cannot be rescaled either.
  ir::Model res = layernorm_model(5, /*residual=*/true);
  const Tensor gamma = res.graph.find_initializer("gamma")->clone();
  sq = smooth_quant(res, CalibrationData{{inputs({16, 4, kD}, 6)}}, cfg, 0.5f);
  ASSERT_TRUE(sq.ok()) << sq.status().message();
  EXPECT_TRUE(sq->tensors.empty());
  ASSERT_EQ(sq->skipped.size(), 1u);
  EXPECT_NE(sq->skipped[0].find("Add"), std::string::npos) << sq->skipped[0];
  for (int64_t j = 0; j < kD; ++j) EXPECT_EQ(res.graph.find_initializer("gamma")->data<float>()[j], gamma.data<float>()[j]);
}

TEST(SmoothQuant, RejectsAlphaOutsideUnitInterval) {
  ir::Model m = layernorm_model(1);
  QuantConfig cfg;
  auto sq = smooth_quant(m, CalibrationData{{inputs({8, 4, kD}, 2)}}, cfg, 1.5f);
  ASSERT_FALSE(sq.ok());
  EXPECT_NE(sq.status().message().find("alpha"), std::string::npos);
}

// Signal-to-noise ratio of b against a, in dB.
double sqnr_db(const Tensor& a, const Tensor& b) {
  double signal = 0, noise = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double x = a.data<float>()[i], d = x - b.data<float>()[i];
    signal += x * x;
    noise += d * d;
  }
  return 10 * std::log10(signal / std::max(noise, 1e-30));
}

TEST(SmoothQuant, QuantizeOptionHelpsPerTensorActivations) {
  const ir::Model model = layernorm_model(11);
  const Tensor calib = inputs({128, 4, kD}, 12), test = inputs({64, 4, kD}, 13);
  const auto ref = run(model, test);
  double sqnr[2] = {0, 0};
  for (int smooth = 0; smooth < 2; ++smooth) {
    QuantConfig cfg;  // W8 per channel, A8 per tensor
    cfg.smooth_quant = smooth == 1;
    auto q = quantize(model, cfg, CalibrationData{{calib}});
    ASSERT_TRUE(q.ok()) << q.status().message();
    bool noted = false;
    for (const auto& n : q->report.notes) noted |= n.find("SmoothQuant: y") != std::string::npos;
    EXPECT_EQ(noted, smooth == 1);
    const auto out = run(q->model, test);
    ASSERT_EQ(out.size(), 2u);
    sqnr[smooth] = sqnr_db(ref[0], out[0]) + sqnr_db(ref[1], out[1]);
  }
  std::printf("summed output SQNR: plain %.1f dB, smoothed %.1f dB\n", sqnr[0], sqnr[1]);
  EXPECT_GT(sqnr[1], sqnr[0] + 3.0) << "plain " << sqnr[0] << " dB, smoothed " << sqnr[1] << " dB";
}

TEST(SmoothQuant, CachedRangesOfSmoothedTensorsAreMeasuredAgain) {
  // A calibration cache written without SmoothQuant holds y's unsmoothed
  // range; reused with it, y must be calibrated again on the smoothed graph.
  const ir::Model model = layernorm_model(11);
  const Tensor calib = inputs({64, 4, kD}, 12);
  QuantConfig cfg;
  auto plain = quantize(model, cfg, CalibrationData{{calib}});
  ASSERT_TRUE(plain.ok()) << plain.status().message();
  ASSERT_TRUE(plain->ranges.count("y"));
  cfg.smooth_quant = true;
  auto fresh = quantize(model, cfg, CalibrationData{{calib}});
  auto cached = quantize(model, cfg, CalibrationData{{calib}}, &plain->ranges);
  ASSERT_TRUE(fresh.ok() && cached.ok());
  const auto& y0 = plain->ranges.at("y");
  const auto& y1 = cached->ranges.at("y");
  EXPECT_LT(y1.max - y1.min, 0.5f * (y0.max - y0.min));
  EXPECT_EQ(y1.min, fresh->ranges.at("y").min);
  EXPECT_EQ(y1.max, fresh->ranges.at("y").max);
}

TEST(SmoothQuant, QuantizeWithoutCalibrationDataSaysSo) {
  QuantConfig cfg;
  cfg.smooth_quant = true;
  cfg.activations = ActivationMode::kWeightOnly;
  auto q = quantize(layernorm_model(1), cfg, CalibrationData{});
  ASSERT_FALSE(q.ok());
  EXPECT_NE(q.status().message().find("SmoothQuant"), std::string::npos) << q.status().message();
  EXPECT_NE(q.status().message().find("calibration data"), std::string::npos) << q.status().message();
  // Unset (auto) and without data: quantizes as before.
  cfg.smooth_quant.reset();
  EXPECT_TRUE(quantize(layernorm_model(1), cfg, CalibrationData{}).ok());
}

}  // namespace
}  // namespace qtk::quant::algos
