// Top-1 accuracy and throughput of an image classifier on a labelled data set:
// what `qtk eval` prints and what `qtk quantize --eval` compares.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "data/dataset.h"
#include "qtk/session.h"
#include "qtk/status.h"

namespace qtk::eval {

struct EvalOptions {
  // Images per inference call; 0 means 64, or the model's batch when its
  // input fixes one (a different non-zero batch is then an error).
  int64_t batch = 0;
  // Called after each batch with the samples done so far and the total.
  std::function<void(int64_t done, int64_t total)> progress;
};

struct EvalResult {
  int64_t samples = 0;
  int64_t correct = 0;
  double accuracy = 0.0;                // correct / samples
  std::vector<int64_t> class_samples;   // per class id, num_classes entries
  std::vector<int64_t> class_correct;
  std::vector<double> class_accuracy;   // 0 for a class without samples (see class_samples)
  double seconds = 0.0;                 // wall time of the inference loop only
  double images_per_second = 0.0;
  int64_t batch = 0;                    // the batch actually used
};

// Feeds the data set's images (reshaped to the model's per-sample shape when
// it declares one with the same size) to a one-input float32 model in
// batches and compares the argmax of the first output with the labels. A
// model with a fixed batch gets full batches; padding rows are ignored.
Expected<EvalResult> evaluate_classifier(const Session& session, const data::Dataset& ds,
                                         const EvalOptions& options = {});

}  // namespace qtk::eval
