#include "ir/passes.h"

#include <set>
#include <unordered_map>
#include <unordered_set>

namespace qtk::ir {

namespace {
void rename_uses(Graph& g, const std::string& from, const std::string& to) {
  for (auto& n : g.nodes) {
    for (auto& i : n.inputs)
      if (i == from) i = to;
    for (auto& a : n.attrs) {
      if (a.g) rename_uses(*a.g, from, to);
      for (auto& sg : a.graphs) rename_uses(*sg, from, to);
    }
  }
}
}  // namespace

Expected<int> remove_identities(Model& m) {
  Graph& g = m.graph;
  int removed = 0;
  for (size_t i = 0; i < g.nodes.size();) {
    Node& n = g.nodes[i];
    bool passthrough = is_default_domain(n.domain) &&
                       (n.op_type == "Identity" ||
                        (n.op_type == "Dropout" && (n.outputs.size() < 2 || n.outputs[1].empty()) &&
                         n.inputs.size() < 3));
    if (!passthrough || n.inputs.empty() || n.inputs[0].empty() || n.outputs.empty()) {
      ++i;
      continue;
    }
    const std::string src = n.inputs[0], dst = n.outputs[0];
    // A graph output keeps its name: then the producer is renamed instead,
    // which is only safe when the source is a plain node output.
    if (g.is_graph_output(dst)) {
      if (g.is_graph_input(src) || g.initializers.count(src) || g.is_graph_output(src)) {
        ++i;
        continue;
      }
      g.nodes.erase(g.nodes.begin() + static_cast<long>(i));
      for (auto& p : g.nodes)
        for (auto& o : p.outputs)
          if (o == src) o = dst;
      rename_uses(g, src, dst);
    } else {
      g.nodes.erase(g.nodes.begin() + static_cast<long>(i));
      rename_uses(g, dst, src);
    }
    ++removed;
  }
  return removed;
}

Expected<int> remove_dead_nodes(Model& m) {
  Graph& g = m.graph;
  std::unordered_set<std::string> live;
  for (const auto& o : g.outputs) live.insert(o.name);
  std::vector<bool> keep(g.nodes.size(), false);
  // Nodes are sorted: walk backwards, keeping producers of live values.
  for (size_t k = g.nodes.size(); k-- > 0;) {
    const Node& n = g.nodes[k];
    bool used = false;
    for (const auto& o : n.outputs) used |= !o.empty() && live.count(o);
    if (!used) continue;
    keep[k] = true;
    for (const auto& i : n.inputs)
      if (!i.empty()) live.insert(i);
    for (const auto& a : n.attrs) {
      if (a.g) for (const auto& v : free_variables(*a.g)) live.insert(v);
      for (const auto& sg : a.graphs) for (const auto& v : free_variables(*sg)) live.insert(v);
    }
  }
  int removed = 0;
  std::vector<Node> kept;
  for (size_t k = 0; k < g.nodes.size(); ++k) {
    if (keep[k]) kept.push_back(std::move(g.nodes[k]));
    else ++removed;
  }
  g.nodes = std::move(kept);
  std::vector<std::string> unused;
  for (const auto& name : g.initializer_order)
    if (!live.count(name) && !g.is_graph_input(name)) unused.push_back(name);
  for (const auto& name : unused) g.remove_initializer(name);
  return removed;
}

Status optimize_for_inference(Model& m) {
  QTK_RETURN_IF_ERROR(topological_sort(m.graph));
  for (int round = 0; round < 8; ++round) {
    int changed = 0;
    QTK_ASSIGN_OR_RETURN(int a, remove_identities(m));
    QTK_ASSIGN_OR_RETURN(int b, remove_dead_nodes(m));
    changed = a + b;
    if (changed == 0) break;
  }
  return topological_sort(m.graph);
}

}  // namespace qtk::ir
