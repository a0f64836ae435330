// Public API: load a model once, run it many times.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "qtk/status.h"
#include "qtk/tensor.h"

namespace qtk {

namespace ir { struct Model; }
namespace rt { class GraphExecutor; class ThreadPool; }

struct SessionOptions {
  int threads = 1;
  bool optimize = true;  // constant folding, BN folding, identity/dead-node removal
  // Run QDQ graphs with integer kernels: DequantizeLinear → op → QuantizeLinear
  // patterns become QLinearConv, QLinearMatMul, QGemm, ... (int8 x int8 ->
  // int32, fixed-point requantization; see quant/graph/qoperator_writer.h).
  // Ops outside those patterns still run in float.
  bool integer = false;
  // Run every op with the plain reference kernels (src/runtime/kernels/ref),
  // never the optimized ones: the golden semantics, for tests and debugging.
  bool reference_kernels = false;
  // In an integer session, an 8-bit elementwise region (DequantizeLinear →
  // float ops on scalar constants → QuantizeLinear, one 8-bit input) becomes
  // one 256-entry table lookup with the same bits (runtime/code_tables.h),
  // and a Linear layer's DequantizeLinear → Add(bias) → QuantizeLinear one
  // pass (runtime/bias_requant_fusion.h). Not with reference_kernels, which
  // run the graph as written.
  bool code_tables = true;
  // Place activations at offsets planned from their lifetimes, in one arena
  // per run (see runtime/graph_executor.h). Off: each value gets its own
  // block, as before; outputs are the same either way.
  bool plan_memory = true;
  // Time every node of the top-level graph in every run (two clock reads a
  // node); read back with Session::profile(). Subgraphs count in their
  // If/Loop node.
  bool profile = false;
};

// Time spent in one node over the profiled runs (SessionOptions::profile).
struct NodeTime {
  std::string node;     // the node's name, or "#i" (its position) when it has none
  std::string op_type;  // as the session ran it, after its rewrites (e.g. QLinearConv)
  uint64_t nanoseconds = 0;
};

struct TensorInfo {
  std::string name;
  DType dtype = DType::kUndefined;
  std::vector<int64_t> shape;  // -1 for a dynamic dimension
  bool has_shape = false;
};

class Session {
 public:
  static Expected<std::unique_ptr<Session>> create(const ir::Model& model, const SessionOptions& options = {});
  // The same, taking the model's weights: those the kernels pack are freed
  // while the session is built, so it never holds them twice.
  static Expected<std::unique_ptr<Session>> create(ir::Model&& model, const SessionOptions& options = {});
  static Expected<std::unique_ptr<Session>> load(const std::string& onnx_path, const SessionOptions& options = {});
  ~Session();

  const std::vector<TensorInfo>& inputs() const { return inputs_; }
  const std::vector<TensorInfo>& outputs() const { return outputs_; }
  int threads() const;

  // Inputs in the order of inputs(); outputs in the order of outputs().
  // Checks each input's dtype and fixed dimensions first.
  Expected<std::vector<Tensor>> run(const std::vector<Tensor>& inputs) const;
  Expected<std::vector<Tensor>> run(const std::map<std::string, Tensor>& feeds) const;

  // The most bytes of activations (inputs, intermediate values, outputs; not
  // weights) alive at once in any run so far: what the session's working
  // memory must hold beyond its weights.
  uint64_t peak_activation_bytes() const { return peak_activation_bytes_.load(); }
  // The most bytes two activations alive at the same time held together, in
  // any run so far: the "largest pair of live activations" of issue 4's
  // memory target (a chain needs that; a branch that keeps a value alive
  // needs more, see peak_activation_bytes).
  uint64_t largest_activation_pair_bytes() const { return largest_activation_pair_bytes_.load(); }
  // The largest planned activation arena a run used (0: no plan yet, or
  // plan_memory off).
  uint64_t activation_arena_bytes() const { return activation_arena_bytes_.load(); }
  // Bytes of the weights the session holds after its rewrites (BN folding,
  // QDQ to integer ops), in the form its kernels run from: the initializers
  // it keeps, plus the packed copies of those it freed because every kernel
  // reading them runs from its packed copy (Conv weights, say).
  uint64_t weight_bytes() const;
  // Per node in execution order, the wall time summed over all runs so far
  // (empty unless SessionOptions::profile), and how many runs that is.
  // Runs that overlap (concurrent run() calls) each add their own time.
  std::vector<NodeTime> profile() const;
  uint64_t profiled_runs() const;
  void reset_profile() const;  // e.g. after warm-up runs

 private:
  Session() = default;
  std::vector<TensorInfo> inputs_;
  std::vector<TensorInfo> outputs_;
  std::unique_ptr<rt::GraphExecutor> executor_;
  std::unique_ptr<rt::ThreadPool> pool_;
  mutable std::atomic<uint64_t> peak_activation_bytes_{0};
  mutable std::atomic<uint64_t> largest_activation_pair_bytes_{0};
  mutable std::atomic<uint64_t> activation_arena_bytes_{0};
  bool profile_ = false;
  mutable std::mutex profile_mu_;
  mutable std::vector<uint64_t> step_ns_;
  mutable uint64_t profiled_runs_ = 0;
};

}  // namespace qtk
