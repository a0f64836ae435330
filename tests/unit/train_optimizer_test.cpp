// Optimizer updates and learning-rate schedules against hand-computed values.
#include <gtest/gtest.h>

#include <cmath>

#include "train/optimizer.h"

namespace qtk::train {
namespace {

std::vector<Param> one_param(float w, bool decay = true) {
  Param p;
  p.name = "w";
  p.value = Tensor::from_vector<float>({1}, {w});
  p.grad = Tensor(DType::kFloat32, {1});
  p.decay = decay;
  return {p};
}

TEST(TrainOptimizer, SgdMomentumAndWeightDecay) {
  OptimizerConfig cfg;
  cfg.kind = OptimizerKind::kSgd;
  cfg.momentum = 0.9f;
  cfg.weight_decay = 0.1f;
  Optimizer opt(cfg);
  auto ps = one_param(1.f);
  ps[0].grad.data<float>()[0] = 0.5f;
  opt.step(ps, 0.1f);  // g' = 0.5 + 0.1*1 = 0.6; buf = 0.6; w = 1 - 0.06 = 0.94
  EXPECT_NEAR(ps[0].value.data<float>()[0], 0.94f, 1e-6);
  ps[0].grad.data<float>()[0] = -0.2f;
  opt.step(ps, 0.1f);  // g' = -0.2 + 0.094 = -0.106; buf = 0.54 - 0.106 = 0.434; w = 0.94 - 0.0434
  EXPECT_NEAR(ps[0].value.data<float>()[0], 0.94f - 0.0434f, 1e-6);
}

TEST(TrainOptimizer, AdamWTwoSteps) {
  OptimizerConfig cfg;
  cfg.kind = OptimizerKind::kAdamW;
  cfg.weight_decay = 0.01f;
  Optimizer opt(cfg);
  auto ps = one_param(2.f);
  double w = 2, m = 0, v = 0;
  const double lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  const double grads[] = {0.3, -0.7};
  for (int t = 1; t <= 2; ++t) {
    ps[0].grad.data<float>()[0] = static_cast<float>(grads[t - 1]);
    opt.step(ps, static_cast<float>(lr));
    w *= 1 - lr * 0.01;
    m = b1 * m + (1 - b1) * grads[t - 1];
    v = b2 * v + (1 - b2) * grads[t - 1] * grads[t - 1];
    const double mh = m / (1 - std::pow(b1, t)), vh = v / (1 - std::pow(b2, t));
    w -= lr * mh / (std::sqrt(vh) + eps);
    EXPECT_NEAR(ps[0].value.data<float>()[0], w, 1e-5) << "step " << t;
  }
  // Adam's first step moves by lr whatever the gradient's size.
  Optimizer opt2(cfg);
  auto q = one_param(0.f, false);
  q[0].grad.data<float>()[0] = 1e-3f;
  opt2.step(q, 0.05f);
  EXPECT_NEAR(q[0].value.data<float>()[0], -0.05f, 1e-5);
}

TEST(TrainOptimizer, NoDecayParamsKeepTheirValueWithZeroGrad) {
  OptimizerConfig cfg;
  cfg.kind = OptimizerKind::kSgd;
  cfg.weight_decay = 0.5f;
  Optimizer opt(cfg);
  auto ps = one_param(3.f, false);
  opt.step(ps, 0.1f);
  EXPECT_EQ(ps[0].value.data<float>()[0], 3.f);
}

TEST(TrainOptimizer, LrFactorScalesOneParamsSteps) {
  for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kAdamW}) {
    OptimizerConfig cfg;
    cfg.kind = kind;
    cfg.weight_decay = 0.1f;
    cfg.lr_factor = {{"half", 0.5f}, {"frozen", 0.f}};
    Optimizer opt(cfg);
    std::vector<Param> ps;
    for (const char* name : {"w", "half", "frozen"}) {
      ps.push_back(one_param(1.f)[0]);
      ps.back().name = name;
      ps.back().grad.data<float>()[0] = 0.4f;
    }
    opt.step(ps, 0.1f);
    const float full = 1.f - ps[0].value.data<float>()[0];
    EXPECT_GT(full, 0.f);
    // One step from the same start and gradient: the move (weight decay
    // included) is linear in the lr, so half the factor moves half as far.
    EXPECT_NEAR(1.f - ps[1].value.data<float>()[0], 0.5f * full, 1e-6f) << static_cast<int>(kind);
    EXPECT_EQ(ps[2].value.data<float>()[0], 1.f) << static_cast<int>(kind);  // neither gradient nor decay moves it
  }
}

TEST(TrainOptimizer, Schedules) {
  EXPECT_FLOAT_EQ(scheduled_lr(ScheduleKind::kConstant, 0.1f, 7, 10), 0.1f);
  EXPECT_FLOAT_EQ(scheduled_lr(ScheduleKind::kCosine, 0.1f, 0, 10), 0.1f);
  EXPECT_NEAR(scheduled_lr(ScheduleKind::kCosine, 0.1f, 5, 10), 0.05f, 1e-7);
  EXPECT_NEAR(scheduled_lr(ScheduleKind::kCosine, 0.1f, 10, 10), 0.f, 1e-7);
  // One-cycle over 101 steps: up for 0.3*101-1 = 29.3 steps from lr/25 to lr, down to lr/25/1e4.
  EXPECT_NEAR(scheduled_lr(ScheduleKind::kOneCycle, 1.f, 0, 101), 0.04f, 1e-6);
  EXPECT_NEAR(scheduled_lr(ScheduleKind::kOneCycle, 1.f, 100, 101), 4e-6f, 1e-7);
  float peak = 0;
  for (int s = 0; s < 101; ++s) peak = std::max(peak, scheduled_lr(ScheduleKind::kOneCycle, 1.f, s, 101));
  EXPECT_GT(peak, 0.99f);
  EXPECT_LE(peak, 1.f);
  EXPECT_FALSE(parse_schedule("linear").ok());
  EXPECT_FALSE(parse_optimizer("adam").ok());
}

}  // namespace
}  // namespace qtk::train
