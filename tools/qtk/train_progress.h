// Progress of a training loop on stderr, shared by qtk train, distill, qat
// and prune: a live line on a terminal (bar, loss, accuracy, ETA; redrawn at
// most every 100 ms) and one line per finished epoch.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "train/trainer.h"

namespace qtk::cli {

std::string format_seconds(double s);

class TrainProgress {
 public:
  // label: "epoch", "qat epoch", ...; live: draw the live line (when stderr
  // is a terminal). Epoch lines are printed either way.
  TrainProgress(std::string label, int64_t epochs, bool live = true);
  // TrainOptions::progress; `extra` is appended to the live line.
  void step(int64_t epoch, int64_t done, int64_t total, double loss, double acc, const std::string& extra = "");
  // TrainOptions::on_epoch.
  void epoch(const train::EpochStats& e);
  // What the epoch line calls EpochStats::val_accuracy ("val" by default).
  void set_val_label(std::string label) { val_label_ = std::move(label); }

 private:
  std::string label_, val_label_ = "val";
  int64_t epochs_;
  bool tty_;
  std::chrono::steady_clock::time_point t0_, last_draw_;
};

}  // namespace qtk::cli
