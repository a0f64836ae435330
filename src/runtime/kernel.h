// What an op kernel sees: plain tensors in, tensors out. Kernels never see
// ONNX; they get the IR node once, at session build time, to read attributes.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/status.h"
#include "qtk/tensor.h"

namespace qtk::rt {

class ThreadPool;
class GraphExecutor;
class Scope;

struct KernelContext {
  std::vector<const Tensor*> inputs;  // nullptr where an optional input is absent
  std::vector<Tensor> outputs;        // one per node output; the kernel assigns them
  ThreadPool* pool = nullptr;         // never null during run()
  const Scope* scope = nullptr;       // values visible to subgraphs (If/Loop)
  // Per input: 1 where this step is the value's last reader, it is not
  // passed twice, and no other tensor shares its storage, so the kernel may
  // write an output over it (the executor sets it; empty = none may).
  std::vector<char> reusable;

  size_t num_inputs() const { return inputs.size(); }
  bool has_input(size_t i) const { return i < inputs.size() && inputs[i] != nullptr; }
  const Tensor& input(size_t i) const { return *inputs[i]; }
  bool input_reusable(size_t i) const { return i < reusable.size() && reusable[i] && inputs[i]->sole_owner(); }
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual Status run(KernelContext& ctx) = 0;
};

// A kernel made of one function; attributes are parsed by the factory and
// captured by the lambda.
class FnKernel final : public Kernel {
 public:
  explicit FnKernel(std::function<Status(KernelContext&)> fn) : fn_(std::move(fn)) {}
  Status run(KernelContext& ctx) override { return fn_(ctx); }

 private:
  std::function<Status(KernelContext&)> fn_;
};

struct KernelInit {
  const ir::Node& node;
  int64_t opset;  // version of the node's domain imported by the model
  // Builds an executor for a subgraph attribute (If/Loop bodies).
  std::function<Expected<std::unique_ptr<GraphExecutor>>(const ir::Graph&)> build_subgraph;
  // The value of input i when it is an initializer of the graph (constant for
  // the session's life), else nullptr: lets kernels pack weights and compute
  // requantization parameters once, at session build time.
  std::function<const Tensor*(size_t)> constant_input;
  // A kernel that packed constant input i at build time into storage of its
  // own (packed_bytes of it), and will never read that input's data at run
  // time, calls this; on true it must keep no reference to the constant's
  // storage. True: on every run input i is that constant, or, once no other
  // reader, graph output or subgraph needs its data, a stand-in of the same
  // dtype and shape whose data must not be read (a read faults), and the
  // constant's storage is freed: a session then holds its weights once, in
  // the packed form. False (no executor here, or input i is no constant of
  // the session's life): nothing changes, the kernel keeps what it needs.
  // Only the kernel the factory returns may call it, and only during the
  // factory call. Empty outside an executor (constant folding, tests).
  std::function<bool(size_t input, uint64_t packed_bytes)> release_constant;
  // Constant input i's storage, writable, when this node is the constant's
  // last reader and nothing else keeps it (no graph output, feed, subgraph
  // or other reader needs its data), else null. A kernel that gets it may
  // discard the pages it has packed (core::discard_pages) while it packs,
  // so the build never holds the whole constant twice; it must then call
  // release_constant(i) (which returns true) and never read the input again.
  // Empty outside an executor.
  std::function<void*(size_t input)> consumable_constant;
};

using KernelFactory = std::function<Expected<std::unique_ptr<Kernel>>(const KernelInit&)>;

template <class F>
Expected<std::unique_ptr<Kernel>> make_fn_kernel(F&& f) {
  return std::unique_ptr<Kernel>(new FnKernel(std::forward<F>(f)));
}

}  // namespace qtk::rt
