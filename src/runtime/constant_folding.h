// Constant folding: a node whose inputs are all initializers is run once,
// with the runtime's own kernels, and replaced by initializers holding its
// outputs. Lives in the runtime (not src/ir) because it needs kernels.
#pragma once

#include <cstddef>

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::rt {

struct ConstantFoldingOptions {
  // Outputs larger than this stay computed at run time: folding them would
  // bloat the model (Expand/Tile/ConstantOfShape of a small constant).
  size_t max_output_bytes = size_t{64} << 20;
  // DequantizeLinear of constant weights is how QDQ models store quantized
  // weights; folding it would turn them back into float weights.
  bool keep_dequantize = true;
};

// True for ops whose result is not a function of their inputs (RandomNormal...).
bool is_nondeterministic_op(const std::string& domain, const std::string& op_type);

// Folds every foldable node of the main graph (in order, so chains fold in
// one call). Nodes whose kernel is missing, unsupported for these inputs or
// fails are left alone. Returns the number of nodes folded.
Expected<int> fold_constants(ir::Model& m, const ConstantFoldingOptions& options = {});

}  // namespace qtk::rt
