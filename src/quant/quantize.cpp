// The post-training quantization pipeline: optimize → annotate → calibrate →
// write QDQ (→ QOperator) → report.
#include "qtk/quantize.h"

#include <algorithm>
#include <chrono>

#include "ir/passes.h"
#include "quant/algos/cross_layer_equalization.h"
#include "quant/algos/smooth_quant.h"
#include "quant/algos/weight_method.h"
#include "quant/graph/annotate.h"
#include "quant/graph/calibrate.h"
#include "quant/graph/layer_precision.h"
#include "quant/graph/qdq_writer.h"
#include "quant/graph/qoperator_writer.h"
#include "qtk/session.h"
#include "runtime/optimize.h"

namespace qtk {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Follows data-movement links to the tensor whose range is calibrated.
std::string range_root(const quant::QuantPlan& plan, std::string t) {
  for (int guard = 0; guard < 1000; ++guard) {
    auto it = plan.same_range.find(t);
    if (it == plan.same_range.end()) break;
    t = it->second;
  }
  return t;
}

// Inputs of weighted nodes whose per-channel E[x^2] guides weight clipping
// (tensor -> channel axis). Needs calibration data and the clipping search.
std::map<std::string, int> importance_axes(const ir::Graph& g, const quant::QuantPlan& plan, const QuantConfig& c,
                                           const CalibrationData& calib) {
  std::map<std::string, int> axes;
  if (!(c.weight_clip_search || c.bias_correction) || c.fp16_weights || calib.inputs.empty()) return axes;
  for (const auto& use : plan.weights) {
    const ir::Node& n = g.nodes[use.node];
    if (n.inputs.empty() || n.inputs[0].empty() || g.find_initializer(n.inputs[0])) continue;
    if (n.op_type == "Conv" || n.op_type == "ConvTranspose") axes[n.inputs[0]] = 1;
    else if (n.op_type == "MatMul" || (n.op_type == "Gemm" && n.attr_int("transA", 0) == 0)) axes[n.inputs[0]] = -1;
  }
  return axes;
}

// How each weighted layer's input below 8 bits is quantized in the exported
// model: GPTQ/AdaRound fit those layers to their quantized inputs. Measured
// at W4A4 (MSE ranges, bench/quant_accuracy.sh): top-1 drop summed over the
// four shared models 0.68 points with, 0.91 without (resnet20 alone: 0.69
// with, 0.39 without). 8-bit inputs are close enough to float to skip it.
quant::InputQuantMap layer_input_quant(const quant::QuantPlan& plan, const ActivationRanges& ranges,
                                       const QuantConfig& c) {
  quant::InputQuantMap out;
  if (c.activations != ActivationMode::kStatic) return out;
  for (const auto& [t, r] : ranges) {
    const quant::QFormat f = quant::activation_format_of(plan, c, t);
    if (quant::traits(f).bits < 8) out[t] = {quant::qparams_linear(r.min, r.max, f, c.activation_symmetric), f};
  }
  return out;
}

// Whether SmoothQuant runs: as asked, else off. Measured on vit_fm (the one
// model with LayerNorm -> MatMul; models/README.md): top-1 within 0.1 point
// of plain at W8A8 (0.8485 vs 0.8483) and W4A8 (0.8491 vs 0.8498), at alpha
// 0.25/0.5/0.75 alike; its activations have no outlier channels for it to move.
bool resolve_smooth_quant(const QuantConfig& c) { return c.smooth_quant.value_or(false); }

Status check_config(const QuantConfig& c) {
  const auto& w = quant::traits(c.weight_format);
  if (w.bits > 8) return invalid_argument(std::string("weights in ") + w.name + " are not supported (8 bits at most)");
  if (c.activations == ActivationMode::kDynamic && c.activation_format != quant::QFormat::kUInt8)
    return invalid_argument("dynamic activations are uint8 (as DynamicQuantizeLinear defines them)");
  if (c.activations != ActivationMode::kWeightOnly && quant::weight_only_format(c.activation_format))
    return invalid_argument(std::string("activations in ") + quant::traits(c.activation_format).name +
                            ": a weight format, not one for activations");
  // Static activations below 8 bits: 4-bit ONNX types (opset 21), or codes
  // clamped to the narrow range in 8-bit tensors (qdq_writer.cpp).
  return quant::check_layer_precision(c);
}

}  // namespace

const char* weight_method_name(WeightMethod m) {
  switch (m) {
    case WeightMethod::kAuto: return "auto";
    case WeightMethod::kRtn: return "rtn";
    case WeightMethod::kGptq: return "gptq";
    case WeightMethod::kAdaRound: return "adaround";
  }
  return "?";
}

WeightMethod resolve_weight_method(const QuantConfig& c) {
  if (c.method != WeightMethod::kAuto) return c.method;
  // 8-bit rounding error is far below what the models notice; only narrow
  // grids gain from choosing roundings.
  if (c.fp16_weights || quant::traits(c.weight_format).bits >= quant::kAutoRoundToNearestBits ||
      c.mapping != Mapping::kLinear)
    return WeightMethod::kRtn;
  // Measured (bench/quant_accuracy.sh, the --method rows; output SQNR of
  // the test models in adaround_test.cpp): on every shared model AdaRound
  // stays within 0.3 points at W4A8 and 2.4 at W2A8 (rounding to nearest
  // collapses: 47.8). GPTQ (with its refit) is as good at W2A8 per channel
  // and 2-10x faster, but loses more summed over the W4A8, W4 weight-only
  // and W2A8 group rows, so it is auto's choice only for layers too wide
  // for AdaRound.
  return WeightMethod::kAdaRound;
}

Expected<QuantResult> quantize(const Model& float_model, const QuantConfig& config, const CalibrationData& calib,
                               const ActivationRanges* cached_ranges) {
  QTK_RETURN_IF_ERROR(check_config(config));
  const auto t0 = std::chrono::steady_clock::now();
  QuantResult result;
  result.model = float_model;
  Model& m = result.model;
  QTK_RETURN_IF_ERROR(rt::optimize_model(m));
  // Static quantization calibrates by running the model: it must build as a
  // session (each node's op, inputs and attributes checked by its kernel),
  // checked before any pass reads the nodes. Weight-only and dynamic
  // exports need not run it here (another runtime may have its ops).
  if (config.activations == ActivationMode::kStatic)
    if (auto built = Session::create(m); !built.ok()) return built.status().with_context("the float model");
  std::vector<std::string> equalize_warnings;
  if (config.equalize) {
    auto eq = quant::algos::equalize_cross_layer(m.graph);
    if (!eq.ok()) return eq.status().with_context("cross-layer equalization");
    result.report.equalized = true;
    if (eq->pairs == 0)
      equalize_warnings.push_back("equalization: no Conv/Gemm pair joined by Relu (or nothing) to equalize");
    for (const auto& why : eq->skipped) equalize_warnings.push_back("equalization skipped " + why);
  }
  std::vector<std::string> smooth_notes;
  ActivationRanges cached_unsmoothed;  // the cache less the tensors SmoothQuant rescaled
  if (resolve_smooth_quant(config)) {
    auto sq = quant::algos::smooth_quant(m, calib, config, config.smooth_quant_alpha);
    if (!sq.ok()) return sq.status().with_context("SmoothQuant");
    if (sq->smoothed.empty())
      equalize_warnings.push_back("SmoothQuant: no MatMul/Gemm input whose producer can absorb a scale");
    for (const auto& s : sq->smoothed) smooth_notes.push_back("SmoothQuant: " + s);
    for (const auto& why : sq->skipped) smooth_notes.push_back("SmoothQuant left alone " + why);
    if (cached_ranges && !sq->tensors.empty()) {
      cached_unsmoothed = *cached_ranges;
      for (const auto& t : sq->tensors) cached_unsmoothed.erase(t);
      cached_ranges = &cached_unsmoothed;
    }
  }
  quant::QuantPlan plan = quant::annotate(m.graph, config);
  result.report.float_nodes = plan.float_nodes;
  result.report.warnings = std::move(equalize_warnings);
  result.report.warnings.insert(result.report.warnings.end(), plan.warnings.begin(), plan.warnings.end());
  result.report.notes = plan.notes;
  result.report.notes.insert(result.report.notes.end(), smooth_notes.begin(), smooth_notes.end());

  // Calibrate the root of every range that is not cached, and measure the
  // input importance of weighted nodes for the weight clipping search.
  quant::CalibrationFacts facts;
  std::vector<std::string> todo;
  // Ranges for a format other than the config's (layer_precision) are chosen
  // for that format, so they neither come from nor go to the cache.
  std::map<std::string, quant::QFormat> own_format;
  ActivationRanges own_ranges;
  if (config.activations == ActivationMode::kStatic) {
    std::set<std::string> roots;
    for (const auto& t : plan.activations) roots.insert(range_root(plan, t));
    for (const auto& r : roots) {
      if (const auto f = quant::activation_format_of(plan, config, r); f != config.activation_format)
        own_format[r] = f;
      if (cached_ranges && cached_ranges->count(r) && !own_format.count(r)) result.ranges[r] = cached_ranges->at(r);
      else todo.push_back(r);
    }
  }
  const auto moments = importance_axes(m.graph, plan, config, calib);
  const auto tc = std::chrono::steady_clock::now();
  if (!todo.empty() || !moments.empty()) {
    auto cal = quant::calibrate(m, todo, calib, config, moments, own_format);
    // Without static ranges to choose, the pass only weighs the weighted
    // layers' inputs for the clipping search: say so, not "calibration".
    if (!cal.ok())
      return cal.status().with_context(todo.empty() ? "running the float model on the calibration data (input "
                                                      "importance for the weight search)"
                                                    : "calibration");
    for (auto& [k, v] : cal->ranges) (own_format.count(k) ? own_ranges : result.ranges)[k] = v;
    facts.samples = std::move(cal->first_batch);
    facts.importance = std::move(cal->channel_sq_mean);
    if (config.bias_correction) facts.input_mean = std::move(cal->channel_mean);
    result.report.calib_samples = cal->samples;
    result.report.nonfinite_skipped = cal->nonfinite;
    if (cal->nonfinite > 0)
      result.report.warnings.push_back(std::to_string(cal->nonfinite) +
                                       " NaN/Inf activation values were skipped during calibration");
  }
  result.report.calib_seconds = seconds_since(tc);
  for (const auto& t : plan.activations) {
    const std::string root = range_root(plan, t);
    if (auto it = result.ranges.find(root); it != result.ranges.end()) facts.ranges[t] = it->second;
    else if (auto own = own_ranges.find(root); own != own_ranges.end()) facts.ranges[t] = own->second;
  }
  for (const auto& t : plan.activations)
    if (!facts.ranges.count(t) && config.activations == ActivationMode::kStatic)
      result.report.float_nodes.push_back(t + ": no calibrated range (not a float tensor), left float");

  // GPTQ / AdaRound choose the roundings of the planned weights; the writer
  // uses their codes instead of rounding to nearest.
  WeightMethod method = resolve_weight_method(config);
  // Auto with 8-bit weights, but layer_precision narrows some layers: those
  // get what auto gives narrow weights (run_weight_method leaves 8-bit layers to RTN).
  if (config.method == WeightMethod::kAuto && method == WeightMethod::kRtn && !config.fp16_weights &&
      config.mapping == Mapping::kLinear &&
      std::any_of(plan.weights.begin(), plan.weights.end(),
                  [](const quant::WeightUse& u) { return quant::traits(u.format).bits < quant::kAutoRoundToNearestBits; }))
    method = WeightMethod::kAdaRound;
  if (method != WeightMethod::kRtn && config.fp16_weights)
    result.report.warnings.push_back(std::string(weight_method_name(method)) + " does not apply to fp16 weights");
  if (method != WeightMethod::kRtn && (config.fp16_weights || plan.weights.empty())) method = WeightMethod::kRtn;
  if (method != WeightMethod::kRtn && calib.inputs.empty()) {
    if (config.method != WeightMethod::kAuto)
      return invalid_argument(std::string(weight_method_name(method)) + " needs calibration data");
    result.report.warnings.push_back(std::string("no calibration data: weights rounded to nearest instead of ") +
                                     weight_method_name(method));
    method = WeightMethod::kRtn;
  }
  result.report.method = weight_method_name(method);
  if (method != WeightMethod::kRtn) {
    const auto ta = std::chrono::steady_clock::now();
    // Auto lets AdaRound hand layers too large for it to GPTQ.
    const WeightMethod run_as = config.method == WeightMethod::kAuto ? WeightMethod::kAuto : method;
    auto algo = quant::run_weight_method(m, plan, calib, config, run_as, facts.importance, result.report,
                                         layer_input_quant(plan, facts.ranges, config));
    if (!algo.ok()) return algo.status().with_context(weight_method_name(method));
    facts.algo_weights = std::move(*algo);
    result.report.method_seconds = seconds_since(ta);
  }

  QTK_RETURN_IF_ERROR(quant::write_qdq(m, plan, facts, config, result.report));
  if (config.format == ExportFormat::kQOperator) {
    quant::QOperatorOptions qo;
    qo.matmul_nbits_accuracy_level = config.nbits_accuracy_level;
    QTK_RETURN_IF_ERROR(quant::qdq_to_qoperator(m, qo));
  }
  QTK_RETURN_IF_ERROR(ir::remove_dead_nodes(m).status());
  m.producer_name = "qtk";
  result.report.quantize_seconds = seconds_since(t0) - result.report.calib_seconds;
  return result;
}

}  // namespace qtk
