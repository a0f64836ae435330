// Parameter updates (SGD with momentum, AdamW) and learning-rate schedules
// (constant, cosine, one-cycle), following PyTorch's definitions so that
// hyper-parameters carry over.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "qtk/status.h"
#include "train/train_graph.h"

namespace qtk::train {

enum class OptimizerKind { kSgd, kAdamW };
enum class ScheduleKind { kConstant, kCosine, kOneCycle };

Expected<OptimizerKind> parse_optimizer(const std::string& s);  // "sgd" | "adamw"
Expected<ScheduleKind> parse_schedule(const std::string& s);    // "constant" | "cosine" | "onecycle"

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::kAdamW;
  float momentum = 0.9f;  // SGD
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;  // AdamW
  // SGD: L2 added to the gradient (torch.optim.SGD); AdamW: decoupled,
  // w *= 1 - lr * wd (torch.optim.AdamW). Only params with decay = true.
  float weight_decay = 0.f;
  // Per-param learning-rate factors by name (1 for params not listed): QAT
  // gives its quantization scales their own rate (0 keeps them fixed).
  std::map<std::string, float> lr_factor;
};

// What an optimizer carries from one step to the next (for checkpoints),
// besides its step count (which TrainState::step holds): the buffers of
// every param by name: SGD's momentum in m, AdamW's first and second moments
// in m and v. Empty maps before the first step.
struct OptimizerState {
  OptimizerKind kind = OptimizerKind::kAdamW;
  std::map<std::string, std::vector<float>> m, v;
};

class Optimizer {
 public:
  explicit Optimizer(OptimizerConfig cfg) : cfg_(cfg) {}
  // One update of every param from its grad at learning rate lr.
  // Elements are independent, so splitting them over `pool` gives the same
  // values as one thread.
  void step(std::vector<Param>& params, float lr, rt::ThreadPool* pool = nullptr);
  // Steps taken: AdamW's bias correction; SGD seeds its buffer on step 1.
  int64_t steps() const { return t_; }
  // The buffers of `params` (the list step() is given) and their
  // restoration after `steps` steps; restore fails naming the param when the
  // state was written by the other optimizer kind or does not match a
  // param's name or size.
  OptimizerState state(const std::vector<Param>& params) const;
  Status restore(const OptimizerState& s, const std::vector<Param>& params, int64_t steps);

 private:
  OptimizerConfig cfg_;
  int64_t t_ = 0;
  std::vector<std::vector<float>> m_, v_;  // momentum / first and second moments, per param
  // Elements [b, e) of params[i].
  void update(Param& p, size_t i, int64_t b, int64_t e, float lr, double bc1, double bc2);
};

// Learning rate at step `step` of `total` (0-based), peak `lr`.
// cosine: lr * (1 + cos(pi * step / total)) / 2.
// onecycle (torch OneCycleLR defaults, cosine annealing): from lr/25 up to lr
// over the first 30% of steps, then down to lr/25/1e4.
float scheduled_lr(ScheduleKind kind, float lr, int64_t step, int64_t total);

}  // namespace qtk::train
