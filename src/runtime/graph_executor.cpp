#include "runtime/graph_executor.h"

#include <algorithm>
#include <set>

#include "runtime/op_registry.h"

namespace qtk::rt {

namespace {
class SlotScope final : public Scope {
 public:
  SlotScope(const std::unordered_map<std::string, int>& slots, const std::vector<Tensor>& values, const Scope* parent)
      : slots_(slots), values_(values), parent_(parent) {}
  const Tensor* lookup(const std::string& name) const override {
    auto it = slots_.find(name);
    if (it != slots_.end() && values_[it->second].defined()) return &values_[it->second];
    return parent_ ? parent_->lookup(name) : nullptr;
  }

 private:
  const std::unordered_map<std::string, int>& slots_;
  const std::vector<Tensor>& values_;
  const Scope* parent_;
};
}  // namespace

int GraphExecutor::slot(const std::string& name) {
  auto [it, inserted] = slots_.emplace(name, static_cast<int>(slot_names_.size()));
  if (inserted) slot_names_.push_back(name);
  return it->second;
}

Expected<std::unique_ptr<GraphExecutor>> GraphExecutor::create(const ir::Graph& graph, const OpsetMap& opsets,
                                                               const std::vector<std::string>& outer_names,
                                                               const OpRegistry* registry_or_null) {
  auto ex = std::unique_ptr<GraphExecutor>(new GraphExecutor());
  ex->graph_copy_ = std::make_shared<const ir::Graph>(graph);
  const ir::Graph& g = *ex->graph_copy_;

  std::set<std::string> known;
  for (const auto& v : g.inputs) {
    ex->input_slots_.push_back(ex->slot(v.name));
    known.insert(v.name);
  }
  for (const auto& [name, t] : g.initializers) {
    ex->slot(name);
    known.insert(name);
  }
  for (const auto& n : outer_names)
    if (!known.count(n)) {
      ex->outer_slots_.push_back(ex->slot(n));
      known.insert(n);
    }

  const OpRegistry& registry = registry_or_null ? *registry_or_null : OpRegistry::global();
  // Names visible inside subgraphs of this graph: everything known here.
  std::vector<std::string> visible(known.begin(), known.end());
  for (const auto& n : g.nodes)
    for (const auto& o : n.outputs)
      if (!o.empty()) visible.push_back(o);

  for (const auto& node : g.nodes) {
    const int64_t opset = opsets.get(node.domain);
    const KernelFactory* factory = registry.find(node.domain, node.op_type, opset);
    if (!factory) {
      return unsupported(node.describe() + ": op '" + node.op_type + "' (domain '" +
                         (node.domain.empty() ? "ai.onnx" : node.domain) + "', opset " + std::to_string(opset) +
                         ") is not supported by qtk");
    }
    KernelInit init{node, opset,
                    [&opsets, &visible, &registry](const ir::Graph& sub) {
                      return GraphExecutor::create(sub, opsets, visible, &registry);
                    },
                    [&g, &node](size_t i) -> const Tensor* {
                      if (i >= node.inputs.size() || node.inputs[i].empty()) return nullptr;
                      auto it = g.initializers.find(node.inputs[i]);
                      return it == g.initializers.end() ? nullptr : &it->second;
                    }};
    auto kernel = (*factory)(init);
    if (!kernel.ok()) return kernel.status().with_context(node.describe());
    Step step{&node, std::move(kernel).value(), {}, {}, {}};
    for (const auto& in : node.inputs) {
      if (in.empty()) {
        step.inputs.push_back(-1);
        continue;
      }
      if (!known.count(in))
        return invalid_argument(node.describe() + " reads tensor '" + in + "', which is not defined before it");
      step.inputs.push_back(ex->slot(in));
    }
    for (const auto& out : node.outputs) {
      step.outputs.push_back(out.empty() ? -1 : ex->slot(out));
      if (!out.empty()) known.insert(out);
    }
    ex->steps_.push_back(std::move(step));
  }
  for (const auto& o : g.outputs) {
    if (!known.count(o.name)) return invalid_argument("graph output '" + o.name + "' is never produced");
    ex->output_slots_.push_back(ex->slot(o.name));
  }

  ex->constants_.resize(ex->slot_names_.size());
  for (const auto& [name, t] : g.initializers) ex->constants_[ex->slots_.at(name)] = t;

  // Free each intermediate after its last reader (never inputs, constants or outputs).
  std::vector<int> last_reader(ex->slot_names_.size(), -1);
  for (size_t s = 0; s < ex->steps_.size(); ++s) {
    for (int i : ex->steps_[s].inputs)
      if (i >= 0) last_reader[i] = static_cast<int>(s);
    // Values read inside subgraphs stay alive until this step ends.
    for (const auto& a : ex->steps_[s].node->attrs) {
      std::vector<std::shared_ptr<ir::Graph>> subs = a.graphs;
      if (a.g) subs.push_back(a.g);
      for (const auto& sg : subs)
        for (const auto& fv : ir::free_variables(*sg)) {
          auto it = ex->slots_.find(fv);
          if (it != ex->slots_.end()) last_reader[it->second] = static_cast<int>(s);
        }
    }
  }
  std::set<int> keep(ex->output_slots_.begin(), ex->output_slots_.end());
  for (int s = 0; s < static_cast<int>(last_reader.size()); ++s)
    if (last_reader[s] >= 0 && !keep.count(s) && !ex->constants_[s].defined()) ex->steps_[last_reader[s]].release.push_back(s);
  return ex;
}

Expected<std::vector<Tensor>> GraphExecutor::run(const std::vector<Tensor>& feeds, ThreadPool& pool,
                                                 const Scope* outer, uint64_t* peak_live_bytes) const {
  if (feeds.size() > input_slots_.size())
    return invalid_argument("graph takes " + std::to_string(input_slots_.size()) + " inputs, got " +
                            std::to_string(feeds.size()));
  std::vector<Tensor> values = constants_;
  for (size_t i = 0; i < feeds.size(); ++i)
    if (feeds[i].defined()) values[input_slots_[i]] = feeds[i];
  for (int s : outer_slots_) {
    const Tensor* t = outer ? outer->lookup(slot_names_[s]) : nullptr;
    if (t) values[s] = *t;
  }
  // Views that share storage (Reshape, Identity) count twice: an upper bound.
  uint64_t live = 0, peak = 0;
  for (int s : input_slots_)
    if (values[s].defined()) live += values[s].nbytes();
  peak = live;
  SlotScope scope(slots_, values, outer);
  KernelContext ctx;
  ctx.pool = &pool;
  ctx.scope = &scope;
  for (const auto& step : steps_) {
    ctx.inputs.assign(step.inputs.size(), nullptr);
    for (size_t i = 0; i < step.inputs.size(); ++i) {
      int s = step.inputs[i];
      if (s < 0) continue;
      if (!values[s].defined())
        return invalid_argument(step.node->describe() + ": input '" + slot_names_[s] + "' has no value");
      ctx.inputs[i] = &values[s];
    }
    ctx.outputs.assign(step.outputs.size(), Tensor());
    Status st = step.kernel->run(ctx);
    if (!st.ok()) return st.with_context(step.node->describe());
    for (size_t o = 0; o < step.outputs.size(); ++o) {
      if (step.outputs[o] < 0) continue;
      if (!ctx.outputs[o].defined())
        return internal_error(step.node->describe() + ": kernel produced no value for output " + std::to_string(o));
      live += ctx.outputs[o].nbytes();
      values[step.outputs[o]] = std::move(ctx.outputs[o]);
    }
    peak = std::max(peak, live);
    for (int s : step.release) {
      live -= std::min<uint64_t>(live, values[s].defined() ? values[s].nbytes() : 0);
      values[s] = Tensor();
    }
  }
  if (peak_live_bytes) *peak_live_bytes = std::max(*peak_live_bytes, peak);
  std::vector<Tensor> out;
  out.reserve(output_slots_.size());
  for (int s : output_slots_) out.push_back(values[s]);
  return out;
}

}  // namespace qtk::rt
