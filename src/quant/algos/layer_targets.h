// The layers GPTQ / AdaRound work on: which weighted nodes of a QuantPlan
// they can take (the others keep rounding to nearest, with a warning), in
// which wave of the layer-by-layer passes each one runs, and the small
// helpers to read a layer's weight matrix and correct its bias.
#pragma once

#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/quantize.h"
#include "quant/algos/layer_inputs.h"
#include "quant/graph/annotate.h"

namespace qtk::quant::algos {

struct Target {
  size_t node;
  std::string weight, input;
  int channel_axis, reduction_axis;
  LayerGeometry geo;
  int wave = 0;
};

// The weighted layers the method can handle (GPTQ: reduction length at
// most max_hessian_columns), each with its wave: 1 + the deepest such
// layer in front of its input, so a wave's inputs depend only on earlier waves.
std::vector<Target> select_targets(const ir::Graph& g, const QuantPlan& plan, WeightMethod method,
                                   int64_t max_hessian_columns, QuantReport& report);

// Group g of the weight as a rows x cols matrix (non-finite values as 0).
std::vector<float> weight_matrix(const Tensor& w, const LayerGeometry& geo, int64_t g);

// Whether the node's bias is a plain per-channel add (Conv; Gemm with alpha = beta = 1).
bool has_plain_bias(const ir::Node& n);

// Adds delta to the node's bias in `m` (creating one), so later passes see the corrected layer.
void add_bias(ir::Model& m, size_t node, const std::string& weight, const std::vector<float>& delta);

}  // namespace qtk::quant::algos
