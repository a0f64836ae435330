// Relu folded into the BatchNormalization or residual Add before it
// (train_graph.h): the fused graph computes the same loss, gradients and
// running statistics, bit for bit, as the same graph with an Identity
// between the two (which keeps them apart), and its gradients match finite
// differences of the loss.
#include <gtest/gtest.h>

#include <cmath>

#include "test_models.h"
#include "train/loss.h"
#include "train/train_graph.h"

namespace qtk::train {
namespace {

// conv -> bn -> relu -> conv -> bn -> add(., first relu) -> relu -> pool ->
// gemm; with `apart`, an Identity sits before each Relu.
ir::Model residual_block(bool apart) {
  ir::Model m;
  m.opsets = {{"", 17}};
  auto& g = m.graph;
  g.inputs.push_back({"x", DType::kFloat32, true, {{-1, "n"}, {2, ""}, {5, ""}, {5, ""}}, "", true});
  g.outputs.push_back({"logits", DType::kFloat32, false, {}, "", true});
  g.set_initializer("w1", testing::uniform_tensor({4, 2, 3, 3}, 1, -0.5f, 0.5f));
  g.set_initializer("w2", testing::uniform_tensor({4, 4, 3, 3}, 2, -0.3f, 0.3f));
  for (const char* b : {"bn1", "bn2"}) {
    g.set_initializer(std::string(b) + ".s", testing::uniform_tensor({4}, 3, 0.5f, 1.5f));
    g.set_initializer(std::string(b) + ".b", testing::uniform_tensor({4}, 4, -0.2f, 0.2f));
    g.set_initializer(std::string(b) + ".m", Tensor(DType::kFloat32, {4}));
    Tensor var(DType::kFloat32, {4});
    for (int i = 0; i < 4; ++i) var.data<float>()[i] = 1.f;
    g.set_initializer(std::string(b) + ".v", var);
  }
  g.set_initializer("w3", testing::uniform_tensor({3, 4}, 5, -1.f, 1.f));
  g.set_initializer("b3", testing::uniform_tensor({3}, 6, -0.1f, 0.1f));
  auto node = [&](const std::string& op, std::vector<std::string> ins, const std::string& out,
                  std::vector<ir::Attribute> attrs = {}) {
    ir::Node n;
    n.name = out;
    n.op_type = op;
    n.inputs = std::move(ins);
    n.outputs = {out};
    n.attrs = std::move(attrs);
    g.nodes.push_back(n);
  };
  auto relu = [&](const std::string& in, const std::string& out) {
    if (!apart) return node("Relu", {in}, out);
    node("Identity", {in}, in + "_kept");
    node("Relu", {in + "_kept"}, out);
  };
  const std::vector<ir::Attribute> conv = {ir::attr_ints("pads", {1, 1, 1, 1})};
  node("Conv", {"x", "w1"}, "c1", conv);
  node("BatchNormalization", {"c1", "bn1.s", "bn1.b", "bn1.m", "bn1.v"}, "n1");
  relu("n1", "r1");
  node("Conv", {"r1", "w2"}, "c2", conv);
  node("BatchNormalization", {"c2", "bn2.s", "bn2.b", "bn2.m", "bn2.v"}, "n2");
  node("Add", {"n2", "r1"}, "s");
  relu("s", "r2");
  node("GlobalAveragePool", {"r2"}, "p");
  node("Flatten", {"p"}, "f");
  node("Gemm", {"f", "w3", "b3"}, "logits", {ir::attr_int("transB", 1)});
  return m;
}

const std::vector<int64_t> kLabels = {0, 2, 1, 1, 0, 2};

TEST(TrainReluFusion, FusedGraphEqualsUnfusedBitForBit) {
  auto fused = TrainGraph::create(residual_block(false));
  auto apart = TrainGraph::create(residual_block(true));
  ASSERT_TRUE(fused.ok()) << fused.status().message();
  ASSERT_TRUE(apart.ok()) << apart.status().message();
  EXPECT_EQ(fused->fused_relu_count(), 2);  // after bn1 and after the Add
  EXPECT_EQ(apart->fused_relu_count(), 0);
  const Tensor x = testing::uniform_tensor({6, 2, 5, 5}, 7, -1.f, 1.f);
  for (int step = 0; step < 2; ++step) {  // the second step runs on the updated running statistics
    auto a = fused->train_step(x, kLabels);
    auto b = apart->train_step(x, kLabels);
    ASSERT_TRUE(a.ok()) << a.status().message();
    ASSERT_TRUE(b.ok()) << b.status().message();
    EXPECT_EQ(a->loss, b->loss);
    ASSERT_EQ(fused->params().size(), apart->params().size());
    for (size_t i = 0; i < fused->params().size(); ++i) {
      const Param &p = fused->params()[i], &q = apart->params()[i];
      ASSERT_EQ(p.name, q.name);
      for (int64_t j = 0; j < p.grad.numel(); ++j)
        ASSERT_EQ(p.grad.data<float>()[j], q.grad.data<float>()[j]) << p.name << " element " << j;
    }
  }
  const auto sa = fused->snapshot(), sb = apart->snapshot();
  for (const char* k : {"bn1.m", "bn1.v", "bn2.m", "bn2.v"})
    for (int64_t j = 0; j < 4; ++j) EXPECT_EQ(sa.at(k).data<float>()[j], sb.at(k).data<float>()[j]) << k;
  // Inference (running statistics) agrees too, and the exported model keeps its Relu nodes.
  auto ya = fused->forward(x, false);
  auto yb = apart->forward(x, false);
  ASSERT_TRUE(ya.ok() && yb.ok());
  for (int64_t j = 0; j < ya->numel(); ++j) EXPECT_EQ(ya->data<float>()[j], yb->data<float>()[j]);
  int relus = 0;
  for (const auto& n : fused->to_model().graph.nodes) relus += n.op_type == "Relu";
  EXPECT_EQ(relus, 2);
}

TEST(TrainReluFusion, FusedGradientsMatchFiniteDifferences) {
  auto tg = TrainGraph::create(residual_block(false));
  ASSERT_TRUE(tg.ok()) << tg.status().message();
  ASSERT_EQ(tg->fused_relu_count(), 2);
  const Tensor x = testing::uniform_tensor({6, 2, 5, 5}, 8, -1.f, 1.f);
  ASSERT_TRUE(tg->train_step(x, kLabels).ok());
  auto loss = [&] {
    auto y = tg->forward(x, true);
    return softmax_cross_entropy(*y, kLabels)->loss;
  };
  // Small steps: at 1e-2 some of the 600 pre-activations cross a Relu's
  // kink and the difference quotient misses by up to 0.004 (the unfused
  // graph's too).
  const double eps = 1e-3;
  for (auto& p : tg->params()) {
    SCOPED_TRACE(p.name);
    const Tensor g = p.grad.clone();
    for (int64_t j = 0; j < p.value.numel(); j += std::max<int64_t>(1, p.value.numel() / 12)) {
      float* w = p.value.data<float>();
      const float v0 = w[j];
      w[j] = v0 + static_cast<float>(eps);
      const double up = loss();
      w[j] = v0 - static_cast<float>(eps);
      const double down = loss();
      w[j] = v0;
      const double numeric = (up - down) / (2 * eps);
      EXPECT_NEAR(g.data<float>()[j], numeric, 2e-4 + 1e-2 * std::fabs(numeric)) << "element " << j;
    }
  }
}

}  // namespace
}  // namespace qtk::train
