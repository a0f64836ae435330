// Session-internal fusion of a residual join into the conv before it: a
// QLinearConv whose output codes only a com.microsoft QLinearAdd reads
// becomes one QLinearConv that adds the other operand in its output stage,
// so the conv's codes are never written to memory and read back.
//
// The fused node keeps op type QLinearConv with attribute kResidualAddAttr = 1
// and five more inputs after the (possibly empty) bias:
//   9 residual codes R, 10 R scale, 11 R zero point (may be empty),
//   12 sum scale, 13 sum zero point (may be empty),
// and writes the QLinearAdd's output: y = QLinearAdd(conv codes, R), exactly
// (the conv's own y_scale / y_zero_point stay inputs 6 and 7). Not standard
// ONNX: never written to files.
#pragma once

#include "qtk/status.h"
#include "ir/graph.h"

namespace qtk::quant {

inline constexpr const char* kResidualAddAttr = "qtk_residual_add";

// Fuses every such pair in g; returns how many. Graphs with subgraphs are left
// alone (an If/Loop body could read the conv's output).
Expected<int> fuse_residual_adds(ir::Graph& g);

}  // namespace qtk::quant
