// The training loop for image classifiers: shuffled mini-batches, optional
// augmentation (random horizontal flip and shifts of up to 2 pixels), an
// optimizer and a learning-rate schedule, per-epoch loss/accuracy and
// validation accuracy; stops on a non-finite loss and keeps the weights of
// the last good epoch.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "qtk/status.h"
#include "train/optimizer.h"
#include "train/train_graph.h"

namespace qtk::train {

struct EpochStats {
  int64_t epoch = 0;  // 1-based
  double loss = 0, accuracy = 0;  // training, running over the epoch
  double val_accuracy = -1;       // -1 without validation data
  double seconds = 0;             // wall time of the epoch (training and validation)
  float last_lr = 0;
};

// Where a run stands after an epoch: with the graph's weights and running
// statistics, enough to continue it exactly as if it had not stopped.
struct TrainState {
  int64_t epoch = 0;  // epochs completed
  int64_t step = 0;   // optimizer steps taken (the schedule's position and the optimizer's count)
  uint64_t rng = 0;   // state of the shuffling and augmentation generator
  OptimizerState optimizer;
};

struct TrainOptions {
  int64_t epochs = 10;
  int64_t batch = 64;
  float lr = 1e-3f;
  OptimizerConfig optimizer;
  ScheduleKind schedule = ScheduleKind::kCosine;
  // Linear warm-up over the first `warmup_steps` optimizer steps: the
  // schedule's lr times (step + 1) / warmup_steps. AdamW's first steps move
  // every element by about lr whatever its gradient, which a fine-tune from a
  // good start (QAT from PTQ) does not want at full size.
  int64_t warmup_steps = 0;
  bool augment = false;
  uint64_t seed = 0;
  // Resume from a checkpoint's state (train/checkpoint.h): epochs up to
  // resume->epoch count as done; the schedule, the optimizer buffers and the
  // shuffling continue where they were. Must have been written by a run
  // with the same data size and batch (the step count is checked).
  const TrainState* resume = nullptr;
  // Stop after this epoch (0: run all); the schedule still spans `epochs`,
  // so a later resume continues the same run.
  int64_t stop_after_epoch = 0;
  rt::ThreadPool* pool = nullptr;
  // After each batch: epoch (1-based), samples done in it, its total, the
  // running loss and accuracy of the epoch.
  std::function<void(int64_t, int64_t, int64_t, double, double)> progress;
  std::function<void(const EpochStats&)> on_epoch;
  // After on_epoch: the state to write into a checkpoint.
  std::function<void(const TrainState&)> on_checkpoint;
  // Called once the gradients of a step are computed, before the optimizer
  // applies them (weight sharing ties the gradients here); an error stops
  // training.
  std::function<Status()> before_step;
  // Called after every optimizer step (pruning re-applies its masks here);
  // an error stops training.
  std::function<Status()> after_step;
  // Knowledge distillation (Hinton et al. 2015): with a teacher, the loss is
  // (1 - kd_alpha) * CE(student, labels) + kd_alpha * T^2 * KL(teacher_T || student_T)
  // where _T is softmax at temperature kd_temperature. The teacher sees the
  // same (augmented) batch as the student and returns its logits [N, classes].
  std::function<Expected<Tensor>(const Tensor& batch)> teacher;
  float kd_temperature = 4.f;
  float kd_alpha = 0.5f;
};

struct TrainReport {
  std::vector<EpochStats> epochs;  // completed epochs
  bool diverged = false;           // stopped on a non-finite loss
  std::string divergence;          // what happened and which weights were kept
  double seconds = 0;
};

// Makes glibc keep freed blocks up to 32 MiB in the heap instead of
// unmapping them (train_classifier calls it; benchmarks may too).
void retain_freed_memory();

Expected<TrainReport> train_classifier(TrainGraph& graph, const data::Dataset& train, const data::Dataset* val,
                                       const TrainOptions& options);

// Top-1 accuracy of the graph in inference mode.
Expected<double> evaluate_accuracy(TrainGraph& graph, const data::Dataset& ds, int64_t batch,
                                   rt::ThreadPool* pool = nullptr);
// Per sample of `ds`: 1 where the graph's top-1 prediction (inference mode)
// is its label, for paired comparisons of two models on the same samples.
Expected<std::vector<uint8_t>> correct_predictions(TrainGraph& graph, const data::Dataset& ds, int64_t batch,
                                                   rt::ThreadPool* pool = nullptr);
// The share of 1s in such a vector (0 when it is empty).
double share_correct(const std::vector<uint8_t>& correct);

// Paired comparison of two models' per-sample correctness on the same
// samples (McNemar's test, normal approximation): `wins` samples only the
// candidate gets right, `losses` only the baseline. The candidate is better
// beyond chance when wins - losses >= z * sqrt(wins + losses).
struct PairedComparison {
  int64_t wins = 0, losses = 0;
  double z = 0;  // (wins - losses) / sqrt(wins + losses); 0 when they agree everywhere
};
PairedComparison compare_paired(const std::vector<uint8_t>& baseline, const std::vector<uint8_t>& candidate);

// Rows `rows` of the data set's images as one batch shaped for the graph's
// input (the model's declared per-sample shape when it has the same size),
// with augmentation drawn from `rng` when `augment` (4-D images only).
// A batch made for one graph reshaped to another's per-sample input shape
// (a teacher reading [N,784] given a student's [N,1,28,28]); an error naming
// the input when the sizes differ.
Expected<Tensor> reshape_for(const TrainGraph& graph, const Tensor& batch);
// TrainOptions::teacher for a float teacher graph: its inference-mode logits
// for a student's batch (reshaped with reshape_for). The graph must outlive
// the training run.
std::function<Expected<Tensor>(const Tensor&)> teacher_logits(TrainGraph& teacher, rt::ThreadPool* pool);

class Rng;
Expected<Tensor> make_batch(const TrainGraph& graph, const Tensor& images, const std::vector<int64_t>& rows,
                            bool augment, Rng* rng);

}  // namespace qtk::train
