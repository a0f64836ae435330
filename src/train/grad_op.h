// One differentiable op of the training engine: a forward that also records
// what its backward needs, and a backward that turns output gradients into
// input gradients. Ops see plain tensors and the IR node (for attributes),
// never the graph; train_graph.cpp wires them together.
#pragma once

#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/status.h"
#include "qtk/tensor.h"

namespace qtk::rt {
class ThreadPool;
}

namespace qtk::train {

struct ForwardContext {
  const ir::Node& node;
  std::vector<Tensor> in;     // undefined where an optional input is absent
  std::vector<Tensor> out;    // one per node output; the op assigns them
  std::vector<Tensor> saved;  // whatever backward needs beyond in/out
  bool training = false;      // BatchNormalization: batch statistics and running-stat updates
  rt::ThreadPool* pool = nullptr;
  // New values for state inputs (BatchNormalization's running mean/var):
  // (input index, tensor); the engine writes them back to the initializers.
  std::vector<std::pair<int, Tensor>> state_updates;
  // The op applies Relu to out[0] (ops with GradOp::fuses_relu: train_graph
  // folded in the Relu that alone consumes the output, saving its passes).
  bool relu_after = false;
};

struct BackwardContext {
  const ir::Node& node;
  const std::vector<Tensor>& in;
  const std::vector<Tensor>& out;
  const std::vector<Tensor>& saved;
  std::vector<Tensor> dout;  // per output; undefined when nothing downstream needs it
  std::vector<bool> need;    // per input: is its gradient wanted
  std::vector<Tensor> din;   // per input: the op assigns those it is asked for
  rt::ThreadPool* pool = nullptr;
  // out[0] is after a fused Relu (ForwardContext::relu_after) and dout its
  // gradient: the op's own output gradient is dout where out[0] > 0, else 0.
  bool relu_after = false;
};

struct GradOp {
  Status (*forward)(ForwardContext&) = nullptr;
  // Null for ops without gradient flow (Constant, Shape-like ops).
  Status (*backward)(BackwardContext&) = nullptr;
  // Whether input i can carry a gradient (data) or is a constant-like
  // operand (shapes, indices, Clip bounds, BatchNormalization's running stats).
  bool (*differentiable)(int input) = nullptr;
  // Input indices that are running state updated during training.
  bool (*is_state)(int input) = nullptr;
  // Honours ForwardContext::relu_after / BackwardContext::relu_after.
  bool fuses_relu = false;
};

// The op for a node (default ONNX domain only), or nullptr when the training
// engine does not implement it.
const GradOp* find_grad_op(const std::string& op_type);
// The op for a node of any domain: default-domain ops by name, qtk-domain
// ops as "qtk.<op>"; nullptr for others.
const GradOp* find_grad_op(const std::string& domain, const std::string& op_type);
// Every op type with a gradient, sorted (for error messages and docs).
std::vector<std::string> grad_op_names();

// Per-family registration, called once by find_grad_op.
using GradOpTable = std::vector<std::pair<std::string, GradOp>>;
void register_linear_grad_ops(GradOpTable& t);
void register_elementwise_grad_ops(GradOpTable& t);
void register_activation_grad_ops(GradOpTable& t);
void register_conv_grad_ops(GradOpTable& t);
void register_norm_grad_ops(GradOpTable& t);
void register_pool_grad_ops(GradOpTable& t);
void register_shape_grad_ops(GradOpTable& t);
void register_select_grad_ops(GradOpTable& t);
void register_quant_grad_ops(GradOpTable& t);

// qtk's own training-only ops live in this domain; the table names them
// "<domain>.<op>" (grad_ops_quant.cpp: fake quantization for QAT).
inline constexpr const char* kQtkDomain = "qtk";
inline constexpr const char* kFakeQuantOp = "qtk.FakeQuant";

// Shared helpers.
inline bool all_inputs_differentiable(int) { return true; }
inline bool only_first_input_differentiable(int i) { return i == 0; }
inline bool no_state(int) { return false; }
Status expect_float(const ForwardContext& c, size_t i);
// Node description prefix for errors: "node 'conv1' (Conv)".
std::string node_label(const ir::Node& n);

}  // namespace qtk::train
