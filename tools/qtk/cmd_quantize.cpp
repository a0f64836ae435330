// qtk quantize: post-training quantization of a float ONNX model. Parses the
// options into a QuantConfig, gathers calibration data (or cached ranges),
// calls qtk::quantize once, saves the model and prints what happened.
#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>

#include "cli.h"
#include "core/cpu_features.h"
#include "data/dataset.h"
#include "data/file_io.h"
#include "data/model_inputs.h"
#include "eval/classifier_eval.h"
#include "qtk/model.h"
#include "qtk/quantize.h"
#include "qtk/session.h"
#include "quant/calib_cache.h"
#include "quant/layer_precision_file.h"
#include "mixed_precision_cli.h"
#include "quant_options.h"
#include "quantize_report.h"

namespace qtk::cli {
namespace {

namespace fs = std::filesystem;

// Calibration subsets are drawn with this fixed seed, so the same command
// line picks the same samples and writes the same bytes.


constexpr OptionSpec kOptions[] = {
    {"--output", "OUT.onnx", "where to write the quantized model (required)", false, "-o"},
    QTK_QUANT_SCHEME_OPTIONS,
    {"--calib", "SPEC",
     "calibration data: fashion-mnist:train (default), fashion-mnist:test, FILE.npy, or FILE.npz (an array per input, "
     "by name or in input order)"},
    {"--calib-samples", "N", "calibrate on a fixed random subset of N samples; 0 = all (default 512)"},
    {"--calib-cache", "FILE.json", "load activation ranges from FILE.json if it exists, else write them there"},
    QTK_QUANT_EXPORT_OPTIONS,
    {"--nbits-accuracy", "int8|float",
     "with --format qoperator: how MatMulNBits (weight-only 4-bit per group) multiplies: int8 quantizes its input "
     "per block at run time (accuracy_level 4, faster), float keeps it (default float)"},
    {"--threads", "N", "threads for calibration and --eval (default: physical cores)"},
    {"--eval", "SPEC",
     "also measure the float model and the quantized one (on qtk's int8 runtime and as a QDQ graph in float) on SPEC, "
     "e.g. fashion-mnist:test"},
    {"--limit", "N", "with --eval (and --val): use only the first N samples"},
    QTK_MIXED_PRECISION_OPTIONS,
    {"--report", "FILE.json", "also write the report as JSON to FILE.json"},
    {"--json", "", "print the report as JSON instead of text"},
    {"--force", "", "overwrite OUT.onnx if it exists"},
};

// Progress from QuantConfig::progress (calibration, then GPTQ/AdaRound
// layer by layer), drawn on a terminal only.
std::function<void(const std::string&, int64_t, int64_t)> quantize_progress() {
  auto calib = terminal_progress("qtk quantize: calibrating", "samples");
  if (!calib) return nullptr;
  auto gptq = terminal_progress("qtk quantize: gptq", "layers");
  auto adaround = terminal_progress("qtk quantize: adaround", "layers");
  return [calib, gptq, adaround](const std::string& stage, int64_t done, int64_t total) {
    if (stage == "calibrate") calib(done, total);
    else if (stage == "gptq") gptq(done, total);
    else if (stage == "adaround") adaround(done, total);
  };
}

Expected<eval::EvalResult> evaluate_model(const Model& model, const data::Dataset& ds, int64_t threads,
                                          const std::string& label, bool integer = false) {
  SessionOptions so;
  so.threads = static_cast<int>(threads);
  so.integer = integer;
  QTK_ASSIGN_OR_RETURN(std::unique_ptr<Session> session, Session::create(model, so));
  eval::EvalOptions eo;
  eo.progress = terminal_progress("qtk quantize: evaluating " + label, "images");
  auto r = eval::evaluate_classifier(*session, ds, eo);
  if (!r.ok()) return r.status().with_context("evaluating the " + label + " model");
  return r;
}

Outcome run_quantize(const ParsedArgs& args) {
  QuantizeSummary summary;
  QuantizeSettings& st = summary.settings;
  summary.input = args.positionals[0];
  const std::string* out_path = args.get("--output");
  if (!out_path || out_path->empty()) return Outcome::usage("option -o/--output is required (where to write the model)");
  summary.output = *out_path;
  const std::string& in_path = summary.input;

  QuantConfig cfg;
  QTK_CLI_RETURN_IF_FAILED(config_from_args(args, cfg, st));
  std::optional<MixedPrecisionRequest> mixed;  // --target-bits / --target-drop
  QTK_CLI_RETURN_IF_FAILED(parse_mixed_precision(args, mixed));
  int64_t calib_samples = 512, threads = physical_core_count(), limit = 0;
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--calib-samples", 0, INT64_MAX, calib_samples));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--threads", 1, 1024, threads));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--limit", 1, INT64_MAX, limit));
  st.calib_samples = calib_samples;
  st.calib_seed = kCalibSeed;
  st.threads = threads;
  cfg.threads = static_cast<int>(threads);
  if (const std::string* c = args.get("--calib")) st.calib = *c;
  QTK_CLI_RETURN_IF_FAILED(check_calib_spec(st.calib));
  const auto specs = data::known_dataset_specs();
  const std::string* eval_spec = args.get("--eval");
  if (eval_spec && std::find(specs.begin(), specs.end(), *eval_spec) == specs.end())
    return Outcome::usage("unknown data set '" + *eval_spec + "' for --eval (known: " + known_list(specs) + ")");
  if (args.has("--limit") && !eval_spec && !mixed) return Outcome::usage("--limit only applies with --eval");
  const std::string* report_path = args.get("--report");
  if (const std::string* c = args.get("--calib-cache")) st.calib_cache = *c;

  // Files: never write over the input, and never over an existing output unless asked.
  if (same_file(in_path, *out_path))
    return Outcome::usage("refusing to write the quantized model over its input " + in_path);
  const std::string* cache_path = st.calib_cache.empty() ? nullptr : &st.calib_cache;
  for (const std::string* p : {report_path, cache_path}) {
    if (!p) continue;
    if (same_file(*p, in_path) || same_file(*p, *out_path))
      return Outcome::usage("refusing to write " + *p + " over the input or output model");
  }
  if (report_path && !st.calib_cache.empty() && same_file(*report_path, st.calib_cache))
    return Outcome::usage("--report and --calib-cache name the same file " + *report_path);
  std::error_code ec;
  if (fs::exists(*out_path, ec) && !args.has("--force"))
    return Outcome::failure(*out_path + " already exists (use --force to overwrite it)");

  QTK_CLI_ASSIGN_OR_FAIL(Model model, load_model(in_path));
  std::vector<std::string> cli_warnings;

  // Cached ranges, when the cache exists and matches these settings.
  std::optional<quant::CalibrationCache> cache;
  const std::string act_format = quant::traits(cfg.activation_format).name;
  if (!st.calib_cache.empty() && !st.calibrated) {
    cli_warnings.push_back("--calib-cache is not used: activations '" + st.activations + "' are not calibrated");
  } else if (!st.calib_cache.empty() && fs::exists(st.calib_cache, ec)) {
    QTK_CLI_ASSIGN_OR_FAIL(cache, quant::read_calibration_cache(st.calib_cache));
    if (cache->method != st.calibrate)
      return Outcome::failure("calibration cache " + st.calib_cache + " holds '" + cache->method +
                              "' ranges, not '" + st.calibrate + "' (delete it, or use --calibrate " + cache->method +
                              ")");
    if (!cache->activations.empty() && cache->activations != act_format)
      return Outcome::failure("calibration cache " + st.calib_cache + " holds ranges chosen for " +
                              cache->activations + " activations, not " + act_format + " (delete it to recalibrate)");
    const std::string model_name = fs::path(in_path).filename().string();
    if (cache->model != model_name)
      cli_warnings.push_back("calibration cache " + st.calib_cache + " was written for model '" + cache->model +
                             "', not '" + model_name + "'");
  }

  // Calibration data: for activation ranges, and (any mode) for the input
  // statistics weight clipping and bias correction use. It is loaded even
  // with a cache: the cache holds only ranges, and may lack some (say, after
  // a different --exclude); the library runs the model only for what it lacks.
  CalibrationData calib;
  const bool wants_statistics = !cfg.fp16_weights && (cfg.weight_clip_search || cfg.bias_correction ||
                                                      resolve_weight_method(cfg) != WeightMethod::kRtn);
  if (st.calibrated || wants_statistics) {
    QTK_CLI_ASSIGN_OR_FAIL(calib.inputs, load_calibration(model, st.calib, calib_samples, cfg));
  }
  cfg.progress = quantize_progress();

  ActivationRanges cached_ranges;
  if (cache) cached_ranges = cache->ranges;
  QuantResult result;
  std::string mixed_text, mixed_json;
  if (mixed) {
    QTK_CLI_RETURN_IF_FAILED(
        run_mixed_precision(*mixed, model, cfg, calib, limit, threads, result, mixed_text, mixed_json));
    st.weights = "mixed";  // per layer: see the mixed precision section
  } else {
    QTK_CLI_ASSIGN_OR_FAIL(result, quantize(model, cfg, calib, cache ? &cached_ranges : nullptr));
  }
  summary.report = result.report;

  if (st.calibrated && !st.calib_cache.empty()) {
    if (cache) {
      summary.cache_status = "loaded";
      for (const auto& [name, r] : result.ranges) {
        if (cached_ranges.count(name)) ++summary.cache_ranges_used;
        else ++summary.ranges_calibrated;
      }
      if (summary.ranges_calibrated > 0)
        cli_warnings.push_back("calibration cache " + st.calib_cache + " lacked " +
                               std::to_string(summary.ranges_calibrated) +
                               " ranges; they were calibrated now (the cache file is left unchanged)");
    } else {
      quant::CalibrationCache fresh;
      fresh.method = st.calibrate;
      fresh.samples = result.report.calib_samples;
      fresh.model = fs::path(in_path).filename().string();
      fresh.activations = act_format;
      fresh.ranges = result.ranges;
      if (Status s = quant::write_calibration_cache(fresh, st.calib_cache); !s.ok()) return Outcome::failure(s);
      summary.cache_status = "written";
    }
  }
  if (st.calibrated && !cache) summary.ranges_calibrated = result.ranges.size();

  if (Status s = save_model(result.model, *out_path); !s.ok()) return Outcome::failure(s);
  auto file_size = [](const std::string& p) -> uint64_t {
    std::error_code e;
    const auto n = fs::file_size(p, e);
    return e ? 0 : static_cast<uint64_t>(n);
  };
  summary.size_before = file_size(in_path);
  summary.size_after = file_size(*out_path);

  if (eval_spec) {
    QTK_CLI_ASSIGN_OR_FAIL(data::Dataset ds, data::load_dataset(*eval_spec, limit));
    if (ds.labels.empty()) return Outcome::failure("data set " + *eval_spec + " is empty");
    EvalComparison cmp;
    cmp.data = *eval_spec;
    QTK_CLI_ASSIGN_OR_FAIL(cmp.before, evaluate_model(model, ds, threads, "float"));
    // The quantized model as written, read back: what a user will run.
    QTK_CLI_ASSIGN_OR_FAIL(Model written, load_model(*out_path));
    QTK_CLI_ASSIGN_OR_FAIL(cmp.integer, evaluate_model(written, ds, threads, "quantized (int8 runtime)", true));
    QTK_CLI_ASSIGN_OR_FAIL(cmp.after, evaluate_model(written, ds, threads, "quantized (QDQ graph)"));
    summary.eval = std::move(cmp);
  }

  for (auto& w : cli_warnings) summary.report.warnings.push_back(std::move(w));
  for (const auto& w : summary.report.warnings) print_warning(w);
  std::string json = render_quantize_json(summary);
  if (mixed) json = add_json_member(json, mixed_json);
  if (report_path)
    if (Status s = data::write_file_atomic(*report_path, json); !s.ok()) return Outcome::failure(s);
  return print_out(args.has("--json") ? json : render_quantize_text(summary) + mixed_text);
}

}  // namespace

const CommandSpec kQuantizeCommand = {
    "quantize",
    "MODEL",
    1,
    "quantize a float model (post-training: weights, activations, calibration)",
    "Quantizes the float ONNX MODEL and writes the result to OUT.onnx: weights to integers (or fp16),\n"
    "activations to integers with ranges calibrated on sample data (or at run time with 'dynamic').\n"
    "The quantized model is a standard ONNX QDQ graph that qtk and other runtimes execute. Calibration\n"
    "uses a fixed random subset of --calib-samples samples, so the same command writes the same bytes.\n"
    "The report lists every quantized tensor with its scheme, scales and SQNR, the nodes left in float\n"
    "and why, and, with --eval, accuracy and speed before and after (the quantized model on qtk's\n"
    "int8 runtime, and as its QDQ graph in float: the accuracy a QDQ runtime's simulation gets).",
    kOptions,
    run_quantize,
};

}  // namespace qtk::cli
