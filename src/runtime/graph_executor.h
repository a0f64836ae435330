// Runs one ir::Graph: kernels created once, values held in slots, each value
// freed after its last reader. Subgraphs of If/Loop are executors too; they
// read outer values through a Scope.
//
// Activation memory is planned: the first run with given input shapes
// records which buffers each step allocates and how long each lives; later
// runs with those shapes place them at precomputed offsets of one arena per
// run (runtime/memory_plan.h), so the working memory is the planned peak of
// live values instead of one cached block per size the allocator has seen.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
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
  // The versions a model imports.
  static OpsetMap of(const ir::Model& m) {
    OpsetMap o;
    for (const auto& i : m.opsets) o.versions[ir::is_default_domain(i.domain) ? "" : i.domain] = i.version;
    return o;
  }
};

class OpRegistry;

class GraphExecutor {
 public:
  // The graph must be topologically sorted. outer_names: values an enclosing
  // graph provides at run time. registry: where kernels come from (null:
  // OpRegistry::global()); subgraphs use the same one. plan_memory off:
  // every run (subgraphs' too) allocates as if no plan existed.
  // release_constants off: no kernel may let go of a constant it packed
  // (KernelInit::release_constant is empty), every initializer stays held.
  static Expected<std::unique_ptr<GraphExecutor>> create(const ir::Graph& graph, const OpsetMap& opsets,
                                                         const std::vector<std::string>& outer_names = {},
                                                         const OpRegistry* registry = nullptr,
                                                         bool plan_memory = true, bool release_constants = true);
  // The same for a graph the executor may own: an initializer whose every
  // reader packed it is freed as soon as its last reader is built, so that
  // a session's build never holds all the weights twice.
  static Expected<std::unique_ptr<GraphExecutor>> create(ir::Graph&& graph, const OpsetMap& opsets,
                                                         const std::vector<std::string>& outer_names = {},
                                                         const OpRegistry* registry = nullptr,
                                                         bool plan_memory = true, bool release_constants = true);

  // What a run's activations (values that are not initializers, feeds
  // included) needed. Each field is raised to this run's value. A view that
  // shares its source's storage (Reshape, Identity) counts again in
  // peak_live_bytes (an upper bound), not in largest_pair_bytes.
  struct MemoryStats {
    uint64_t peak_live_bytes = 0;     // the most bytes alive at once
    uint64_t largest_pair_bytes = 0;  // the two largest values alive at once, together
    uint64_t arena_bytes = 0;         // the planned arena the run used (0: unplanned)
  };

  // feeds are matched to graph inputs in order (absent optional inputs of
  // subgraphs may be undefined tensors). Returns graph outputs in order.
  // step_ns, when given, gets each step's wall time added (sized to the
  // steps, in execution order: step_nodes()).
  Expected<std::vector<Tensor>> run(const std::vector<Tensor>& feeds, ThreadPool& pool,
                                    const Scope* outer = nullptr, MemoryStats* stats = nullptr,
                                    std::vector<uint64_t>* step_ns = nullptr) const;
  std::vector<const ir::Node*> step_nodes() const;

  size_t num_inputs() const { return input_slots_.size(); }
  // Bytes of the weights as this graph runs from them: the initializers it
  // holds (storage shared by several counted once) plus the packed copies
  // that kernels made of constants they let go (KernelInit::release_constant).
  uint64_t constant_bytes() const;
  // Bytes of the initializers freed because every reader runs from a packed
  // copy (their stand-ins keep dtype and shape only).
  uint64_t released_constant_bytes() const { return released_bytes_; }
  // Plans made so far and whether planning gave up (a kernel allocated
  // outside its plan, see run()); for tests.
  int plans_made() const { return plans_made_.load(); }
  bool planning_failed() const { return planning_failed_.load(); }

 private:
  struct MemoryPlan;
  class RecordingHook;
  class ArenaHook;
  struct Step {
    const ir::Node* node;
    std::unique_ptr<Kernel> kernel;
    std::vector<int> inputs;   // slot index, -1 for an absent optional input
    std::vector<int> outputs;  // slot index, -1 for an unused optional output
    std::vector<int> release;  // slots whose last reader is this step
    std::vector<char> reusable;  // per input: released here and passed once (KernelContext::reusable)
  };

  int slot(const std::string& name);

  // Per step, what run() and profiles read of its node once the kernels are
  // built: name, op_type and domain (the graph, attributes and value names
  // included, is let go at the end of create(); kernels keep what they parsed).
  std::vector<ir::Node> nodes_;
  // Name -> slot: for subgraphs' lookups (SlotScope); emptied after the build
  // when no step runs a subgraph.
  std::unordered_map<std::string, int> slots_;
  // Slot names while building; after it, all of them in one block (slot
  // s's name ends at slot_name_ends_[s]), read only for errors, and the outer
  // slots' names, looked up in the outer scope on every run.
  std::vector<std::string> slot_names_;
  std::string slot_name_chars_;
  std::vector<uint32_t> slot_name_ends_;
  std::vector<std::string> outer_names_;  // per outer_slots_ entry
  std::string slot_name(int s) const;
  std::vector<Tensor> constants_;  // initializer values by slot (undefined elsewhere)
  std::vector<char> released_;     // per slot: constants_ holds a stand-in, its storage freed
  uint64_t released_bytes_ = 0;    // what the stand-ins replaced
  uint64_t packed_bytes_ = 0;      // packed copies of released constants (KernelInit::release_constant)
  std::vector<int> outer_slots_;   // slots filled from the outer scope
  std::vector<int> input_slots_;
  std::vector<int> output_slots_;
  std::vector<Step> steps_;
  std::vector<int> last_use_;  // per slot: the step after which it is released (steps_.size(): never)

  std::shared_ptr<const MemoryPlan> find_plan(const std::vector<Tensor>& feeds, bool& record) const;
  void store_plan(std::shared_ptr<const MemoryPlan> plan) const;
  bool planning_enabled_ = true;
  mutable std::mutex plan_mu_;
  mutable std::vector<std::shared_ptr<const MemoryPlan>> plans_;  // newest last, a few input shapes
  mutable bool recording_ = false;                                 // one recording run at a time
  mutable std::atomic<int> plans_made_{0};
  mutable std::atomic<bool> planning_failed_{false};
};

}  // namespace qtk::rt
