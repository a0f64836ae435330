// Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization
// Through Weight Equalization and Bias Correction"), on the float IR before
// quantization. For two layers joined through a positively homogeneous
// activation, A -> f -> B with f(x / s) = f(x) / s for s > 0 (Relu,
// LeakyRelu, PRelu, Clip with bounds 0 / unbounded, or nothing), output
// channel i of A can be divided by s_i and input channel i of B multiplied
// by it without changing the function. With r1_i, r2_i the channel's weight
// ranges in A and B, s_i = sqrt(r1_i r2_i) / r2_i gives both layers the same
// per-channel range sqrt(r1_i r2_i), which per-tensor (and, for depthwise
// layers, per-channel) quantization then resolves better. Pairs: Conv ->
// Conv (any groups, including depthwise) and Gemm -> Gemm. ReLU6 (Clip with
// max 6) is skipped: clip(x / s, 0, 6) is not clip(x, 0, 6) / s. Chains are
// swept until the scales settle.
#pragma once

#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::quant::algos {

struct EqualizationInfo {
  int pairs = 0;                       // layer pairs equalized
  int sweeps = 0;                      // passes over the pairs until the scales settled
  std::vector<std::string> skipped;    // "A -> B: why" for candidate pairs left alone
};

// The graph must be topologically sorted with weights as initializers (run
// the optimizer first: BatchNormalization folded into the convolutions).
Expected<EqualizationInfo> equalize_cross_layer(ir::Graph& g);

}  // namespace qtk::quant::algos
