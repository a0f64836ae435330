#include "train/train_graph.h"

#include <cstring>
#include <set>

#include "train/conv_geometry.h"
#include "train/loss.h"

namespace qtk::train {

Expected<TrainGraph> TrainGraph::create(const ir::Model& model) {
  TrainGraph t;
  t.model_ = model;
  ir::Graph& g = t.model_.graph;
  QTK_RETURN_IF_ERROR(ir::topological_sort(g));
  const auto inputs = g.runtime_inputs();
  if (inputs.size() != 1)
    return unsupported("training needs a model with exactly one runtime input, this one has " +
                       std::to_string(inputs.size()));
  if (inputs[0]->dtype != DType::kFloat32)
    return unsupported(std::string("model input '") + inputs[0]->name + "' must be float32, got " +
                       dtype_name(inputs[0]->dtype));
  t.input_ = inputs[0]->name;
  if (inputs[0]->has_shape && inputs[0]->shape.size() >= 2) {
    for (size_t i = 1; i < inputs[0]->shape.size(); ++i) {
      if (!inputs[0]->shape[i].is_fixed()) {
        t.sample_shape_.clear();
        break;
      }
      t.sample_shape_.push_back(inputs[0]->shape[i].value);
    }
  }
  if (g.outputs.empty()) return invalid_argument("model has no outputs");
  t.logits_ = g.outputs[0].name;

  std::map<std::string, size_t> producer;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (const auto& o : g.nodes[i].outputs) producer[o] = i;
  // A final Softmax is an inference convenience; the loss wants its input.
  if (auto it = producer.find(t.logits_); it != producer.end() && g.nodes[it->second].op_type == "Softmax" &&
                                          ir::is_default_domain(g.nodes[it->second].domain))
    t.logits_ = g.nodes[it->second].inputs[0];

  // Nodes the logits depend on.
  t.in_loss_path_.assign(g.nodes.size(), false);
  std::vector<std::string> stack{t.logits_};
  std::set<std::string> seen;
  while (!stack.empty()) {
    std::string v = stack.back();
    stack.pop_back();
    if (!seen.insert(v).second) continue;
    auto it = producer.find(v);
    if (it == producer.end()) continue;
    t.in_loss_path_[it->second] = true;
    for (const auto& in : g.nodes[it->second].inputs)
      if (!in.empty()) stack.push_back(in);
  }

  t.ops_.assign(g.nodes.size(), nullptr);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (!t.in_loss_path_[i]) continue;
    const ir::Node& n = g.nodes[i];
    const GradOp* op = find_grad_op(n.domain, n.op_type);
    if (!op) {
      std::string names;
      for (const auto& s : grad_op_names()) names += (names.empty() ? "" : ", ") + s;
      return unsupported(node_label(n) + (n.domain.empty() ? "" : " in domain '" + n.domain + "'") +
                         ": op is not supported for training (supported: " + names + ")");
    }
    for (const auto& a : n.attrs)
      if (a.type == ir::AttrType::kGraph || a.type == ir::AttrType::kGraphs)
        return unsupported(node_label(n) + ": subgraphs are not supported for training");
    t.ops_[i] = op;
  }

  // Fold a Relu into the BatchNormalization or Add before it when nothing
  // else reads that op's output: one pass over the activation instead of
  // two, forward and backward. The exported model (model_) keeps both nodes.
  {
    std::map<std::string, int> readers;
    for (const auto& n : g.nodes)
      for (const auto& in : n.inputs)
        if (!in.empty()) ++readers[in];
    for (const auto& o : g.outputs) ++readers[o.name];
    ++readers[t.logits_];
    t.fused_relu_.assign(g.nodes.size(), -1);
    t.relu_fused_.assign(g.nodes.size(), false);
    for (size_t j = 0; j < g.nodes.size(); ++j) {
      const ir::Node& r = g.nodes[j];
      if (!t.in_loss_path_[j] || r.op_type != "Relu" || !ir::is_default_domain(r.domain) || r.inputs.size() != 1 ||
          r.outputs.size() != 1)
        continue;
      auto it = producer.find(r.inputs[0]);
      if (it == producer.end() || readers[r.inputs[0]] != 1) continue;
      const size_t i = it->second;
      const ir::Node& p = g.nodes[i];
      if (!t.in_loss_path_[i] || !t.ops_[i]->fuses_relu || p.outputs[0] != r.inputs[0] || t.fused_relu_[i] >= 0)
        continue;
      bool other_outputs = false;  // BatchNormalization's optional mean/var outputs
      for (size_t k = 1; k < p.outputs.size(); ++k) other_outputs |= !p.outputs[k].empty();
      if (other_outputs) continue;
      t.fused_relu_[i] = static_cast<int64_t>(j);
      t.relu_fused_[j] = true;
    }
  }

  // Classify initializers by how the loss path uses them.
  std::set<std::string> data_use, const_use, state_use;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (!t.in_loss_path_[i]) continue;
    const auto& n = g.nodes[i];
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      if (n.inputs[k].empty() || !g.find_initializer(n.inputs[k])) continue;
      const int ki = static_cast<int>(k);
      (t.ops_[i]->is_state(ki) ? state_use : t.ops_[i]->differentiable(ki) ? data_use : const_use).insert(n.inputs[k]);
    }
  }
  for (const auto& name : g.initializer_order) {
    const Tensor* v = g.find_initializer(name);
    if (!v) continue;
    if (state_use.count(name)) {
      if (data_use.count(name))
        return unsupported("initializer '" + name + "' is both running state and a trained parameter");
      t.state_[name] = v->clone();
    } else if (data_use.count(name) && !const_use.count(name) && v->dtype() == DType::kFloat32) {
      t.param_index_[name] = t.params_.size();
      t.params_.push_back({name, v->clone(), Tensor(DType::kFloat32, v->shape()), v->rank() >= 2});
    }
  }

  // Which values carry a gradient.
  for (const auto& p : t.params_) t.requires_grad_[p.name] = true;
  t.requires_grad_node_.assign(g.nodes.size(), false);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (!t.in_loss_path_[i] || !t.ops_[i]->backward) continue;
    const auto& n = g.nodes[i];
    bool any = false;
    for (size_t k = 0; k < n.inputs.size(); ++k)
      any |= !n.inputs[k].empty() && t.ops_[i]->differentiable(static_cast<int>(k)) && t.requires_grad_.count(n.inputs[k]);
    t.requires_grad_node_[i] = any;
    if (any)
      for (const auto& o : n.outputs) t.requires_grad_[o] = true;
  }
  return t;
}

Expected<Tensor> TrainGraph::forward(const Tensor& x, bool training, rt::ThreadPool* pool) {
  const ir::Graph& g = model_.graph;
  records_.clear();
  std::map<std::string, Tensor> values;
  for (const auto& [name, v] : g.initializers) values[name] = v;
  for (const auto& p : params_) values[p.name] = p.value;
  for (const auto& [name, v] : state_) values[name] = v;
  values[input_] = x;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (!in_loss_path_[i] || relu_fused_[i]) continue;
    const ir::Node& n = g.nodes[i];
    ForwardContext c{n, {}, {}, {}, training, pool, {}};
    c.relu_after = fused_relu_[i] >= 0;
    c.in.resize(n.inputs.size());
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      if (n.inputs[k].empty()) continue;
      auto it = values.find(n.inputs[k]);
      if (it == values.end()) return internal_error(node_label(n) + ": input '" + n.inputs[k] + "' was not computed");
      c.in[k] = it->second;
    }
    QTK_RETURN_IF_ERROR(ops_[i]->forward(c));
    if (c.out.size() < n.outputs.size()) c.out.resize(n.outputs.size());
    for (size_t k = 0; k < n.outputs.size(); ++k)
      if (!n.outputs[k].empty()) values[n.outputs[k]] = c.out[k];
    if (c.relu_after) values[g.nodes[fused_relu_[i]].outputs[0]] = c.out[0];
    if (training) {
      for (auto& [k, v] : c.state_updates) state_[n.inputs[k]] = v;
      if (requires_grad_node_[i]) records_.push_back({i, std::move(c.in), std::move(c.out), std::move(c.saved)});
    }
  }
  auto it = values.find(logits_);
  if (it == values.end()) return internal_error("logits '" + logits_ + "' were not computed");
  return it->second;
}

namespace {
// a + b into a fresh tensor (gradients may share storage with other values),
// written once (no zero-fill and copy first) and split over the pool.
Tensor add_fresh(const Tensor& a, const Tensor& b, rt::ThreadPool* pool) {
  Tensor r = Tensor::uninitialized(DType::kFloat32, a.shape());
  const float *as = a.data<float>(), *bs = b.data<float>();
  float* rs = r.data<float>();
  parallel_elements(pool, r.numel(), [&](int64_t lo, int64_t hi) {
    const float* __restrict pa = as;
    const float* __restrict pb = bs;
    float* __restrict pr = rs;
    for (int64_t i = lo; i < hi; ++i) pr[i] = pa[i] + pb[i];
  });
  return r;
}
}  // namespace

Status TrainGraph::backward(const Tensor& dlogits, rt::ThreadPool* pool) {
  const ir::Graph& g = model_.graph;
  std::map<std::string, Tensor> grads;
  grads[logits_] = dlogits;
  for (size_t r = records_.size(); r-- > 0;) {
    Record& rec = records_[r];
    const ir::Node& n = g.nodes[rec.node];
    BackwardContext c{n, rec.in, rec.out, rec.saved, {}, {}, {}, pool};
    c.relu_after = fused_relu_[rec.node] >= 0;
    // With a fused Relu, the gradient arrives for the Relu's output.
    const std::vector<std::string>& outs = c.relu_after ? g.nodes[fused_relu_[rec.node]].outputs : n.outputs;
    bool any_out = false;
    c.dout.resize(n.outputs.size());
    for (size_t k = 0; k < outs.size(); ++k) {
      auto it = grads.find(outs[k]);
      if (it == grads.end()) continue;
      if (k >= rec.out.size() || rec.out[k].dtype() != DType::kFloat32) {  // no gradient through integers
        grads.erase(it);
        continue;
      }
      c.dout[k] = it->second;
      any_out = true;
      grads.erase(it);
    }
    if (!any_out) continue;
    if (!c.dout[0].defined()) c.dout[0] = Tensor(DType::kFloat32, rec.out[0].shape());
    c.need.assign(n.inputs.size(), false);
    c.din.resize(n.inputs.size());
    for (size_t k = 0; k < n.inputs.size(); ++k)
      c.need[k] = !n.inputs[k].empty() && ops_[rec.node]->differentiable(static_cast<int>(k)) &&
                  requires_grad_.count(n.inputs[k]) && rec.in[k].dtype() == DType::kFloat32;
    QTK_RETURN_IF_ERROR(ops_[rec.node]->backward(c));
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      if (!c.need[k]) continue;
      if (!c.din[k].defined() || c.din[k].shape() != rec.in[k].shape())
        return internal_error(node_label(n) + ": backward gave no gradient of the right shape for input " +
                              std::to_string(k));
      auto it = grads.find(n.inputs[k]);
      if (it == grads.end()) grads[n.inputs[k]] = c.din[k];
      else it->second = add_fresh(it->second, c.din[k], pool);
    }
  }
  for (auto& p : params_) {
    auto it = grads.find(p.name);
    if (it != grads.end()) p.grad = it->second;
    else p.grad = Tensor(DType::kFloat32, p.value.shape());
  }
  records_.clear();
  return Status::Ok();
}

Expected<StepStats> TrainGraph::train_step(const Tensor& x, const std::vector<int64_t>& labels,
                                           rt::ThreadPool* pool) {
  return train_step(x, static_cast<int64_t>(labels.size()),
                    [&](const Tensor& logits) { return softmax_cross_entropy(logits, labels); }, pool);
}

Expected<StepStats> TrainGraph::train_step(const Tensor& x, int64_t samples, const LossFn& loss,
                                           rt::ThreadPool* pool) {
  QTK_ASSIGN_OR_RETURN(Tensor logits, forward(x, true, pool));
  QTK_ASSIGN_OR_RETURN(LossResult l, loss(logits));
  QTK_RETURN_IF_ERROR(backward(l.dlogits, pool));
  return StepStats{l.loss, l.correct, samples};
}

std::map<std::string, Tensor> TrainGraph::snapshot() const {
  std::map<std::string, Tensor> s;
  for (const auto& p : params_) s[p.name] = p.value.clone();
  for (const auto& [k, v] : state_) s[k] = v.clone();
  return s;
}

void TrainGraph::restore(const std::map<std::string, Tensor>& snap) {
  for (auto& p : params_)
    if (auto it = snap.find(p.name); it != snap.end())
      std::memcpy(p.value.raw(), it->second.raw(), p.value.nbytes());
  for (auto& [k, v] : state_)
    if (auto it = snap.find(k); it != snap.end()) v = it->second.clone();
}

ir::Model TrainGraph::to_model() const {
  ir::Model m = model_;
  for (const auto& p : params_) m.graph.set_initializer(p.name, p.value.clone());
  for (const auto& [k, v] : state_) m.graph.set_initializer(k, v.clone());
  return m;
}

}  // namespace qtk::train
