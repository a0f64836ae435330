// qtk prune: unstructured (magnitude, N:M) or structured (channel) pruning,
// optional fine-tuning with a gradual sparsity schedule, and optional weight
// clustering with centroid fine-tuning; reports size and accuracy after each
// step.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>

#include "cli.h"
#include "train_progress.h"
#include "compress/centroid_tuning.h"
#include "compress/channel_pruning.h"
#include "compress/gradual_pruning.h"
#include "compress/model_size.h"
#include "compress/weight_clustering.h"
#include "compress/weight_masks.h"
#include "core/cpu_features.h"
#include "core/json.h"
#include "data/dataset.h"
#include "eval/classifier_eval.h"
#include "qtk/model.h"
#include "qtk/session.h"
#include "runtime/thread_pool.h"
#include "train/checkpoint.h"
#include "train/labelled_data.h"
#include "train/trainer.h"

namespace qtk::cli {
namespace {

namespace fs = std::filesystem;

constexpr OptionSpec kOptions[] = {
    {"--output", "OUT.onnx", "where to write the pruned model (required; never the input)", false, "-o"},
    {"--sparsity", "S", "fraction of weights (or, with --method channels, of output channels) to remove, in [0, 1) "
                        "(required unless --cluster; 0 = no pruning)"},
    {"--method", "NAME", "magnitude (default) | 2:4 (any N:M; --sparsity is then implied) | channels"},
    {"--edge-sparsity", "S", "sparsity of the first and last layer (default: half of --sparsity; 0 keeps them dense)"},
    {"--cluster", "BITS", "share 2^BITS values per layer (k-means, Deep Compression) after pruning"},
    {"--data", "SPEC", "fine-tune on this labelled data (e.g. fashion-mnist:train); without it, prune one-shot"},
    {"--val", "SPEC", "report accuracy of every step on this data (e.g. fashion-mnist:test)"},
    {"--epochs", "N", "fine-tuning epochs after pruning (default 2)"},
    {"--cluster-epochs", "N",
     "with --cluster and --data: epochs of centroid fine-tuning after clustering (default 1; 0 = none)"},
    {"--ramp", "F", "fraction of the fine-tuning steps over which sparsity ramps up (default 0.5; 0 = one-shot)"},
    {"--batch", "B", "fine-tuning batch (default 64)"},
    {"--lr", "LR", "fine-tuning peak learning rate, AdamW with cosine decay (default 0.001)"},
    {"--limit", "N", "fine-tune on the first N training samples only"},
    {"--threads", "N", "threads (default: physical cores)"},
    {"--seed", "S", "seed for shuffling (default 0)"},
    {"--json", "", "print one JSON object instead of text"},
    {"--resume", "", "continue the pruning fine-tune from OUT.onnx.checkpoint (written after every epoch, removed "
                     "at the end; the pruning before it is redone from the same inputs)"},
    {"--stop-after", "K", "stop the pruning fine-tune after epoch K (below --epochs), keeping the checkpoint and "
                          "writing no OUT.onnx (continue later with --resume)"},
    {"--force", "", "overwrite OUT.onnx if it exists"},
};

struct StepRow {
  std::string step;
  compress::ModelSize size;
  double accuracy = -1;
};

// Checkpoint metadata: the run's options and files (see run_prune).
constexpr const char* kPruneRunKey = "qtk.prune.run";

Outcome run_prune(const ParsedArgs& args) {
  const std::string& in_path = args.positionals[0];
  const std::string* out_path = args.get("--output");
  if (!out_path || out_path->empty()) return Outcome::usage("option -o/--output is required (where to write the model)");
  const std::string* sp = args.get("--sparsity");
  const std::string method_text = args.get("--method") ? *args.get("--method") : "magnitude";
  compress::MaskOptions mo;
  if (Status s = compress::parse_prune_method(method_text, mo.method, mo.n, mo.m); !s.ok())
    return Outcome::usage(s.message() + " for --method");
  if (sp) {
    char* end = nullptr;
    mo.sparsity = std::strtod(sp->c_str(), &end);
    if (end == sp->c_str() || *end != '\0') return Outcome::usage("--sparsity expects a number, got '" + *sp + "'");
    if (Status s = compress::check_sparsity(mo.sparsity, "--sparsity"); !s.ok()) return Outcome::usage(s.message());
  } else if (mo.method != compress::PruneMethod::kNofM) {
    if (!args.has("--cluster")) return Outcome::usage("option --sparsity is required (e.g. --sparsity 0.5)");
    mo.sparsity = 0;  // --cluster alone clusters the weights as they are
  }
  // N:M fixes the sparsity: 1 - N/M.
  if (mo.method == compress::PruneMethod::kNofM) mo.sparsity = 1.0 - static_cast<double>(mo.n) / static_cast<double>(mo.m);
  mo.edge_sparsity = mo.method == compress::PruneMethod::kNofM ? -1 : mo.sparsity / 2;
  double edge = mo.edge_sparsity;
  QTK_CLI_RETURN_IF_FAILED(real_option(args, "--edge-sparsity", 0, 0.999999, edge));
  if (args.has("--edge-sparsity")) mo.edge_sparsity = edge;
  // 2 epochs at lr 1e-3: 50% magnitude and 2:4 pruning + W8A8 end within
  // 0.1 points of float or above it on cnn, resnet20, mobilenetv2_fm and
  // vit_fm; 1 epoch at 2e-4 lost 1.4-1.9 points on mobilenetv2_fm (README).
  int64_t bits = 0, epochs = 2, cluster_epochs = 1, batch = 64, limit = 0, threads = physical_core_count(), seed = 0;
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--cluster", 1, 8, bits));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--epochs", 1, 10000, epochs));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--cluster-epochs", 0, 10000, cluster_epochs));
  if (args.has("--cluster-epochs") && !args.has("--cluster"))
    return Outcome::usage("--cluster-epochs needs --cluster BITS");
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--batch", 1, 1 << 16, batch));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--limit", 1, INT64_MAX, limit));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--threads", 1, 1024, threads));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--seed", 0, INT64_MAX, seed));
  double lr = 1e-3, ramp = 0.5;
  QTK_CLI_RETURN_IF_FAILED(real_option(args, "--lr", 1e-12, 1e3, lr));
  QTK_CLI_RETURN_IF_FAILED(real_option(args, "--ramp", 0, 1, ramp));
  const std::string* data_spec = args.get("--data");
  const std::string* val_spec = args.get("--val");
  // Clustering alone fine-tunes only the shared values (--cluster-epochs):
  // the pruning schedule's options would be silently ignored.
  if (bits > 0 && mo.sparsity == 0)
    for (const char* o : {"--epochs", "--ramp", "--edge-sparsity"})
      if (args.has(o))
        return Outcome::usage(std::string(o) + " applies to pruning; --cluster without a positive --sparsity only "
                              "clusters (use --cluster-epochs for its fine-tuning)");

  if (same_file(in_path, *out_path)) return Outcome::usage("output " + *out_path + " is the input model; choose another -o");
  std::error_code ec;
  int64_t stop_after = 0;
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--stop-after", 1, INT64_MAX, stop_after));
  if ((args.has("--stop-after") || args.has("--resume")) && !(data_spec && mo.sparsity > 0))
    return Outcome::usage("--resume and --stop-after apply to the pruning fine-tune (--data and a positive --sparsity)");
  if (stop_after >= epochs)
    return Outcome::usage("--stop-after " + std::to_string(stop_after) + " must be below --epochs " +
                          std::to_string(epochs));
  // (Also with --stop-after: the run it begins ends by writing OUT.onnx.)
  if (fs::exists(*out_path, ec) && !args.has("--force"))
    return Outcome::failure(*out_path + " already exists (use --force to overwrite it)");
  // Checkpoints of the pruning fine-tune, keyed on what shapes it.
  const std::string checkpoint = *out_path + ".checkpoint";
  const bool checkpointed = data_spec && mo.sparsity > 0;  // only the pruning fine-tune keeps one
  char settings[256];
  std::snprintf(settings, sizeof settings, " sparsity=%.9g edge=%.9g epochs=%lld lr=%.9g batch=%lld ramp=%.9g seed=%lld",
                mo.sparsity, mo.edge_sparsity, static_cast<long long>(epochs), lr, static_cast<long long>(batch), ramp,
                static_cast<long long>(seed));
  const std::string run_key = !checkpointed ? std::string()
                                            : "model=" + content_key(in_path) + " data=" + content_key(*data_spec) +
                                                  " limit=" + std::to_string(limit) + " method=" + method_text + settings;
  std::optional<train::ResumeCheckpoint> resume;
  if (args.has("--resume")) {
    QTK_CLI_ASSIGN_OR_FAIL(resume,
                           train::load_resume_checkpoint(checkpoint, "qtk prune", {kPruneRunKey, run_key}, epochs, stop_after));
  } else if (checkpointed && fs::exists(checkpoint, ec)) {
    print_warning(checkpoint + " (an earlier run's) will be replaced; --resume continues it instead");
  }

  QTK_CLI_ASSIGN_OR_FAIL(Model model, load_model(in_path));
  data::Dataset train_ds, val_ds;
  if (data_spec) {
    QTK_CLI_ASSIGN_OR_FAIL(train_ds, train::load_labelled_data(*data_spec, limit));
    if (train_ds.labels.empty()) return Outcome::failure("data set " + *data_spec + " is empty");
  }
  if (val_spec) {
    QTK_CLI_ASSIGN_OR_FAIL(val_ds, train::load_labelled_data(*val_spec));
  }

  std::vector<StepRow> rows;
  const bool tty = ::isatty(STDERR_FILENO) == 1 && !args.has("--json");
  auto record = [&](const std::string& step, const Model& m) -> Outcome {
    StepRow r{step, {}, -1};
    auto size = compress::measure_size(m);
    if (!size.ok()) return Outcome::failure(size.status().with_context(step + " model"));
    r.size = *size;
    if (val_spec) {
      SessionOptions so;
      so.threads = static_cast<int>(threads);
      auto session = Session::create(m, so);
      if (!session.ok()) return Outcome::failure(session.status().with_context("the " + step + " model does not load"));
      auto res = eval::evaluate_classifier(**session, val_ds, {});
      if (!res.ok()) return Outcome::failure(res.status().with_context("evaluating the " + step + " model"));
      r.accuracy = res->accuracy;
    }
    if (tty)
      std::fprintf(stderr, "%-11s done%s\n", step.c_str(),
                   r.accuracy >= 0 ? (", accuracy " + std::to_string(r.accuracy)).c_str() : "");
    rows.push_back(r);
    return Outcome::ok();
  };
  QTK_CLI_RETURN_IF_FAILED(record("original", model));

  std::vector<std::string> notes;
  const auto layers = compress::prunable_weights(model.graph);
  auto lookup = [&](const Model& m) {
    return [&m](const std::string& n) { return m.graph.find_initializer(n); };
  };
  // --cluster without --sparsity (or with 0) clusters the weights as they are.
  const bool prune = bits == 0 || mo.sparsity > 0;
  if (!prune) {
    // nothing to prune
  } else if (mo.method == compress::PruneMethod::kChannels) {
    auto rep = compress::prune_channels(model, mo.sparsity);
    if (!rep.ok()) return Outcome::failure(rep.status().with_context(in_path));
    if (rep->pruned.empty()) return Outcome::failure(in_path + ": no Conv layer has channels that can be removed");
    for (const auto& k : rep->kept) notes.push_back("kept " + k);
  } else {
    // One-shot pruning at the target: reported, and the start when there
    // is no ramp.
    Model pruned = model;
    auto masks = compress::make_masks(layers, lookup(pruned), mo, &notes);
    if (!masks.ok()) return Outcome::failure(masks.status().with_context(in_path));
    if (Status s = compress::apply_masks(pruned.graph, *masks); !s.ok()) return Outcome::failure(s);
    // Gradual pruning starts from the dense weights.
    if (!data_spec || ramp == 0) model = std::move(pruned);
    else QTK_CLI_RETURN_IF_FAILED(record("pruned", pruned));
  }
  if (prune && (!data_spec || ramp == 0 || mo.method == compress::PruneMethod::kChannels))
    QTK_CLI_RETURN_IF_FAILED(record("pruned", model));

  rt::ThreadPool pool(static_cast<int>(threads));
  // Fine-tuning on --data: `hooks` installs the step hooks on the graph
  // made from `model`; `extra` is appended to the live progress line.
  // With `with_checkpoints` (the pruning fine-tune), a checkpoint after every
  // epoch, --resume and --stop-after (`stopped` then says so).
  bool stopped = false;
  auto fine_tune = [&](int64_t n_epochs, const std::string& step, const std::string& label,
                       const std::function<Status(train::TrainGraph&, train::TrainOptions&)>& hooks,
                       const std::function<std::string()>& extra,
                       const std::function<Status()>& finish, bool with_checkpoints) -> Outcome {
    auto graph = train::TrainGraph::create(model);
    if (!graph.ok()) return Outcome::failure(graph.status().with_context(in_path));
    train::TrainOptions o;
    o.epochs = n_epochs;
    o.batch = batch;
    o.lr = static_cast<float>(lr);
    o.seed = static_cast<uint64_t>(seed);
    o.pool = &pool;
    if (with_checkpoints) {
      if (resume) {  // before the hooks: the pruner recomputes its masks from these weights
        if (Status s = train::restore_weights(*graph, resume->model); !s.ok())
          return Outcome::failure(s.with_context(checkpoint));
        resume->model = Model();
        o.resume = &resume->state;
        std::fprintf(stderr, "resuming from %s after epoch %lld\n", checkpoint.c_str(),
                     static_cast<long long>(resume->state.epoch));
      }
      o.stop_after_epoch = stop_after;
      o.on_checkpoint = [&, n_epochs](const train::TrainState& state) {
        // None after the last epoch: if what follows fails, the previous
        // epoch's stays, which --resume can continue.
        if (state.epoch >= n_epochs) return;
        const Status saved = train::save_checkpoint(*graph, state, checkpoint, {kPruneRunKey, run_key});
        if (!saved.ok()) print_warning("could not write checkpoint: " + saved.message());
      };
    }
    if (Status s = hooks(*graph, o); !s.ok()) return Outcome::failure(s.with_context(in_path));
    TrainProgress progress(label, n_epochs, tty);
    o.progress = [&](int64_t epoch, int64_t done, int64_t total, double loss, double acc) {
      progress.step(epoch, done, total, loss, acc, extra());
    };
    o.on_epoch = [&](const train::EpochStats& e) {
      if (tty) progress.epoch(e);
    };
    auto report = train::train_classifier(*graph, train_ds, nullptr, o);
    if (!report.ok()) return Outcome::failure(report.status().with_context(in_path));
    if (!report->diverged && !report->epochs.empty() && report->epochs.back().epoch < n_epochs) {
      stopped = true;  // --stop-after: the checkpoint holds the run
      return Outcome::ok();
    }
    if (Status s = finish(); !s.ok()) return Outcome::failure(s);
    if (report->diverged) notes.push_back(report->divergence);
    model = graph->to_model();
    return record(step, model);
  };

  if (prune && data_spec) {
    const int64_t total_steps = epochs * ((static_cast<int64_t>(train_ds.labels.size()) + batch - 1) / batch);
    const int64_t ramp_steps = static_cast<int64_t>(ramp * static_cast<double>(total_steps));
    std::optional<compress::GradualPruner> pruner;
    auto hooks = [&](train::TrainGraph& g, train::TrainOptions& o) -> Status {
      if (mo.method == compress::PruneMethod::kChannels) return Status::Ok();
      pruner.emplace(g, layers, mo, ramp_steps, std::max<int64_t>(1, ramp_steps / 50));
      o.after_step = [&] { return pruner->after_step(); };
      return resume ? pruner->resume_at(resume->state.step) : pruner->start();
    };
    auto extra = [&] {
      char sparsity[40];
      std::snprintf(sparsity, sizeof sparsity, " sparsity %.3f", pruner ? pruner->current_sparsity() : mo.sparsity);
      return std::string(sparsity);
    };
    auto finish = [&] { return pruner ? pruner->finish() : Status::Ok(); };
    QTK_CLI_RETURN_IF_FAILED(fine_tune(epochs, "fine-tuned", "fine-tune epoch", hooks, extra, finish, true));
    if (stopped) {
      if (args.has("--json")) {
        JsonWriter w;
        w.begin_object().key("model").value(in_path).key("stopped_after").value(stop_after).key("checkpoint").value(
            checkpoint);
        w.end_object();
        return print_out(w.str());
      }
      return print_out("stopped     after epoch " + std::to_string(stop_after) + " of " + std::to_string(epochs) +
                       "; " + checkpoint + " holds the run (continue with --resume)\n");
    }
  }
  if (bits > 0) {
    compress::ClusterOptions co;
    co.bits = static_cast<int>(bits);
    auto cl = compress::cluster_weights(model.graph, co);
    if (!cl.ok()) return Outcome::failure(cl.status().with_context(in_path));
    QTK_CLI_RETURN_IF_FAILED(record("clustered", model));
    if (data_spec && cluster_epochs > 0) {
      // Deep Compression's centroid fine-tuning: assignments fixed, shared values trained.
      std::optional<compress::CentroidTuner> tuner;
      auto hooks = [&](train::TrainGraph& g, train::TrainOptions& o) -> Status {
        QTK_ASSIGN_OR_RETURN(compress::CentroidTuner t,
                             compress::CentroidTuner::create(g, compress::prunable_weights(model.graph)));
        tuner.emplace(std::move(t));
        o.before_step = [&] { return tuner->before_step(); };
        o.after_step = [&] { return tuner->after_step(); };
        return Status::Ok();
      };
      QTK_CLI_RETURN_IF_FAILED(fine_tune(
          cluster_epochs, "cluster-ft", "centroid epoch", hooks, [] { return std::string(); },
          [] { return Status::Ok(); }, false));
    }
  }
  if (Status s = save_model(model, *out_path); !s.ok()) return Outcome::failure(s);
  if (checkpointed) fs::remove(checkpoint, ec);  // another command's at this path stays

  if (args.has("--json")) {
    JsonWriter w;
    w.begin_object();
    w.key("model").value(in_path).key("output").value(*out_path).key("method").value(method_text);
    w.key("sparsity").value(mo.sparsity);
    if (bits > 0) w.key("cluster_bits").value(bits);
    w.key("steps").begin_array();
    for (const auto& r : rows) {
      w.begin_object(true).key("step").value(r.step).key("parameters").value(r.size.parameters);
      w.key("nonzero").value(r.size.nonzero).key("file_bytes").value(r.size.file_bytes);
      w.key("deflated_bytes").value(r.size.deflated_bytes);
      if (r.accuracy >= 0) w.key("accuracy").value(r.accuracy);
      w.end_object();
    }
    w.end_array().key("notes").begin_array();
    for (const auto& n : notes) w.value(n);
    w.end_array().end_object();
    return print_out(w.str());
  }
  std::string text = "model       " + in_path + "\nmethod      " + method_text + "\n\n";
  char buf[256];
  std::snprintf(buf, sizeof buf, "%-11s %12s %12s %9s %12s %12s %9s\n", "step", "parameters", "nonzero", "sparsity",
                "file", "deflated", "accuracy");
  text += buf;
  for (const auto& r : rows) {
    const double sparsity =
        r.size.parameters ? 1.0 - static_cast<double>(r.size.nonzero) / static_cast<double>(r.size.parameters) : 0;
    std::snprintf(buf, sizeof buf, "%-11s %12s %12s %8.1f%% %12s %12s %9s\n", r.step.c_str(),
                  format_count(static_cast<uint64_t>(r.size.parameters)).c_str(),
                  format_count(static_cast<uint64_t>(r.size.nonzero)).c_str(), 100 * sparsity,
                  format_bytes(r.size.file_bytes).c_str(), format_bytes(r.size.deflated_bytes).c_str(),
                  r.accuracy >= 0 ? std::to_string(r.accuracy).substr(0, 6).c_str() : "-");
    text += buf;
  }
  for (const auto& n : notes) text += "note: " + n + "\n";
  text += "wrote       " + *out_path + "\n";
  return print_out(text);
}

}  // namespace

extern const CommandSpec kPruneCommand;  // registered in main.cpp
const CommandSpec kPruneCommand = {
    "prune",
    "IN.onnx",
    1,
    "prune (magnitude, N:M, channels) and cluster a model's weights, with fine-tuning",
    "Zeroes weights of Conv/Gemm/MatMul layers (magnitude: the smallest of each layer; N:M: the\n"
    "N largest of every M along the reduction axis) or removes whole Conv output channels (L1\n"
    "importance; only where the channels flow through channel-wise ops into other Conv layers,\n"
    "or through Flatten into Gemm layers, whose matching input columns go too).\n"
    "With --data, fine-tunes with the sparsity ramping up along Zhu & Gupta's cubic schedule and\n"
    "pruned weights held at zero after every step. --cluster replaces each layer's weights by\n"
    "2^BITS shared values (k-means); with --data, the shared values are then fine-tuned with the\n"
    "assignment fixed, each by the sum of its weights' gradients (--cluster-epochs). Reports\n"
    "parameters, file size, deflated size and accuracy (--val) after each step. The input model\n"
    "is never modified.",
    kOptions,
    run_prune,
};

}  // namespace qtk::cli
