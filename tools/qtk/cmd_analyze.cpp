// qtk analyze: per-layer sensitivity to quantization. Each weighted layer is
// quantized alone (weights, then activations), the model is run on a
// validation subset and compared with the float model; layers are listed
// from the most to the least sensitive.
#include <algorithm>
#include <cstdio>

#include "cli.h"
#include "quant_options.h"
#include "core/cpu_features.h"
#include "core/json.h"
#include "data/dataset.h"
#include "data/model_inputs.h"
#include "qtk/model.h"
#include "quant/sensitivity/sensitivity.h"

namespace qtk::cli {
namespace {

namespace sens = quant::sensitivity;

constexpr OptionSpec kOptions[] = {
    {"--calib", "SPEC", "calibration data: fashion-mnist:train (default), fashion-mnist:test, FILE.npy or FILE.npz"},
    {"--calib-samples", "N", "calibrate activation ranges on a fixed random subset of N samples; 0 = all (default 256)"},
    {"--val", "SPEC", "validation data: a data set (labelled: adds accuracy change) or FILE.npy/.npz (default fashion-mnist:test)"},
    {"--limit", "N", "use the first N validation samples (default 1000)"},
    {"--weights", "int8|int4|int3|int2", "weight format each layer is tried with (default int4)"},
    {"--activations", "uint8|int8|int16|uint16|uint4|int4|float", "activation format each layer is tried with; float: weights only (default uint8)"},
    {"--method", "rtn|gptq|adaround|auto", "weight rounding in the trials (default rtn: fast)"},
    {"--threads", "N", "trials run in parallel on N threads (default: physical cores)"},
    {"--json", "", "print one JSON object instead of the table"},
};

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string delta_acc(const sens::OutputMetrics& m, double float_acc) {
  return m.accuracy < 0 ? "-" : fmt("%+.2f", (m.accuracy - float_acc) * 100.0);
}

void metrics_json(JsonWriter& w, const sens::OutputMetrics& m, double float_acc) {
  w.begin_object(true).key("sqnr_db").value(m.sqnr_db).key("kl").value(m.kl);
  if (m.accuracy >= 0) w.key("accuracy").value(m.accuracy).key("delta_points").value((m.accuracy - float_acc) * 100.0);
  w.end_object();
}

std::string render_json(const std::string& model, const std::string& val, const std::string& wname,
                        const std::string& aname, const sens::SensitivityReport& r,
                        const std::vector<const sens::LayerSensitivity*>& ranked) {
  JsonWriter w;
  w.begin_object().key("model").value(model).key("val").value(val).key("samples").value(r.samples);
  w.key("weights").value(wname).key("activations").value(aname);
  if (r.float_accuracy >= 0) w.key("float_accuracy").value(r.float_accuracy);
  w.key("trials").value(r.trials).key("seconds").value(r.seconds);
  w.key("layers").begin_array();
  for (size_t i = 0; i < ranked.size(); ++i) {
    const auto& s = *ranked[i];
    w.begin_object().key("rank").value(static_cast<int64_t>(i + 1)).key("node").value(s.layer.node);
    w.key("op_type").value(s.layer.op_type).key("params").value(s.layer.params);
    w.key("score_db").value(sens::sensitivity_score(s));
    w.key("weights");
    metrics_json(w, s.weights[0].second, r.float_accuracy);
    if (s.activations) {
      w.key("activations");
      metrics_json(w, *s.activations, r.float_accuracy);
    }
    w.end_object();
  }
  w.end_array().end_object();
  return w.str() + "\n";
}

std::string render_text(const std::string& model, const std::string& val, const std::string& wname,
                        const std::string& aname, const sens::SensitivityReport& r,
                        const std::vector<const sens::LayerSensitivity*>& ranked) {
  std::string out = "model       " + model + "\n";
  out += "validation  " + val + " (" + std::to_string(r.samples) + " samples)";
  if (r.float_accuracy >= 0) out += fmt(", float accuracy %.4f", r.float_accuracy);
  out += "\ntrials      each layer alone: " + wname + " weights" + (aname == "float" ? "" : ", then " + aname +
                                                                           " activations (weights fp16)");
  out += fmt(" (%.1f s)\n", r.seconds);
  out += "ranked from the most sensitive (lowest output SQNR, dB; KL of softmax, nats; accuracy change, points):\n";
  int width = 5;  // the layer column fits the longest node name
  for (const auto* s : ranked) width = std::max(width, static_cast<int>(std::min<size_t>(s->layer.node.size(), 200)));
  char buf[1024];
  std::snprintf(buf, sizeof buf, "%4s  %-*s %-13s %9s  %8s %9s %7s  %8s %9s %7s\n", "rank", width, "layer", "op", "params",
                "w SQNR", "w KL", "w dAcc", "a SQNR", "a KL", "a dAcc");
  out += buf;
  for (size_t i = 0; i < ranked.size(); ++i) {
    const auto& s = *ranked[i];
    const auto& wm = s.weights[0].second;
    std::string a_sqnr = "-", a_kl = "-", a_acc = "-";
    if (s.activations) {
      a_sqnr = fmt("%.2f", s.activations->sqnr_db);
      a_kl = fmt("%.2e", s.activations->kl);
      a_acc = delta_acc(*s.activations, r.float_accuracy);
    }
    std::snprintf(buf, sizeof buf, "%4zu  %-*s %-13s %9s  %8.2f %9.2e %7s  %8s %9s %7s\n", i + 1, width,
                  s.layer.node.substr(0, 200).c_str(), s.layer.op_type.c_str(), format_count(s.layer.params).c_str(), wm.sqnr_db,
                  wm.kl, delta_acc(wm, r.float_accuracy).c_str(), a_sqnr.c_str(), a_kl.c_str(), a_acc.c_str());
    out += buf;
  }
  return out;
}

Outcome run_analyze(const ParsedArgs& args) {
  const std::string& model_path = args.positionals[0];
  int64_t calib_samples = 256, limit = 1000, threads = physical_core_count();
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--calib-samples", 0, INT64_MAX, calib_samples));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--limit", 1, INT64_MAX, limit));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--threads", 1, 1024, threads));
  sens::SensitivityOptions so;
  so.threads = static_cast<int>(threads);
  std::string wname = "int4", aname = "uint8";
  if (const std::string* w = args.get("--weights")) wname = *w;
  const auto wf = quant::qformat_from_name(wname);
  if (!wf || !quant::traits(*wf).is_signed || quant::traits(*wf).bits > 8)
    return Outcome::usage("unknown --weights value '" + wname + "' (choose from int8, int4, int3, int2)");
  so.config.weight_format = *wf;
  if (const std::string* a = args.get("--activations")) aname = *a;
  if (aname == "float") {
    so.config.activations = ActivationMode::kWeightOnly;
    so.sweep_activations = false;
  } else {
    const auto af = quant::qformat_from_name(aname);
    if (!af)
      return Outcome::usage("unknown --activations value '" + aname +
                            "' (choose from uint8, int8, int16, uint16, uint4, int4, int3, int2, float)");
    so.config.activation_format = *af;
  }
  if (const std::string* m = args.get("--method")) {
    if (*m == "rtn") so.config.method = WeightMethod::kRtn;
    else if (*m == "gptq") so.config.method = WeightMethod::kGptq;
    else if (*m == "adaround") so.config.method = WeightMethod::kAdaRound;
    else if (*m == "auto") so.config.method = WeightMethod::kAuto;
    else return Outcome::usage("unknown --method value '" + *m + "' (choose from rtn, gptq, adaround, auto)");
    so.keep_method = true;
  }
  std::string calib_spec = "fashion-mnist:train", val_spec = "fashion-mnist:test";
  if (const std::string* c = args.get("--calib")) calib_spec = *c;
  if (const std::string* v = args.get("--val")) val_spec = *v;
  const auto specs = data::known_dataset_specs();
  for (const std::string* spec : {&calib_spec, &val_spec})
    if (std::find(specs.begin(), specs.end(), *spec) == specs.end() && !data::is_array_file_spec(*spec))
      return Outcome::usage(std::string(spec == &calib_spec ? "--calib" : "--val") + " '" + *spec +
                            "' is neither a data set nor an .npy/.npz file");

  QTK_CLI_ASSIGN_OR_FAIL(Model model, load_model(model_path));
  QTK_CLI_ASSIGN_OR_FAIL(sens::EvalSet val, sens::load_eval_set(val_spec, model, limit));
  CalibrationData calib;
  QTK_CLI_ASSIGN_OR_FAIL(calib.inputs, data::load_calibration_inputs(calib_spec, data::declared_runtime_inputs(model),
                                                                     calib_samples, kCalibSeed));
  so.progress = terminal_progress("qtk analyze: trials", "trials");
  QTK_CLI_ASSIGN_OR_FAIL(sens::TrialContext ctx,
                         sens::make_trial_context(model, so.config, calib, std::move(val), so.stats_samples,
                                                  static_cast<int>(threads)));
  QTK_CLI_ASSIGN_OR_FAIL(sens::SensitivityReport report, sens::analyze_sensitivity(ctx, so));
  std::vector<const sens::LayerSensitivity*> ranked;
  for (const auto& s : report.layers) ranked.push_back(&s);
  std::stable_sort(ranked.begin(), ranked.end(), [](const auto* a, const auto* b) {
    return sens::sensitivity_score(*a) < sens::sensitivity_score(*b);
  });
  return print_out(args.has("--json") ? render_json(model_path, val_spec, wname, aname, report, ranked)
                                      : render_text(model_path, val_spec, wname, aname, report, ranked));
}

}  // namespace

const CommandSpec kAnalyzeCommand = {
    "analyze",
    "MODEL",
    1,
    "rank layers by sensitivity to quantization (per-layer SQNR, KL, accuracy change)",
    "Quantizes each Conv/ConvTranspose/Gemm/MatMul layer of MODEL alone, first its weights (activations\n"
    "float), then its input/output activations (weights fp16), runs the model on the validation samples\n"
    "and compares its outputs with the float model's: output SQNR (dB), KL divergence of the softmax\n"
    "(nats) and, on a labelled data set, the change in top-1 accuracy (points). Activation ranges are\n"
    "calibrated once; weights are rounded to nearest unless --method says otherwise. The table lists\n"
    "the layers from the most sensitive (lowest SQNR in either trial) to the least.",
    kOptions,
    run_analyze,
};

}  // namespace qtk::cli
