#include "train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "train/conv_geometry.h"

namespace qtk::train {

Expected<OptimizerKind> parse_optimizer(const std::string& s) {
  if (s == "sgd") return OptimizerKind::kSgd;
  if (s == "adamw") return OptimizerKind::kAdamW;
  return invalid_argument("unknown optimizer '" + s + "' (known: sgd, adamw)");
}

Expected<ScheduleKind> parse_schedule(const std::string& s) {
  if (s == "constant") return ScheduleKind::kConstant;
  if (s == "cosine") return ScheduleKind::kCosine;
  if (s == "onecycle") return ScheduleKind::kOneCycle;
  return invalid_argument("unknown schedule '" + s + "' (known: constant, cosine, onecycle)");
}

void Optimizer::step(std::vector<Param>& params, float lr, rt::ThreadPool* pool) {
  if (m_.size() != params.size()) {
    m_.assign(params.size(), {});
    v_.assign(params.size(), {});
    for (size_t i = 0; i < params.size(); ++i) {
      m_[i].assign(static_cast<size_t>(params[i].value.numel()), 0.f);
      if (cfg_.kind == OptimizerKind::kAdamW) v_[i].assign(m_[i].size(), 0.f);
    }
  }
  ++t_;
  const double bc1 = 1.0 - std::pow(static_cast<double>(cfg_.beta1), static_cast<double>(t_));
  const double bc2 = 1.0 - std::pow(static_cast<double>(cfg_.beta2), static_cast<double>(t_));
  // One split of all parameters' elements over the pool (resnet20 has 65
  // tensors, most far too small to split on their own).
  std::vector<int64_t> start(params.size() + 1, 0);
  for (size_t i = 0; i < params.size(); ++i) start[i + 1] = start[i] + params[i].value.numel();
  parallel_elements(pool, start.back(), [&](int64_t lo, int64_t hi) {
    size_t i = static_cast<size_t>(std::upper_bound(start.begin(), start.end(), lo) - start.begin()) - 1;
    for (; i < params.size() && start[i] < hi; ++i)
      update(params[i], i, std::max(lo, start[i]) - start[i], std::min(hi, start[i + 1]) - start[i], lr, bc1, bc2);
  });
}

void Optimizer::update(Param& p, size_t i, int64_t b, int64_t e, float lr, double bc1, double bc2) {
  float* w = p.value.data<float>();
  const float* g = p.grad.data<float>();
  float* m = m_[i].data();
  const float wd = p.decay ? cfg_.weight_decay : 0.f;
  if (!cfg_.lr_factor.empty())
    if (auto it = cfg_.lr_factor.find(p.name); it != cfg_.lr_factor.end()) lr *= it->second;
  if (cfg_.kind == OptimizerKind::kSgd) {
    // torch.optim.SGD: the first step seeds the buffer with the gradient.
    for (int64_t j = b; j < e; ++j) {
      const float gj = g[j] + wd * w[j];
      m[j] = t_ == 1 ? gj : cfg_.momentum * m[j] + gj;
      w[j] -= lr * m[j];
    }
  } else {
    float* v = v_[i].data();
    const float step = static_cast<float>(lr / bc1), inv_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
    for (int64_t j = b; j < e; ++j) {
      w[j] *= 1.f - lr * wd;
      m[j] = cfg_.beta1 * m[j] + (1.f - cfg_.beta1) * g[j];
      v[j] = cfg_.beta2 * v[j] + (1.f - cfg_.beta2) * g[j] * g[j];
      w[j] -= step * m[j] / (std::sqrt(v[j]) * inv_bc2 + cfg_.eps);
    }
  }
}

OptimizerState Optimizer::state(const std::vector<Param>& params) const {
  OptimizerState s;
  s.kind = cfg_.kind;
  if (m_.size() != params.size()) return s;  // no step taken yet
  for (size_t i = 0; i < params.size(); ++i) {
    s.m[params[i].name] = m_[i];
    if (cfg_.kind == OptimizerKind::kAdamW) s.v[params[i].name] = v_[i];
  }
  return s;
}

Status Optimizer::restore(const OptimizerState& s, const std::vector<Param>& params, int64_t steps) {
  auto name = [](OptimizerKind k) { return k == OptimizerKind::kSgd ? "sgd" : "adamw"; };
  if (s.kind != cfg_.kind)
    return invalid_argument(std::string("optimizer state is for ") + name(s.kind) + ", not " + name(cfg_.kind));
  if (steps < 0) return invalid_argument("optimizer state has a negative step count");
  m_.clear();
  v_.clear();
  t_ = steps;
  if (steps == 0 && s.m.empty() && s.v.empty()) return Status::Ok();
  const bool adamw = cfg_.kind == OptimizerKind::kAdamW;
  if (s.m.size() != params.size() || (adamw && s.v.size() != params.size()))
    return invalid_argument("optimizer state holds buffers for " + std::to_string(s.m.size()) +
                            " parameters, the model has " + std::to_string(params.size()));
  std::vector<std::vector<float>> m, v;
  for (const Param& p : params) {
    const size_t n = static_cast<size_t>(p.value.numel());
    auto mi = s.m.find(p.name);
    auto vi = s.v.find(p.name);
    if (mi == s.m.end() || (adamw && vi == s.v.end()))
      return invalid_argument("optimizer state has no buffer for parameter '" + p.name + "'");
    if (mi->second.size() != n || (adamw && vi->second.size() != n))
      return invalid_argument("optimizer state of parameter '" + p.name + "' has " +
                              std::to_string(mi->second.size()) + " values, the parameter " + std::to_string(n));
    m.push_back(mi->second);
    v.push_back(adamw ? vi->second : std::vector<float>{});
  }
  m_ = std::move(m);
  v_ = std::move(v);
  return Status::Ok();
}

float scheduled_lr(ScheduleKind kind, float lr, int64_t step, int64_t total) {
  constexpr double kPi = std::numbers::pi;
  const double t = total > 0 ? static_cast<double>(step) / static_cast<double>(total) : 0.0;
  switch (kind) {
    case ScheduleKind::kConstant: return lr;
    case ScheduleKind::kCosine: return static_cast<float>(lr * 0.5 * (1.0 + std::cos(kPi * t)));
    case ScheduleKind::kOneCycle: {
      const double lo = lr / 25.0, end = lo / 1e4;
      const double up_steps = 0.3 * static_cast<double>(total) - 1.0;  // torch: pct_start * total - 1
      const double s = static_cast<double>(step);
      auto cos_anneal = [&](double a, double b, double f) { return b + (a - b) / 2.0 * (1.0 + std::cos(kPi * f)); };
      if (s <= up_steps) return static_cast<float>(cos_anneal(lo, lr, up_steps > 0 ? s / up_steps : 1.0));
      const double down = static_cast<double>(total) - 1.0 - up_steps;
      return static_cast<float>(cos_anneal(lr, end, down > 0 ? std::min(1.0, (s - up_steps) / down) : 1.0));
    }
  }
  return lr;
}

}  // namespace qtk::train
