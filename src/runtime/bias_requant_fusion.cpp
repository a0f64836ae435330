#include "runtime/bias_requant_fusion.h"

#include <string_view>
#include <unordered_map>
#include <vector>

#include "ir/passes.h"
#include "runtime/code_tables.h"

namespace qtk::rt {

namespace {

bool is_op(const ir::Node& n, const char* op) { return n.op_type == op && ir::is_default_domain(n.domain); }

// A per-tensor (scale, zero point) pair of constants at inputs i, i + 1 (a
// block_size makes one value a per-block layout, which the kernels check).
bool per_tensor_params(const ir::Graph& g, const ir::Node& n, size_t i) {
  if (n.attr_int("block_size", 0) != 0) return false;
  if (n.inputs.size() <= i + 1 || n.inputs[i].empty() || n.inputs[i + 1].empty()) return false;
  const Tensor *s = g.find_initializer(n.inputs[i]), *z = g.find_initializer(n.inputs[i + 1]);
  return s && z && s->dtype() == DType::kFloat32 && s->numel() == 1 && s->rank() <= 1 && z->numel() == 1 &&
         z->rank() <= 1 && is_8bit(z->dtype());
}

}  // namespace

Expected<int> fuse_bias_requantize(ir::Model& m) {
  ir::Graph& g = m.graph;
  const auto reads = ir::count_reads(g);  // subgraph free variables and graph outputs included
  auto read_once = [&](const std::string& v) {
    auto it = reads.find(v);
    return it != reads.end() && it->second == 1;
  };
  std::unordered_map<std::string_view, size_t> producer;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (const auto& o : g.nodes[i].outputs) producer[o] = i;
  auto made_by = [&](const std::string& v) -> const ir::Node* {
    auto it = producer.find(v);
    return it == producer.end() ? nullptr : &g.nodes[it->second];
  };

  std::vector<char> drop(g.nodes.size(), 0);
  std::vector<std::pair<size_t, ir::Node>> fused;  // at the QuantizeLinear's place
  for (size_t qi = 0; qi < g.nodes.size(); ++qi) {
    const ir::Node& q = g.nodes[qi];
    if (!is_op(q, "QuantizeLinear") || q.outputs.size() != 1 || q.has_attr("output_dtype") || !per_tensor_params(g, q, 1))
      continue;
    const ir::Node* add = made_by(q.inputs[0]);
    if (!add || !is_op(*add, "Add") || add->inputs.size() != 2 || add->outputs.size() != 1 || !read_once(q.inputs[0]))
      continue;
    const int bias_at = g.find_initializer(add->inputs[0]) ? 0 : 1;
    const Tensor* bias = g.find_initializer(add->inputs[bias_at]);
    const std::string& d = add->inputs[1 - bias_at];
    if (!bias || bias->dtype() != DType::kFloat32 || bias->rank() != 1 || !read_once(d)) continue;
    const ir::Node* dq = made_by(d);
    if (!dq || !is_op(*dq, "DequantizeLinear") || dq->outputs.size() != 1 || !per_tensor_params(g, *dq, 1)) continue;
    // The codes' last dimension must be the bias's: a QLinearMatMul by a constant [K, N].
    const ir::Node* mm = made_by(dq->inputs[0]);
    if (!mm || !is_op(*mm, "QLinearMatMul") || mm->inputs.size() < 4) continue;
    const Tensor* w = g.find_initializer(mm->inputs[3]);
    if (!w || w->rank() != 2 || w->dim(1) != bias->dim(0)) continue;
    const Tensor* mm_zp = mm->inputs.size() > 7 && !mm->inputs[7].empty() ? g.find_initializer(mm->inputs[7]) : nullptr;
    if (!mm_zp || mm_zp->dtype() != g.find_initializer(dq->inputs[2])->dtype()) continue;
    ir::Node n;
    n.name = q.name + "_BiasRequantize";
    n.op_type = kBiasRequantizeOp;
    n.domain = kCodeTableDomain;
    n.inputs = {dq->inputs[0], dq->inputs[1], dq->inputs[2], add->inputs[bias_at], q.inputs[1], q.inputs[2]};
    n.outputs = q.outputs;
    drop[producer.at(d)] = 1;
    drop[producer.at(q.inputs[0])] = 1;
    drop[qi] = 1;
    fused.emplace_back(qi, std::move(n));
  }
  if (fused.empty()) return 0;
  std::vector<ir::Node> nodes;
  nodes.reserve(g.nodes.size());
  size_t next = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (next < fused.size() && fused[next].first == i) nodes.push_back(std::move(fused[next++].second));
    else if (!drop[i]) nodes.push_back(std::move(g.nodes[i]));
  }
  g.nodes = std::move(nodes);
  if (m.opset(kCodeTableDomain) == 0) m.opsets.push_back({kCodeTableDomain, 1});
  return static_cast<int>(fused.size());
}

}  // namespace qtk::rt
