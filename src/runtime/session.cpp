#include "qtk/session.h"

#include "core/alloc_hook.h"
#include "ir/passes.h"
#include "onnx/model_io.h"
#include "qtk/model.h"
#include "quant/graph/param_check.h"
#include "quant/graph/qoperator_writer.h"
#include "quant/graph/residual_add_fusion.h"
#include "runtime/bias_requant_fusion.h"
#include "runtime/code_tables.h"
#include "runtime/gather_quantized.h"
#include "runtime/graph_executor.h"
#include "runtime/op_registry.h"
#include "runtime/optimize.h"

namespace qtk {

Expected<Model> load_model(const std::string& path) { return onnx_io::load_model(path); }
Status save_model(const Model& model, const std::string& path) { return onnx_io::save_model(model, path); }

namespace {
TensorInfo to_info(const ir::ValueInfo& v) {
  TensorInfo t;
  t.name = v.name;
  t.dtype = v.dtype;
  t.has_shape = v.has_shape;
  for (const auto& d : v.shape) t.shape.push_back(d.is_fixed() ? d.value : -1);
  return t;
}
}  // namespace

Session::~Session() = default;

int Session::threads() const { return pool_->size(); }

uint64_t Session::weight_bytes() const { return executor_->constant_bytes(); }

std::vector<NodeTime> Session::profile() const {
  std::vector<NodeTime> times;
  if (!profile_) return times;
  const auto nodes = executor_->step_nodes();
  std::lock_guard<std::mutex> lk(profile_mu_);
  for (size_t i = 0; i < nodes.size(); ++i)
    times.push_back({nodes[i]->name.empty() ? "#" + std::to_string(i) : nodes[i]->name, nodes[i]->op_type,
                     i < step_ns_.size() ? step_ns_[i] : 0});
  return times;
}

uint64_t Session::profiled_runs() const {
  std::lock_guard<std::mutex> lk(profile_mu_);
  return profiled_runs_;
}

void Session::reset_profile() const {
  std::lock_guard<std::mutex> lk(profile_mu_);
  step_ns_.clear();
  profiled_runs_ = 0;
}

namespace {
void raise_to(std::atomic<uint64_t>& a, uint64_t v) {
  uint64_t seen = a.load();
  while (v > seen && !a.compare_exchange_weak(seen, v)) {
  }
}
}  // namespace

Expected<std::unique_ptr<Session>> Session::create(const ir::Model& model, const SessionOptions& options) {
  return create(ir::Model(model), options);  // shares the caller's storage, which the caller keeps
}

Expected<std::unique_ptr<Session>> Session::create(ir::Model&& model, const SessionOptions& options) {
  ir::Model m = std::move(model);
  QTK_RETURN_IF_ERROR(ir::topological_sort(m.graph));
  // Bad scales / zero points fail here, naming the node (quant/graph/param_check.h).
  QTK_RETURN_IF_ERROR(quant::check_quantization_params(m.graph));
  if (options.integer) {
    // Before constant folding, which would turn DQ(constant weight) into float.
    QTK_RETURN_IF_ERROR(ir::constants_to_initializers(m).status());
    quant::QOperatorOptions qo;
    qo.fuse_output_clamp = true;  // 4-bit / Relu clamps inside QLinearConv's requantization
    qo.max_conv_weight_rank = 4;  // 3-D convs run in float between their DQ and Q (reference kernels too: same bits)
    QTK_RETURN_IF_ERROR(quant::qdq_to_qoperator(m, qo));
    // Residual joins inside the conv before them (quant/graph/residual_add_fusion.h).
    QTK_RETURN_IF_ERROR(quant::fuse_residual_adds(m.graph).status());
    // An embedding's Gather picks codes, then only those rows are dequantized
    // (runtime/gather_quantized.h). After the QOperator rewrite, which thus
    // picks the same ops as for the graph as written. Not with reference kernels.
    if (!options.reference_kernels) QTK_RETURN_IF_ERROR(rt::gather_before_dequantize(m).status());
  }
  if (options.optimize) QTK_RETURN_IF_ERROR(rt::optimize_for_session(m));
  const rt::OpRegistry& registry = options.reference_kernels ? rt::OpRegistry::reference() : rt::OpRegistry::global();
  if (options.integer && options.code_tables && !options.reference_kernels) {
    QTK_RETURN_IF_ERROR(rt::fuse_code_tables(m, registry).status());
    QTK_RETURN_IF_ERROR(rt::fuse_bias_requantize(m).status());
  }
  const rt::OpsetMap opsets = rt::OpsetMap::of(m);
  auto s = std::unique_ptr<Session>(new Session());
  for (const auto* v : m.graph.runtime_inputs()) s->inputs_.push_back(to_info(*v));
  for (const auto& v : m.graph.outputs) s->outputs_.push_back(to_info(v));
  // The executor is fed runtime inputs only: drop initializer-backed inputs.
  ir::Graph& g = m.graph;
  std::erase_if(g.inputs, [&](const ir::ValueInfo& v) { return g.initializers.count(v.name) > 0; });
  // The executor takes the graph: weights it frees while building are gone.
  QTK_ASSIGN_OR_RETURN(s->executor_, rt::GraphExecutor::create(std::move(g), opsets, {}, &registry, options.plan_memory));
  s->pool_ = std::make_unique<rt::ThreadPool>(options.threads);
  s->profile_ = options.profile;
  // The rewrites above let go of most of the loaded graph's nodes and the
  // packed weights' originals, scattered through the heap: their pages go
  // back now, else they stay resident under every later run.
  core::release_free_heap_pages();
  return s;
}

Expected<std::unique_ptr<Session>> Session::load(const std::string& onnx_path, const SessionOptions& options) {
  QTK_ASSIGN_OR_RETURN(ir::Model m, onnx_io::load_model(onnx_path));
  return create(std::move(m), options);
}

Expected<std::vector<Tensor>> Session::run(const std::vector<Tensor>& inputs) const {
  if (inputs.size() != inputs_.size())
    return invalid_argument("model takes " + std::to_string(inputs_.size()) + " inputs, got " +
                            std::to_string(inputs.size()));
  for (size_t i = 0; i < inputs.size(); ++i) {
    const TensorInfo& info = inputs_[i];
    const Tensor& t = inputs[i];
    if (!t.defined()) return invalid_argument("input '" + info.name + "' is missing");
    if (info.dtype != DType::kUndefined && t.dtype() != info.dtype)
      return invalid_argument("input '" + info.name + "' must be " + dtype_name(info.dtype) + ", got " +
                              dtype_name(t.dtype()));
    if (!info.has_shape) continue;
    bool match = t.rank() == static_cast<int>(info.shape.size());
    for (size_t d = 0; match && d < info.shape.size(); ++d)
      if (info.shape[d] >= 0 && info.shape[d] != t.shape()[d]) match = false;
    if (!match) {
      std::string want = "[";
      for (size_t d = 0; d < info.shape.size(); ++d)
        want += (d ? "," : "") + (info.shape[d] >= 0 ? std::to_string(info.shape[d]) : std::string("?"));
      return invalid_argument("input '" + info.name + "' must have shape " + want + "], got " +
                              shape_to_string(t.shape()));
    }
  }
  rt::GraphExecutor::MemoryStats stats;
  std::vector<uint64_t> step_ns;
  auto out = executor_->run(inputs, *pool_, nullptr, &stats, profile_ ? &step_ns : nullptr);
  if (profile_ && out.ok()) {
    std::lock_guard<std::mutex> lk(profile_mu_);
    step_ns_.resize(step_ns.size(), 0);
    for (size_t i = 0; i < step_ns.size(); ++i) step_ns_[i] += step_ns[i];
    ++profiled_runs_;
  }
  raise_to(peak_activation_bytes_, stats.peak_live_bytes);
  raise_to(largest_activation_pair_bytes_, stats.largest_pair_bytes);
  raise_to(activation_arena_bytes_, stats.arena_bytes);
  return out;
}

Expected<std::vector<Tensor>> Session::run(const std::map<std::string, Tensor>& feeds) const {
  std::vector<Tensor> ordered;
  for (const auto& info : inputs_) {
    auto it = feeds.find(info.name);
    if (it == feeds.end()) return invalid_argument("no value given for model input '" + info.name + "'");
    ordered.push_back(it->second);
  }
  for (const auto& [name, t] : feeds) {
    bool known = false;
    for (const auto& info : inputs_) known |= info.name == name;
    if (!known) return invalid_argument("model has no input named '" + name + "'");
  }
  return run(ordered);
}

}  // namespace qtk
