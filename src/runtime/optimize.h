// The full inference pipeline: the IR passes of ir/passes.h plus constant
// folding (which runs kernels), repeated until nothing changes. Sessions run
// it when SessionOptions::optimize is set; quantization runs it first so it
// sees weights as initializers and BatchNorm already folded.
#pragma once

#include <cstddef>

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::rt {

struct OptimizeOptions {
  bool fold_constants = true;
  bool fold_batchnorm = true;
  bool fold_shape_chains = true;
  // ONNX shape inference before each round, so shape chains can fold
  // through intermediate tensors; its results stay as value_infos.
  bool infer_shapes = true;
  size_t max_folded_bytes = size_t{64} << 20;
  int max_rounds = 16;
};

// What each pass changed, summed over rounds.
struct OptimizeStats {
  int rounds = 0;
  int identities_removed = 0;
  int constants_to_initializers = 0;
  int shape_values_folded = 0;
  int nodes_folded = 0;
  int batchnorms_folded = 0;
  int dead_nodes_removed = 0;
  int total() const {
    return identities_removed + constants_to_initializers + shape_values_folded + nodes_folded +
           batchnorms_folded + dead_nodes_removed;
  }
};

// Runs ONNX's shape inference (libonnx, which knows opsets <= 17) and keeps
// what it finds as the graph's value_infos, so tools can show intermediate
// shapes. Never fails: ONNX's complaints go to Model::warnings (each once).
// Returns the number of value_infos the graph has afterwards.
int infer_model_shapes(ir::Model& m);

// Optimizes to a fixed point; the graph comes out topologically sorted.
// Fails only on a graph that cannot be sorted (cycle, missing tensor).
Status optimize_model(ir::Model& m, const OptimizeOptions& options, OptimizeStats* stats = nullptr);
Status optimize_model(ir::Model& m);

// ---- session-only rewrites ----
// These change ops into forms only qtk's kernels know, so they run on a
// session's private copy of the model and never on one that is saved
// (quantization calls optimize_model, not these).

// A float Conv that absorbed the ops after it (see fuse_conv_epilogues):
// with kFusedAddAttr = 1 its input 3 (Z) is added to the output; with
// kFusedMinAttr / kFusedMaxAttr the result is then clamped as Clip does
// (Relu is the clamp to [0, +inf)).
inline constexpr const char* kFusedAddAttr = "qtk_fused_add";
inline constexpr const char* kFusedMinAttr = "qtk_fused_min";
inline constexpr const char* kFusedMaxAttr = "qtk_fused_max";
// With kFusedPoolAttr = 1, a MaxPool of 2x2 windows, stride 2, no pads,
// follows all of that (the output is half the height and width).
inline constexpr const char* kFusedPoolAttr = "qtk_fused_max_pool_2x2";

// Folds into a Conv (default domain) whose output nobody else reads: an Add
// of that output and another tensor (the residual join), then a Relu or a
// Clip with constant bounds, then (group 1 only) a MaxPool of 2x2 windows
// with stride 2 and no pads, which the kernel applies while the Conv's
// output is still in cache. The Conv takes the last fused node's output
// name and keeps its other attributes; the results are bit for bit those of
// the separate ops. Returns the number of nodes folded away; leaves the
// graph sorted.
Expected<int> fuse_conv_epilogues(ir::Model& m);

// A float MatMul that absorbed the Add of a constant bias after it (see
// fuse_matmul_bias): input 2 (N values, broadcast over the rows) is added
// to each row of the product, bit for bit the separate Add.
inline constexpr const char* kFusedBiasAttr = "qtk_fused_bias";

// Folds into a MatMul (default domain) with a constant 2-D float B [K, N],
// whose output nobody else reads, the Add that follows it when the Add's
// other operand is a float constant of shape [N] (Linear's bias). The
// MatMul takes the Add's output name. Returns the number folded; leaves the
// graph sorted.
Expected<int> fuse_matmul_bias(ir::Model& m);

// What Session::create runs: optimize_model, then the session-only fusions.
Status optimize_for_session(ir::Model& m);

}  // namespace qtk::rt
