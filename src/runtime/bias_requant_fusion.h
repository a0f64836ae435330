// A bias added between two quantizations, as one op (integer sessions).
//
// A Linear layer on a 3-D input exports as MatMul + Add, and its QDQ form
// keeps the bias Add in float between the matmul's requantized output and
// the next QuantizeLinear: DQ(x) → Add(bias[N]) → Q, three passes over
// memory. The session runs it as one qtk.BiasRequantize node, which does
// the same float operations per element (dequantize, add the bias of the
// element's column, quantize: same bits) in one pass.
#pragma once

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::rt {

inline constexpr const char* kBiasRequantizeOp = "BiasRequantize";  // domain "qtk"

// Replaces each DequantizeLinear → Add → QuantizeLinear chain whose
// DequantizeLinear reads the output of a QLinearMatMul with a constant
// [K, N] weight (so its last dimension is N), whose Add adds a float
// constant of shape [N], and whose parameters are per-tensor constants;
// the two inner values must have no other reader. Returns how many.
// Node inputs: x, x_scale, x_zero_point, bias, y_scale, y_zero_point.
Expected<int> fuse_bias_requantize(ir::Model& m);

}  // namespace qtk::rt
