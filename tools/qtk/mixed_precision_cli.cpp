#include "mixed_precision_cli.h"

#include <algorithm>
#include <cstdio>

#include "core/json.h"
#include "data/dataset.h"
#include "data/model_inputs.h"
#include "quant/sensitivity/mixed_precision.h"

namespace qtk::cli {
namespace {

namespace sens = quant::sensitivity;

Outcome number_option(const ParsedArgs& args, std::string_view name, double lo, std::optional<double>& out) {
  if (!args.get(name)) return Outcome::ok();
  double d = 0;
  QTK_CLI_RETURN_IF_FAILED(real_option(args, name, lo, 1e6, d));
  out = d;
  return Outcome::ok();
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string render_text(const sens::MixedPrecisionResult& r) {
  std::string out = "\nmixed precision (" + std::to_string(r.sweep.trials) + " sweep trials, " +
                    std::to_string(r.checked.size()) + " candidates quantized and measured, " +
                    fmt("%.1f s):\n", r.seconds);
  int width = 5;
  for (const auto& a : r.layers) width = std::max(width, static_cast<int>(std::min<size_t>(a.layer.node.size(), 200)));
  char buf[512];
  std::snprintf(buf, sizeof buf, "  %-*s %-13s %9s  %-7s %-11s %s\n", width, "layer", "op", "params", "weights",
                "activations", "sweep SQNR dB (this layer's weights alone, RTN)");
  out += buf;
  for (const auto& a : r.layers) {
    const char* act = !a.weights ? "float" : a.activations ? quant::traits(*a.activations).name : "default";
    std::snprintf(buf, sizeof buf, "  %-*s %-13s %9s  %-7s %-11s %s\n", width, a.layer.node.substr(0, 200).c_str(),
                  a.layer.op_type.c_str(), format_count(a.layer.params).c_str(),
                  a.weights ? quant::traits(*a.weights).name : "float", act,
                  a.weights ? fmt("%.2f", a.sweep_sqnr_db).c_str() : "-");
    out += buf;
  }
  out += "  average weight bits " + fmt("%.3f", r.average_bits) + fmt(", output SQNR %.2f dB", r.metrics.sqnr_db);
  if (r.float_accuracy >= 0)
    out += fmt(", validation accuracy %.4f", r.metrics.accuracy) + fmt(" (float %.4f)", r.float_accuracy);
  out += "\n  " + r.verdict + "\n";
  return out;
}

std::string render_json(const MixedPrecisionRequest& req, const sens::MixedPrecisionResult& r) {
  JsonWriter w;
  w.begin_object();
  if (req.target_bits) w.key("target_bits").value(*req.target_bits);
  if (req.target_drop) w.key("target_drop_points").value(*req.target_drop);
  w.key("val").value(req.val).key("met").value(r.met).key("verdict").value(r.verdict);
  w.key("average_bits").value(r.average_bits).key("output_sqnr_db").value(r.metrics.sqnr_db);
  if (r.float_accuracy >= 0) w.key("float_accuracy").value(r.float_accuracy).key("accuracy").value(r.metrics.accuracy);
  w.key("seconds").value(r.seconds).key("sweep_trials").value(r.sweep.trials);
  w.key("layers").begin_array();
  for (const auto& a : r.layers) {
    w.begin_object(true).key("node").value(a.layer.node).key("op_type").value(a.layer.op_type);
    w.key("params").value(a.layer.params).key("weights").value(a.weights ? quant::traits(*a.weights).name : "float");
    w.key("bits").value(static_cast<int64_t>(a.bits));
    if (a.activations) w.key("activations").value(quant::traits(*a.activations).name);
    w.end_object();
  }
  w.end_array().key("candidates").begin_array();
  for (const auto& c : r.checked) {
    w.begin_object(true).key("average_bits").value(c.average_bits).key("output_sqnr_db").value(c.sqnr_db);
    if (c.accuracy >= 0) w.key("accuracy").value(c.accuracy);
    w.end_object();
  }
  w.end_array().end_object();
  return "\"mixed_precision\": " + w.str();
}

}  // namespace

Outcome parse_mixed_precision(const ParsedArgs& args, std::optional<MixedPrecisionRequest>& out) {
  MixedPrecisionRequest req;
  QTK_CLI_RETURN_IF_FAILED(number_option(args, "--target-bits", 1.0, req.target_bits));
  QTK_CLI_RETURN_IF_FAILED(number_option(args, "--target-drop", 0.0, req.target_drop));
  const std::string* val = args.get("--val");
  if (!req.target_bits && !req.target_drop) {
    if (val) return Outcome::usage("--val only applies with --target-bits or --target-drop");
    return Outcome::ok();
  }
  if (!val)
    return Outcome::usage("--target-bits/--target-drop need --val SPEC (e.g. --val fashion-mnist:train --limit 1000)");
  const auto specs = data::known_dataset_specs();
  const bool is_dataset = std::find(specs.begin(), specs.end(), *val) != specs.end();
  if (!is_dataset && !data::is_array_file_spec(*val))
    return Outcome::usage("--val '" + *val + "' is neither a data set nor an .npy/.npz file");
  if (req.target_drop && !is_dataset)
    return Outcome::usage("--target-drop needs labelled --val data (a data set such as fashion-mnist:train), not " +
                          *val);
  if (args.has("--weights") || args.has("--layer-precision"))
    return Outcome::usage("--target-bits/--target-drop choose the weight widths; drop --weights/--layer-precision");
  req.val = *val;
  out = std::move(req);
  return Outcome::ok();
}

Outcome run_mixed_precision(const MixedPrecisionRequest& req, const Model& model, const QuantConfig& config,
                            const CalibrationData& calib, int64_t limit, int64_t threads, QuantResult& result,
                            std::string& text, std::string& json) {
  QTK_CLI_ASSIGN_OR_FAIL(sens::EvalSet val, sens::load_eval_set(req.val, model, limit));
  sens::MixedPrecisionOptions o;
  o.target_bits = req.target_bits;
  o.target_drop = req.target_drop;
  o.threads = static_cast<int>(threads);
  auto sweep = terminal_progress("qtk quantize: sensitivity sweep", "trials");
  auto verify = terminal_progress("qtk quantize: checking candidates", "candidates");
  if (sweep)
    o.progress = [sweep, verify](const std::string& stage, int64_t done, int64_t total) {
      if (stage == "sweep") sweep(done, total);
      else if (verify) verify(std::min(done, total - 1), total);  // the bound is not exact: never "finished"
    };
  auto r = sens::quantize_mixed_precision(model, config, calib, std::move(val), o);
  if (!r.ok()) return Outcome::failure(r.status().with_context("mixed precision"));
  result = std::move(r->quantized);
  if (!r->met) result.report.warnings.insert(result.report.warnings.begin(), "mixed precision: " + r->verdict);
  text = render_text(*r);
  json = render_json(req, *r);
  return Outcome::ok();
}

std::string add_json_member(const std::string& report_json, const std::string& member_json) {
  const size_t close = report_json.find_last_of('}');
  if (close == std::string::npos) return report_json;
  std::string head = report_json.substr(0, close);
  while (!head.empty() && (head.back() == '\n' || head.back() == ' ')) head.pop_back();
  return head + ",\n  " + member_json + "\n}" + report_json.substr(close + 1);
}

}  // namespace qtk::cli
