// The table of differentiable ops, assembled once from the per-family files.
#include <algorithm>
#include <map>

#include "train/grad_op.h"

namespace qtk::train {
namespace {

const std::map<std::string, GradOp>& table() {
  static const std::map<std::string, GradOp> t = [] {
    GradOpTable v;
    register_linear_grad_ops(v);
    register_elementwise_grad_ops(v);
    register_activation_grad_ops(v);
    register_conv_grad_ops(v);
    register_norm_grad_ops(v);
    register_pool_grad_ops(v);
    register_shape_grad_ops(v);
    register_select_grad_ops(v);
    register_quant_grad_ops(v);
    std::map<std::string, GradOp> m;
    for (auto& [name, op] : v) {
      if (!op.differentiable) op.differentiable = all_inputs_differentiable;
      if (!op.is_state) op.is_state = no_state;
      m[name] = op;
    }
    return m;
  }();
  return t;
}

}  // namespace

const GradOp* find_grad_op(const std::string& op_type) {
  auto it = table().find(op_type);
  return it == table().end() ? nullptr : &it->second;
}

const GradOp* find_grad_op(const std::string& domain, const std::string& op_type) {
  if (ir::is_default_domain(domain)) return find_grad_op(op_type);
  if (domain == kQtkDomain) return find_grad_op(domain + "." + op_type);
  return nullptr;
}

std::vector<std::string> grad_op_names() {
  std::vector<std::string> v;
  for (const auto& [k, _] : table()) v.push_back(k);
  return v;
}

Status expect_float(const ForwardContext& c, size_t i) {
  if (i >= c.in.size() || !c.in[i].defined())
    return invalid_argument(node_label(c.node) + ": required input " + std::to_string(i) + " is missing");
  if (c.in[i].dtype() != DType::kFloat32)
    return unsupported(node_label(c.node) + ": input " + std::to_string(i) + " must be float32 for training, got " +
                       dtype_name(c.in[i].dtype()));
  return Status::Ok();
}

std::string node_label(const ir::Node& n) { return "node '" + n.name + "' (" + n.op_type + ")"; }

}  // namespace qtk::train
