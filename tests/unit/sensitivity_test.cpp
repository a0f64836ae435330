// Per-layer sensitivity and automatic mixed precision on a three-layer MLP
// built here, whose middle layer has one large outlier per output channel:
// at 4 bits per channel that outlier sets the scale and the rest of the row
// rounds to a few levels, so that layer must rank most sensitive.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "qtk/quantize.h"
#include "quant/sensitivity/mixed_precision.h"
#include "quant/sensitivity/sensitivity.h"
#include "test_models.h"

namespace qtk::quant::sensitivity {
namespace {

ir::ValueInfo info(const std::string& name) { return testing::float_info(name); }

Tensor gaussian(Shape s, std::mt19937& rng, float sd) {
  Tensor t(DType::kFloat32, s);
  std::normal_distribution<float> nd(0.f, sd);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = nd(rng);
  return t;
}

// x[N,16] -> fc1 (32) -> Relu -> fc2 (32, outliers) -> Relu -> fc3 (10)
Model mlp(uint32_t seed) {
  std::mt19937 rng(seed);
  Model m;
  m.opsets = {{"", 17}};
  m.graph.inputs.push_back(info("x"));
  m.graph.outputs.push_back(info("y"));
  Tensor w2 = gaussian({32, 32}, rng, 1.f / std::sqrt(32.f));
  for (int64_t o = 0; o < 32; ++o) w2.data<float>()[o * 32 + (o * 7) % 32] = 2.f;  // the hard part
  m.graph.set_initializer("w1", gaussian({32, 16}, rng, 1.f / 4.f));
  m.graph.set_initializer("b1", gaussian({32}, rng, 0.1f));
  m.graph.set_initializer("w2", w2);
  m.graph.set_initializer("b2", gaussian({32}, rng, 0.1f));
  m.graph.set_initializer("w3", gaussian({10, 32}, rng, 1.f / std::sqrt(32.f)));
  m.graph.set_initializer("b3", gaussian({10}, rng, 0.1f));
  auto add = [&](const std::string& name, const std::string& op, std::vector<std::string> in, const std::string& out) {
    ir::Node n;
    n.name = name;
    n.op_type = op;
    n.inputs = std::move(in);
    n.outputs = {out};
    if (op == "Gemm") n.attrs = {ir::attr_int("transB", 1)};
    m.graph.nodes.push_back(std::move(n));
  };
  add("fc1", "Gemm", {"x", "w1", "b1"}, "h1");
  add("relu1", "Relu", {"h1"}, "r1");
  add("fc2", "Gemm", {"r1", "w2", "b2"}, "h2");
  add("relu2", "Relu", {"h2"}, "r2");
  add("fc3", "Gemm", {"r2", "w3", "b3"}, "y");
  return m;
}

struct Sensitivity : ::testing::Test {
  void SetUp() override {
    model = mlp(7);
    std::mt19937 rng(11);
    calib.inputs = {gaussian({256, 16}, rng, 1.f)};
    val.inputs = {gaussian({300, 16}, rng, 1.f)};
    // Labels: the float model's own predictions (float accuracy 1.0).
    auto ref = model_outputs(model, val);
    ASSERT_TRUE(ref.ok()) << ref.status().message();
    for (int64_t i = 0; i < 300; ++i) {
      const float* row = ref->data<float>() + i * 10;
      labels.push_back(std::max_element(row, row + 10) - row);
    }
  }
  EvalSet labelled() const { return EvalSet{val.inputs, labels}; }
  Model model;
  CalibrationData calib;
  EvalSet val;
  std::vector<int64_t> labels;
};

TEST_F(Sensitivity, LayerWithOutliersRanksMostSensitive) {
  auto ctx = make_trial_context(model, QuantConfig{}, calib, labelled(), 128, 1);
  ASSERT_TRUE(ctx.ok()) << ctx.status().message();
  EXPECT_DOUBLE_EQ(ctx->float_accuracy, 1.0);
  SensitivityOptions o;
  o.config.weight_format = QFormat::kInt4;
  o.threads = 2;
  int64_t last_done = 0, calls = 0;
  o.progress = [&](int64_t done, int64_t total) {
    ++calls;
    last_done = done;
    EXPECT_EQ(total, 6);  // 3 layers x (weights + activations)
  };
  auto r = analyze_sensitivity(*ctx, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->layers.size(), 3u);
  EXPECT_EQ(calls, 6);
  EXPECT_TRUE(last_done >= 1 && last_done <= 6);
  const LayerSensitivity* worst = &r->layers[0];
  for (const auto& s : r->layers) {
    ASSERT_TRUE(s.activations.has_value()) << s.layer.node;
    if (sensitivity_score(s) < sensitivity_score(*worst)) worst = &s;
  }
  EXPECT_EQ(worst->layer.node, "fc2");
  EXPECT_EQ(worst->layer.params, 32 * 32);
  // By a clear margin on the weight trials, and with a real accuracy cost.
  for (const auto& s : r->layers)
    if (s.layer.node != "fc2") EXPECT_GT(s.weights[0].second.sqnr_db, worst->weights[0].second.sqnr_db + 3.0);
  EXPECT_LT(worst->weights[0].second.accuracy, 1.0);
  for (const auto& s : r->layers)
    if (s.layer.node != "fc2") EXPECT_GT(s.weights[0].second.accuracy, worst->weights[0].second.accuracy);
  EXPECT_GT(worst->weights[0].second.kl, 0.0);
}

TEST_F(Sensitivity, PrecisionWalkLowersTheCheapestNoiseFirst) {
  // Two layers, options {8, 4, 2} bits; layer 1 is 10x noisier at every width.
  const std::vector<std::vector<double>> noise = {{1e-5, 1e-3, 1e-1}, {1e-4, 1e-2, 1.0}};
  const auto walk = precision_walk(noise, {8, 4, 2}, {100, 100});
  ASSERT_EQ(walk.front(), (std::vector<int>{0, 0}));
  ASSERT_EQ(walk.back(), (std::vector<int>{2, 2}));
  EXPECT_EQ(walk[1], (std::vector<int>{1, 0}));  // layer 0 goes first
  for (size_t i = 1; i < walk.size(); ++i) {
    int before = 0, after = 0;
    for (int l = 0; l < 2; ++l) before += walk[i - 1][l], after += walk[i][l];
    EXPECT_GT(after, before) << "step " << i << " must lower some layer";
  }
}

TEST_F(Sensitivity, RaiseWithinBudgetSpendsLeftoverBits) {
  // Options {8, 4, 2}; layer 0 has 3x the parameters. From all 2-bit with a
  // budget of 4: raising layer 1 to 8 bits (avg 3.5) fits, raising layer 0 to
  // 4 (avg 3.5) too, but not both (avg 5); layer 1 is the noisier one.
  const std::vector<std::vector<double>> noise = {{1e-5, 1e-3, 1e-2}, {1e-5, 1e-2, 1.0}};
  const auto up = raise_within_budget({2, 2}, noise, {8, 4, 2}, {300, 100}, 4.0);
  EXPECT_EQ(up, (std::vector<int>{2, 0}));
  const auto none = raise_within_budget({2, 2}, noise, {8, 4, 2}, {300, 100}, 2.0);
  EXPECT_EQ(none, (std::vector<int>{2, 2}));
}

TEST_F(Sensitivity, MixedPrecisionStaysWithinTheBitBudget) {
  MixedPrecisionOptions o;
  o.target_bits = 4.5;
  QuantConfig cfg;
  cfg.method = WeightMethod::kRtn;
  auto r = quantize_mixed_precision(model, cfg, calib, labelled(), o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->met) << r->verdict;
  EXPECT_LE(r->average_bits, 4.5);
  ASSERT_EQ(r->layers.size(), 3u);
  double num = 0, den = 0;
  for (const auto& a : r->layers) num += a.bits * double(a.layer.params), den += double(a.layer.params);
  EXPECT_NEAR(r->average_bits, num / den, 1e-9);
  EXPECT_GE(r->metrics.accuracy, 0.0);
  EXPECT_FALSE(r->checked.empty());
  // The chosen model carries the chosen widths.
  for (const auto& a : r->layers) {
    bool found = false;
    for (const auto& t : r->quantized.report.tensors)
      if (t.kind == "weight" && t.node == a.layer.node) {
        found = true;
        ASSERT_TRUE(a.weights.has_value());
        EXPECT_EQ(t.scheme.rfind(std::string(traits(*a.weights).name) + " ", 0), 0u) << t.scheme;
      }
    EXPECT_EQ(found, a.weights.has_value()) << a.layer.node;
  }
}

TEST_F(Sensitivity, UnreachableTargetIsReportedAsNotMet) {
  MixedPrecisionOptions o;
  o.target_bits = 1.5;  // below 2 bits: no assignment gets there
  QuantConfig cfg;
  cfg.method = WeightMethod::kRtn;
  auto r = quantize_mixed_precision(model, cfg, calib, labelled(), o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_FALSE(r->met);
  EXPECT_NE(r->verdict.find("NOT met"), std::string::npos) << r->verdict;
  EXPECT_DOUBLE_EQ(r->average_bits, 2.0);  // the closest: everything at 2 bits

  // Two bits everywhere and no accuracy lost at all: the bits hold, the
  // measured drop does not, and the verdict says so.
  MixedPrecisionOptions both;
  both.target_bits = 2.0;
  both.target_drop = 0.0;
  auto d = quantize_mixed_precision(model, cfg, calib, labelled(), both);
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_LT(d->metrics.accuracy, 1.0);
  EXPECT_FALSE(d->met) << d->verdict;
  EXPECT_NE(d->verdict.find("NOT met"), std::string::npos) << d->verdict;
}

TEST_F(Sensitivity, BadInputGivesClearErrors) {
  MixedPrecisionOptions drop;
  drop.target_drop = 1.0;
  auto no_labels = quantize_mixed_precision(model, QuantConfig{}, calib, val, drop);
  ASSERT_FALSE(no_labels.ok());
  EXPECT_NE(no_labels.status().message().find("labelled"), std::string::npos) << no_labels.status().message();

  MixedPrecisionOptions bits;
  bits.target_bits = 4;
  auto empty = quantize_mixed_precision(model, QuantConfig{}, calib, EvalSet{}, bits);
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("empty"), std::string::npos) << empty.status().message();

  auto no_target = quantize_mixed_precision(model, QuantConfig{}, calib, labelled(), MixedPrecisionOptions{});
  ASSERT_FALSE(no_target.ok());
  EXPECT_NE(no_target.status().message().find("target"), std::string::npos);

  auto no_calib = make_trial_context(model, QuantConfig{}, CalibrationData{}, labelled(), 0, 1);
  ASSERT_FALSE(no_calib.ok());
  EXPECT_NE(no_calib.status().message().find("calibration"), std::string::npos) << no_calib.status().message();
}

}  // namespace
}  // namespace qtk::quant::sensitivity
