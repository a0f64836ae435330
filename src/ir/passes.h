// Graph rewrites that keep the model's meaning. Each pass returns how many
// nodes it changed so callers (and tests) can see it did something.
#pragma once

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::ir {

// Drops Identity nodes (and inference-mode Dropout), rewiring readers.
Expected<int> remove_identities(Model& m);
// Drops nodes whose outputs nobody reads, and unused initializers.
Expected<int> remove_dead_nodes(Model& m);

// Runs the inference passes to a fixed point; leaves the graph sorted.
Status optimize_for_inference(Model& m);

}  // namespace qtk::ir
