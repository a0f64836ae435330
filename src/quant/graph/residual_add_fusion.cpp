#include "quant/graph/residual_add_fusion.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace qtk::quant {

namespace {

bool has_subgraphs(const ir::Graph& g) {
  for (const auto& n : g.nodes)
    for (const auto& a : n.attrs)
      if (a.type == ir::AttrType::kGraph || a.type == ir::AttrType::kGraphs) return true;
  return false;
}

const std::string& input_or_empty(const ir::Node& n, size_t i) {
  static const std::string empty;
  return i < n.inputs.size() ? n.inputs[i] : empty;
}

}  // namespace

Expected<int> fuse_residual_adds(ir::Graph& g) {
  if (has_subgraphs(g)) return 0;
  std::map<std::string, int> readers;
  for (const auto& n : g.nodes)
    for (const auto& in : n.inputs)
      if (!in.empty()) ++readers[in];
  std::set<std::string> graph_outputs;
  for (const auto& v : g.outputs) graph_outputs.insert(v.name);
  std::map<std::string, size_t> conv_of;  // output -> index of a QLinearConv that can take an add
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const ir::Node& n = g.nodes[i];
    if (n.op_type != "QLinearConv" || !ir::is_default_domain(n.domain) || n.outputs.size() != 1 ||
        n.inputs.size() < 8 || n.inputs.size() > 9 || n.has_attr(kResidualAddAttr))
      continue;
    const std::string& y = n.outputs[0];
    if (readers[y] == 1 && graph_outputs.count(y) == 0) conv_of[y] = i;
  }
  std::vector<bool> removed(g.nodes.size(), false);
  int fused = 0;
  for (size_t j = 0; j < g.nodes.size(); ++j) {
    const ir::Node& add = g.nodes[j];
    if (add.op_type != "QLinearAdd" || add.domain != "com.microsoft" || add.outputs.size() != 1 ||
        !add.has_input(0) || !add.has_input(3) || add.inputs[0] == add.inputs[3])
      continue;
    // The conv operand (A or B) and the other one.
    size_t conv_side = 0;
    auto it = conv_of.find(add.inputs[0]);
    if (it == conv_of.end()) {
      it = conv_of.find(add.inputs[3]);
      conv_side = 3;
    }
    if (it == conv_of.end() || removed[it->second]) continue;
    const size_t other = conv_side == 0 ? 3 : 0;
    ir::Node& conv = g.nodes[it->second];
    conv.inputs.resize(9);  // bias slot, possibly empty
    conv.inputs.push_back(add.inputs[other]);
    conv.inputs.push_back(input_or_empty(add, other + 1));
    conv.inputs.push_back(input_or_empty(add, other + 2));
    conv.inputs.push_back(input_or_empty(add, 6));
    conv.inputs.push_back(input_or_empty(add, 7));
    const std::string old_output = conv.outputs[0];
    conv.outputs[0] = add.outputs[0];
    conv.set_attr(ir::attr_int(kResidualAddAttr, 1));
    std::erase_if(g.value_infos, [&](const ir::ValueInfo& v) { return v.name == old_output; });
    removed[j] = true;
    conv_of.erase(it);
    ++fused;
  }
  std::vector<ir::Node> kept;
  kept.reserve(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (!removed[i]) kept.push_back(std::move(g.nodes[i]));
  g.nodes = std::move(kept);
  // The residual may come after the conv in the old order.
  if (fused > 0) QTK_RETURN_IF_ERROR(ir::topological_sort(g));
  return fused;
}

}  // namespace qtk::quant
