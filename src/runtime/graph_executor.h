// Runs one ir::Graph: kernels created once, values held in slots, each value
// freed after its last reader. Subgraphs of If/Loop are executors too; they
// read outer values through a Scope.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "ir/graph.h"
#include "runtime/kernel.h"
#include "runtime/thread_pool.h"

namespace qtk::rt {

// Name lookup for values visible to a subgraph.
class Scope {
 public:
  virtual ~Scope() = default;
  virtual const Tensor* lookup(const std::string& name) const = 0;
};

struct OpsetMap {
  std::map<std::string, int64_t> versions;  // domain ("" = ONNX) -> version
  int64_t get(const std::string& domain) const {
    auto it = versions.find(ir::is_default_domain(domain) ? "" : domain);
    return it == versions.end() ? 0 : it->second;
  }
};

class OpRegistry;

class GraphExecutor {
 public:
  // The graph must be topologically sorted. outer_names: values an enclosing
  // graph provides at run time. registry: where kernels come from (null:
  // OpRegistry::global()); subgraphs use the same one.
  static Expected<std::unique_ptr<GraphExecutor>> create(const ir::Graph& graph, const OpsetMap& opsets,
                                                         const std::vector<std::string>& outer_names = {},
                                                         const OpRegistry* registry = nullptr);

  // feeds are matched to graph inputs in order (absent optional inputs of
  // subgraphs may be undefined tensors). Returns graph outputs in order.
  // peak_live_bytes (optional): raised to the most bytes of activations
  // (values that are not initializers, feeds included) alive at once.
  Expected<std::vector<Tensor>> run(const std::vector<Tensor>& feeds, ThreadPool& pool,
                                    const Scope* outer = nullptr, uint64_t* peak_live_bytes = nullptr) const;

  size_t num_inputs() const { return input_slots_.size(); }

 private:
  struct Step {
    const ir::Node* node;
    std::unique_ptr<Kernel> kernel;
    std::vector<int> inputs;   // slot index, -1 for an absent optional input
    std::vector<int> outputs;  // slot index, -1 for an unused optional output
    std::vector<int> release;  // slots whose last reader is this step
  };

  int slot(const std::string& name);

  std::shared_ptr<const ir::Graph> graph_copy_;  // executor owns the nodes it points to
  std::unordered_map<std::string, int> slots_;
  std::vector<std::string> slot_names_;
  std::vector<Tensor> constants_;  // initializer values by slot (undefined elsewhere)
  std::vector<int> outer_slots_;   // slots filled from the outer scope
  std::vector<int> input_slots_;
  std::vector<int> output_slots_;
  std::vector<Step> steps_;
};

}  // namespace qtk::rt
