// "Mark first, rewrite later": per-op annotators say which tensors of a float
// graph should be quantized and how; nothing here edits the graph.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/quantize.h"

namespace qtk::quant {

struct WeightUse {
  size_t node;       // index into graph.nodes
  int input;         // input slot holding the weight initializer
  int channel_axis;  // output-channel axis of the weight
  int reduction_axis;
  QFormat format = QFormat::kInt8;  // the node's weight format (config's, or its layer_precision)
  // Per tensor even when the config asks per channel: a MatMul weight of
  // rank > 2, whose per-column parameters (1-D over the last axis, the only
  // per-axis form DequantizeLinear has) ONNX Runtime's QLinearMatMul and
  // MatMulInteger refuse at run time ("weight zero point must be a scalar,
  // 1D tensor of size 1, or last to second dimension is 1").
  bool per_tensor = false;
};

struct BiasUse {
  size_t node;
  int input;               // slot of the bias initializer
  std::string activation;  // the input activation whose scale multiplies in
  std::string weight;      // the weight initializer name
};

struct QuantPlan {
  std::set<std::string> activations;              // tensors that get Q/DQ (static) or dynamic quantization
  std::map<std::string, std::string> same_range;  // tensor -> tensor whose range it reuses (data movement)
  std::vector<WeightUse> weights;
  std::vector<BiasUse> biases;
  std::vector<std::string> float_nodes;  // "name (Op): reason"
  std::vector<std::string> warnings;
  std::vector<std::string> notes;  // report lines on precision choices (first/last layers at 8 bits)
  // Format of each static activation tensor: the widest any reader asks for
  // (layer_precision, else the config's), shared by a data-movement chain.
  std::map<std::string, QFormat> activation_formats;
};

// The format `tensor` is quantized to (the config's where the plan has none).
QFormat activation_format_of(const QuantPlan& plan, const QuantConfig& config, const std::string& tensor);

// The graph must be topologically sorted, with weights as initializers
// (run the optimizer first so Constant nodes and BN are folded).
QuantPlan annotate(const ir::Graph& g, const QuantConfig& config);

}  // namespace qtk::quant
