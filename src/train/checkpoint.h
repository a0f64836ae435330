// Training checkpoints for --resume: one ONNX file holding the model (as
// TrainGraph::to_model writes it) and the run's TrainState, so a resumed
// run continues exactly where the interrupted one stopped. The state rides
// along as metadata (qtk.train.epoch, .step, .rng, .optimizer) and as the
// optimizer buffers in initializers no node reads ("qtk.train.m/<param>",
// "qtk.train.v/<param>"): one file, written atomically, so the weights and
// the state never come from different epochs. take_train_state strips it
// all again, so a model trained from a checkpoint exports clean.
#pragma once

#include <optional>
#include <string>
#include <utility>

#include "ir/graph.h"
#include "qtk/status.h"
#include "train/train_graph.h"
#include "train/trainer.h"

namespace qtk::train {

// The graph's model with `state` attached.
ir::Model checkpoint_model(const TrainGraph& graph, const TrainState& state);
// checkpoint_model written to `path` (atomically), with `run_key` (when
// given) as metadata `run_key->first`: what shaped the run, so a resume can
// refuse a checkpoint of another one.
Status save_checkpoint(const TrainGraph& graph, const TrainState& state, const std::string& path,
                       const std::pair<std::string, std::string>& run_key = {});

// A checkpoint to resume from: its model (weights for restore_weights) and
// state. load_resume_checkpoint refuses, naming the reason, a missing file,
// one whose metadata `key_name` is not `run_key` (written by `command` with
// other options or files), one without training state, and one with no
// epoch left before `epochs` or `stop_after` (0: none).
struct ResumeCheckpoint {
  ir::Model model;
  TrainState state;
};
Expected<ResumeCheckpoint> load_resume_checkpoint(const std::string& path, const std::string& command,
                                                  const std::pair<std::string, std::string>& run_key, int64_t epochs,
                                                  int64_t stop_after);

// Removes the training state from a loaded checkpoint and returns it;
// nullopt when the model holds none (an error when it holds a partial or
// malformed one, naming what is wrong).
Expected<std::optional<TrainState>> take_train_state(ir::Model& model);

// Copies a checkpoint's parameters (and running statistics) into `graph`,
// which must hold the same ones (names, dtypes, shapes; an error naming the
// first that differs): a run rebuilt from its inputs, as qtk qat rebuilds
// its training graph from PTQ, continues from the checkpoint's weights.
Status restore_weights(TrainGraph& graph, const ir::Model& checkpoint);

}  // namespace qtk::train
