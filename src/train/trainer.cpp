#include "train/trainer.h"

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "train/loss.h"
#include "train/rng.h"

namespace qtk::train {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// One image [C, H, W]: optional horizontal flip, then a shift by (dy, dx)
// with zeros coming in.
void augment_image(const float* src, float* dst, int64_t c, int64_t h, int64_t w, Rng& rng) {
  const bool flip = rng.below(2) == 1;
  const int64_t dy = static_cast<int64_t>(rng.below(5)) - 2, dx = static_cast<int64_t>(rng.below(5)) - 2;
  for (int64_t k = 0; k < c; ++k)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        const int64_t sy = y - dy, sx0 = x - dx;
        const int64_t sx = flip ? w - 1 - sx0 : sx0;
        dst[(k * h + y) * w + x] = sy >= 0 && sy < h && sx0 >= 0 && sx0 < w ? src[(k * h + sy) * w + sx] : 0.f;
      }
}

}  // namespace

Expected<Tensor> make_batch(const TrainGraph& graph, const Tensor& images, const std::vector<int64_t>& rows,
                            bool augment, Rng* rng) {
  const int64_t n = static_cast<int64_t>(rows.size());
  const int64_t per = images.dim(0) ? images.numel() / images.dim(0) : 0;
  Shape data_shape = images.shape();
  data_shape[0] = n;
  Tensor b = Tensor::uninitialized(DType::kFloat32, data_shape);
  const float* src = images.data<float>();
  float* dst = b.data<float>();
  const bool can_augment = augment && rng && images.rank() == 4;
  for (int64_t i = 0; i < n; ++i) {
    if (can_augment)
      augment_image(src + rows[i] * per, dst + i * per, images.dim(1), images.dim(2), images.dim(3), *rng);
    else
      std::memcpy(dst + i * per, src + rows[i] * per, static_cast<size_t>(per) * sizeof(float));
  }
  const Shape& want = graph.sample_shape();
  if (want.empty()) return b;
  if (shape_numel(want) != per) {
    Shape got(images.shape().begin() + 1, images.shape().end());
    return invalid_argument("data samples of shape " + shape_to_string(got) + " do not fit model input '" +
                            graph.input_name() + "' of per-sample shape " + shape_to_string(want));
  }
  Shape s{n};
  s.insert(s.end(), want.begin(), want.end());
  return b.reshaped(s);
}

Expected<Tensor> reshape_for(const TrainGraph& graph, const Tensor& x) {
  const Shape& want = graph.sample_shape();
  if (want.empty() || x.rank() < 1) return x;
  if (shape_numel(want) * x.dim(0) != x.numel())
    return invalid_argument("input '" + graph.input_name() + "' has per-sample shape " + shape_to_string(want) +
                            ", which does not fit a batch of shape " + shape_to_string(x.shape()));
  Shape s{x.dim(0)};
  s.insert(s.end(), want.begin(), want.end());
  return x.reshaped(s);
}

std::function<Expected<Tensor>(const Tensor&)> teacher_logits(TrainGraph& teacher, rt::ThreadPool* pool) {
  return [&teacher, pool](const Tensor& x) -> Expected<Tensor> {
    QTK_ASSIGN_OR_RETURN(Tensor tx, reshape_for(teacher, x));
    return teacher.forward(tx, false, pool);
  };
}

Expected<std::vector<uint8_t>> correct_predictions(TrainGraph& graph, const data::Dataset& ds, int64_t batch,
                                                   rt::ThreadPool* pool) {
  const int64_t n = static_cast<int64_t>(ds.labels.size());
  if (n == 0) return invalid_argument("evaluation data set is empty");
  std::vector<uint8_t> correct(static_cast<size_t>(n), 0);
  for (int64_t b = 0; b < n; b += batch) {
    std::vector<int64_t> rows;
    for (int64_t i = b; i < std::min(n, b + batch); ++i) rows.push_back(i);
    QTK_ASSIGN_OR_RETURN(Tensor x, make_batch(graph, ds.images, rows, false, nullptr));
    QTK_ASSIGN_OR_RETURN(Tensor logits, graph.forward(x, false, pool));
    const int64_t k = logits.numel() / static_cast<int64_t>(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      const float* r = logits.data<float>() + i * k;
      int64_t best = 0;
      for (int64_t j = 1; j < k; ++j)
        if (r[j] > r[best]) best = j;
      correct[static_cast<size_t>(rows[i])] = best == ds.labels[rows[i]];
    }
  }
  return correct;
}

PairedComparison compare_paired(const std::vector<uint8_t>& baseline, const std::vector<uint8_t>& candidate) {
  PairedComparison r;
  const size_t n = std::min(baseline.size(), candidate.size());
  for (size_t i = 0; i < n; ++i) {
    r.wins += candidate[i] && !baseline[i];
    r.losses += baseline[i] && !candidate[i];
  }
  if (r.wins + r.losses > 0)
    r.z = static_cast<double>(r.wins - r.losses) / std::sqrt(static_cast<double>(r.wins + r.losses));
  return r;
}

double share_correct(const std::vector<uint8_t>& correct) {
  if (correct.empty()) return 0;
  return static_cast<double>(std::count(correct.begin(), correct.end(), 1)) / static_cast<double>(correct.size());
}

Expected<double> evaluate_accuracy(TrainGraph& graph, const data::Dataset& ds, int64_t batch, rt::ThreadPool* pool) {
  QTK_ASSIGN_OR_RETURN(std::vector<uint8_t> c, correct_predictions(graph, ds, batch, pool));
  return share_correct(c);
}

void retain_freed_memory() {
  // Every step allocates the same activation and gradient tensors again; by
  // default glibc returns large freed blocks to the OS and page-faults them
  // back in (about 10% of resnet20 training time in perf). Keep them in the
  // heap instead: process-wide, and only ever raises the thresholds.
  static const bool once = [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's maximum on 64-bit
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    return true;
  }();
  (void)once;
}

Expected<TrainReport> train_classifier(TrainGraph& graph, const data::Dataset& train, const data::Dataset* val,
                                       const TrainOptions& o) {
  retain_freed_memory();
  const int64_t n = static_cast<int64_t>(train.labels.size());
  if (n == 0) return invalid_argument("training data set is empty");
  if (o.epochs < 1 || o.batch < 1) return invalid_argument("epochs and batch must be >= 1");
  if (o.warmup_steps < 0) return invalid_argument("warm-up steps must be >= 0");
  if (!(o.lr > 0.f) || !std::isfinite(o.lr)) return invalid_argument("learning rate must be a positive number");
  if (graph.params().empty()) return invalid_argument("the model has no trainable float parameters");
  {  // Labels must name one of the model's outputs; say which sample does not.
    QTK_ASSIGN_OR_RETURN(Tensor x0, make_batch(graph, train.images, {0}, false, nullptr));
    QTK_ASSIGN_OR_RETURN(Tensor y0, graph.forward(x0, false, o.pool));
    const int64_t classes = y0.numel();
    for (int64_t i = 0; i < n; ++i)
      if (train.labels[i] < 0 || train.labels[i] >= classes)
        return invalid_argument("label " + std::to_string(train.labels[i]) + " of training sample " +
                                std::to_string(i) + " is out of range for a model with " + std::to_string(classes) +
                                " outputs");
  }
  Rng rng(o.seed * 0x9E3779B97F4A7C15ull + 1);
  Optimizer opt(o.optimizer);
  const int64_t steps_per_epoch = (n + o.batch - 1) / o.batch, total = steps_per_epoch * o.epochs;
  int64_t step = 0, first_epoch = 1;
  if (const TrainState* r = o.resume) {
    if (r->epoch < 1 || r->epoch >= o.epochs)
      return invalid_argument("cannot resume after epoch " + std::to_string(r->epoch) + " of a run of " +
                              std::to_string(o.epochs) + " epochs");
    if (r->step != r->epoch * steps_per_epoch)
      return invalid_argument("the checkpoint took " + std::to_string(r->step) + " steps in " +
                              std::to_string(r->epoch) + " epochs; this run takes " +
                              std::to_string(steps_per_epoch) +
                              " per epoch (resume with the data and batch size it was written with)");
    QTK_RETURN_IF_ERROR(opt.restore(r->optimizer, graph.params(), r->step));
    rng = Rng(r->rng);
    step = r->step;
    first_epoch = r->epoch + 1;
  }
  TrainReport report;
  const auto t_start = std::chrono::steady_clock::now();
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t epoch = first_epoch; epoch <= o.epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    auto good = graph.snapshot();  // the weights to keep if this epoch diverges
    for (int64_t i = 0; i < n; ++i) order[i] = i;
    for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[rng.below(static_cast<uint64_t>(i + 1))]);
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    float lr = o.lr;
    for (int64_t b = 0; b < n; b += o.batch, ++step) {
      std::vector<int64_t> rows(order.begin() + b, order.begin() + std::min(n, b + o.batch));
      std::vector<int64_t> labels;
      for (int64_t r : rows) labels.push_back(train.labels[r]);
      QTK_ASSIGN_OR_RETURN(Tensor x, make_batch(graph, train.images, rows, o.augment, &rng));
      StepStats s;
      if (o.teacher) {
        QTK_ASSIGN_OR_RETURN(Tensor t, o.teacher(x));
        auto loss = [&](const Tensor& logits) {
          return distillation_loss(logits, t, labels, o.kd_temperature, o.kd_alpha);
        };
        QTK_ASSIGN_OR_RETURN(s, graph.train_step(x, static_cast<int64_t>(labels.size()), loss, o.pool));
      } else {
        QTK_ASSIGN_OR_RETURN(s, graph.train_step(x, labels, o.pool));
      }
      if (!std::isfinite(s.loss)) {
        graph.restore(good);
        report.diverged = true;
        report.divergence = "loss became " + std::string(std::isnan(s.loss) ? "NaN" : "infinite") + " in epoch " +
                            std::to_string(epoch) + " at step " + std::to_string(b / o.batch + 1) +
                            "; stopped and kept the weights " +
                            (epoch == first_epoch ? std::string("the run started from")
                                        : "from the end of epoch " + std::to_string(epoch - 1)) +
                            " (try a lower --lr)";
        report.seconds = seconds_since(t_start);
        return report;
      }
      lr = scheduled_lr(o.schedule, o.lr, step, total);
      if (step < o.warmup_steps)
        lr *= static_cast<float>(step + 1) / static_cast<float>(o.warmup_steps);
      if (o.before_step) QTK_RETURN_IF_ERROR(o.before_step());
      opt.step(graph.params(), lr, o.pool);
      if (o.after_step) QTK_RETURN_IF_ERROR(o.after_step());
      loss_sum += s.loss * static_cast<double>(s.samples);
      correct += s.correct;
      seen += s.samples;
      if (o.progress)
        o.progress(epoch, seen, n, loss_sum / static_cast<double>(seen),
                   static_cast<double>(correct) / static_cast<double>(seen));
    }
    EpochStats e;
    e.epoch = epoch;
    e.loss = loss_sum / static_cast<double>(seen);
    e.accuracy = static_cast<double>(correct) / static_cast<double>(seen);
    e.last_lr = lr;
    if (val) {
      QTK_ASSIGN_OR_RETURN(e.val_accuracy, evaluate_accuracy(graph, *val, 256, o.pool));
    }
    e.seconds = seconds_since(t0);
    report.epochs.push_back(e);
    if (o.on_epoch) o.on_epoch(e);
    if (o.on_checkpoint) o.on_checkpoint(TrainState{epoch, step, rng.state(), opt.state(graph.params())});
    if (epoch == o.stop_after_epoch) break;
  }
  report.seconds = seconds_since(t_start);
  return report;
}

}  // namespace qtk::train
