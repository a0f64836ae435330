#include "ir/passes.h"

#include <set>
#include <unordered_map>
#include <unordered_set>

namespace qtk::ir {

// ---- helpers ----

void rename_reads(Graph& g, const std::string& from, const std::string& to) {
  for (auto& n : g.nodes) {
    for (auto& i : n.inputs)
      if (i == from) i = to;
    for (auto& a : n.attrs) {
      if (a.g) rename_reads(*a.g, from, to);
      for (auto& sg : a.graphs)
        if (sg) rename_reads(*sg, from, to);
    }
  }
}

bool has_subgraph(const Node& n) {
  for (const auto& a : n.attrs)
    if (a.type == AttrType::kGraph || a.type == AttrType::kGraphs) return true;
  return false;
}

std::unordered_map<std::string, int> count_reads(const Graph& g) {
  std::unordered_map<std::string, int> reads;
  for (const auto& n : g.nodes) {
    for (const auto& i : n.inputs)
      if (!i.empty()) ++reads[i];
    for (const auto& a : n.attrs) {
      if (a.g)
        for (const auto& v : free_variables(*a.g)) ++reads[v];
      for (const auto& sg : a.graphs)
        if (sg)
          for (const auto& v : free_variables(*sg)) ++reads[v];
    }
  }
  for (const auto& o : g.outputs) ++reads[o.name];
  return reads;
}

namespace {
void collect_names(const Graph& g, std::unordered_set<std::string>& used) {
  for (const auto& v : g.inputs) used.insert(v.name);
  for (const auto& v : g.outputs) used.insert(v.name);
  for (const auto& v : g.value_infos) used.insert(v.name);
  for (const auto& [k, t] : g.initializers) used.insert(k);
  for (const auto& n : g.nodes) {
    for (const auto& o : n.outputs) used.insert(o);
    for (const auto& i : n.inputs) used.insert(i);
    for (const auto& a : n.attrs) {
      if (a.g) collect_names(*a.g, used);
      for (const auto& sg : a.graphs)
        if (sg) collect_names(*sg, used);
    }
  }
}
}  // namespace

NameTable::NameTable(const Graph& g) { collect_names(g, used_); }

std::string NameTable::fresh(const std::string& base) {
  std::string name = base;
  for (int k = 1; used_.count(name); ++k) name = base + "_" + std::to_string(k);
  used_.insert(name);
  return name;
}

// ---- passes ----

Expected<int> remove_identities(Model& m) {
  Graph& g = m.graph;
  int removed = 0;
  for (size_t i = 0; i < g.nodes.size();) {
    Node& n = g.nodes[i];
    // Dropout is a pass-through at inference unless asked for its mask or
    // given a training_mode input.
    bool passthrough = is_default_domain(n.domain) &&
                       (n.op_type == "Identity" ||
                        (n.op_type == "Dropout" && (n.outputs.size() < 2 || n.outputs[1].empty()) &&
                         !n.has_input(2)));
    if (!passthrough || n.inputs.empty() || n.inputs[0].empty() || n.outputs.empty() || n.outputs[0].empty()) {
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
      bool produced = false;
      for (const auto& p : g.nodes)
        for (const auto& o : p.outputs) produced |= o == src;
      if (!produced) {  // read from an enclosing scope: keep the copy
        ++i;
        continue;
      }
      g.nodes.erase(g.nodes.begin() + static_cast<long>(i));
      for (auto& p : g.nodes)
        for (auto& o : p.outputs)
          if (o == src) o = dst;
      rename_reads(g, src, dst);
    } else {
      g.nodes.erase(g.nodes.begin() + static_cast<long>(i));
      rename_reads(g, dst, src);
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
      for (const auto& sg : a.graphs)
        if (sg) for (const auto& v : free_variables(*sg)) live.insert(v);
    }
  }
  int removed = 0;
  std::vector<Node> kept;
  kept.reserve(g.nodes.size());
  for (size_t k = 0; k < g.nodes.size(); ++k) {
    if (keep[k]) kept.push_back(std::move(g.nodes[k]));
    else ++removed;
  }
  g.nodes = std::move(kept);

  // An unused initializer goes, and so does a graph input that only existed
  // to declare it (old IR versions list every weight as an input): such an
  // input cannot be fed through a Session anyway. Inputs without an
  // initializer are part of the model's interface and stay.
  std::vector<std::string> unused;
  for (const auto& name : g.initializer_order)
    if (!live.count(name)) unused.push_back(name);
  for (const auto& name : unused) {
    g.remove_initializer(name);
    std::erase_if(g.inputs, [&](const ValueInfo& v) { return v.name == name; });
  }

  // value_infos of values that no longer exist would only confuse readers.
  std::unordered_set<std::string> exists;
  for (const auto& v : g.inputs) exists.insert(v.name);
  for (const auto& [k, t] : g.initializers) exists.insert(k);
  for (const auto& n : g.nodes)
    for (const auto& o : n.outputs) exists.insert(o);
  std::erase_if(g.value_infos, [&](const ValueInfo& v) { return !exists.count(v.name); });
  return removed;
}

namespace {
// The value a Constant node holds, or nothing for forms qtk cannot hold
// (sparse_value, strings).
std::optional<Tensor> constant_value(const Node& n) {
  if (n.attrs.size() != 1) return std::nullopt;
  const Attribute& a = n.attrs[0];
  if (a.name == "value" && a.type == AttrType::kTensor && a.t.defined()) return a.t;
  if (a.name == "value_float" && a.type == AttrType::kFloat) return Tensor::scalar<float>(a.f);
  if (a.name == "value_int" && a.type == AttrType::kInt) return Tensor::scalar<int64_t>(a.i);
  if (a.name == "value_floats" && a.type == AttrType::kFloats)
    return Tensor::from_vector<float>({static_cast<int64_t>(a.floats.size())}, a.floats);
  if (a.name == "value_ints" && a.type == AttrType::kInts)
    return Tensor::from_vector<int64_t>({static_cast<int64_t>(a.ints.size())}, a.ints);
  return std::nullopt;
}
}  // namespace

Expected<int> constants_to_initializers(Model& m) {
  Graph& g = m.graph;
  int changed = 0;
  std::vector<Node> kept;
  kept.reserve(g.nodes.size());
  for (auto& n : g.nodes) {
    if (is_default_domain(n.domain) && n.op_type == "Constant" && n.outputs.size() == 1 &&
        !n.outputs[0].empty()) {
      if (auto t = constant_value(n)) {
        g.set_initializer(n.outputs[0], *t);
        ++changed;
        continue;
      }
    }
    kept.push_back(std::move(n));
  }
  g.nodes = std::move(kept);
  return changed;
}

Status optimize_for_inference(Model& m) {
  QTK_RETURN_IF_ERROR(topological_sort(m.graph));
  for (int round = 0; round < 16; ++round) {
    int changed = 0;
    for (auto pass : {remove_identities, constants_to_initializers, fold_shape_chains, fold_batchnorm,
                      remove_dead_nodes}) {
      QTK_ASSIGN_OR_RETURN(int n, pass(m));
      changed += n;
    }
    if (changed == 0) break;
  }
  return topological_sort(m.graph);
}

}  // namespace qtk::ir
