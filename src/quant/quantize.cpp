// The post-training quantization pipeline: optimize → annotate → calibrate →
// write QDQ (→ QOperator) → report.
#include "qtk/quantize.h"

#include <chrono>

#include "ir/passes.h"
#include "quant/graph/annotate.h"
#include "quant/graph/calibrate.h"
#include "quant/graph/qdq_writer.h"
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

Status check_config(const QuantConfig& c) {
  const auto& w = quant::traits(c.weight_format);
  if (w.bits > 8) return invalid_argument(std::string("weights in ") + w.name + " are not supported (8 bits at most)");
  if (c.activations == ActivationMode::kDynamic && c.activation_format != quant::QFormat::kUInt8)
    return invalid_argument("dynamic activations are uint8 (as DynamicQuantizeLinear defines them)");
  const auto& a = quant::traits(c.activation_format);
  if (a.bits < 8 && c.activations == ActivationMode::kStatic && c.format == ExportFormat::kQDQ)
    return invalid_argument(std::string("activations in ") + a.name + " cannot be expressed in a QDQ graph before opset 21");
  if (c.format == ExportFormat::kQOperator)
    return unsupported("QOperator export is not implemented yet; use --format qdq");
  return Status::Ok();
}

}  // namespace

Expected<QuantResult> quantize(const Model& float_model, const QuantConfig& config, const CalibrationData& calib,
                               const ActivationRanges* cached_ranges) {
  QTK_RETURN_IF_ERROR(check_config(config));
  const auto t0 = std::chrono::steady_clock::now();
  QuantResult result;
  result.model = float_model;
  Model& m = result.model;
  QTK_RETURN_IF_ERROR(rt::optimize_model(m));
  quant::QuantPlan plan = quant::annotate(m.graph, config);
  result.report.float_nodes = plan.float_nodes;
  result.report.warnings = plan.warnings;

  // Calibrate the root of every range that is not cached.
  std::map<std::string, Tensor> samples;
  if (config.activations == ActivationMode::kStatic) {
    std::vector<std::string> todo;
    std::set<std::string> roots;
    for (const auto& t : plan.activations) roots.insert(range_root(plan, t));
    for (const auto& r : roots) {
      if (cached_ranges && cached_ranges->count(r)) result.ranges[r] = cached_ranges->at(r);
      else todo.push_back(r);
    }
    const auto tc = std::chrono::steady_clock::now();
    if (!todo.empty()) {
      auto cal = quant::calibrate(m, todo, calib, config);
      if (!cal.ok()) return cal.status().with_context("calibration");
      for (auto& [k, v] : cal->ranges) result.ranges[k] = v;
      samples = std::move(cal->first_batch);
      result.report.calib_samples = cal->samples;
      result.report.nonfinite_skipped = cal->nonfinite;
      if (cal->nonfinite > 0)
        result.report.warnings.push_back(std::to_string(cal->nonfinite) +
                                         " NaN/Inf activation values were skipped during calibration");
    }
    result.report.calib_seconds = seconds_since(tc);
  }
  ActivationRanges resolved;
  for (const auto& t : plan.activations) {
    auto it = result.ranges.find(range_root(plan, t));
    if (it != result.ranges.end()) resolved[t] = it->second;
  }
  for (const auto& t : plan.activations)
    if (!resolved.count(t) && config.activations == ActivationMode::kStatic)
      result.report.float_nodes.push_back(t + ": no calibrated range (not a float tensor), left float");

  QTK_RETURN_IF_ERROR(quant::write_qdq(m, plan, resolved, samples, config, result.report));
  QTK_RETURN_IF_ERROR(ir::remove_dead_nodes(m).status());
  m.producer_name = "qtk";
  result.report.quantize_seconds = seconds_since(t0) - result.report.calib_seconds;
  return result;
}

}  // namespace qtk
