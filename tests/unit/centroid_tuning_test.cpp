// Centroid fine-tuning of clustered weights (compress::CentroidTuner, Deep
// Compression 3.1): each weight's gradient becomes the sum over its cluster,
// an SGD step moves each centroid by -lr * that sum and AdamW's first step
// by -lr * sign, the cluster assignment and the zeros of pruned weights
// survive whole fine-tuning runs, fine-tuning recovers accuracy that
// clustering lost, and unclustered weights are refused.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "compress/centroid_tuning.h"
#include "compress/prunable_weights.h"
#include "compress/weight_clustering.h"
#include "compress/weight_masks.h"
#include "train/arch.h"
#include "train/optimizer.h"
#include "train/train_graph.h"
#include "train/trainer.h"
#include "test_models.h"

namespace qtk::compress {
namespace {

// A float MLP trained on noisy blobs, then pruned (half of each layer) and
// clustered to 2^bits values.
struct Clustered {
  ir::Model model;
  data::Dataset data;
  std::vector<WeightLayout> layers;
};

Clustered clustered_mlp(int bits, double sparsity) {
  Clustered c;
  c.data = testing::blobs(240, 12, 5, 0.9f);
  auto m = train::build_architecture("mlp:12,32,3", 3);
  EXPECT_TRUE(m.ok());
  auto g = train::TrainGraph::create(*m);
  train::TrainOptions o;
  o.epochs = 8;
  o.batch = 16;
  o.lr = 3e-3f;
  EXPECT_TRUE(train::train_classifier(*g, c.data, nullptr, o).ok());
  c.model = g->to_model();
  c.layers = prunable_weights(c.model.graph);
  if (sparsity > 0) {
    MaskOptions mo;
    mo.sparsity = sparsity;
    mo.edge_sparsity = sparsity;
    auto masks = make_masks(c.layers, [&](const std::string& n) { return c.model.graph.find_initializer(n); }, mo);
    EXPECT_TRUE(masks.ok());
    EXPECT_TRUE(apply_masks(c.model.graph, *masks).ok());
  }
  ClusterOptions co;
  co.bits = bits;
  EXPECT_TRUE(cluster_weights(c.model.graph, co).ok());
  return c;
}

std::map<std::string, Tensor> weights(train::TrainGraph& g, const std::vector<WeightLayout>& layers) {
  std::map<std::string, Tensor> w;
  for (const auto& l : layers)
    for (const auto& p : g.params())
      if (p.name == l.name) w[l.name] = p.value.clone();
  return w;
}

train::Param& param(train::TrainGraph& g, const std::string& name) {
  for (auto& p : g.params())
    if (p.name == name) return p;
  throw std::runtime_error("no param " + name);
}

TEST(CentroidTuning, GradientsBecomeClusterSumsAndSgdMovesCentroidsBySums) {
  Clustered c = clustered_mlp(2, 0.5);
  auto g = train::TrainGraph::create(c.model);
  ASSERT_TRUE(g.ok());
  auto tuner = CentroidTuner::create(*g, c.layers);
  ASSERT_TRUE(tuner.ok()) << tuner.status().message();
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < 32; ++i) rows.push_back(i);
  auto x = train::make_batch(*g, c.data.images, rows, false, nullptr);
  std::vector<int64_t> labels(c.data.labels.begin(), c.data.labels.begin() + 32);
  ASSERT_TRUE(g->train_step(*x, labels).ok());

  const auto before = weights(*g, c.layers);
  std::map<std::string, std::map<float, double>> want;  // layer -> value -> gradient sum
  for (const auto& l : c.layers) {
    const train::Param& p = param(*g, l.name);
    for (int64_t i = 0; i < p.value.numel(); ++i) want[l.name][p.value.data<float>()[i]] += p.grad.data<float>()[i];
  }
  ASSERT_TRUE(tuner->before_step().ok());
  for (const auto& l : c.layers) {
    SCOPED_TRACE(l.name);
    const train::Param& p = param(*g, l.name);
    ASSERT_EQ(want[l.name].size(), 4u);  // zero and three shared values
    for (int64_t i = 0; i < p.value.numel(); ++i) {
      const float v = p.value.data<float>()[i];
      const double sum = v == 0.f ? 0.0 : want[l.name][v];
      ASSERT_NEAR(p.grad.data<float>()[i], sum, 1e-5 + 1e-5 * std::fabs(sum)) << "weight " << i;
    }
  }
  // SGD without momentum on the tied gradients: centroid -= lr * sum.
  train::OptimizerConfig cfg;
  cfg.kind = train::OptimizerKind::kSgd;
  cfg.momentum = 0.f;
  train::Optimizer opt(cfg);
  const float lr = 0.01f;
  opt.step(g->params(), lr);
  ASSERT_TRUE(tuner->after_step().ok());
  for (const auto& l : c.layers) {
    SCOPED_TRACE(l.name);
    const std::vector<float> cent = tuner->centroids(l.name);
    ASSERT_EQ(cent.size(), 4u);
    size_t k = 0;
    for (const auto& [v, sum] : want[l.name]) {
      const double expect = v == 0.f ? 0.0 : v - lr * sum;
      EXPECT_NEAR(cent[k], expect, 1e-6 + 1e-5 * std::fabs(expect)) << "centroid " << k;
      ++k;
    }
    // Every weight holds its cluster's new value.
    const Tensor& w0 = before.at(l.name);
    const train::Param& p = param(*g, l.name);
    for (int64_t i = 0; i < p.value.numel(); ++i) {
      const float v0 = w0.data<float>()[i];
      const size_t j = static_cast<size_t>(std::distance(want[l.name].begin(), want[l.name].find(v0)));
      ASSERT_EQ(p.value.data<float>()[i], cent[j]) << "weight " << i;
    }
  }
}

TEST(CentroidTuning, AdamWFirstStepMovesEachCentroidByLrTowardsMinusItsGradient) {
  Clustered c = clustered_mlp(3, 0.0);
  auto g = train::TrainGraph::create(c.model);
  auto tuner = CentroidTuner::create(*g, c.layers);
  ASSERT_TRUE(tuner.ok());
  std::vector<int64_t> rows{0, 1, 2, 3, 4, 5, 6, 7};
  auto x = train::make_batch(*g, c.data.images, rows, false, nullptr);
  ASSERT_TRUE(g->train_step(*x, std::vector<int64_t>(c.data.labels.begin(), c.data.labels.begin() + 8)).ok());
  ASSERT_TRUE(tuner->before_step().ok());
  std::map<std::string, std::vector<float>> c0, sums;
  for (const auto& l : c.layers) {
    c0[l.name] = tuner->centroids(l.name);
    const train::Param& p = param(*g, l.name);
    std::map<float, float> s;
    for (int64_t i = 0; i < p.value.numel(); ++i) s[p.value.data<float>()[i]] = p.grad.data<float>()[i];
    for (const auto& [v, gsum] : s) sums[l.name].push_back(gsum);
  }
  train::Optimizer opt({});  // AdamW
  const float lr = 1e-3f;
  opt.step(g->params(), lr);
  ASSERT_TRUE(tuner->after_step().ok());
  for (const auto& l : c.layers) {
    const std::vector<float> c1 = tuner->centroids(l.name);
    ASSERT_EQ(c1.size(), c0[l.name].size());
    for (size_t k = 0; k < c1.size(); ++k) {
      const float gsum = sums[l.name][k];
      if (std::fabs(gsum) < 1e-4f) continue;  // eps matters
      EXPECT_NEAR(c1[k] - c0[l.name][k], gsum > 0 ? -lr : lr, 1e-5f) << l.name << " centroid " << k;
    }
  }
}

TEST(CentroidTuning, FineTuningKeepsAssignmentAndZerosAndRecoversAccuracy) {
  // 2 bits on half-pruned layers: zero plus three shared values per layer
  // (when written: 0.858 clustered, 0.900 after 4 epochs of centroid tuning).
  Clustered c = clustered_mlp(2, 0.5);
  auto g = train::TrainGraph::create(c.model);
  auto clustered_acc = train::evaluate_accuracy(*g, c.data, 256);
  ASSERT_TRUE(clustered_acc.ok());
  const auto w0 = weights(*g, c.layers);
  auto tuner = CentroidTuner::create(*g, c.layers);
  ASSERT_TRUE(tuner.ok());
  train::TrainOptions o;
  o.epochs = 4;
  o.batch = 16;
  o.lr = 1e-2f;
  o.optimizer.weight_decay = 0.01f;
  o.before_step = [&] { return tuner->before_step(); };
  o.after_step = [&] { return tuner->after_step(); };
  auto r = train::train_classifier(*g, c.data, nullptr, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  auto tuned_acc = train::evaluate_accuracy(*g, c.data, 256);
  ASSERT_TRUE(tuned_acc.ok());
  EXPECT_GT(*tuned_acc, *clustered_acc + 0.02) << "clustered " << *clustered_acc << ", tuned " << *tuned_acc;

  bool moved = false;
  for (const auto& l : c.layers) {
    SCOPED_TRACE(l.name);
    const Tensor& a = w0.at(l.name);
    const Tensor& b = param(*g, l.name).value;
    std::map<float, float> to;  // old value -> new value: a function, so the assignment held
    std::set<float> distinct;
    for (int64_t i = 0; i < a.numel(); ++i) {
      const float va = a.data<float>()[i], vb = b.data<float>()[i];
      if (va == 0.f) ASSERT_EQ(vb, 0.f) << "pruned weight " << i << " moved";
      auto [it, fresh] = to.emplace(va, vb);
      ASSERT_EQ(it->second, vb) << "weight " << i << " left its cluster";
      distinct.insert(vb);
      moved |= va != vb;
    }
    EXPECT_LE(distinct.size(), 4u);
  }
  EXPECT_TRUE(moved);
}

TEST(CentroidTuning, UnclusteredWeightsAndUnknownLayersAreRefused) {
  auto m = train::build_architecture("mlp:300,4,3", 1);  // 1200 distinct first-layer weights
  auto g = train::TrainGraph::create(*m);
  auto layers = prunable_weights(m->graph);
  auto t = CentroidTuner::create(*g, layers);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("distinct values; centroid fine-tuning needs clustered weights"),
            std::string::npos)
      << t.status().message();
  layers[0].name = "nope";
  t = CentroidTuner::create(*g, {layers[0]});
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("'nope'"), std::string::npos) << t.status().message();
}

}  // namespace
}  // namespace qtk::compress
