// qtk eval: top-1 accuracy and throughput of a classifier on a labelled data set.
#include <algorithm>
#include <cstdio>

#include "cli.h"
#include "core/cpu_features.h"
#include "core/json.h"
#include "data/dataset.h"
#include "eval/classifier_eval.h"
#include "qtk/model.h"
#include "qtk/session.h"

namespace qtk::cli {
namespace {

constexpr OptionSpec kOptions[] = {
    {"--data", "SPEC", "labelled data set: fashion-mnist:test or fashion-mnist:train (required)"},
    {"--limit", "N", "use only the first N samples (default: all)"},
    {"--batch", "B", "images per inference call (default 64, or the model's fixed batch)"},
    {"--threads", "N", "threads for the kernels (default: physical cores)"},
    {"--integer", "", "run QDQ models with integer kernels (QLinearConv, QLinearMatMul, ...) as an int8 runtime does"},
    {"--json", "", "print one JSON object instead of text"},
};

using eval::EvalResult;

std::string render_json(const std::string& model, const std::string& spec, const data::Dataset& ds,
                        const EvalResult& r, int64_t threads) {
  JsonWriter w;
  w.begin_object();
  w.key("model").value(model).key("data").value(spec).key("samples").value(r.samples).key("correct").value(r.correct);
  w.key("accuracy").value(r.accuracy);
  w.key("images_per_second").value(r.images_per_second);
  w.key("seconds").value(r.seconds).key("batch").value(r.batch).key("threads").value(threads);
  w.key("per_class_accuracy").begin_array(true);
  for (int c = 0; c < ds.num_classes; ++c) {
    if (r.class_samples[c]) w.value(r.class_accuracy[c]);
    else w.null();
  }
  w.end_array();
  w.key("per_class").begin_array();
  for (int c = 0; c < ds.num_classes; ++c) {
    w.begin_object(true).key("class").value(c).key("name").value(ds.class_names.at(c));
    w.key("samples").value(r.class_samples[c]).key("correct").value(r.class_correct[c]).end_object();
  }
  w.end_array().end_object();
  return w.str();
}

std::string render_text(const std::string& model, const std::string& spec, const data::Dataset& ds,
                        const EvalResult& r, int64_t threads) {
  char buf[256];
  std::string out = "model       " + model + "\n" + "data        " + spec + " (" + std::to_string(r.samples) + " samples)\n";
  std::snprintf(buf, sizeof buf, "accuracy    %.4f (%lld/%lld)\n", r.accuracy,
                static_cast<long long>(r.correct), static_cast<long long>(r.samples));
  out += buf;
  std::snprintf(buf, sizeof buf, "throughput  %.1f images/s (%.3f s, batch %lld, %lld thread%s)\n",
                r.images_per_second, r.seconds, static_cast<long long>(r.batch),
                static_cast<long long>(threads), threads == 1 ? "" : "s");
  out += buf;
  out += "per class:\n";
  for (int c = 0; c < ds.num_classes; ++c) {
    if (!r.class_samples[c]) {
      std::snprintf(buf, sizeof buf, "  %d %-12s   -      (0 samples)\n", c, ds.class_names.at(c).c_str());
    } else {
      std::snprintf(buf, sizeof buf, "  %d %-12s %.4f (%lld/%lld)\n", c, ds.class_names.at(c).c_str(),
                    r.class_accuracy[c], static_cast<long long>(r.class_correct[c]),
                    static_cast<long long>(r.class_samples[c]));
    }
    out += buf;
  }
  return out;
}

Outcome run_eval(const ParsedArgs& args) {
  const std::string& model_path = args.positionals[0];
  const std::string* spec = args.get("--data");
  if (!spec) return Outcome::usage("option --data is required (e.g. --data fashion-mnist:test)");
  int64_t limit = 0, batch = 64, threads = physical_core_count();
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--limit", 1, INT64_MAX, limit));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--batch", 1, 1 << 20, batch));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--threads", 1, 1024, threads));
  const auto specs = data::known_dataset_specs();
  if (std::find(specs.begin(), specs.end(), *spec) == specs.end()) {
    std::string known;
    for (const auto& s : specs) known += (known.empty() ? "" : ", ") + s;
    return Outcome::usage("unknown data set '" + *spec + "' for --data (known: " + known + ")");
  }

  // Model file, then data, then the session: each problem is reported
  // without being hidden behind a later one (e.g. an unsupported op).
  QTK_CLI_ASSIGN_OR_FAIL(Model model, load_model(model_path));
  QTK_CLI_ASSIGN_OR_FAIL(data::Dataset ds, data::load_dataset(*spec, limit));
  if (ds.labels.empty()) return Outcome::failure("data set " + *spec + " is empty");
  SessionOptions options;
  options.threads = static_cast<int>(threads);
  options.integer = args.has("--integer");
  QTK_CLI_ASSIGN_OR_FAIL(std::unique_ptr<Session> session, Session::create(model, options));
  // A --batch the model cannot take is a mistake on the command line.
  if (!session->inputs().empty()) {
    const TensorInfo& input = session->inputs()[0];
    if (args.has("--batch") && input.has_shape && !input.shape.empty() && input.shape[0] > 0 &&
        batch != input.shape[0])
      return Outcome::usage("model input '" + input.name + "' has a fixed batch of " + std::to_string(input.shape[0]) +
                            "; use --batch " + std::to_string(input.shape[0]));
  }
  eval::EvalOptions eo;
  eo.batch = args.has("--batch") ? batch : 0;
  eo.progress = terminal_progress("qtk eval:", "images");
  auto evaluated = eval::evaluate_classifier(*session, ds, eo);
  if (!evaluated.ok()) return Outcome::failure(evaluated.status().with_context(model_path));
  const EvalResult& r = *evaluated;
  return print_out(args.has("--json") ? render_json(model_path, *spec, ds, r, threads)
                                      : render_text(model_path, *spec, ds, r, threads));
}

}  // namespace

const CommandSpec kEvalCommand = {
    "eval",
    "MODEL",
    1,
    "measure top-1 accuracy and throughput on a labelled data set",
    "Runs MODEL over a labelled data set in batches and reports top-1 accuracy (argmax of the\n"
    "first output), accuracy per class, and images per second (wall time of the inference loop\n"
    "only, not loading). Images are float32 [N,1,28,28], pixel/255.",
    kOptions,
    run_eval,
};

}  // namespace qtk::cli
