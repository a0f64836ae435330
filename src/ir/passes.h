// Graph rewrites that keep the model's meaning. Each pass returns how many
// nodes it changed so callers (and tests) can see it did something.
//
// These passes need no kernels. Constant folding, which runs kernels, and the
// full pipeline live in src/runtime (constant_folding.h, optimize.h).
// Passes work on the main graph; subgraphs (If/Loop bodies) are only updated
// where a value they read from the outer graph is renamed.
#pragma once

#include <string>
#include <unordered_map>
#include <unordered_set>

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::ir {

// Drops Identity nodes (and inference-mode Dropout), rewiring readers.
// A graph output keeps its name.
Expected<int> remove_identities(Model& m);
// Drops nodes whose outputs nobody reads, unused initializers (and the
// graph inputs that only declared them), and value_infos of names that no
// longer exist. Needs a sorted graph.
Expected<int> remove_dead_nodes(Model& m);
// Constant nodes of the main graph become initializers of the same name, so
// later passes (folding, quantization) see weights the way they expect.
Expected<int> constants_to_initializers(Model& m);
// BatchNormalization merged into the Conv (any group) or Gemm that feeds
// it when that producer has no other reader and everything is an
// initializer (fold_batchnorm.cpp).
Expected<int> fold_batchnorm(Model& m);
// Shape arithmetic (Shape→Gather→Unsqueeze→Concat→Reshape and the like)
// evaluated symbolically from known dims: fully known values become
// initializers, and a Reshape whose target copies dims of its own input
// gets a constant target using 0 ("copy this dim") (shape_chains.cpp).
// Uses the shapes in value_info / graph inputs; run shape inference first.
Expected<int> fold_shape_chains(Model& m);

// Runs the kernel-free passes above to a fixed point; leaves the graph
// sorted. rt::optimize_model (runtime/optimize.h) adds constant folding and
// shape inference and is what sessions use.
Status optimize_for_inference(Model& m);

// ---- helpers shared by the passes ----

// How many times each value is read: node inputs, values read inside
// subgraphs, and graph outputs (one read each).
std::unordered_map<std::string, int> count_reads(const Graph& g);

// Replaces every read of `from` by `to`, in nodes and subgraphs.
void rename_reads(Graph& g, const std::string& from, const std::string& to);

// True if a node carries a subgraph attribute (If/Loop/Scan bodies).
bool has_subgraph(const Node& n);

// Hands out value names that are not used anywhere in the graph yet.
class NameTable {
 public:
  explicit NameTable(const Graph& g);
  // `base` itself if free, else base_1, base_2, ...; the name is then taken.
  std::string fresh(const std::string& base);

 private:
  std::unordered_set<std::string> used_;
};

}  // namespace qtk::ir
