// SmoothQuant (Xiao et al. 2022, "SmoothQuant: Accurate and Efficient
// Post-Training Quantization for Large Language Models"), on the float IR
// before quantization. Activations with a few outlier channels (typical after
// LayerNormalization in transformers) waste a per-tensor grid on those
// channels; weights are quantized per output channel and have room to spare
// along their input channels. For an activation X read only by MatMul/Gemm
// nodes with constant weights, input channel j gets
//
//   s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)
//
// (max|X_j| from calibration data, max|W_j| over row j of every consumer's
// weight), X_j is divided by s_j by folding 1/s_j into its producer, and
// row j of each consumer's weight is multiplied by s_j: the float function is
// unchanged. Producers that can absorb the scale: LayerNormalization over the
// last axis (scale and bias), Gemm and MatMul with a constant weight (their
// output channels, and a bias Add right after a MatMul). Anything else
// (GELU, Softmax, residual Adds, graph inputs) leaves X alone.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/quantize.h"
#include "qtk/status.h"

namespace qtk::quant::algos {

// An activation that can be smoothed: its producer and the nodes reading it.
struct SmoothTarget {
  std::string tensor;
  size_t producer = 0;                // node index of the producer (LayerNormalization, Gemm or MatMul)
  size_t bias_add = SIZE_MAX;         // MatMul producer: the Add that holds its bias (X is that Add's output)
  std::vector<size_t> consumers;      // MatMul/Gemm nodes reading X as their first input
  int64_t channels = 0;               // length of X's last axis
};

struct SmoothQuantInfo {
  std::vector<std::string> tensors;   // the activations rescaled
  std::vector<std::string> smoothed;  // "tensor (producer -> n layers): scales min..max"
  std::vector<std::string> skipped;   // "tensor: why" for activations of MatMul/Gemm left alone
};

// Activations that SmoothQuant can rescale in g (topologically sorted,
// weights as initializers); the others are listed in `skipped`.
std::vector<SmoothTarget> find_smooth_targets(const ir::Graph& g, std::vector<std::string>* skipped);

// Smooths the targets given the per-channel max |X_j| of each (by tensor
// name; a target without statistics is skipped). alpha in [0, 1].
Expected<SmoothQuantInfo> apply_smooth_quant(ir::Graph& g, const std::vector<SmoothTarget>& targets,
                                             const std::map<std::string, std::vector<float>>& act_absmax,
                                             float alpha);

// The whole pass: finds the targets, measures max |X_j| on the calibration
// data (config.threads, config.calib_batch) and applies the scales.
Expected<SmoothQuantInfo> smooth_quant(ir::Model& m, const CalibrationData& calib, const QuantConfig& config,
                                       float alpha);

}  // namespace qtk::quant::algos
