#include "quant/sensitivity/mixed_precision.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>

namespace qtk::quant::sensitivity {
namespace {

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

double average_bits(const std::vector<int>& state, const std::vector<int>& bits, const std::vector<int64_t>& params) {
  double num = 0, den = 0;
  for (size_t l = 0; l < state.size(); ++l) {
    num += static_cast<double>(bits[state[l]]) * static_cast<double>(params[l]);
    den += static_cast<double>(params[l]);
  }
  return den > 0 ? num / den : 0.0;
}

struct Measured {
  OutputMetrics metrics;
  QuantResult quantized;
};

// The layer_precision API is new: check that every layer got the width asked
// for, so a build that ignores it cannot pass off a uniform model as mixed.
Status check_assignment(const QuantReport& report, const std::vector<LayerAssignment>& layers) {
  for (const auto& a : layers) {
    const TensorQuantReport* w = nullptr;
    for (const auto& t : report.tensors)
      if (t.kind == "weight" && t.node == a.layer.node) w = &t;
    if (!a.weights) {
      if (w) return internal_error("layer " + a.layer.node + " was meant to stay float but got " + w->scheme);
      continue;
    }
    const std::string want = traits(*a.weights).name;
    if (!w || w->scheme.rfind(want + " ", 0) != 0)
      return internal_error("layer " + a.layer.node + " was meant to get " + want + " weights but got " +
                            (w ? w->scheme : std::string("none")) +
                            " (QuantConfig::layer_precision is not honoured by quantize())");
  }
  return Status::Ok();
}

}  // namespace

std::vector<std::vector<int>> precision_walk(const std::vector<std::vector<double>>& noise,
                                             const std::vector<int>& bits, const std::vector<int64_t>& params) {
  std::vector<int> state(noise.size(), 0);
  std::vector<std::vector<int>> walk = {state};
  for (;;) {
    int best_l = -1, best_k = -1;
    double best_eff = 0, best_saved = 0;
    for (size_t l = 0; l < noise.size(); ++l)
      for (size_t k = state[l] + 1; k < bits.size(); ++k) {
        const double saved = static_cast<double>(bits[state[l]] - bits[k]) * static_cast<double>(params[l]);
        if (saved <= 0) continue;
        const double eff = (noise[l][k] - noise[l][state[l]]) / saved;
        if (best_l < 0 || eff < best_eff || (eff == best_eff && saved > best_saved)) {
          best_l = static_cast<int>(l), best_k = static_cast<int>(k), best_eff = eff, best_saved = saved;
        }
      }
    if (best_l < 0) break;
    state[best_l] = best_k;
    walk.push_back(state);
  }
  return walk;
}

std::vector<int> raise_within_budget(std::vector<int> state, const std::vector<std::vector<double>>& noise,
                                     const std::vector<int>& bits, const std::vector<int64_t>& params,
                                     double budget) {
  for (;;) {
    int best_l = -1, best_k = -1;
    double best_gain = 0;
    for (size_t l = 0; l < state.size(); ++l)
      for (int k = 0; k < state[l]; ++k) {
        std::vector<int> next = state;
        next[l] = k;
        if (average_bits(next, bits, params) > budget + 1e-9) continue;
        const double cost = static_cast<double>(bits[k] - bits[state[l]]) * static_cast<double>(params[l]);
        const double gain = (noise[l][state[l]] - noise[l][k]) / std::max(cost, 1.0);
        if (gain > best_gain) best_l = static_cast<int>(l), best_k = k, best_gain = gain;
      }
    if (best_l < 0) return state;
    state[best_l] = best_k;
  }
}

Expected<MixedPrecisionResult> quantize_mixed_precision(const Model& model, const QuantConfig& config,
                                                        const CalibrationData& calib, EvalSet val,
                                                        const MixedPrecisionOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (!o.target_bits && !o.target_drop)
    return invalid_argument("mixed precision needs a target: average weight bits and/or an accuracy drop");
  if (o.target_bits && !(*o.target_bits > 0))
    return invalid_argument("the average-bits target must be positive, got " + fixed(*o.target_bits, 2));
  if (o.target_drop && !(*o.target_drop >= 0))
    return invalid_argument("the accuracy-drop target must be 0 or more points, got " + fixed(*o.target_drop, 2));
  if (o.target_drop && !val.labelled())
    return invalid_argument("an accuracy-drop target needs labelled validation data (a data set such as "
                            "fashion-mnist:test, not an .npy/.npz file)");
  if (config.fp16_weights) return invalid_argument("mixed precision chooses integer weight widths, not fp16");
  if (o.weight_formats.empty()) return invalid_argument("mixed precision needs at least one weight format");

  QTK_ASSIGN_OR_RETURN(TrialContext ctx, make_trial_context(model, config, calib, std::move(val), 0, o.threads));
  TrialContext sweep_ctx = ctx;
  sweep_ctx.stats = calibration_subset(ctx.stats, o.sweep_stats_samples);
  SensitivityOptions so;
  so.config = config;
  so.weight_formats = o.weight_formats;
  // Activations below 8 bits: also sweep them, to know whose to widen if
  // the accuracy target needs it.
  const bool narrow_acts = config.activations == ActivationMode::kStatic && traits(config.activation_format).bits < 8;
  const QFormat wide_act = traits(config.activation_format).is_signed ? QFormat::kInt8 : QFormat::kUInt8;
  so.sweep_activations = narrow_acts && o.target_drop.has_value();
  so.threads = o.threads;
  if (o.progress) so.progress = [&](int64_t d, int64_t t) { o.progress("sweep", d, t); };
  MixedPrecisionResult result;
  QTK_ASSIGN_OR_RETURN(result.sweep, analyze_sensitivity(sweep_ctx, so));
  result.float_accuracy = ctx.float_accuracy;

  // Options per layer, most precise first; noise as 1/SQNR (linear).
  std::vector<std::optional<QFormat>> options;
  if (o.allow_float) options.push_back(std::nullopt);
  for (QFormat f : o.weight_formats) options.push_back(f);
  std::vector<int> bits;
  for (const auto& f : options) bits.push_back(f ? traits(*f).bits : 32);
  std::vector<std::vector<double>> noise;
  std::vector<int64_t> params;
  for (const auto& ls : result.sweep.layers) {
    std::vector<double> row;
    if (o.allow_float) row.push_back(0.0);
    for (const auto& [f, m] : ls.weights) row.push_back(std::pow(10.0, -m.sqnr_db / 10.0));
    noise.push_back(std::move(row));
    params.push_back(ls.layer.params);
  }
  const auto walk = precision_walk(noise, bits, params);

  // Layers by activation sensitivity (most first), for widening.
  std::vector<size_t> act_order;
  for (size_t l = 0; l < result.sweep.layers.size(); ++l)
    if (result.sweep.layers[l].activations) act_order.push_back(l);
  std::stable_sort(act_order.begin(), act_order.end(), [&](size_t a, size_t b) {
    return result.sweep.layers[a].activations->sqnr_db < result.sweep.layers[b].activations->sqnr_db;
  });
  using State = std::vector<int>;
  auto assignment = [&](const State& st, size_t widened) {
    std::vector<LayerAssignment> out;
    for (size_t l = 0; l < st.size(); ++l) {
      const int k = st[l];
      LayerAssignment a{result.sweep.layers[l].layer, options[k], bits[k], 200.0, std::nullopt};
      for (size_t i = 0; i < widened && i < act_order.size(); ++i)
        if (act_order[i] == l && options[k]) a.activations = wide_act;
      if (options[k]) a.sweep_sqnr_db = result.sweep.layers[l].weights[k - (o.allow_float ? 1 : 0)].second.sqnr_db;
      out.push_back(std::move(a));
    }
    return out;
  };
  std::map<std::pair<State, size_t>, Measured> measured;
  const int64_t verify_bound = 2 + static_cast<int64_t>(std::ceil(std::log2(static_cast<double>(walk.size()) + 1)));
  auto measure = [&](const State& st, size_t widened = 0) -> Expected<const Measured*> {
    if (auto it = measured.find({st, widened}); it != measured.end()) return &it->second;
    const auto layers = assignment(st, widened);
    QuantConfig c = config;
    c.layer_precision.clear();
    for (const auto& a : layers) {
      LayerPrecision p;
      if (a.weights) p.weights = *a.weights;
      else p.keep_float = true;
      p.activations = a.activations;
      c.layer_precision[a.layer.node] = p;
    }
    auto r = quantize_and_measure(ctx, c, o.threads);
    if (!r.ok()) return r.status().with_context("mixed precision candidate");
    QTK_RETURN_IF_ERROR(check_assignment(r->quantized.report, layers));
    result.checked.push_back({average_bits(st, bits, params), r->metrics.accuracy, r->metrics.sqnr_db});
    if (o.progress) o.progress("verify", static_cast<int64_t>(measured.size()) + 1, verify_bound);
    auto& m = measured[{st, widened}];
    m.metrics = r->metrics;
    m.quantized = std::move(r->quantized);
    return &m;
  };
  auto drop_points = [&](const Measured* m) { return (ctx.float_accuracy - m->metrics.accuracy) * 100.0; };

  // The most precise candidate within the bit budget (or the least precise
  // of all when none is), then spend what the walk's last step left unused.
  size_t lo = 0;
  bool bits_ok = true;
  if (o.target_bits) {
    lo = walk.size() - 1;
    bits_ok = false;
    for (size_t i = 0; i < walk.size(); ++i)
      if (average_bits(walk[i], bits, params) <= *o.target_bits + 1e-9) {
        lo = i, bits_ok = true;
        break;
      }
  }
  State chosen = walk[lo];
  if (o.target_bits && bits_ok) chosen = raise_within_budget(chosen, noise, bits, params, *o.target_bits);
  QTK_ASSIGN_OR_RETURN(const Measured* at_lo, measure(chosen));
  bool drop_ok = !o.target_drop || drop_points(at_lo) <= *o.target_drop + 1e-9;
  if (o.target_drop && drop_ok && !o.target_bits) {
    // The lowest-bit candidate whose measured drop holds (the walk adds noise
    // at every step, so the drop grows along it, up to measurement noise).
    size_t good = lo, hi = walk.size() - 1;
    while (good < hi) {
      const size_t mid = (good + hi + 1) / 2;
      QTK_ASSIGN_OR_RETURN(const Measured* m, measure(walk[mid]));
      if (drop_points(m) <= *o.target_drop + 1e-9) good = mid;
      else hi = mid - 1;
    }
    chosen = walk[good];
  }
  // Still short with narrow activations: widen the most sensitive layers'
  // activations to 8 bits, as few as the measured drop allows.
  size_t widened = 0;
  if (!drop_ok && !act_order.empty()) {
    QTK_ASSIGN_OR_RETURN(const Measured* all, measure(chosen, act_order.size()));
    widened = act_order.size();
    if (drop_points(all) <= *o.target_drop + 1e-9) {
      drop_ok = true;
      size_t bad = 0;
      while (widened - bad > 1) {
        const size_t mid = (bad + widened) / 2;
        QTK_ASSIGN_OR_RETURN(const Measured* m, measure(chosen, mid));
        if (drop_points(m) <= *o.target_drop + 1e-9) widened = mid;
        else bad = mid;
      }
    }
  }
  const Measured& final = measured.at({chosen, widened});
  result.layers = assignment(chosen, widened);
  result.average_bits = average_bits(chosen, bits, params);
  result.metrics = final.metrics;
  result.quantized = final.quantized;
  result.met = bits_ok && drop_ok;
  std::string what = fixed(result.average_bits, 2) + " average weight bits";
  if (o.target_bits) what += std::string(bits_ok ? " (<= " : " (target ") + fixed(*o.target_bits, 2) + ")";
  if (widened > 0) what += ", activations of " + std::to_string(widened) + " layers widened to " + traits(wide_act).name;
  if (ctx.val.labelled()) {
    const double drop = drop_points(&final);
    what += ", accuracy " + fixed(final.metrics.accuracy, 4) + " vs float " + fixed(ctx.float_accuracy, 4) + " (" +
            (drop >= 0 ? "-" : "+") + fixed(std::fabs(drop), 2) + " points";
    if (o.target_drop) what += std::string(drop_ok ? ", limit " : ", target ") + fixed(*o.target_drop, 2);
    what += ")";
  }
  result.verdict = result.met ? "target met: " + what
                              : "target NOT met; closest assignment found: " + what;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace qtk::quant::sensitivity
