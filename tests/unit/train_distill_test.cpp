// Knowledge distillation and the trainer's per-step hook: the distillation
// loss's gradient equals finite differences, alpha = 0 is plain
// cross-entropy, a student learns from a teacher when its labels are
// scrambled, and after_step runs once per optimizer step.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "train/arch.h"
#include "train/loss.h"
#include "train/train_graph.h"
#include "train/trainer.h"
#include "test_models.h"

namespace qtk::train {
namespace {

Tensor random_logits(int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, 2.f);
  Tensor t(DType::kFloat32, {n, k});
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(g);
  return t;
}

TEST(Distillation, GradientMatchesFiniteDifferences) {
  const Tensor s = random_logits(4, 5, 1), t = random_logits(4, 5, 2);
  const std::vector<int64_t> labels{0, 3, 4, 1};
  for (float temp : {1.f, 4.f})
    for (float alpha : {0.f, 0.3f, 1.f}) {
      auto r = distillation_loss(s, t, labels, temp, alpha);
      ASSERT_TRUE(r.ok()) << r.status().message();
      for (int64_t i = 0; i < s.numel(); ++i) {
        Tensor p = s.clone(), m = s.clone();
        const float h = 1e-2f;
        p.data<float>()[i] += h;
        m.data<float>()[i] -= h;
        const double fd =
            (distillation_loss(p, t, labels, temp, alpha)->loss - distillation_loss(m, t, labels, temp, alpha)->loss) /
            (2 * h);
        EXPECT_NEAR(r->dlogits.data<float>()[i], fd, 2e-3 + 2e-3 * std::fabs(fd))
            << "T " << temp << " alpha " << alpha << " element " << i;
      }
    }
}

TEST(Distillation, AlphaZeroIsCrossEntropyAndSelfDistillationIsFree) {
  const Tensor s = random_logits(3, 4, 3), t = random_logits(3, 4, 4);
  const std::vector<int64_t> labels{1, 2, 0};
  auto ce = softmax_cross_entropy(s, labels);
  auto kd = distillation_loss(s, t, labels, 2.f, 0.f);
  ASSERT_TRUE(ce.ok() && kd.ok());
  EXPECT_DOUBLE_EQ(ce->loss, kd->loss);
  // The student equal to its teacher: KL = 0 and the soft gradient vanishes.
  auto self = distillation_loss(s, s, labels, 3.f, 1.f);
  ASSERT_TRUE(self.ok());
  EXPECT_NEAR(self->loss, 0.0, 1e-9);
  for (int64_t i = 0; i < s.numel(); ++i) EXPECT_NEAR(self->dlogits.data<float>()[i], 0.f, 1e-7);
}

TEST(Distillation, BadArgumentsAreErrors) {
  const Tensor s = random_logits(2, 3, 5);
  EXPECT_FALSE(distillation_loss(s, s, {0, 1}, 0.f, 0.5f).ok());
  EXPECT_FALSE(distillation_loss(s, s, {0, 1}, 2.f, 1.5f).ok());
  EXPECT_FALSE(distillation_loss(s, random_logits(2, 4, 6), {0, 1}, 2.f, 0.5f).ok());
}

TEST(Distillation, StudentLearnsFromTeacherDespiteScrambledLabels) {
  const data::Dataset train = testing::blobs(300, 6, 1), val = testing::blobs(90, 6, 2);
  auto tm = build_architecture("mlp:6,16,3", 1);
  ASSERT_TRUE(tm.ok());
  auto teacher = TrainGraph::create(*tm);
  ASSERT_TRUE(teacher.ok());
  TrainOptions o;
  o.epochs = 8;
  o.batch = 16;
  o.lr = 0.01f;
  ASSERT_TRUE(train_classifier(*teacher, train, nullptr, o).ok());
  ASSERT_GT(*evaluate_accuracy(*teacher, val, 32), 0.95);

  // Labels shifted by one class: from labels alone the student would learn
  // the wrong mapping; with alpha = 1 only the teacher's soft targets count.
  data::Dataset wrong = train;
  for (auto& y : wrong.labels) y = (y + 1) % 3;
  auto sm = build_architecture("mlp:6,8,3", 7);
  auto student = TrainGraph::create(*sm);
  ASSERT_TRUE(student.ok());
  TrainOptions d = o;
  d.kd_alpha = 1.f;
  d.kd_temperature = 2.f;
  d.teacher = [&](const Tensor& x) { return teacher->forward(x, false); };
  ASSERT_TRUE(train_classifier(*student, wrong, nullptr, d).ok());
  EXPECT_GT(*evaluate_accuracy(*student, val, 32), 0.95);

  // Control: the same student without the teacher learns the shifted labels.
  auto control = TrainGraph::create(*sm);
  ASSERT_TRUE(train_classifier(*control, wrong, nullptr, o).ok());
  EXPECT_LT(*evaluate_accuracy(*control, val, 32), 0.1);
}

TEST(Trainer, AfterStepRunsOncePerStepAndItsErrorStops) {
  auto m = build_architecture("mlp:6,16,3", 1);
  auto tg = TrainGraph::create(*m);
  ASSERT_TRUE(tg.ok());
  TrainOptions o;
  o.epochs = 2;
  o.batch = 10;  // 6 steps per epoch
  int calls = 0;
  o.after_step = [&] {
    ++calls;
    return Status();
  };
  ASSERT_TRUE(train_classifier(*tg, testing::blobs(60, 6, 1), nullptr, o).ok());
  EXPECT_EQ(calls, 12);
  o.after_step = [] { return invalid_argument("mask broke"); };
  auto r = train_classifier(*tg, testing::blobs(60, 6, 1), nullptr, o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("mask broke"), std::string::npos);
}

}  // namespace
}  // namespace qtk::train
