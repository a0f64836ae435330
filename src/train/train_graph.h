// A float ONNX classifier prepared for training: the IR graph in topological
// order, its trainable parameters (float initializers in data positions),
// its running state (BatchNormalization statistics), a forward that records
// what backward needs, and reverse-mode gradients of the softmax
// cross-entropy loss. A trailing Softmax is kept in the exported model but
// skipped in training (the loss takes the logits before it).
#pragma once

#include <algorithm>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/status.h"
#include "qtk/tensor.h"
#include "train/grad_op.h"
#include "train/loss.h"

namespace qtk::train {

struct Param {
  std::string name;
  Tensor value;  // updated in place by the optimizer
  Tensor grad;   // same shape; valid after backward()
  bool decay = true;  // weight decay applies (weights of rank >= 2; not biases or norm parameters)
};

struct StepStats {
  double loss = 0;
  int64_t correct = 0;
  int64_t samples = 0;
};

class TrainGraph {
 public:
  // Fails naming the node and op when a node has no gradient, and when the
  // model does not have exactly one float runtime input.
  static Expected<TrainGraph> create(const ir::Model& model);

  // The model's input, its declared per-sample shape (dims after the batch;
  // empty when undeclared) and the value the loss reads.
  const std::string& input_name() const { return input_; }
  const Shape& sample_shape() const { return sample_shape_; }
  const std::string& logits_name() const { return logits_; }

  // Logits for a batch. training = true uses batch statistics in
  // BatchNormalization, updates its running statistics and records the
  // activations for backward.
  Expected<Tensor> forward(const Tensor& x, bool training, rt::ThreadPool* pool = nullptr);
  // Gradients of `dlogits` (d loss / d logits of the last training forward)
  // into every Param's grad.
  Status backward(const Tensor& dlogits, rt::ThreadPool* pool = nullptr);
  // forward(training) + softmax cross-entropy + backward.
  Expected<StepStats> train_step(const Tensor& x, const std::vector<int64_t>& labels, rt::ThreadPool* pool = nullptr);
  // forward(training) + a caller's loss on the logits (e.g. distillation) + backward.
  using LossFn = std::function<Expected<LossResult>(const Tensor& logits)>;
  Expected<StepStats> train_step(const Tensor& x, int64_t samples, const LossFn& loss, rt::ThreadPool* pool = nullptr);

  // How many Relu nodes run inside the op before them (see fused_relu_).
  int64_t fused_relu_count() const { return std::count(relu_fused_.begin(), relu_fused_.end(), true); }

  std::vector<Param>& params() { return params_; }
  const std::vector<Param>& params() const { return params_; }
  // Deep copies of every parameter and state tensor, and their restoration
  // (to keep the last good weights).
  std::map<std::string, Tensor> snapshot() const;
  void restore(const std::map<std::string, Tensor>& snap);
  // The model with the current parameters and running statistics (the
  // inference graph: BatchNormalization exports in its inference form).
  ir::Model to_model() const;

 private:
  struct Record {
    size_t node;
    std::vector<Tensor> in, out, saved;
  };
  ir::Model model_;
  std::vector<const GradOp*> ops_;   // per node of model_.graph
  std::vector<bool> in_loss_path_;   // node feeds the logits
  // Relu folded into the op before it (GradOp::fuses_relu) when it alone
  // reads that op's output: per node, the Relu it runs (or -1); the Relu
  // itself is then skipped (relu_fused_).
  std::vector<int64_t> fused_relu_;
  std::vector<bool> relu_fused_;
  std::string input_, logits_;
  Shape sample_shape_;
  std::vector<Param> params_;
  std::map<std::string, Tensor> state_;  // running statistics by name
  std::map<std::string, size_t> param_index_;
  std::vector<bool> requires_grad_node_;  // per node: some input carries a gradient
  std::map<std::string, bool> requires_grad_;  // value name -> carries a gradient
  std::vector<Record> records_;
};

}  // namespace qtk::train
