// qtk train: train an image classifier from a built-in architecture or
// fine-tune a float ONNX model, and write the result as ONNX.

#include <cmath>
#include <cstdio>
#include <array>
#include <filesystem>
#include <optional>

#include "cli.h"
#include "core/cpu_features.h"
#include "core/json.h"
#include "data/dataset.h"
#include "qtk/model.h"
#include "runtime/thread_pool.h"
#include "train/arch.h"
#include "train/checkpoint.h"
#include "train/labelled_data.h"
#include "train/trainer.h"
#include "train_progress.h"

namespace qtk::cli {
namespace {

namespace fs = std::filesystem;

constexpr OptionSpec kTrainOnly[] = {
    {"--arch", "SPEC", "train a built-in architecture: mlp:784,128,10 | cnn-small | resnet20"},
    {"--model", "IN.onnx", "fine-tune this float ONNX model instead (never modified)"},
};
constexpr OptionSpec kDistillOnly[] = {
    {"--teacher", "T.onnx", "the float model to learn from (required; never modified)"},
    {"--student", "S.onnx", "the float model to train (never modified)"},
    {"--arch", "SPEC", "or a fresh built-in student: mlp:784,128,10 | cnn-small | resnet20"},
    {"--temperature", "T", "softmax temperature of the soft targets (default 4)"},
    {"--alpha", "A", "weight of the teacher's soft targets, 1 - A on the labels (default 0.5)"},
};
constexpr OptionSpec kCommon[] = {
    {"--data", "SPEC", "labelled training data: fashion-mnist:train, or FILE.npz with 'inputs' and 'labels' (required)"},
    {"--val", "SPEC", "validation data, accuracy reported after each epoch (e.g. fashion-mnist:test)"},
    {"--output", "OUT.onnx", "where to write the trained model (required)", false, "-o"},
    {"--epochs", "N", "passes over the training data (default 10)"},
    {"--batch", "B", "images per step (default 64)"},
    {"--lr", "LR", "peak learning rate (default 0.001 for adamw, 0.05 for sgd)"},
    {"--optimizer", "NAME", "adamw (default) | sgd (momentum 0.9)"},
    {"--schedule", "NAME", "cosine (default) | onecycle | constant"},
    {"--weight-decay", "W", "weight decay of weight matrices and kernels (default 0)"},
    {"--augment", "", "random horizontal flips and shifts of up to 2 pixels"},
    {"--limit", "N", "use only the first N training samples"},
    {"--threads", "N", "threads for the kernels (default: physical cores)"},
    {"--seed", "S", "seed for initialisation, shuffling and augmentation (default 0)"},
    {"--resume", "",
     "continue from OUT.onnx.checkpoint (written after every epoch with the optimizer state, removed at the end)"},
    {"--stop-after", "K", "stop after epoch K, keeping the checkpoint (continue later with --resume)"},
    {"--json", "", "print one JSON object instead of text"},
    {"--force", "", "overwrite OUT.onnx if it exists"},
};

template <size_t A, size_t B>
constexpr std::array<OptionSpec, A + B> join(const OptionSpec (&a)[A], const OptionSpec (&b)[B]) {
  std::array<OptionSpec, A + B> r{};
  for (size_t i = 0; i < A; ++i) r[i] = a[i];
  for (size_t i = 0; i < B; ++i) r[A + i] = b[i];
  return r;
}
constexpr auto kTrainOptions = join(kTrainOnly, kCommon);
constexpr auto kDistillOptions = join(kDistillOnly, kCommon);

Outcome float_option(const ParsedArgs& args, std::string_view name, double lo, double hi, float& value) {
  double d = value;
  QTK_CLI_RETURN_IF_FAILED(real_option(args, name, lo, hi, d));
  value = static_cast<float>(d);
  return Outcome::ok();
}

Outcome run_training(const ParsedArgs& args, bool distill) {
  const std::string* arch = args.get("--arch");
  const std::string* in_model = args.get(distill ? "--student" : "--model");
  if (!arch == !in_model)
    return Outcome::usage(distill ? "give exactly one of --arch SPEC or --student S.onnx"
                                  : "give exactly one of --arch SPEC or --model IN.onnx");
  const std::string* teacher_path = args.get("--teacher");
  if (distill && !teacher_path) return Outcome::usage("option --teacher T.onnx is required");
  const std::string* spec = args.get("--data");
  if (!spec) return Outcome::usage("option --data is required (e.g. --data fashion-mnist:train)");
  const std::string* out_path = args.get("--output");
  if (!out_path || out_path->empty()) return Outcome::usage("option -o/--output is required (where to write the model)");
  QTK_CLI_RETURN_IF_FAILED(check_labelled_data_spec("--data", *spec));
  const std::string* val_spec = args.get("--val");
  if (val_spec) QTK_CLI_RETURN_IF_FAILED(check_labelled_data_spec("--val", *val_spec));

  train::TrainOptions o;
  int64_t limit = 0, threads = physical_core_count(), seed = 0;
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--epochs", 1, 100000, o.epochs));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--batch", 1, 1 << 16, o.batch));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--limit", 1, INT64_MAX, limit));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--threads", 1, 1024, threads));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--seed", 0, INT64_MAX, seed));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--stop-after", 1, o.epochs, o.stop_after_epoch));
  if (const std::string* v = args.get("--optimizer")) {
    auto k = train::parse_optimizer(*v);
    if (!k.ok()) return Outcome::usage(k.status().message() + " for --optimizer");
    o.optimizer.kind = *k;
  }
  if (const std::string* v = args.get("--schedule")) {
    auto k = train::parse_schedule(*v);
    if (!k.ok()) return Outcome::usage(k.status().message() + " for --schedule");
    o.schedule = *k;
  }
  o.lr = o.optimizer.kind == train::OptimizerKind::kSgd ? 0.05f : 1e-3f;
  QTK_CLI_RETURN_IF_FAILED(float_option(args, "--lr", 1e-12, 1e6, o.lr));
  QTK_CLI_RETURN_IF_FAILED(float_option(args, "--weight-decay", 0, 10, o.optimizer.weight_decay));
  if (distill) {
    QTK_CLI_RETURN_IF_FAILED(float_option(args, "--temperature", 1e-3, 1e3, o.kd_temperature));
    QTK_CLI_RETURN_IF_FAILED(float_option(args, "--alpha", 0, 1, o.kd_alpha));
  }
  o.augment = args.has("--augment");
  o.seed = static_cast<uint64_t>(seed);

  if (in_model && same_file(*in_model, *out_path))
    return Outcome::usage("output " + *out_path + " is the input model; choose another -o");
  if (teacher_path && same_file(*teacher_path, *out_path))
    return Outcome::usage("output " + *out_path + " is the teacher model; choose another -o");
  std::error_code ec;
  if (fs::exists(*out_path, ec) && !args.has("--force"))
    return Outcome::failure(*out_path + " already exists (use --force to overwrite it)");

  QTK_CLI_ASSIGN_OR_FAIL(data::Dataset train_ds, train::load_labelled_data(*spec, limit));
  if (train_ds.labels.empty()) return Outcome::failure("data set " + *spec + " is empty");
  data::Dataset val_ds;
  if (val_spec) {
    QTK_CLI_ASSIGN_OR_FAIL(val_ds, train::load_labelled_data(*val_spec));
  }
  Model model;
  const std::string checkpoint = *out_path + ".checkpoint";
  std::optional<train::TrainState> resume;
  if (args.has("--resume")) {
    if (!fs::exists(checkpoint, ec))
      return Outcome::failure("--resume: no checkpoint " + checkpoint + " (it is written after each epoch)");
    QTK_CLI_ASSIGN_OR_FAIL(model, load_model(checkpoint));
    auto state = train::take_train_state(model);
    if (!state.ok()) return Outcome::failure(state.status().with_context(checkpoint));
    if (!*state) return Outcome::failure(checkpoint + " holds no training state (not a qtk train checkpoint)");
    resume = std::move(**state);
    if (resume->epoch >= o.epochs)
      return Outcome::failure(checkpoint + " already holds " + std::to_string(resume->epoch) + " epochs of the " +
                              std::to_string(o.epochs) + " asked for");
    o.resume = &*resume;
    if (o.stop_after_epoch > 0 && o.stop_after_epoch <= resume->epoch)
      return Outcome::usage("--stop-after " + std::to_string(o.stop_after_epoch) + " is not after epoch " +
                            std::to_string(resume->epoch) + ", where " + checkpoint + " ends");
    std::fprintf(stderr, "resuming from %s after epoch %lld\n", checkpoint.c_str(),
                 static_cast<long long>(resume->epoch));
  } else if (arch) {
    auto m = train::build_architecture(*arch, o.seed, train_ds.num_classes);
    if (!m.ok()) return Outcome::usage(m.status().message() + " for --arch");
    model = std::move(*m);
  } else {
    QTK_CLI_ASSIGN_OR_FAIL(model, load_model(*in_model));
  }
  const std::string source = arch ? *arch : *in_model;  // (with --resume, the checkpoint's weights)
  auto graph = train::TrainGraph::create(model);
  if (!graph.ok()) return Outcome::failure(graph.status().with_context(source));

  rt::ThreadPool pool(static_cast<int>(threads));
  o.pool = &pool;
  std::optional<train::TrainGraph> teacher;
  Expected<double> acc = 0.0;  // the teacher's
  if (distill) {
    QTK_CLI_ASSIGN_OR_FAIL(Model tm, load_model(*teacher_path));
    auto tg = train::TrainGraph::create(tm);
    if (!tg.ok()) return Outcome::failure(tg.status().with_context(*teacher_path));
    teacher.emplace(std::move(*tg));
    o.teacher = train::teacher_logits(*teacher, &pool);
    acc = train::evaluate_accuracy(*teacher, val_spec ? val_ds : train_ds, 256, &pool);
    if (!acc.ok()) return Outcome::failure(acc.status().with_context(*teacher_path));
    std::fprintf(stderr, "teacher %s: %s accuracy %.4f\n", teacher_path->c_str(),
                 val_spec ? val_spec->c_str() : spec->c_str(), *acc);
  }
  TrainProgress progress("epoch", o.epochs);
  o.progress = [&](int64_t epoch, int64_t done, int64_t total, double loss, double acc) {
    progress.step(epoch, done, total, loss, acc);
  };
  o.on_epoch = [&](const train::EpochStats& e) { progress.epoch(e); };
  o.on_checkpoint = [&](const train::TrainState& st) {
    // The model so far with the optimizer, schedule and shuffling state (for --resume).
    const Status s = train::save_checkpoint(*graph, st, checkpoint);
    if (!s.ok()) print_warning("could not write checkpoint: " + s.message());
  };
  auto report = train::train_classifier(*graph, train_ds, val_spec ? &val_ds : nullptr, o);
  if (!report.ok()) return Outcome::failure(report.status().with_context(source));

  // --stop-after: the checkpoint is the result; OUT.onnx comes with the last epoch.
  const bool stopped = !report->diverged && !report->epochs.empty() && report->epochs.back().epoch < o.epochs;
  if (!stopped) {
    Model out = graph->to_model();
    if (arch) out.doc_string = "trained by qtk train --arch " + *arch;
    const Status saved = save_model(out, *out_path);
    if (!saved.ok()) return Outcome::failure(saved);
    if (report->diverged) return Outcome::failure(report->divergence + "; wrote them to " + *out_path);
    fs::remove(checkpoint, ec);
  }

  const train::TrainReport& r = *report;
  if (args.has("--json")) {
    JsonWriter w;
    w.begin_object();
    w.key(arch ? "arch" : "model").value(source).key("data").value(*spec).key("samples").value(
        static_cast<int64_t>(train_ds.labels.size()));
    if (distill)
      w.key("teacher").value(*teacher_path).key("temperature").value(o.kd_temperature).key("alpha").value(o.kd_alpha)
          .key("teacher_accuracy").value(*acc);
    if (stopped) w.key("stopped_after").value(r.epochs.back().epoch).key("checkpoint").value(checkpoint);
    else w.key("output").value(*out_path);
    w.key("seconds").value(r.seconds).key("threads").value(threads);
    w.key("epochs").begin_array();
    for (const auto& e : r.epochs) {
      w.begin_object(true).key("epoch").value(e.epoch).key("loss").value(e.loss).key("accuracy").value(e.accuracy);
      if (e.val_accuracy >= 0) w.key("val_accuracy").value(e.val_accuracy);
      w.key("seconds").value(e.seconds).end_object();
    }
    w.end_array().end_object();
    return print_out(w.str());
  }
  const auto& last = r.epochs.back();
  char buf[256];
  std::string text = "model       " + source + "\ndata        " + *spec + " (" +
                     std::to_string(train_ds.labels.size()) + " samples)\n";
  if (distill) {
    std::snprintf(buf, sizeof buf, "teacher     %s (T = %g, alpha = %g)\n", teacher_path->c_str(), o.kd_temperature,
                  o.kd_alpha);
    text += buf;
  }
  std::snprintf(buf, sizeof buf, "trained     %lld epochs in %s (%lld thread%s)\n",
                static_cast<long long>(r.epochs.size()), format_seconds(r.seconds).c_str(),
                static_cast<long long>(threads), threads == 1 ? "" : "s");
  text += buf;
  std::snprintf(buf, sizeof buf, "final       loss %.4f, train accuracy %.4f", last.loss, last.accuracy);
  text += buf;
  if (last.val_accuracy >= 0) {
    std::snprintf(buf, sizeof buf, ", %s accuracy %.4f", val_spec->c_str(), last.val_accuracy);
    text += buf;
  }
  if (stopped)
    text += "\nstopped     after epoch " + std::to_string(last.epoch) + " of " + std::to_string(o.epochs) + "; " +
            checkpoint + " holds the run (continue with --resume)\n";
  else
    text += "\nwrote       " + *out_path + "\n";
  return print_out(text);
}

Outcome run_train(const ParsedArgs& args) { return run_training(args, false); }
Outcome run_distill(const ParsedArgs& args) { return run_training(args, true); }

}  // namespace

extern const CommandSpec kTrainCommand;  // registered in main.cpp
const CommandSpec kTrainCommand = {
    "train",
    "",
    0,
    "train a classifier (built-in architecture or fine-tune an ONNX model)",
    "Trains an image classifier with softmax cross-entropy on a labelled data set and writes it\n"
    "as a float ONNX model. --arch builds a fresh network; --model fine-tunes a float ONNX model\n"
    "(BatchNormalization trains with batch statistics and exports in inference form; a final\n"
    "Softmax is kept in the output but skipped by the loss). Per-epoch loss, accuracy and ETA go\n"
    "to stderr. A non-finite loss stops training, keeps the weights of the last good epoch and\n"
    "exits with an error.",
    kTrainOptions,
    run_train,
};

extern const CommandSpec kDistillCommand;  // registered in main.cpp
const CommandSpec kDistillCommand = {
    "distill",
    "",
    0,
    "train a student model from a teacher model (knowledge distillation)",
    "Knowledge distillation (Hinton et al. 2015): trains the student (--student S.onnx or a\n"
    "built-in --arch) on the labelled data with the loss\n"
    "  (1 - A) * cross-entropy(labels) + A * T^2 * KL(softmax(teacher/T) || softmax(student/T)).\n"
    "The teacher runs in inference mode on the same (augmented) batches; its accuracy is\n"
    "printed first. Training options, progress, checkpoints and output are as in qtk train.",
    kDistillOptions,
    run_distill,
};

}  // namespace qtk::cli
