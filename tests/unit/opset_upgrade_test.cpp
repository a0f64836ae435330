// Opset upgrades for quantized exports (quant/graph/opset_upgrade.h): an
// opset-11 model with every op whose form or meaning changed at 13 computes
// the same outputs after the upgrade, and per-channel quantization of
// opset-11/12 models (PyTorch's default export for many years) now works
// instead of being refused.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "ir/graph.h"
#include "qtk/model.h"
#include "qtk/quantize.h"
#include "qtk/session.h"
#include "quant/graph/opset_upgrade.h"
#include "test_models.h"

namespace qtk {
namespace {

using testing::attr_node;
using testing::run_model;

ir::ValueInfo float_value(const std::string& name, std::vector<int64_t> shape = {}) {
  ir::ValueInfo v;
  v.name = name;
  v.dtype = DType::kFloat32;
  for (int64_t d : shape) v.shape.push_back(d < 0 ? ir::Dim{-1, "N"} : ir::Dim{d, ""});  // -1: the batch
  v.has_shape = !shape.empty();
  return v;
}

Tensor random_tensor(Shape shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  Tensor t(DType::kFloat32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(rng);
  return t;
}

// x [N, 4, 6, 6] -> Conv 4->6 -> Split (split attr 2, 4 on the channels)
// -> one part: ReduceSum over axes {3} (keepdims) -> Squeeze {3} ->
//    Unsqueeze {3} -> Softmax at axis 1 of a rank-4 tensor (the legacy 2-D
//    meaning: over the last three axes together, 12 values) = y1 [N, 2, 6, 1];
// -> other part: Flatten -> Gemm -> LogSoftmax with the default axis on 2-D
//    (the old default 1, the last axis) = y2 [N, 3].
ir::Model legacy_model(int64_t opset) {
  ir::Model m;
  m.opsets = {{"", opset}};
  m.ir_version = 6;
  ir::Graph& g = m.graph;
  g.inputs.push_back(float_value("x", {-1, 4, 6, 6}));
  g.outputs = {float_value("y1"), float_value("y2")};
  g.set_initializer("w", random_tensor({6, 4, 3, 3}, 1));
  g.set_initializer("b", random_tensor({6}, 2));
  g.set_initializer("wg", random_tensor({4 * 36, 3}, 3));
  g.nodes.push_back(attr_node("Conv", {"x", "w", "b"}, {"c"}, {ir::attr_ints("pads", {1, 1, 1, 1})}));
  g.nodes.push_back(attr_node("Split", {"c"}, {"p", "q"}, {ir::attr_int("axis", 1), ir::attr_ints("split", {2, 4})}));
  g.nodes.push_back(attr_node("ReduceSum", {"p"}, {"s"}, {ir::attr_ints("axes", {3}), ir::attr_int("keepdims", 1)}));
  g.nodes.push_back(attr_node("Squeeze", {"s"}, {"sq"}, {ir::attr_ints("axes", {3})}));
  g.nodes.push_back(attr_node("Unsqueeze", {"sq"}, {"us"}, {ir::attr_ints("axes", {3})}));
  g.nodes.push_back(attr_node("Softmax", {"us"}, {"y1"}, {ir::attr_int("axis", 1)}));
  g.nodes.push_back(attr_node("Flatten", {"q"}, {"f"}));
  g.nodes.push_back(attr_node("Gemm", {"f", "wg"}, {"z"}));
  g.nodes.push_back(attr_node("LogSoftmax", {"z"}, {"y2"}));
  g.value_infos = {float_value("us", {-1, 2, 6, 1}), float_value("z", {-1, 3})};
  return m;
}

TEST(OpsetUpgrade, LegacyFormsKeepTheirMeaningAtThirteen) {
  for (int64_t from : {11, 12}) {
    const ir::Model legacy = legacy_model(from);
    ir::Model up = legacy;
    std::set<std::string> used;
    auto unique = [&](const std::string& base) {
      std::string n = base;
      for (int k = 1; used.count(n) || up.graph.find_initializer(n); ++k) n = base + "_" + std::to_string(k);
      used.insert(n);
      return n;
    };
    ASSERT_TRUE(quant::upgrade_opset(up, 13, unique).ok());
    EXPECT_EQ(up.opset(), 13);
    EXPECT_GE(up.ir_version, 7);
    for (const auto& n : up.graph.nodes) {
      for (const char* moved : {"split", "axes"})
        EXPECT_FALSE(n.has_attr(moved)) << n.describe() << " still has '" << moved << "'";
      if (n.op_type == "LogSoftmax") EXPECT_EQ(n.attr_int("axis", 0), 1) << "the old default, written out";
    }
    int flattens = 0;
    for (const auto& n : up.graph.nodes) flattens += n.op_type == "Flatten";
    EXPECT_EQ(flattens, 2) << "the rank-4 Softmax at axis 1 is spelled out with a Flatten";

    const Tensor x = random_tensor({2, 4, 6, 6}, 9);
    const auto want = run_model(legacy, x), got = run_model(up, x);
    ASSERT_EQ(want.size(), 2u);
    ASSERT_EQ(got.size(), 2u);
    for (size_t o = 0; o < 2; ++o) {
      ASSERT_EQ(want[o].shape(), got[o].shape()) << "output " << o;
      for (int64_t i = 0; i < want[o].numel(); ++i)
        EXPECT_FLOAT_EQ(want[o].data<float>()[i], got[o].data<float>()[i]) << "output " << o << " element " << i;
    }
    // The legacy Softmax normalizes each sample's 12 values together (a
    // softmax along axis 1 alone would make them sum to 6).
    for (int64_t s = 0; s < 2; ++s) {
      float sum = 0.f;
      for (int64_t i = 0; i < 12; ++i) sum += want[0].data<float>()[12 * s + i];
      EXPECT_NEAR(sum, 1.f, 1e-5) << "sample " << s;
    }
  }
}

TEST(OpsetUpgrade, PerChannelQuantizationOfOpset11Models) {
  const ir::Model legacy = legacy_model(11);
  const Tensor calib = random_tensor({32, 4, 6, 6}, 5), x = random_tensor({2, 4, 6, 6}, 9);
  const auto want = run_model(legacy, x);
  ASSERT_EQ(want.size(), 2u);
  for (auto activations : {ActivationMode::kStatic, ActivationMode::kDynamic, ActivationMode::kWeightOnly}) {
    QuantConfig c;  // int8 per channel
    c.activations = activations;
    auto q = quantize(legacy, c, CalibrationData{{calib}});
    ASSERT_TRUE(q.ok()) << q.status().message();
    EXPECT_EQ(q->model.opset(), 13);
    const auto got = run_model(q->model, x);
    ASSERT_EQ(got.size(), 2u);
    double err = 0, ref = 0;
    for (int64_t i = 0; i < want[1].numel(); ++i) {
      const double d = want[1].data<float>()[i] - got[1].data<float>()[i];
      err += d * d;
      ref += static_cast<double>(want[1].data<float>()[i]) * want[1].data<float>()[i];
    }
    EXPECT_LT(std::sqrt(err / ref), 0.05) << "relative L2 of y2";
  }
  // Per tensor needs no upgrade: the opset stays, and every DequantizeLinear
  // is per tensor (no axis, scalar scale), as opset 11 requires.
  QuantConfig c;
  c.granularity = Granularity::kPerTensor;
  auto q = quantize(legacy, c, CalibrationData{{calib}});
  ASSERT_TRUE(q.ok()) << q.status().message();
  EXPECT_EQ(q->model.opset(), 11);
  for (const auto& n : q->model.graph.nodes)
    if (n.op_type == "DequantizeLinear") {
      EXPECT_FALSE(n.has_attr("axis")) << n.describe();
      if (const Tensor* s = q->model.graph.find_initializer(n.inputs[1])) EXPECT_EQ(s->numel(), 1) << n.describe();
    }
}

// Axis -1 is the last axis whatever the rank: no rewrite even where the
// input's rank is unknown; an axis past the input's rank is refused.
TEST(OpsetUpgrade, SoftmaxAxisEdgeCases) {
  auto model = [](int64_t axis, bool declared_rank) {
    ir::Model m;
    m.opsets = {{"", 12}};
    ir::Graph& g = m.graph;
    g.inputs.push_back(float_value("x", declared_rank ? std::vector<int64_t>{-1, 3, 5} : std::vector<int64_t>{}));
    g.outputs = {float_value("y")};
    g.nodes.push_back(attr_node("Softmax", {"x"}, {"y"}, {ir::attr_int("axis", axis)}));
    return m;
  };
  auto unique = [](const std::string& b) { return b + "_new"; };
  ir::Model last = model(-1, false);
  ASSERT_TRUE(quant::upgrade_opset(last, 13, unique).ok());
  ASSERT_EQ(last.graph.nodes.size(), 1u);
  EXPECT_EQ(last.graph.nodes[0].attr_int("axis", 0), -1);

  ir::Model middle = model(-2, true);  // axis 1 of 3: the legacy meaning needs the Flatten
  ASSERT_TRUE(quant::upgrade_opset(middle, 13, unique).ok());
  EXPECT_EQ(middle.graph.nodes.size(), 4u);
  const Tensor x = random_tensor({2, 3, 5}, 4);
  const auto want = run_model(model(-2, true), x), got = run_model(middle, x);
  ASSERT_EQ(want.size(), 1u);
  ASSERT_EQ(got.size(), 1u);
  for (int64_t i = 0; i < x.numel(); ++i) EXPECT_FLOAT_EQ(want[0].data<float>()[i], got[0].data<float>()[i]);

  ir::Model past = model(3, true);
  const Status s = quant::upgrade_opset(past, 13, unique);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("out of range"), std::string::npos) << s.message();
}

// 16-bit activations need QuantizeLinear-21 (int16/uint16 came with 21):
// an opset-17 model is raised, else ONNX Runtime refuses the file.
TEST(OpsetUpgrade, SixteenBitActivationsRaiseToTwentyOne) {
  ir::Model m;
  m.opsets = {{"", 17}};
  ir::Graph& g = m.graph;
  g.inputs.push_back(float_value("x", {-1, 4, 6, 6}));
  g.outputs = {float_value("y")};
  g.set_initializer("w", random_tensor({3, 4, 3, 3}, 1));
  g.nodes.push_back(attr_node("Conv", {"x", "w"}, {"c"}, {ir::attr_ints("pads", {1, 1, 1, 1})}));
  g.nodes.push_back(attr_node("Relu", {"c"}, {"y"}));
  const Tensor calib = random_tensor({16, 4, 6, 6}, 5), x = random_tensor({2, 4, 6, 6}, 9);
  for (auto f : {quant::QFormat::kInt16, quant::QFormat::kUInt16}) {
    QuantConfig c;
    c.activation_format = f;
    auto q = quantize(m, c, CalibrationData{{calib}});
    ASSERT_TRUE(q.ok()) << q.status().message();
    EXPECT_EQ(q->model.opset(), 21);
    EXPECT_EQ(run_model(q->model, x).size(), 1u);
  }
  QuantConfig c8;  // 8-bit: the opset stays
  auto q = quantize(m, c8, CalibrationData{{calib}});
  ASSERT_TRUE(q.ok()) << q.status().message();
  EXPECT_EQ(q->model.opset(), 17);
}

TEST(OpsetUpgrade, BelowElevenIsRefusedWithTheReason) {
  ir::Model m = legacy_model(11);
  m.opsets = {{"", 10}};
  auto unique = [](const std::string& b) { return b + "_new"; };
  const Status s = quant::upgrade_opset(m, 13, unique);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("below opset 11"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace qtk
