#include "runtime/op_registry.h"

#include <algorithm>

#include "runtime/kernels/x86/qelementwise_x86_ops.h"
#include "runtime/kernels/x86/qnbits_ops.h"

namespace qtk::rt {

void OpRegistry::add(const std::string& op_type, KernelFactory f, const std::string& domain, int since_version) {
  auto& v = ops_[{domain, op_type}];
  for (auto& [since, existing] : v)
    if (since == since_version) {
      existing = std::move(f);
      return;
    }
  v.emplace_back(since_version, std::move(f));
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
}

const OpRegistry::Versions* OpRegistry::versions(const std::string& domain, const std::string& op_type) const {
  auto it = ops_.find({ir::is_default_domain(domain) ? "" : domain, op_type});
  return it == ops_.end() ? nullptr : &it->second;
}

const KernelFactory* OpRegistry::find(const std::string& domain, const std::string& op_type, int64_t opset) const {
  const KernelFactory* best = nullptr;
  int best_since = 0;
  // The base's first, so that an override of the same since_version wins.
  for (const OpRegistry* r : {base_, this}) {
    if (r == nullptr) continue;
    const Versions* v = r->versions(domain, op_type);
    if (v == nullptr) continue;
    for (const auto& [since, f] : *v)
      if ((since <= opset || opset <= 0) && (best == nullptr || since >= best_since)) {
        best = &f;
        best_since = since;
      }
  }
  return best;
}

bool OpRegistry::supports(const std::string& domain, const std::string& op_type) const {
  return versions(domain, op_type) != nullptr || (base_ != nullptr && base_->supports(domain, op_type));
}

std::vector<std::string> OpRegistry::op_types(const std::string& domain) const {
  std::vector<std::string> r = base_ ? base_->op_types(domain) : std::vector<std::string>{};
  for (const auto& [k, v] : ops_)
    if (k.first == domain) r.push_back(k.second);
  std::sort(r.begin(), r.end());
  r.erase(std::unique(r.begin(), r.end()), r.end());
  return r;
}

namespace {
void register_reference_ops(OpRegistry& r) {
  register_elementwise_ops(r);
  register_activation_ops(r);
  register_linalg_ops(r);
  register_conv_ops(r);
  register_pool_ops(r);
  register_norm_ops(r);
  register_reduce_ops(r);
  register_shape_ops(r);
  register_tensor_ops(r);
  register_generator_ops(r);
  register_control_flow_ops(r);
  register_rnn_ops(r);
  register_quant_ops(r);
  register_qlinear_ops(r);
  register_qlinear_contrib_ops(r);
}
}  // namespace

const OpRegistry& OpRegistry::reference() {
  static const OpRegistry registry = [] {
    OpRegistry r;
    register_reference_ops(r);
    return r;
  }();
  return registry;
}

const OpRegistry& OpRegistry::global() {
  static const OpRegistry registry = [] {
    OpRegistry r;
    r.base_ = &reference();
    register_x86_qlinear_ops(r);
    register_x86_qelementwise_ops(r);
    register_x86_matmul_nbits_op(r);
    return r;
  }();
  return registry;
}

}  // namespace qtk::rt
