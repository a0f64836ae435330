// Control flow: If and Loop. Their bodies are graph attributes turned into
// GraphExecutors once, when the session is built; at run time a body reads the
// enclosing graph's values through ctx.scope. Only tensor-typed values are
// supported: sequence and optional types (If/Loop from opset 13/16) are
// reported as unsupported.
#include <cstring>
#include <limits>
#include <memory>
#include <string>

#include "runtime/graph_executor.h"
#include "runtime/kernels/ref/common.h"
#include "runtime/op_registry.h"

namespace qtk::rt {

namespace {

// Body graphs are not necessarily stored in topological order; sort a copy
// (values it reads from outside count as available) and build its executor.
Expected<std::shared_ptr<const GraphExecutor>> build_body(const KernelInit& init, const ir::Graph& body,
                                                          const char* what) {
  auto not_tensor = [](const std::vector<ir::ValueInfo>& vs) {
    for (const auto& v : vs)
      if (!v.is_tensor) return true;
    return false;
  };
  if (not_tensor(body.inputs) || not_tensor(body.outputs))
    return unsupported(std::string(what) + " has sequence- or optional-typed inputs/outputs (tensors only)");
  ir::Graph sorted = body;
  Status st = ir::topological_sort(sorted, ir::free_variables(sorted));
  if (!st.ok()) return st.with_context(what);
  auto ex = init.build_subgraph(sorted);
  if (!ex.ok()) return ex.status().with_context(what);
  return std::shared_ptr<const GraphExecutor>(std::move(ex).value());
}

Expected<const ir::Graph*> graph_attr(const ir::Node& node, const char* name) {
  const ir::Attribute* a = node.attr(name);
  if (!a || a->type != ir::AttrType::kGraph || !a->g)
    return invalid_argument(std::string("missing graph attribute '") + name + "'");
  return a->g.get();
}

// Reads a one-element condition tensor (bool; other numeric types are read as
// "non-zero").
Expected<bool> read_condition(const Tensor& t, const char* what) {
  if (t.numel() != 1)
    return invalid_argument(std::string(what) + " must have exactly one element, got shape " +
                            shape_to_string(t.shape()));
  if (t.dtype() == DType::kBool) return t.data<uint8_t>()[0] != 0;
  if (dtype_size(t.dtype()) == 0) return invalid_argument(std::string(what) + " must be bool");
  return t.get_as_double(0) != 0.0;
}

// ---- If --------------------------------------------------------------------

Expected<std::unique_ptr<Kernel>> make_if(const KernelInit& init) {
  const ir::Node& node = init.node;
  QTK_ASSIGN_OR_RETURN(const ir::Graph* then_g, graph_attr(node, "then_branch"));
  QTK_ASSIGN_OR_RETURN(const ir::Graph* else_g, graph_attr(node, "else_branch"));
  for (const ir::Graph* g : {then_g, else_g})
    if (g->outputs.size() != node.outputs.size())
      return invalid_argument("branch '" + g->name + "' has " + std::to_string(g->outputs.size()) +
                              " outputs, the If node has " + std::to_string(node.outputs.size()));
  QTK_ASSIGN_OR_RETURN(auto then_ex, build_body(init, *then_g, "then_branch"));
  QTK_ASSIGN_OR_RETURN(auto else_ex, build_body(init, *else_g, "else_branch"));
  return make_fn_kernel([then_ex, else_ex](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, 1));
    QTK_ASSIGN_OR_RETURN(bool cond, read_condition(ctx.input(0), "If condition"));
    const GraphExecutor& branch = cond ? *then_ex : *else_ex;
    auto outs = branch.run({}, *ctx.pool, ctx.scope);
    if (!outs.ok()) return outs.status().with_context(cond ? "then_branch" : "else_branch");
    if (outs->size() != ctx.outputs.size())
      return internal_error("branch produced " + std::to_string(outs->size()) + " outputs, expected " +
                            std::to_string(ctx.outputs.size()));
    for (size_t i = 0; i < outs->size(); ++i) ctx.outputs[i] = std::move((*outs)[i]);
    return Status::Ok();
  });
}

// ---- Loop ------------------------------------------------------------------

struct LoopPlan {
  std::shared_ptr<const GraphExecutor> body;
  size_t carried = 0;                   // N loop-carried values
  size_t scans = 0;                     // K scan outputs
  std::vector<ir::ValueInfo> scan_info;  // declared type of each scan output (for zero iterations)
};

// Stacks per-iteration values along a new leading axis.
Expected<Tensor> stack(const std::vector<Tensor>& parts, const ir::ValueInfo& info) {
  if (parts.empty()) {
    // Zero iterations: the element shape is known only from the declaration.
    Shape s{0};
    if (info.has_shape)
      for (const auto& d : info.shape) s.push_back(d.is_fixed() ? d.value : 0);
    const DType dt = info.dtype == DType::kUndefined ? DType::kFloat32 : info.dtype;
    if (dtype_size(dt) == 0) return unsupported(std::string("scan output dtype ") + dtype_name(dt));
    return Tensor(dt, s);
  }
  const Tensor& first = parts.front();
  Shape s{static_cast<int64_t>(parts.size())};
  s.insert(s.end(), first.shape().begin(), first.shape().end());
  Tensor out(first.dtype(), s);
  const size_t bytes = first.nbytes();
  auto* dst = static_cast<std::byte*>(out.raw());
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i].dtype() != first.dtype() || parts[i].shape() != first.shape())
      return invalid_argument("scan output '" + info.name + "' changes from " + shape_to_string(first.shape()) +
                              " to " + shape_to_string(parts[i].shape()) + " at iteration " + std::to_string(i));
    if (bytes) std::memcpy(dst + i * bytes, parts[i].raw(), bytes);
  }
  return out;
}

Status run_loop(const LoopPlan& p, KernelContext& ctx) {
  const bool has_m = ctx.has_input(0), has_cond = ctx.has_input(1);
  int64_t trip_count = std::numeric_limits<int64_t>::max();
  if (has_m) {
    const Tensor& m = ctx.input(0);
    if (m.numel() != 1 || (m.dtype() != DType::kInt64 && m.dtype() != DType::kInt32))
      return invalid_argument("Loop M must be a one-element int64 tensor, got " + std::string(dtype_name(m.dtype())) +
                              " " + shape_to_string(m.shape()));
    trip_count = m.get_as_int64(0);
  }
  bool cond = true;
  if (has_cond) {
    QTK_ASSIGN_OR_RETURN(cond, read_condition(ctx.input(1), "Loop cond"));
  }
  if (!has_m && !has_cond) return invalid_argument("Loop has neither M nor cond, so it would never end");

  std::vector<Tensor> carried(p.carried);
  for (size_t i = 0; i < p.carried; ++i) {
    if (!ctx.has_input(2 + i)) return invalid_argument("loop-carried input " + std::to_string(i) + " is missing");
    carried[i] = ctx.input(2 + i);
  }
  std::vector<std::vector<Tensor>> scans(p.scans);
  std::vector<Tensor> feeds(2 + p.carried);
  for (int64_t it = 0; it < trip_count && cond; ++it) {
    feeds[0] = Tensor::scalar<int64_t>(it);
    feeds[1] = Tensor(DType::kBool, {});
    feeds[1].data<uint8_t>()[0] = cond ? 1 : 0;
    for (size_t i = 0; i < p.carried; ++i) feeds[2 + i] = carried[i];
    auto outs = p.body->run(feeds, *ctx.pool, ctx.scope);
    if (!outs.ok()) return outs.status().with_context("Loop body, iteration " + std::to_string(it));
    if (outs->size() != 1 + p.carried + p.scans) return internal_error("Loop body produced the wrong number of outputs");
    // Without a cond input the body's condition is ignored (a for loop).
    if (has_cond) {
      QTK_ASSIGN_OR_RETURN(cond, read_condition((*outs)[0], "Loop body cond"));
    }
    for (size_t i = 0; i < p.carried; ++i) carried[i] = std::move((*outs)[1 + i]);
    for (size_t k = 0; k < p.scans; ++k) scans[k].push_back(std::move((*outs)[1 + p.carried + k]));
  }
  for (size_t o = 0; o < ctx.outputs.size(); ++o) {
    if (o < p.carried) {
      ctx.outputs[o] = carried[o];
    } else {
      QTK_ASSIGN_OR_RETURN(ctx.outputs[o], stack(scans[o - p.carried], p.scan_info[o - p.carried]));
    }
  }
  return Status::Ok();
}

Expected<std::unique_ptr<Kernel>> make_loop(const KernelInit& init) {
  const ir::Node& node = init.node;
  QTK_ASSIGN_OR_RETURN(const ir::Graph* body, graph_attr(node, "body"));
  LoopPlan p;
  p.carried = node.inputs.size() >= 2 ? node.inputs.size() - 2 : 0;
  if (body->inputs.size() != 2 + p.carried)
    return invalid_argument("Loop body takes " + std::to_string(body->inputs.size()) + " inputs, expected " +
                            std::to_string(2 + p.carried) + " (iteration, cond and the loop-carried values)");
  if (body->outputs.size() < 1 + p.carried)
    return invalid_argument("Loop body has " + std::to_string(body->outputs.size()) + " outputs, expected at least " +
                            std::to_string(1 + p.carried));
  p.scans = body->outputs.size() - 1 - p.carried;
  if (node.outputs.size() > p.carried + p.scans)
    return invalid_argument("Loop node has more outputs than its body provides");
  p.scan_info.assign(body->outputs.begin() + 1 + p.carried, body->outputs.end());
  QTK_ASSIGN_OR_RETURN(p.body, build_body(init, *body, "Loop body"));
  return make_fn_kernel([p](KernelContext& ctx) { return run_loop(p, ctx); });
}

}  // namespace

void register_control_flow_ops(OpRegistry& r) {
  r.add("If", make_if);
  r.add("Loop", make_loop);
}

}  // namespace qtk::rt
