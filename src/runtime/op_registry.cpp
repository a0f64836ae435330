#include "runtime/op_registry.h"

#include <algorithm>
#include <tuple>

#include "runtime/kernels/ref/bias_requant_op.h"
#include "runtime/kernels/ref/code_table_op.h"
#include "runtime/kernels/ref/einsum.h"
#include "runtime/kernels/x86/bias_requant_x86.h"
#include "runtime/kernels/x86/code_table_x86.h"
#include "runtime/kernels/x86/qelementwise_x86_ops.h"
#include "runtime/kernels/x86/qnbits_ops.h"

namespace qtk::rt {

size_t OpRegistry::first_of(std::string_view domain, std::string_view op_type) const {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), std::pair(domain, op_type),
                             [this](const Entry& e, const std::pair<std::string_view, std::string_view>& key) {
                               return key_of(e) < key;
                             });
  if (it == entries_.end() || key_of(*it) != std::pair(domain, op_type)) return entries_.size();
  return static_cast<size_t>(it - entries_.begin());
}

void OpRegistry::add(const std::string& op_type, KernelFactory f, const std::string& domain, int since_version) {
  const auto key = std::pair(std::string_view(domain), std::string_view(op_type));
  const auto versioned = std::tuple(key.first, key.second, since_version);
  auto it = std::lower_bound(entries_.begin(), entries_.end(), versioned,
                             [this](const Entry& e, const std::tuple<std::string_view, std::string_view, int>& k) {
                               return std::tuple(domain_of(e), op_of(e), e.since) < k;
                             });
  if (it != entries_.end() && std::tuple(domain_of(*it), op_of(*it), it->since) == versioned) {
    factories_[it->factory] = std::move(f);
    return;
  }
  Entry e;
  e.since = since_version;
  e.factory = static_cast<uint32_t>(factories_.size());
  const size_t at = static_cast<size_t>(it - entries_.begin());
  // Names already in the table are shared: another version of this op sits
  // next to the insertion point; a domain's other ops anywhere.
  const Entry* same_op = nullptr;
  if (at < entries_.size() && key_of(entries_[at]) == key) same_op = &entries_[at];
  else if (at > 0 && key_of(entries_[at - 1]) == key) same_op = &entries_[at - 1];
  if (same_op != nullptr) {
    e.domain = same_op->domain, e.domain_len = same_op->domain_len, e.op = same_op->op, e.op_len = same_op->op_len;
  } else {
    const auto same_domain = std::find_if(entries_.begin(), entries_.end(),
                                          [&](const Entry& x) { return domain_of(x) == key.first; });
    if (same_domain != entries_.end()) {
      e.domain = same_domain->domain, e.domain_len = same_domain->domain_len;
    } else {
      e.domain = static_cast<uint32_t>(names_.size()), e.domain_len = static_cast<uint32_t>(domain.size());
      names_ += domain;
    }
    e.op = static_cast<uint32_t>(names_.size()), e.op_len = static_cast<uint32_t>(op_type.size());
    names_ += op_type;
  }
  factories_.push_back(std::move(f));
  entries_.insert(entries_.begin() + static_cast<std::ptrdiff_t>(at), e);
}

void OpRegistry::shrink() {
  names_.shrink_to_fit();
  entries_.shrink_to_fit();
  factories_.shrink_to_fit();
}

const KernelFactory* OpRegistry::find(const std::string& domain, const std::string& op_type, int64_t opset) const {
  const std::string_view d = ir::is_default_domain(domain) ? std::string_view() : std::string_view(domain);
  const KernelFactory* best = nullptr;
  int best_since = 0;
  // The base's first, so that an override of the same since_version wins.
  for (const OpRegistry* r : {base_, this}) {
    if (r == nullptr) continue;
    const auto key = std::pair(d, std::string_view(op_type));
    for (size_t i = r->first_of(d, op_type); i < r->entries_.size() && r->key_of(r->entries_[i]) == key; ++i) {
      const Entry& e = r->entries_[i];
      if ((e.since <= opset || opset <= 0) && (best == nullptr || e.since >= best_since)) {
        best = &r->factories_[e.factory];
        best_since = e.since;
      }
    }
  }
  return best;
}

bool OpRegistry::supports(const std::string& domain, const std::string& op_type) const {
  const std::string_view d = ir::is_default_domain(domain) ? std::string_view() : std::string_view(domain);
  return first_of(d, op_type) < entries_.size() || (base_ != nullptr && base_->supports(domain, op_type));
}

std::vector<std::string> OpRegistry::op_types(const std::string& domain) const {
  std::vector<std::string> r = base_ ? base_->op_types(domain) : std::vector<std::string>{};
  for (const Entry& e : entries_)
    if (domain_of(e) == domain) r.emplace_back(op_of(e));
  std::sort(r.begin(), r.end());
  r.erase(std::unique(r.begin(), r.end()), r.end());
  return r;
}

namespace {
void register_reference_ops(OpRegistry& r) {
  register_elementwise_ops(r);
  register_activation_ops(r);
  register_linalg_ops(r);
  register_einsum_op(r);
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
  register_code_table_op(r);
  register_bias_requant_op(r);
}
}  // namespace

const OpRegistry& OpRegistry::reference() {
  static const OpRegistry registry = [] {
    OpRegistry r;
    register_reference_ops(r);
    r.shrink();
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
    register_x86_code_table_op(r);
    register_x86_bias_requant_op(r);
    r.shrink();
    return r;
  }();
  return registry;
}

}  // namespace qtk::rt
