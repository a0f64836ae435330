// Materialises a QuantPlan as a standard QDQ ONNX graph: integer weight
// initializers with DequantizeLinear, int32 biases, and QuantizeLinear →
// DequantizeLinear pairs on activations (DynamicQuantizeLinear in dynamic mode).
#pragma once

#include "ir/graph.h"
#include "qtk/quantize.h"
#include "quant/graph/annotate.h"
#include "quant/algos/weight_method.h"
#include "quant/graph/calibrate.h"

namespace qtk::quant {

// What calibration measured, as the writer uses it.
struct CalibrationFacts {
  ActivationRanges ranges;                    // clip range per activation of the plan (static mode)
  std::map<std::string, Tensor> samples;      // one batch per activation, for the report's SQNR
  std::map<std::string, std::vector<float>> importance;  // per-channel E[x^2] of weighted nodes' inputs
  std::map<std::string, std::vector<float>> input_mean;  // per-channel E[x] of the same inputs
  AlgoWeights algo_weights;  // GPTQ / AdaRound results by weight name: used instead of rounding to nearest
};

Status write_qdq(ir::Model& m, const QuantPlan& plan, const CalibrationFacts& facts, const QuantConfig& config,
                 QuantReport& report);

}  // namespace qtk::quant
