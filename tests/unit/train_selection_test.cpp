// What qtk qat's defaults rest on in the trainer: the linear learning-rate
// warm-up (its first steps scale the schedule's lr by (step + 1) / warm-up),
// per-sample correctness that agrees with evaluate_accuracy, and the paired
// comparison (McNemar) that decides whether a fine-tuned epoch beats PTQ on
// the held-out samples beyond chance.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "test_models.h"
#include "train/arch.h"
#include "train/train_graph.h"
#include "train/trainer.h"

namespace qtk::train {
namespace {

TEST(Trainer, WarmupScalesTheFirstStepsLinearly) {
  auto m = build_architecture("mlp:6,16,3", 1);
  ASSERT_TRUE(m.ok());
  auto tg = TrainGraph::create(*m);
  ASSERT_TRUE(tg.ok());
  TrainOptions o;
  o.epochs = 2;
  o.batch = 10;  // 6 steps per epoch
  o.lr = 0.01f;
  o.schedule = ScheduleKind::kConstant;
  o.warmup_steps = 10;
  std::vector<float> last;
  o.on_epoch = [&](const EpochStats& e) { last.push_back(e.last_lr); };
  ASSERT_TRUE(train_classifier(*tg, testing::blobs(60, 6, 1), nullptr, o).ok());
  ASSERT_EQ(last.size(), 2u);
  EXPECT_FLOAT_EQ(last[0], 0.01f * 6 / 10);  // step 5 of the ramp
  EXPECT_FLOAT_EQ(last[1], 0.01f);           // past it: the schedule's lr
  o.warmup_steps = -1;
  EXPECT_FALSE(train_classifier(*tg, testing::blobs(60, 6, 1), nullptr, o).ok());
}

TEST(Trainer, WarmupOfZeroIsTheScheduleAlone) {
  auto m = build_architecture("mlp:6,16,3", 1);
  ASSERT_TRUE(m.ok());
  auto a = TrainGraph::create(*m), b = TrainGraph::create(*m);
  ASSERT_TRUE(a.ok() && b.ok());
  TrainOptions o;
  o.epochs = 1;
  o.batch = 10;
  ASSERT_TRUE(train_classifier(*a, testing::blobs(60, 6, 1), nullptr, o).ok());
  o.warmup_steps = 1;  // step 0 scaled by 1/1: no change either
  ASSERT_TRUE(train_classifier(*b, testing::blobs(60, 6, 1), nullptr, o).ok());
  const auto sa = a->snapshot(), sb = b->snapshot();
  for (const auto& [name, t] : sa) {
    const Tensor& u = sb.at(name);
    ASSERT_EQ(t.numel(), u.numel());
    for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(t.data<float>()[i], u.data<float>()[i]) << name;
  }
}

TEST(Trainer, CorrectPredictionsAgreeWithAccuracy) {
  auto m = build_architecture("mlp:6,16,3", 2);
  ASSERT_TRUE(m.ok());
  auto tg = TrainGraph::create(*m);
  ASSERT_TRUE(tg.ok());
  TrainOptions o;
  o.epochs = 1;
  o.batch = 16;
  const data::Dataset train = testing::blobs(96, 6, 3), val = testing::blobs(50, 6, 4);
  ASSERT_TRUE(train_classifier(*tg, train, nullptr, o).ok());
  auto c = correct_predictions(*tg, val, 7);  // a batch that does not divide the samples
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->size(), 50u);
  int64_t hits = 0;
  for (uint8_t v : *c) {
    EXPECT_LE(v, 1);
    hits += v;
  }
  auto acc = evaluate_accuracy(*tg, val, 32);
  ASSERT_TRUE(acc.ok());
  EXPECT_DOUBLE_EQ(*acc, static_cast<double>(hits) / 50.0);
  EXPECT_GT(hits, 0);
  EXPECT_FALSE(correct_predictions(*tg, data::Dataset{}, 8).ok());
}

TEST(Trainer, PairedComparisonCountsDiscordantSamples) {
  //                                  only cand.  only base   both   neither
  const std::vector<uint8_t> base = {0, 0, 0, 0, 1, 1, 1, 1, 0};
  const std::vector<uint8_t> cand = {1, 1, 1, 1, 0, 1, 1, 0, 0};
  const PairedComparison p = compare_paired(base, cand);
  EXPECT_EQ(p.wins, 4);
  EXPECT_EQ(p.losses, 2);
  EXPECT_NEAR(p.z, 2.0 / std::sqrt(6.0), 1e-12);
  const PairedComparison q = compare_paired(cand, base);  // antisymmetric
  EXPECT_EQ(q.wins, 2);
  EXPECT_EQ(q.losses, 4);
  EXPECT_NEAR(q.z, -p.z, 1e-12);
  EXPECT_EQ(compare_paired(base, base).z, 0.0);  // identical models: no evidence either way
  // The same 2-point net gain is significant (one-sided 95%) only with few
  // disagreements: 60 vs 40 of 100 has z = 2, 560 vs 540 of 1100 has z 0.6.
  std::vector<uint8_t> b2, c2;
  for (int i = 0; i < 60; ++i) b2.push_back(0), c2.push_back(1);
  for (int i = 0; i < 40; ++i) b2.push_back(1), c2.push_back(0);
  EXPECT_NEAR(compare_paired(b2, c2).z, 2.0, 1e-12);
  for (int i = 0; i < 500; ++i) b2.push_back(0), c2.push_back(1), b2.push_back(1), c2.push_back(0);
  EXPECT_LT(compare_paired(b2, c2).z, 1.645);
}

}  // namespace
}  // namespace qtk::train
