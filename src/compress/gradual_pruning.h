// Pruning during fine-tuning (Zhu & Gupta 2017, "To prune, or not to
// prune"): the target sparsity ramps from s_i to s_f along a cubic, fast at
// first while the network still has redundancy and slowly at the end; masks
// are recomputed from the current weights as it ramps, and re-applied after
// every optimizer step so pruned weights stay exactly zero.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "compress/prunable_weights.h"
#include "compress/weight_masks.h"
#include "train/train_graph.h"

namespace qtk::compress {

// s_t = s_f + (s_i - s_f) * (1 - t / T)^3 for 0 <= t <= T, s_f after.
double cubic_sparsity(double initial, double final_sparsity, int64_t step, int64_t ramp_steps);

class GradualPruner {
 public:
  // `layers` must name parameters of `graph`. Magnitude masks ramp over
  // ramp_steps (updated every update_every steps); N:M masks are fixed at
  // the start (a pattern has no intermediate sparsity).
  GradualPruner(train::TrainGraph& graph, std::vector<WeightLayout> layers, MaskOptions target, int64_t ramp_steps,
                int64_t update_every = 1);

  // Masks at step 0, applied.
  Status start();
  // Instead of start() when training resumes after `step` optimizer steps
  // (a checkpoint): the masks of the last update before it, recomputed from
  // the checkpoint's weights, whose pruned entries are the zeros.
  Status resume_at(int64_t step);
  // For train::TrainOptions::after_step.
  Status after_step();
  // The target masks computed from the current weights and applied: the
  // state a fine-tuning run ends in whatever its length.
  Status finish();

  const MaskSet& masks() const { return masks_; }
  int64_t steps() const { return step_; }
  double current_sparsity() const { return current_; }

 private:
  Status remask(double sparsity);
  Status apply();
  train::TrainGraph& graph_;
  std::vector<WeightLayout> layers_;
  MaskOptions target_;
  int64_t ramp_steps_, update_every_;
  int64_t step_ = 0;
  double current_ = 0;
  MaskSet masks_;
  std::map<std::string, train::Param*> params_;
};

}  // namespace qtk::compress
