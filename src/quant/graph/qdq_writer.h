// Materialises a QuantPlan as a standard QDQ ONNX graph: integer weight
// initializers with DequantizeLinear, int32 biases, and QuantizeLinear →
// DequantizeLinear pairs on activations (DynamicQuantizeLinear in dynamic mode).
#pragma once

#include "ir/graph.h"
#include "qtk/quantize.h"
#include "quant/graph/annotate.h"
#include "quant/graph/calibrate.h"

namespace qtk::quant {

// ranges: a clip range for every activation of the plan (static mode).
Status write_qdq(ir::Model& m, const QuantPlan& plan, const ActivationRanges& ranges,
                 const std::map<std::string, Tensor>& samples, const QuantConfig& config, QuantReport& report);

}  // namespace qtk::quant
