// Softmax cross-entropy on logits: the classification loss, its gradient and
// the number of correct top-1 predictions, in one pass.
#pragma once

#include <cstdint>
#include <vector>

#include "qtk/status.h"
#include "qtk/tensor.h"

namespace qtk::train {

struct LossResult {
  double loss = 0;      // mean over the batch
  int64_t correct = 0;  // argmax == label
  Tensor dlogits;       // d(mean loss)/d(logits), same shape as logits
};

// logits [N, C] (or [N, C, 1, ...]); labels in [0, C). A label out of range
// is an error naming the sample and the class count.
Expected<LossResult> softmax_cross_entropy(const Tensor& logits, const std::vector<int64_t>& labels);

// Knowledge-distillation loss: (1 - alpha) * cross-entropy with the labels +
// alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)), mean over the
// batch. The T^2 factor keeps the soft term's gradient scale independent of
// T (Hinton et al. 2015). `correct` counts the student's argmax vs labels.
Expected<LossResult> distillation_loss(const Tensor& student, const Tensor& teacher,
                                       const std::vector<int64_t>& labels, float temperature, float alpha);

}  // namespace qtk::train
