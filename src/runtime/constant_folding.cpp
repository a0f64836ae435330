#include "runtime/constant_folding.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <unordered_set>

#include "ir/passes.h"
#include "runtime/graph_executor.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk::rt {

bool is_nondeterministic_op(const std::string& domain, const std::string& op_type) {
  if (!ir::is_default_domain(domain)) return false;
  // Dropout is listed elsewhere: it is random only in training mode.
  static const std::unordered_set<std::string> kRandom = {
      "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"};
  return kRandom.count(op_type) > 0;
}

namespace {

constexpr int64_t kHuge = std::numeric_limits<int64_t>::max();

// Product of values, saturating at kHuge; negative counts as huge (the
// kernel would reject it anyway).
int64_t saturating_product(const std::vector<int64_t>& v) {
  int64_t p = 1;
  for (int64_t x : v) {
    if (x < 0) return kHuge;
    if (x != 0 && p > kHuge / x) return kHuge;
    p *= x;
  }
  return p;
}

// Elements an output will have, for ops that can create far more data than
// they read; nullopt where the output is not much bigger than the inputs or
// cannot be told before running.
std::optional<int64_t> generated_elements(const ir::Node& n, const std::vector<const Tensor*>& in) {
  if (!ir::is_default_domain(n.domain)) return std::nullopt;
  auto values = [&](size_t i) -> std::optional<std::vector<int64_t>> {
    if (i >= in.size() || !in[i] || in[i]->numel() > 64) return std::nullopt;
    return in[i]->to_int64_vector();
  };
  if (n.op_type == "ConstantOfShape") {
    if (auto s = values(0)) return saturating_product(*s);
    return kHuge;
  }
  if (n.op_type == "Expand" && in.size() > 1 && in[0]) {
    auto s = values(1);
    if (!s) return kHuge;
    // Broadcast of the input's shape and the requested one.
    std::vector<int64_t> out = *s;
    const Shape& x = in[0]->shape();
    if (x.size() > out.size()) out.insert(out.begin(), x.size() - out.size(), 1);
    for (size_t k = 0; k < x.size(); ++k) {
      int64_t& o = out[out.size() - x.size() + k];
      o = std::max(o, x[k]);
    }
    return saturating_product(out);
  }
  if (n.op_type == "Tile" && in.size() > 1 && in[0]) {
    auto r = values(1);
    if (!r) return kHuge;
    r->push_back(in[0]->numel());
    return saturating_product(*r);
  }
  if (n.op_type == "Range" && in.size() > 2 && in[0] && in[1] && in[2]) {
    const double start = in[0]->get_as_double(0), limit = in[1]->get_as_double(0), delta = in[2]->get_as_double(0);
    if (delta == 0) return kHuge;
    const double count = std::ceil((limit - start) / delta);
    return count <= 0 ? 0 : count > 1e18 ? kHuge : static_cast<int64_t>(count);
  }
  return std::nullopt;
}

// Bytes an output will take according to its value_info, if fully known.
std::optional<int64_t> declared_bytes(const ir::Graph& g, const std::string& name) {
  const ir::ValueInfo* v = g.find_value_info(name);
  if (!v || !v->has_shape || dtype_size(v->dtype) == 0) return std::nullopt;
  std::vector<int64_t> dims;
  for (const auto& d : v->shape) {
    if (!d.is_fixed()) return std::nullopt;
    dims.push_back(d.value);
  }
  const int64_t n = saturating_product(dims);
  const int64_t esize = static_cast<int64_t>(dtype_size(v->dtype));
  return n > kHuge / esize ? kHuge : n * esize;
}

}  // namespace

Expected<int> fold_constants(ir::Model& m, const ConstantFoldingOptions& options) {
  ir::Graph& g = m.graph;
  const OpRegistry& registry = OpRegistry::global();
  const auto reads = ir::count_reads(g);
  const int64_t limit = static_cast<int64_t>(std::min<size_t>(options.max_output_bytes, kHuge));
  std::optional<ThreadPool> pool;  // made on first use

  int folded = 0;
  std::vector<ir::Node> kept;
  kept.reserve(g.nodes.size());
  for (auto& n : g.nodes) {
    auto keep = [&] { kept.push_back(std::move(n)); };
    // Dropout masks at random when its training_mode input is not a constant false.
    const Tensor* training = n.has_input(2) ? g.find_initializer(n.inputs[2]) : nullptr;
    const bool training_dropout = ir::is_default_domain(n.domain) && n.op_type == "Dropout" && n.has_input(2) &&
                                  !(training && training->numel() == 1 && training->get_as_int64(0) == 0);
    if (ir::has_subgraph(n) || is_nondeterministic_op(n.domain, n.op_type) || training_dropout ||
        (options.keep_dequantize && ir::is_default_domain(n.domain) && n.op_type == "DequantizeLinear")) {
      keep();
      continue;
    }
    // Every input an initializer (initializers qtk treats as constants, even
    // when old IR versions also list them as graph inputs: a Session never
    // feeds those).
    std::vector<const Tensor*> in;
    bool constant = true;
    for (const auto& name : n.inputs) {
      if (name.empty()) {
        in.push_back(nullptr);
        continue;
      }
      const Tensor* t = g.find_initializer(name);
      constant &= t != nullptr;
      in.push_back(t);
    }
    bool used = false, output_is_input = false;
    for (const auto& o : n.outputs) {
      if (o.empty()) continue;
      auto it = reads.find(o);
      used |= it != reads.end() && it->second > 0;
      output_is_input |= g.is_graph_input(o);
    }
    // Unused nodes are left to dead-node removal.
    if (!constant || !used || output_is_input || n.outputs.empty()) {
      keep();
      continue;
    }
    // Refuse before running what would allocate too much.
    bool too_big = false;
    if (auto elems = generated_elements(n, in)) too_big = *elems > limit;  // >= 1 byte an element
    for (const auto& o : n.outputs)
      if (auto bytes = o.empty() ? std::nullopt : declared_bytes(g, o)) too_big |= *bytes > limit;
    const int64_t opset = m.opset(n.domain);
    const KernelFactory* factory = registry.find(n.domain, n.op_type, opset);
    if (too_big || !factory) {
      keep();
      continue;
    }
    KernelInit init{n, opset, [](const ir::Graph&) -> Expected<std::unique_ptr<GraphExecutor>> {
                      return unsupported("constant folding does not run subgraphs");
                    },
                    [](size_t) -> const Tensor* { return nullptr; }};
    auto kernel = (*factory)(init);
    if (!kernel.ok()) {
      keep();
      continue;
    }
    if (!pool) pool.emplace(1);
    KernelContext ctx;
    ctx.inputs = in;
    ctx.outputs.assign(n.outputs.size(), Tensor());
    ctx.pool = &*pool;
    // A failure here (unsupported variant, bad input) is left for the
    // session to report when the node actually runs.
    if (!(*kernel)->run(ctx).ok()) {
      keep();
      continue;
    }
    bool fits = true;
    for (size_t i = 0; i < n.outputs.size(); ++i) {
      if (n.outputs[i].empty()) continue;
      const Tensor& t = ctx.outputs[i];
      fits &= t.defined() && dtype_size(t.dtype()) > 0 && static_cast<int64_t>(t.nbytes()) <= limit;
    }
    if (!fits) {
      keep();
      continue;
    }
    for (size_t i = 0; i < n.outputs.size(); ++i) {
      if (n.outputs[i].empty()) continue;
      Tensor t = std::move(ctx.outputs[i]);
      // Kernels may return views of their inputs (Reshape, Identity); an
      // initializer gets storage of its own so editing one never edits another.
      for (const Tensor* x : in)
        if (x && x->raw() == t.raw() && t.nbytes() > 0) t = t.clone();
      g.set_initializer(n.outputs[i], std::move(t));
    }
    ++folded;
  }
  g.nodes = std::move(kept);
  return folded;
}

}  // namespace qtk::rt
