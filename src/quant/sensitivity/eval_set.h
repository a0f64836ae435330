// A validation subset for sensitivity analysis: inputs (and labels, when the
// data has them), the model outputs on it, and how far one set of outputs is
// from another (output SQNR, softmax KL divergence, top-1 accuracy).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qtk/model.h"
#include "qtk/session.h"
#include "qtk/status.h"
#include "qtk/tensor.h"

namespace qtk::quant::sensitivity {

struct EvalSet {
  std::vector<Tensor> inputs;   // one per runtime input of the model, samples along axis 0
  std::vector<int64_t> labels;  // class ids, one per sample; empty when the data has none
  int64_t samples() const { return inputs.empty() ? 0 : inputs[0].rank() ? inputs[0].dim(0) : 0; }
  bool labelled() const { return !labels.empty(); }
};

// SPEC is a data set (labelled: fashion-mnist:test, ...) or FILE.npy/.npz
// (unlabelled); `limit` > 0 keeps the first `limit` samples of a data set or
// a seeded subset of that many array rows.
Expected<EvalSet> load_eval_set(const std::string& spec, const Model& model, int64_t limit);

// The first output of `model` on every sample of `set`, as [samples, values].
Expected<Tensor> model_outputs(const Model& model, const EvalSet& set, int threads = 1);

struct OutputMetrics {
  double sqnr_db = 0.0;    // 10 log10(sum ref^2 / sum (ref - out)^2); 200 when identical
  double kl = 0.0;         // mean over samples of KL(softmax(ref) || softmax(out)), nats
  double accuracy = -1.0;  // top-1 against the labels; -1 without labels
};

// `ref` and `out` are model_outputs() of the same set.
OutputMetrics compare_outputs(const Tensor& ref, const Tensor& out, const std::vector<int64_t>& labels);
double top1_accuracy(const Tensor& outputs, const std::vector<int64_t>& labels);

}  // namespace qtk::quant::sensitivity
