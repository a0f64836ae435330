#include "ir/graph.h"

#include <algorithm>
#include <functional>
#include <set>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

namespace qtk::ir {

namespace {
Attribute named(const std::string& name, AttrType type) {
  Attribute a;
  a.name = name;
  a.type = type;
  return a;
}
}  // namespace

Attribute attr_int(const std::string& name, int64_t v) {
  Attribute a = named(name, AttrType::kInt);
  a.i = v;
  return a;
}
Attribute attr_float(const std::string& name, float v) {
  Attribute a = named(name, AttrType::kFloat);
  a.f = v;
  return a;
}
Attribute attr_string(const std::string& name, std::string v) {
  Attribute a = named(name, AttrType::kString);
  a.s = std::move(v);
  return a;
}
Attribute attr_ints(const std::string& name, std::vector<int64_t> v) {
  Attribute a = named(name, AttrType::kInts);
  a.ints = std::move(v);
  return a;
}
Attribute attr_floats(const std::string& name, std::vector<float> v) {
  Attribute a = named(name, AttrType::kFloats);
  a.floats = std::move(v);
  return a;
}
Attribute attr_tensor(const std::string& name, Tensor v) {
  Attribute a = named(name, AttrType::kTensor);
  a.t = std::move(v);
  return a;
}
Attribute attr_graph(const std::string& name, Graph g) {
  Attribute a = named(name, AttrType::kGraph);
  a.g = std::make_shared<Graph>(std::move(g));
  return a;
}

const Attribute* Node::attr(const std::string& n) const {
  for (const auto& a : attrs)
    if (a.name == n) return &a;
  return nullptr;
}
Attribute* Node::attr(const std::string& n) {
  for (auto& a : attrs)
    if (a.name == n) return &a;
  return nullptr;
}
int64_t Node::attr_int(const std::string& n, int64_t def) const {
  const Attribute* a = attr(n);
  return a && a->type == AttrType::kInt ? a->i : def;
}
float Node::attr_float(const std::string& n, float def) const {
  const Attribute* a = attr(n);
  if (!a) return def;
  if (a->type == AttrType::kFloat) return a->f;
  if (a->type == AttrType::kInt) return static_cast<float>(a->i);
  return def;
}
std::string Node::attr_string(const std::string& n, const std::string& def) const {
  const Attribute* a = attr(n);
  return a && a->type == AttrType::kString ? a->s : def;
}
std::vector<int64_t> Node::attr_ints(const std::string& n, std::vector<int64_t> def) const {
  const Attribute* a = attr(n);
  return a && a->type == AttrType::kInts ? a->ints : def;
}
std::vector<float> Node::attr_floats(const std::string& n, std::vector<float> def) const {
  const Attribute* a = attr(n);
  return a && a->type == AttrType::kFloats ? a->floats : def;
}
void Node::set_attr(Attribute a) {
  if (Attribute* e = attr(a.name)) {
    *e = std::move(a);
  } else {
    attrs.push_back(std::move(a));
  }
}
void Node::remove_attr(const std::string& n) {
  attrs.erase(std::remove_if(attrs.begin(), attrs.end(), [&](const Attribute& a) { return a.name == n; }),
              attrs.end());
}
std::string Node::describe() const {
  return "node '" + name + "' (" + (domain.empty() ? "" : domain + ".") + op_type + ")";
}

const Tensor* Graph::find_initializer(const std::string& n) const {
  auto it = initializers.find(n);
  return it == initializers.end() ? nullptr : &it->second;
}
void Graph::set_initializer(const std::string& n, Tensor t) {
  if (!initializers.count(n)) initializer_order.push_back(n);
  initializers[n] = std::move(t);
}
void Graph::remove_initializer(const std::string& n) {
  if (!initializers.erase(n)) return;
  initializer_order.erase(std::remove(initializer_order.begin(), initializer_order.end(), n),
                          initializer_order.end());
}
const ValueInfo* Graph::find_value_info(const std::string& n) const {
  for (const auto* list : {&inputs, &outputs, &value_infos})
    for (const auto& v : *list)
      if (v.name == n) return &v;
  return nullptr;
}
bool Graph::is_graph_input(const std::string& n) const {
  return std::any_of(inputs.begin(), inputs.end(), [&](const ValueInfo& v) { return v.name == n; });
}
bool Graph::is_graph_output(const std::string& n) const {
  return std::any_of(outputs.begin(), outputs.end(), [&](const ValueInfo& v) { return v.name == n; });
}
std::vector<const ValueInfo*> Graph::runtime_inputs() const {
  std::vector<const ValueInfo*> r;
  for (const auto& v : inputs)
    if (!initializers.count(v.name)) r.push_back(&v);
  return r;
}

bool is_default_domain(const std::string& d) { return d.empty() || d == "ai.onnx"; }

int64_t Model::opset(const std::string& domain) const {
  for (const auto& o : opsets)
    if (o.domain == domain || (is_default_domain(domain) && is_default_domain(o.domain))) return o.version;
  return 0;
}

namespace {
// Calls f(name) for each name a node reads, including the free variables of
// its subgraphs: views of the node's own strings, or of `scratch` (which
// keeps the subgraphs' free variables alive while the caller's views live).
template <class F>
void for_each_read(const Node& n, std::vector<std::string>& scratch, F&& f) {
  for (const auto& i : n.inputs)
    if (!i.empty()) f(std::string_view(i));
  auto add_free = [&](const Graph& sg) {
    for (auto& v : free_variables(sg)) scratch.push_back(std::move(v));
  };
  const size_t first = scratch.size();
  for (const auto& a : n.attrs) {
    if (a.g) add_free(*a.g);
    for (const auto& sg : a.graphs)
      if (sg) add_free(*sg);
  }
  for (size_t k = first; k < scratch.size(); ++k) f(std::string_view(scratch[k]));
}

std::vector<std::string> node_reads(const Node& n) {
  std::vector<std::string> scratch, r;
  for_each_read(n, scratch, [&](std::string_view v) { r.emplace_back(v); });
  return r;
}
}  // namespace

std::vector<std::string> free_variables(const Graph& g) {
  std::unordered_set<std::string> defined;
  for (const auto& v : g.inputs) defined.insert(v.name);
  for (const auto& [k, v] : g.initializers) defined.insert(k);
  for (const auto& n : g.nodes)
    for (const auto& o : n.outputs) defined.insert(o);
  std::set<std::string> free;
  for (const auto& n : g.nodes)
    for (const auto& r : node_reads(n))
      if (!defined.count(r)) free.insert(r);
  for (const auto& o : g.outputs)
    if (!defined.count(o.name)) free.insert(o.name);
  return {free.begin(), free.end()};
}

// The maps hold views of the graph's strings (no copies: the sort runs on
// every rewrite of a session build, whose temporaries count in its peak
// memory); the nodes move only after the last lookup.
Status topological_sort(Graph& g, const std::vector<std::string>& outer_scope) {
  std::unordered_map<std::string_view, size_t> producer;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (const auto& o : g.nodes[i].outputs) {
      if (o.empty()) continue;
      if (!producer.emplace(o, i).second)
        return invalid_argument("tensor '" + o + "' is produced twice (by " + g.nodes[producer[o]].describe() +
                                " and " + g.nodes[i].describe() + ")");
    }
  std::unordered_set<std::string_view> available(outer_scope.begin(), outer_scope.end());
  for (const auto& v : g.inputs) available.insert(v.name);
  for (const auto& [k, v] : g.initializers) available.insert(k);

  // Kahn's algorithm, stable: among ready nodes keep the original order.
  const size_t n = g.nodes.size();
  std::vector<std::vector<size_t>> consumers(n);
  std::vector<size_t> pending(n, 0);
  std::vector<std::string> scratch;  // subgraphs' free variables
  for (size_t i = 0; i < n; ++i) {
    scratch.clear();
    Status bad = Status::Ok();
    for_each_read(g.nodes[i], scratch, [&](std::string_view r) {
      if (!bad.ok()) return;
      auto it = producer.find(r);
      if (it != producer.end()) {
        if (it->second == i)
          bad = invalid_argument(g.nodes[i].describe() + " reads its own output '" + std::string(r) + "' (cycle)");
        consumers[it->second].push_back(i);
        ++pending[i];
      } else if (!available.count(r)) {
        bad = invalid_argument(g.nodes[i].describe() + " reads tensor '" + std::string(r) +
                               "', which is not a graph input, initializer or node output");
      }
    });
    if (!bad.ok()) return bad;
  }
  std::vector<size_t> order;
  order.reserve(n);
  std::set<size_t> ready;
  for (size_t i = 0; i < n; ++i)
    if (pending[i] == 0) ready.insert(i);
  while (!ready.empty()) {
    size_t i = *ready.begin();
    ready.erase(ready.begin());
    order.push_back(i);
    for (size_t c : consumers[i])
      if (--pending[c] == 0) ready.insert(c);
  }
  if (order.size() != n) {
    for (size_t i = 0; i < n; ++i)
      if (pending[i] != 0) return invalid_argument("graph has a cycle through " + g.nodes[i].describe());
  }
  for (const auto& o : g.outputs)
    if (!producer.count(o.name) && !available.count(o.name))
      return invalid_argument("graph output '" + o.name + "' is not produced by any node");
  producer.clear();  // views of strings about to move
  available.clear();
  std::vector<Node> sorted;
  sorted.reserve(n);
  for (size_t i : order) sorted.push_back(std::move(g.nodes[i]));
  g.nodes = std::move(sorted);
  return Status::Ok();
}

}  // namespace qtk::ir
