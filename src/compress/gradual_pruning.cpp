#include "compress/gradual_pruning.h"

#include <algorithm>
#include <cmath>

namespace qtk::compress {

double cubic_sparsity(double initial, double final_sparsity, int64_t step, int64_t ramp_steps) {
  if (ramp_steps <= 0 || step >= ramp_steps) return final_sparsity;
  const double left = 1.0 - static_cast<double>(std::max<int64_t>(step, 0)) / static_cast<double>(ramp_steps);
  return final_sparsity + (initial - final_sparsity) * left * left * left;
}

GradualPruner::GradualPruner(train::TrainGraph& graph, std::vector<WeightLayout> layers, MaskOptions target,
                             int64_t ramp_steps, int64_t update_every)
    : graph_(graph),
      layers_(std::move(layers)),
      target_(target),
      ramp_steps_(std::max<int64_t>(ramp_steps, 0)),
      update_every_(std::max<int64_t>(update_every, 1)) {
  for (auto& p : graph_.params()) params_[p.name] = &p;
}

Status GradualPruner::remask(double sparsity) {
  MaskOptions o = target_;
  if (o.method == PruneMethod::kMagnitude) {
    // The first/last layers ramp in proportion.
    if (o.edge_sparsity >= 0 && target_.sparsity > 0) o.edge_sparsity = target_.edge_sparsity * sparsity / target_.sparsity;
    o.sparsity = sparsity;
  }
  auto lookup = [this](const std::string& n) -> const Tensor* {
    auto it = params_.find(n);
    return it == params_.end() ? nullptr : &it->second->value;
  };
  QTK_ASSIGN_OR_RETURN(masks_, make_masks(layers_, lookup, o));
  current_ = sparsity;
  return apply();
}

Status GradualPruner::apply() {
  for (const auto& [name, mask] : masks_) {
    auto it = params_.find(name);
    if (it == params_.end()) return not_found("pruned weight '" + name + "' is not a trainable parameter");
    QTK_RETURN_IF_ERROR(apply_mask(it->second->value, mask, name));
  }
  return Status::Ok();
}

Status GradualPruner::start() {
  step_ = 0;
  if (target_.method == PruneMethod::kNofM) return remask(target_.sparsity);
  return remask(cubic_sparsity(0.0, target_.sparsity, 0, ramp_steps_));
}

Status GradualPruner::resume_at(int64_t step) {
  step_ = std::max<int64_t>(step, 0);
  if (target_.method == PruneMethod::kNofM) return remask(target_.sparsity);
  // after_step updates at multiples of update_every_ and at ramp_steps_.
  const int64_t last = step_ >= ramp_steps_ ? ramp_steps_ : step_ / update_every_ * update_every_;
  return remask(cubic_sparsity(0.0, target_.sparsity, last, ramp_steps_));
}

Status GradualPruner::after_step() {
  ++step_;
  if (target_.method == PruneMethod::kMagnitude && step_ <= ramp_steps_ &&
      (step_ % update_every_ == 0 || step_ == ramp_steps_))
    return remask(cubic_sparsity(0.0, target_.sparsity, step_, ramp_steps_));
  return apply();
}

Status GradualPruner::finish() {
  if (target_.method == PruneMethod::kMagnitude && current_ != target_.sparsity) return remask(target_.sparsity);
  return apply();
}

}  // namespace qtk::compress
