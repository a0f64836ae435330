// qtk eval: top-1 accuracy and throughput of a classifier on a labelled data set.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "cli.h"
#include "core/json.h"
#include "data/dataset.h"
#include "qtk/model.h"
#include "qtk/session.h"

namespace qtk::cli {
namespace {

constexpr OptionSpec kOptions[] = {
    {"--data", "SPEC", "labelled data set: fashion-mnist:test or fashion-mnist:train (required)"},
    {"--limit", "N", "use only the first N samples (default: all)"},
    {"--batch", "B", "images per inference call (default 64, or the model's fixed batch)"},
    {"--threads", "N", "threads for the kernels (default 1)"},
    {"--json", "", "print one JSON object instead of text"},
};

struct EvalResult {
  int64_t samples = 0, correct = 0;
  std::vector<int64_t> class_samples, class_correct;
  double seconds = 0;
};

// The shape of one sample as the model wants it: the model's own non-batch
// dims when they are fixed and hold the same number of pixels (e.g. [784]),
// else the data set's [1,28,28].
Shape sample_shape(const TensorInfo& info, const Shape& data_sample) {
  if (!info.has_shape || info.shape.size() < 2) return data_sample;
  Shape s(info.shape.begin() + 1, info.shape.end());
  for (int64_t d : s)
    if (d < 0) return data_sample;
  return shape_numel(s) == shape_numel(data_sample) ? s : data_sample;
}

double accuracy(int64_t correct, int64_t total) { return total ? static_cast<double>(correct) / total : 0.0; }

void show_progress(int64_t done, int64_t total) {
  std::fprintf(stderr, "\rqtk eval: %lld/%lld images", static_cast<long long>(done), static_cast<long long>(total));
  std::fflush(stderr);
}

Expected<EvalResult> evaluate(const Session& session, const data::Dataset& ds, int64_t batch, bool fixed_batch,
                              const Shape& sample) {
  const int64_t n = static_cast<int64_t>(ds.labels.size());
  const int64_t per_sample = shape_numel(sample);
  EvalResult r;
  r.class_samples.assign(ds.num_classes, 0);
  r.class_correct.assign(ds.num_classes, 0);
  const bool progress = ::isatty(STDERR_FILENO) == 1;
  auto last_progress = std::chrono::steady_clock::now();
  const auto start = std::chrono::steady_clock::now();
  for (int64_t first = 0; first < n; first += batch) {
    const int64_t count = std::min(batch, n - first);
    // A model with a fixed batch gets a full batch; the padding rows are ignored.
    const int64_t rows = fixed_batch ? batch : count;
    Shape shape = {rows};
    shape.insert(shape.end(), sample.begin(), sample.end());
    Tensor input(DType::kFloat32, shape);
    std::memcpy(input.data<float>(), ds.images.data<float>() + first * per_sample, count * per_sample * sizeof(float));
    QTK_ASSIGN_OR_RETURN(std::vector<Tensor> outputs, session.run(std::vector<Tensor>{input}));
    const Tensor& logits = outputs.at(0);
    if (logits.rank() < 1 || logits.dim(0) != rows || logits.numel() % rows != 0 || logits.numel() == 0)
      return invalid_argument("output '" + session.outputs()[0].name + "' has shape " +
                              shape_to_string(logits.shape()) + ", expected [" + std::to_string(rows) +
                              ", classes] scores");
    const int64_t classes = logits.numel() / rows;
    for (int64_t i = 0; i < count; ++i) {
      int64_t best = 0;
      double best_score = logits.get_as_double(i * classes);
      for (int64_t c = 1; c < classes; ++c) {
        const double score = logits.get_as_double(i * classes + c);
        if (score > best_score) { best_score = score; best = c; }
      }
      const int64_t label = ds.labels[first + i];
      ++r.class_samples[label];
      if (best == label) { ++r.correct; ++r.class_correct[label]; }
    }
    r.samples += count;
    if (progress && std::chrono::steady_clock::now() - last_progress > std::chrono::milliseconds(200)) {
      show_progress(r.samples, n);
      last_progress = std::chrono::steady_clock::now();
    }
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (progress) std::fprintf(stderr, "\r\033[K");
  return r;
}

std::string render_json(const std::string& model, const std::string& spec, const data::Dataset& ds,
                        const EvalResult& r, int64_t batch, int64_t threads) {
  JsonWriter w;
  w.begin_object();
  w.key("model").value(model).key("data").value(spec).key("samples").value(r.samples).key("correct").value(r.correct);
  w.key("accuracy").value(accuracy(r.correct, r.samples));
  w.key("images_per_second").value(r.seconds > 0 ? r.samples / r.seconds : 0.0);
  w.key("seconds").value(r.seconds).key("batch").value(batch).key("threads").value(threads);
  w.key("per_class_accuracy").begin_array(true);
  for (int c = 0; c < ds.num_classes; ++c) {
    if (r.class_samples[c]) w.value(accuracy(r.class_correct[c], r.class_samples[c]));
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
                        const EvalResult& r, int64_t batch, int64_t threads) {
  char buf[256];
  std::string out = "model       " + model + "\n" + "data        " + spec + " (" + std::to_string(r.samples) + " samples)\n";
  std::snprintf(buf, sizeof buf, "accuracy    %.4f (%lld/%lld)\n", accuracy(r.correct, r.samples),
                static_cast<long long>(r.correct), static_cast<long long>(r.samples));
  out += buf;
  std::snprintf(buf, sizeof buf, "throughput  %.1f images/s (%.3f s, batch %lld, %lld thread%s)\n",
                r.seconds > 0 ? r.samples / r.seconds : 0.0, r.seconds, static_cast<long long>(batch),
                static_cast<long long>(threads), threads == 1 ? "" : "s");
  out += buf;
  out += "per class:\n";
  for (int c = 0; c < ds.num_classes; ++c) {
    if (!r.class_samples[c]) {
      std::snprintf(buf, sizeof buf, "  %d %-12s   -      (0 samples)\n", c, ds.class_names.at(c).c_str());
    } else {
      std::snprintf(buf, sizeof buf, "  %d %-12s %.4f (%lld/%lld)\n", c, ds.class_names.at(c).c_str(),
                    accuracy(r.class_correct[c], r.class_samples[c]), static_cast<long long>(r.class_correct[c]),
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
  int64_t limit = 0, batch = 64, threads = 1;
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
  QTK_CLI_ASSIGN_OR_FAIL(std::unique_ptr<Session> session, Session::create(model, options));
  if (session->inputs().size() != 1)
    return Outcome::failure("eval needs a model with one input; " + model_path + " has " +
                            std::to_string(session->inputs().size()));
  if (session->outputs().empty()) return Outcome::failure(model_path + " has no outputs");
  const TensorInfo& input = session->inputs()[0];
  if (input.dtype != DType::kFloat32 && input.dtype != DType::kUndefined)
    return Outcome::failure("eval feeds float32 images, but input '" + input.name + "' is " + dtype_name(input.dtype));
  bool fixed_batch = false;
  if (input.has_shape && !input.shape.empty() && input.shape[0] > 0) {
    if (args.has("--batch") && batch != input.shape[0])
      return Outcome::usage("model input '" + input.name + "' has a fixed batch of " + std::to_string(input.shape[0]) +
                            "; use --batch " + std::to_string(input.shape[0]));
    batch = input.shape[0];
    fixed_batch = true;
  }

  const Shape data_sample(ds.images.shape().begin() + 1, ds.images.shape().end());
  QTK_CLI_ASSIGN_OR_FAIL(EvalResult r, evaluate(*session, ds, batch, fixed_batch, sample_shape(input, data_sample)));
  return print_out(args.has("--json") ? render_json(model_path, *spec, ds, r, batch, threads)
                                      : render_text(model_path, *spec, ds, r, batch, threads));
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
