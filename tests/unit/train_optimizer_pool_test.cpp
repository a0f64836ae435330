// Optimizer::step split over a pool (one split of all parameters' elements,
// crossing parameter borders) gives the one-thread values bit for bit, for
// both optimizers, and touches every element exactly once.
#include <gtest/gtest.h>

#include "runtime/thread_pool.h"
#include "test_models.h"
#include "train/optimizer.h"

namespace qtk::train {
namespace {

// Sizes around the split's 16-float blocks, with an empty tensor and
// tensors small enough to fall wholly inside one worker's range.
std::vector<Param> params(uint32_t seed) {
  std::vector<Param> ps;
  const std::vector<int64_t> sizes = {40000, 3, 0, 30001, 17, 16, 50000};
  for (size_t i = 0; i < sizes.size(); ++i) {
    Param p;
    p.name = "p" + std::to_string(i);
    p.value = testing::uniform_tensor({sizes[i]}, seed + static_cast<uint32_t>(i), -1.f, 1.f);
    p.grad = testing::uniform_tensor({sizes[i]}, seed + 100 + static_cast<uint32_t>(i), 0.02f, 0.1f);  // away from 0: every update shows
    p.decay = i % 2 == 0;
    ps.push_back(p);
  }
  return ps;
}

TEST(TrainOptimizerPool, PooledStepEqualsOneThread) {
  rt::ThreadPool pool(3);
  for (OptimizerKind kind : {OptimizerKind::kAdamW, OptimizerKind::kSgd}) {
    SCOPED_TRACE(kind == OptimizerKind::kSgd ? "sgd" : "adamw");
    OptimizerConfig cfg;
    cfg.kind = kind;
    cfg.weight_decay = 0.01f;  // under the gradients: every update moves its weight
    Optimizer one(cfg), many(cfg);
    auto a = params(1), b = params(1);
    const auto before = params(1);
    for (int step = 0; step < 3; ++step) {
      one.step(a, 0.01f);
      many.step(b, 0.01f, &pool);
    }
    for (size_t i = 0; i < a.size(); ++i)
      for (int64_t j = 0; j < a[i].value.numel(); ++j) {
        ASSERT_EQ(a[i].value.data<float>()[j], b[i].value.data<float>()[j]) << a[i].name << " element " << j;
        ASSERT_NE(a[i].value.data<float>()[j], before[i].value.data<float>()[j]) << a[i].name << " element " << j
                                                                                  << " was not updated";
      }
  }
}

}  // namespace
}  // namespace qtk::train
