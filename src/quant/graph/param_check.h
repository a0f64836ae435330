// Checks the constant quantization parameters of a graph's quantized ops
// (QuantizeLinear, DequantizeLinear, QLinearConv, QLinearMatMul and the
// com.microsoft QLinearAdd / QLinearMul / QLinearGlobalAveragePool / QGemm)
// when a session is created, so that a bad file fails at load with the node
// named instead of producing garbage or failing deep inside a kernel:
//  - every scale finite and > 0;
//  - a per-axis scale as long as the data's axis (per-channel weights, a
//    QLinearConv's w_scale: 1 or one per output channel, ...);
//  - a zero point as long as its scale, of a 4- to 32-bit integer type, and
//    of the data's type where the op requires it.
// Only initializers are checked; parameters computed at run time (or held
// by Constant nodes) are left to the kernels.
#pragma once

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::quant {

Status check_quantization_params(const ir::Graph& g);

}  // namespace qtk::quant
