#include "quant/sensitivity/sensitivity.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>

#include "data/dataset.h"
#include "runtime/optimize.h"

namespace qtk::quant::sensitivity {
namespace {

const std::set<std::string> kWeighted = {"Conv", "ConvTranspose", "Gemm", "MatMul"};

// Weight trials leave activations float; activation trials keep weights in
// fp16 (near lossless): each trial sees one kind of error.
QuantConfig weight_trial(QuantConfig c, QFormat f) {
  c.activations = ActivationMode::kWeightOnly;
  c.fp16_weights = false;
  c.weight_format = f;
  return c;
}

QuantConfig activation_trial(QuantConfig c) {
  c.fp16_weights = true;
  c.method = WeightMethod::kRtn;
  return c;
}

}  // namespace

Expected<Model> prepare_model(const Model& model) {
  Model m = model;
  QTK_RETURN_IF_ERROR(rt::optimize_model(m));
  std::set<std::string> used;
  for (const auto& n : m.graph.nodes) used.insert(n.name);
  for (size_t i = 0; i < m.graph.nodes.size(); ++i) {
    ir::Node& n = m.graph.nodes[i];
    if (!n.name.empty()) continue;
    std::string name = n.op_type + "_" + (n.outputs.empty() ? std::to_string(i) : n.outputs[0]);
    while (used.count(name)) name += "_";
    used.insert(name);
    n.name = name;
  }
  return m;
}

std::vector<WeightedLayer> weighted_layers(const Model& prepared) {
  std::vector<WeightedLayer> out;
  const ir::Graph& g = prepared.graph;
  for (const auto& n : g.nodes) {
    if (!kWeighted.count(n.op_type) || !ir::is_default_domain(n.domain) || n.inputs.size() < 2) continue;
    const Tensor* w = n.inputs[1].empty() ? nullptr : g.find_initializer(n.inputs[1]);
    if (!w || (n.op_type == "MatMul" && w->rank() < 2)) continue;
    out.push_back({n.name, n.op_type, w->numel()});
  }
  return out;
}

QuantConfig only_layer_config(const Model& prepared, const QuantConfig& base, const std::string& node) {
  QuantConfig c = base;
  c.float_first_last = false;
  c.first_last_8bit = false;  // the layer gets exactly the formats asked for
  c.layer_precision.clear();
  const ir::Graph& g = prepared.graph;
  std::string output;
  for (const auto& n : g.nodes)
    if (n.name == node && !n.outputs.empty()) output = n.outputs[0];
  int readers = 0;
  for (const auto& n : g.nodes)
    readers += std::count(n.inputs.begin(), n.inputs.end(), output) > 0;
  for (const auto& n : g.nodes) {
    if (n.name == node) continue;
    const bool fused = readers == 1 && (n.op_type == "Relu" || n.op_type == "Clip") && !n.inputs.empty() &&
                       n.inputs[0] == output;
    if (!fused && std::find(c.exclude.begin(), c.exclude.end(), n.name) == c.exclude.end())
      c.exclude.push_back(n.name);
  }
  return c;
}

Status parallel_trials(int64_t n, int threads, const std::function<Status(int64_t)>& fn) {
  std::atomic<int64_t> next{0};
  std::mutex mu;
  Status first = Status::Ok();
  auto worker = [&] {
    for (int64_t i; (i = next.fetch_add(1)) < n;) {
      Status s = fn(i);
      if (s.ok()) continue;
      std::lock_guard<std::mutex> lock(mu);
      if (first.ok()) first = std::move(s);
      next = n;  // stop handing out work
    }
  };
  const int k = static_cast<int>(std::clamp<int64_t>(threads, 1, std::max<int64_t>(n, 1)));
  std::vector<std::thread> pool;
  for (int t = 1; t < k; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  return first;
}

CalibrationData calibration_subset(const CalibrationData& calib, int64_t n) {
  CalibrationData out;
  for (const Tensor& t : calib.inputs) {
    const int64_t total = t.rank() ? t.dim(0) : 0;
    if (n <= 0 || n >= total) {
      out.inputs.push_back(t);
      continue;
    }
    std::vector<int64_t> rows(n);
    for (int64_t i = 0; i < n; ++i) rows[i] = i * total / n;  // spread over the set
    out.inputs.push_back(data::take_rows(t, rows));
  }
  return out;
}

Expected<TrialContext> make_trial_context(const Model& model, const QuantConfig& config, const CalibrationData& calib,
                                          EvalSet val, int64_t stats_samples, int threads) {
  if (val.samples() == 0) return invalid_argument("the validation set is empty");
  TrialContext ctx;
  QTK_ASSIGN_OR_RETURN(ctx.prepared, prepare_model(model));
  if (weighted_layers(ctx.prepared).empty())
    return invalid_argument("the model has no Conv/ConvTranspose/Gemm/MatMul layer with constant weights");
  ctx.val = std::move(val);
  auto ref = model_outputs(ctx.prepared, ctx.val, threads);
  if (!ref.ok()) return ref.status().with_context("running the float model on the validation set");
  ctx.reference = std::move(*ref);
  ctx.float_accuracy = top1_accuracy(ctx.reference, ctx.val.labels);
  if (ctx.val.labelled() && static_cast<int64_t>(ctx.val.labels.size()) != ctx.reference.dim(0))
    return invalid_argument("the validation set has " + std::to_string(ctx.val.labels.size()) + " labels for " +
                            std::to_string(ctx.reference.dim(0)) + " samples");
  ctx.stats = calibration_subset(calib, stats_samples);
  if (config.activations == ActivationMode::kStatic) {
    if (calib.inputs.empty()) return invalid_argument("static activations need calibration data");
    QuantConfig c = config;
    c.method = WeightMethod::kRtn;  // only the ranges are wanted
    c.layer_precision.clear();
    c.exclude.clear();
    c.float_first_last = false;
    c.first_last_8bit = false;  // every range at the config's format, as the trials use them
    auto q = quantize(ctx.prepared, c, calib);
    if (!q.ok()) return q.status().with_context("calibrating activation ranges");
    ctx.ranges = std::move(q->ranges);
  }
  return ctx;
}

Expected<TrialResult> quantize_and_measure(const TrialContext& ctx, const QuantConfig& config, int threads) {
  QuantConfig c = config;
  c.progress = nullptr;  // trials report through the sweep's own progress
  c.threads = 1;
  QTK_ASSIGN_OR_RETURN(QuantResult q, quantize(ctx.prepared, c, ctx.stats, &ctx.ranges));
  auto out = model_outputs(q.model, ctx.val, threads);
  if (!out.ok()) return out.status().with_context("running the quantized model");
  TrialResult r;
  r.metrics = compare_outputs(ctx.reference, *out, ctx.val.labels);
  r.quantized = std::move(q);
  return r;
}

Expected<SensitivityReport> analyze_sensitivity(const TrialContext& ctx, const SensitivityOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<WeightedLayer> layers = weighted_layers(ctx.prepared);
  std::vector<QFormat> formats = o.weight_formats;
  if (formats.empty()) formats.push_back(o.config.weight_format);
  for (QFormat f : formats)
    if (!traits(f).is_signed || traits(f).bits > 8)
      return invalid_argument(std::string("weights in ") + traits(f).name + " cannot be swept (int8/int4/int3/int2)");
  const bool acts = o.sweep_activations && o.config.activations == ActivationMode::kStatic;
  QuantConfig base = o.config;
  if (!o.keep_method) base.method = WeightMethod::kRtn;

  SensitivityReport report;
  report.float_accuracy = ctx.float_accuracy;
  report.samples = ctx.val.samples();
  for (const auto& l : layers) report.layers.push_back({l, {}, std::nullopt});
  for (auto& s : report.layers)
    for (QFormat f : formats) s.weights.push_back({f, {}});
  const int64_t per_layer = static_cast<int64_t>(formats.size()) + (acts ? 1 : 0);
  const int64_t total = per_layer * static_cast<int64_t>(layers.size());
  std::atomic<int64_t> done{0};
  std::mutex progress_mu;
  Status s = parallel_trials(total, o.threads, [&](int64_t i) -> Status {
    const size_t li = static_cast<size_t>(i / per_layer);
    const size_t slot = static_cast<size_t>(i % per_layer);
    LayerSensitivity& ls = report.layers[li];
    const QuantConfig one = only_layer_config(ctx.prepared, base, ls.layer.node);
    const bool weight = slot < formats.size();
    auto r = quantize_and_measure(ctx, weight ? weight_trial(one, formats[slot]) : activation_trial(one));
    if (!r.ok())
      return r.status().with_context(ls.layer.node + " (" + ls.layer.op_type + "), " +
                                     (weight ? std::string(traits(formats[slot]).name) + " weights" : "activations"));
    if (weight) ls.weights[slot].second = r->metrics;
    else ls.activations = r->metrics;
    const int64_t d = ++done;
    if (o.progress) {
      std::lock_guard<std::mutex> lock(progress_mu);
      o.progress(d, total);
    }
    return Status::Ok();
  });
  QTK_RETURN_IF_ERROR(s);
  report.trials = total;
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

double sensitivity_score(const LayerSensitivity& s) {
  double worst = 1e300;
  for (const auto& [f, m] : s.weights) worst = std::min(worst, m.sqnr_db);
  if (s.activations) worst = std::min(worst, s.activations->sqnr_db);
  return worst;
}

}  // namespace qtk::quant::sensitivity
