// Cross-layer equalization: the float function is unchanged (to 1e-4 on
// random inputs), equalized pairs end with equal per-channel ranges, ReLU6
// pairs are left alone and reported, and per-tensor 4-bit weights lose less
// after it.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "qtk/quantize.h"
#include "qtk/session.h"
#include "quant/algos/cross_layer_equalization.h"
#include "test_models.h"

namespace qtk::quant::algos {
namespace {

ir::ValueInfo info(const std::string& name) { return testing::float_info(name); }

// Weights whose output channels differ in scale (varied): one channel 30x
// the others, as BN folding leaves in real nets (a channel with a tiny
// variance), and the case CLE is for: per tensor, that channel's range
// leaves the others a level or two.
Tensor weight(Shape s, std::mt19937& rng, bool varied = true) {
  Tensor t(DType::kFloat32, s);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int64_t per = t.numel() / s[0];
  for (int64_t o = 0; o < s[0]; ++o) {
    const float scale = varied && o % 5 == 2 ? 30.f : 1.f;
    for (int64_t i = 0; i < per; ++i) t.data<float>()[o * per + i] = scale * nd(rng) / std::sqrt(float(per));
  }
  return t;
}

Tensor vec(int64_t n, std::mt19937& rng) {
  Tensor t(DType::kFloat32, {n});
  std::normal_distribution<float> nd(0.f, 0.2f);
  for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = nd(rng);
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

// conv1 -> Relu -> depthwise conv2 -> Relu -> conv3 -> Clip(0,6) -> conv4 ->
// GlobalAveragePool -> Flatten -> gemm1 (transB=1) -> Relu -> gemm2 (transB=0)
ir::Model chain_model(uint32_t seed) {
  std::mt19937 rng(seed);
  ir::Model m;
  m.opsets = {{"", 17}};
  m.graph.inputs.push_back(info("x"));
  m.graph.outputs.push_back(info("y"));
  auto init = [&](const std::string& n, Tensor t) { m.graph.set_initializer(n, std::move(t)); };
  init("w1", weight({8, 3, 3, 3}, rng));
  init("b1", vec(8, rng));
  init("w2", weight({8, 1, 3, 3}, rng, false));
  init("b2", vec(8, rng));
  init("w3", weight({6, 8, 1, 1}, rng, false));
  init("b3", vec(6, rng));
  init("w4", weight({4, 6, 1, 1}, rng));
  init("g1", weight({16, 4}, rng));
  init("gb1", vec(16, rng));
  Tensor g2 = weight({5, 16}, rng, false);  // stored [K=16, N=5] for transB=0 below
  Tensor g2t(DType::kFloat32, {16, 5});
  for (int64_t i = 0; i < 16; ++i)
    for (int64_t j = 0; j < 5; ++j) g2t.data<float>()[i * 5 + j] = g2.data<float>()[j * 16 + i];
  init("g2", g2t);
  init("lo", Tensor::scalar<float>(0.f));
  init("hi", Tensor::scalar<float>(6.f));
  const auto pad1 = ir::attr_ints("pads", {1, 1, 1, 1});
  add(m, "Conv", {"x", "w1", "b1"}, "c1", {pad1});
  add(m, "Relu", {"c1"}, "r1");
  add(m, "Conv", {"r1", "w2", "b2"}, "c2", {pad1, ir::attr_int("group", 8)});
  add(m, "Relu", {"c2"}, "r2");
  add(m, "Conv", {"r2", "w3", "b3"}, "c3");
  add(m, "Clip", {"c3", "lo", "hi"}, "r3");
  add(m, "Conv", {"r3", "w4"}, "c4");
  add(m, "GlobalAveragePool", {"c4"}, "p");
  add(m, "Flatten", {"p"}, "f");
  add(m, "Gemm", {"f", "g1", "gb1"}, "h1", {ir::attr_int("transB", 1)});
  add(m, "Relu", {"h1"}, "hr");
  add(m, "Gemm", {"hr", "g2"}, "y");
  return m;
}

Tensor random_images(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 2.f);
  Tensor t(DType::kFloat32, {n, 3, 10, 10});
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = u(rng);
  return t;
}

Tensor run(const ir::Model& m, const Tensor& x) {
  auto s = Session::create(m);
  EXPECT_TRUE(s.ok()) << s.status().message();
  auto out = (*s)->run(std::vector<Tensor>{x});
  EXPECT_TRUE(out.ok()) << out.status().message();
  return (*out)[0];
}

float max_abs(const Tensor& t) {
  float v = 0.f;
  for (int64_t i = 0; i < t.numel(); ++i) v = std::max(v, std::fabs(t.data<float>()[i]));
  return v;
}

// Range of output channel c of a Conv/Gemm(transB=1) weight, and of input channel c.
float out_range(const Tensor& w, int64_t c) {
  const int64_t per = w.numel() / w.dim(0);
  float r = 0.f;
  for (int64_t i = 0; i < per; ++i) r = std::max(r, std::fabs(w.data<float>()[c * per + i]));
  return r;
}

TEST(CrossLayerEqualization, KeepsTheFloatFunctionAndBalancesRanges) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    ir::Model m = chain_model(seed);
    const Tensor x = random_images(4, seed + 100);
    const Tensor before = run(m, x);
    auto eq = equalize_cross_layer(m.graph);
    ASSERT_TRUE(eq.ok()) << eq.status().message();
    EXPECT_EQ(eq->pairs, 3);  // conv1->conv2 (depthwise), conv2->conv3, gemm1->gemm2
    bool clip_reported = false;
    for (const auto& s : eq->skipped) clip_reported |= s.find("c3_Conv") != std::string::npos;
    EXPECT_TRUE(clip_reported);
    const Tensor after = run(m, x);
    ASSERT_EQ(before.shape(), after.shape());
    const float scale = max_abs(before);
    for (int64_t i = 0; i < before.numel(); ++i)
      ASSERT_NEAR(after.data<float>()[i], before.data<float>()[i], 1e-4f * scale) << "output " << i;
    // Balanced: conv1's output channel c and the depthwise conv2's channel c
    // (its only input channel) have the same range; conv3 and conv4 (across
    // the Clip) were not touched, so their ranges are the originals.
    const Tensor& w1 = *m.graph.find_initializer("w1");
    const Tensor& w2 = *m.graph.find_initializer("w2");
    for (int64_t c = 0; c < 8; ++c) EXPECT_NEAR(out_range(w1, c), out_range(w2, c), 2e-3f * out_range(w1, c));
    const ir::Model fresh = chain_model(seed);
    EXPECT_EQ(m.graph.find_initializer("w4")->to_float_vector(), fresh.graph.find_initializer("w4")->to_float_vector());
  }
}

TEST(CrossLayerEqualization, NothingToDoIsNotAnError) {
  ir::Model m;
  m.opsets = {{"", 17}};
  m.graph.inputs.push_back(info("x"));
  m.graph.outputs.push_back(info("y"));
  add(m, "Relu", {"x"}, "y");
  auto eq = equalize_cross_layer(m.graph);
  ASSERT_TRUE(eq.ok());
  EXPECT_EQ(eq->pairs, 0);
}

// Per-tensor 4-bit weights: with one channel 30x the others, the others get
// a level or two; equalized, the output is much closer to the float one.
TEST(CrossLayerEqualization, PerTensorInt4LosesLessAfterIt) {
  const ir::Model m = chain_model(5);
  const Tensor calib = random_images(64, 6), x = random_images(32, 7);
  const Tensor ref = run(m, x);
  double err[2];
  for (bool equalize : {false, true}) {
    QuantConfig c;
    c.weight_format = QFormat::kInt4;
    c.granularity = Granularity::kPerTensor;
    c.activations = ActivationMode::kWeightOnly;
    c.method = WeightMethod::kRtn;
    c.equalize = equalize;
    auto q = quantize(m, c, CalibrationData{{calib}});
    ASSERT_TRUE(q.ok()) << q.status().message();
    EXPECT_EQ(q->report.equalized, equalize);
    const Tensor y = run(q->model, x);
    double e = 0;
    for (int64_t i = 0; i < y.numel(); ++i) e += std::pow(double(y.data<float>()[i]) - ref.data<float>()[i], 2);
    err[equalize] = e;
  }
  EXPECT_LT(err[1], 0.5 * err[0]) << "equalized " << err[1] << " plain " << err[0];
}

}  // namespace
}  // namespace qtk::quant::algos
