#include "runtime/code_tables.h"

#include <algorithm>
#include <map>
#include <set>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "ir/passes.h"
#include "runtime/graph_executor.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk::rt {

namespace {


// Ops that map each element on its own (given scalar constants), so that a
// region of them is a function of one code. Default domain.
const std::set<std::string_view>& elementwise_ops() {
  static const std::set<std::string_view> ops = {
      "DequantizeLinear", "QuantizeLinear", "Add",      "Sub",      "Mul",         "Div",      "Pow",
      "Max",              "Min",            "Relu",     "LeakyRelu", "Clip",       "Sigmoid",  "HardSigmoid",
      "HardSwish",        "Tanh",           "Erf",      "Exp",      "Log",         "Sqrt",     "Neg",
      "Abs",              "Reciprocal",     "Softplus", "Softsign", "Elu",         "Selu",     "Celu",
      "Gelu",             "Floor",          "Ceil",     "Round",    "Sign",        "Identity"};
  return ops;
}

bool is_qlinear_binary(const ir::Node& n) {
  return n.domain == "com.microsoft" && (n.op_type == "QLinearAdd" || n.op_type == "QLinearMul");
}

class Finder {
 public:
  Finder(const ir::Graph& g) : g_(g) {
    for (size_t i = 0; i < g.nodes.size(); ++i)
      for (const auto& o : g.nodes[i].outputs)
        if (!o.empty()) producer_[o] = i;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      for (const auto& in : g.nodes[i].inputs)
        if (!in.empty()) readers_[in].push_back(i);
      // An If/Loop body reads outer values without naming them as inputs.
      for (const auto& a : g.nodes[i].attrs) {
        if (a.g) note_subgraph_reads(*a.g, i);
        for (const auto& sg : a.graphs)
          if (sg) note_subgraph_reads(*sg, i);
      }
    }
    for (const auto& o : g.outputs) graph_outputs_.insert(o.name);
  }

  const Tensor* constant(const std::string& name) const { return name.empty() ? nullptr : g_.find_initializer(name); }
  bool is_value(const std::string& name) const { return !name.empty() && constant(name) == nullptr; }

  // An op of the table, with constants where a function of one code needs them.
  bool eligible(const ir::Node& n) const {
    if (n.outputs.size() != 1 || n.outputs[0].empty()) return false;
    const bool qlinear = is_qlinear_binary(n);
    if (!qlinear && !(ir::is_default_domain(n.domain) && elementwise_ops().count(n.op_type))) return false;
    for (const auto& a : n.attrs)
      if (a.g || !a.graphs.empty()) return false;
    // Blocked scales are a layout the 256-code evaluation need not meet.
    if (is_qdq(n) && n.attr_int("block_size", 0) != 0) return false;
    bool any_value = false;
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const std::string& in = n.inputs[k];
      if (in.empty()) continue;
      if (is_value(in)) {
        // Data inputs only: a scale or zero point computed at run time is no constant.
        const bool data = qlinear ? (k == 0 || k == 3) : (k == 0 || !is_qdq(n));
        if (!data || (n.op_type == "Clip" && k > 0)) return false;
        any_value = true;
        continue;
      }
      const Tensor* t = constant(in);
      if (t->numel() != 1) return false;
      // Quantization parameters leave the shape alone; a data constant of
      // rank 1 or more would broadcast a rank-0 code tensor up.
      const bool param = qlinear ? (k != 0 && k != 3) : (is_qdq(n) && k > 0);
      if (!param && t->rank() != 0) return false;
      if (param && t->rank() > 1) return false;
    }
    return any_value;
  }

  // x's dtype as the region's readers of x say it (the zero points' type),
  // undefined when they do not say or disagree.
  DType root_dtype(const std::string& x, const std::vector<size_t>& region) const {
    DType seen = DType::kUndefined;
    for (size_t i : region) {
      const ir::Node& n = g_.nodes[i];
      for (size_t k = 0; k < n.inputs.size(); ++k) {
        if (n.inputs[k] != x) continue;
        size_t zp = 0;
        if (n.op_type == "DequantizeLinear" && k == 0) zp = 2;
        else if (is_qlinear_binary(n) && (k == 0 || k == 3)) zp = k + 2;
        else return DType::kUndefined;  // a float op reading the codes directly: leave it
        const Tensor* z = zp < n.inputs.size() ? constant(n.inputs[zp]) : nullptr;
        if (z == nullptr || !is_8bit(z->dtype()) || (seen != DType::kUndefined && seen != z->dtype()))
          return DType::kUndefined;
        seen = z->dtype();
      }
    }
    return seen;
  }

  // y's dtype from its producer (a QuantizeLinear or QLinearAdd/Mul), else undefined.
  DType output_dtype(const ir::Node& n) const {
    size_t zp = 0;
    if (ir::is_default_domain(n.domain) && n.op_type == "QuantizeLinear") {
      if (n.inputs.size() < 3 || n.inputs[2].empty()) return DType::kUInt8;
      zp = 2;
    } else if (is_qlinear_binary(n)) {
      zp = 7;
    } else {
      return DType::kUndefined;
    }
    const Tensor* z = zp < n.inputs.size() ? constant(n.inputs[zp]) : nullptr;
    return z != nullptr && is_8bit(z->dtype()) ? z->dtype() : DType::kUndefined;
  }

  // The nodes that read only x and their own outputs, from x forward (in
  // order): a worklist over readers, lowest index first (producers come
  // first in a sorted graph), so the cost is the region's, not the graph's.
  std::vector<size_t> closure(const std::string& x, const std::vector<char>& dead) const {
    std::unordered_set<std::string_view> values = {x};
    std::vector<size_t> out;
    std::set<size_t> pending;
    auto push_readers = [&](std::string_view v) {
      if (auto it = readers_.find(v); it != readers_.end()) pending.insert(it->second.begin(), it->second.end());
    };
    push_readers(x);
    while (!pending.empty()) {
      const size_t i = *pending.begin();
      pending.erase(pending.begin());
      const ir::Node& n = g_.nodes[i];
      if (dead[i] || !eligible(n)) continue;
      bool only = true;
      for (const auto& in : n.inputs)
        if (is_value(in) && !values.count(in)) only = false;
      if (!only) continue;
      out.push_back(i);
      values.insert(n.outputs[0]);
      push_readers(n.outputs[0]);
    }
    return out;
  }

  // The nodes of `closure` that y depends on, when no value but y leaves them.
  std::vector<size_t> region_of(size_t y_node, const std::vector<size_t>& closure) const {
    std::unordered_set<size_t> in_closure(closure.begin(), closure.end()), keep = {y_node};
    for (auto it = closure.rbegin(); it != closure.rend(); ++it) {
      if (!keep.count(*it)) continue;
      for (const auto& in : g_.nodes[*it].inputs) {
        auto p = producer_.find(in);
        if (p != producer_.end() && in_closure.count(p->second)) keep.insert(p->second);
      }
    }
    std::vector<size_t> region;
    for (size_t i : closure)
      if (keep.count(i)) region.push_back(i);
    for (size_t i : region) {
      if (i == y_node) continue;
      const std::string& v = g_.nodes[i].outputs[0];
      if (graph_outputs_.count(v)) return {};
      auto r = readers_.find(v);
      if (r != readers_.end())
        for (size_t reader : r->second)
          if (!keep.count(reader)) return {};
    }
    return region;
  }

 private:
  static bool is_qdq(const ir::Node& n) { return n.op_type == "QuantizeLinear" || n.op_type == "DequantizeLinear"; }
  void note_subgraph_reads(const ir::Graph& sg, size_t node) {
    for (auto& v : ir::free_variables(sg)) {
      auto it = producer_.find(v);  // keys view the graph's strings, not these copies
      if (it != producer_.end()) readers_[it->first].push_back(node);
    }
  }

  const ir::Graph& g_;
  std::unordered_map<std::string_view, size_t> producer_;
  std::unordered_map<std::string_view, std::vector<size_t>> readers_;
  std::unordered_set<std::string_view> graph_outputs_;
};

struct Region {
  std::string x, y;
  DType x_dtype = DType::kUndefined, y_dtype = DType::kUndefined;
  std::vector<size_t> nodes;
};

// The region's output for each of the 256 codes of x, by the session's kernels.
Expected<Tensor> evaluate(const ir::Graph& g, const Region& r, const OpsetMap& opsets, const OpRegistry& registry) {
  ir::Graph eval;
  ir::ValueInfo in;
  in.name = r.x;
  in.dtype = r.x_dtype;
  in.has_shape = true;
  in.shape = {ir::Dim{256, ""}};
  eval.inputs.push_back(in);
  ir::ValueInfo out;
  out.name = r.y;
  out.dtype = r.y_dtype;
  eval.outputs.push_back(out);
  for (size_t i : r.nodes) {
    eval.nodes.push_back(g.nodes[i]);
    for (const auto& name : g.nodes[i].inputs)
      if (const Tensor* t = name.empty() ? nullptr : g.find_initializer(name)) eval.set_initializer(name, *t);
  }
  QTK_ASSIGN_OR_RETURN(auto executor, GraphExecutor::create(eval, opsets, {}, &registry, false, false));
  Tensor codes(r.x_dtype, {256});
  for (int c = 0; c < 256; ++c) {
    if (r.x_dtype == DType::kUInt8) codes.data<uint8_t>()[c] = static_cast<uint8_t>(c);
    else codes.data<int8_t>()[c] = static_cast<int8_t>(c - 128);
  }
  ThreadPool pool(1);
  QTK_ASSIGN_OR_RETURN(auto outs, executor->run({codes}, pool));
  if (outs.size() != 1 || outs[0].dtype() != r.y_dtype || outs[0].numel() != 256)
    return internal_error("code table of '" + r.y + "': the region did not map 256 codes to 256 codes");
  return std::move(outs[0]);  // [256], its own storage (no memory plan here)
}

// The largest region from root x (by node count), or none.
std::optional<Region> best_region(const Finder& f, const ir::Graph& g, const std::string& x,
                                  const std::vector<char>& dead) {
  const std::vector<size_t> closure = f.closure(x, dead);
  std::optional<Region> best;
  for (auto it = closure.rbegin(); it != closure.rend(); ++it) {
    const ir::Node& yn = g.nodes[*it];
    const DType y_dtype = f.output_dtype(yn);
    if (y_dtype == DType::kUndefined) continue;
    std::vector<size_t> nodes = f.region_of(*it, closure);
    if (nodes.size() < 2 || (best && nodes.size() <= best->nodes.size())) continue;
    const DType x_dtype = f.root_dtype(x, nodes);
    if (x_dtype == DType::kUndefined) continue;
    best = Region{x, yn.outputs[0], x_dtype, y_dtype, std::move(nodes)};
  }
  return best;
}

std::string fused_ops(const ir::Graph& g, const Region& r) {
  std::string s;
  for (size_t i : r.nodes) s += (s.empty() ? "" : ",") + g.nodes[i].op_type;
  return s;
}

}  // namespace

Expected<CodeTableStats> fuse_code_tables(ir::Model& m, const OpRegistry& registry) {
  CodeTableStats stats;
  const OpsetMap opsets = OpsetMap::of(m);
  ir::Graph& g = m.graph;
  std::set<std::string> tried;  // roots that gave no region (or a failed evaluation)
  std::set<std::string> region_constants;  // initializers the replaced nodes read
  // One index of the graph as it was: replaced nodes are marked dead and a
  // table stands in y's producer's place once every root is done, so no
  // view into the nodes' strings moves while the index lives.
  const Finder f(g);
  ir::NameTable names(g);
  std::vector<char> dead(g.nodes.size(), 0);
  std::map<size_t, ir::Node> tables;  // by the replaced producer of y
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (dead[i] || !f.eligible(g.nodes[i])) continue;
    // Roots: the non-constant inputs of eligible nodes, in order.
    for (const auto& x : g.nodes[i].inputs) {
      if (!f.is_value(x) || tried.count(x)) continue;
      tried.insert(x);
      std::optional<Region> r = best_region(f, g, x, dead);
      if (!r) continue;
      Expected<Tensor> table = evaluate(g, *r, opsets, registry);
      if (!table.ok()) continue;
      const size_t y_node = r->nodes.back();
      ir::Node lut;
      lut.name = g.nodes[y_node].name + "_CodeTable";
      lut.op_type = kCodeTableOp;
      lut.domain = kCodeTableDomain;
      const std::string table_name = names.fresh(r->y + "_code_table");
      g.set_initializer(table_name, std::move(*table));
      lut.inputs = {r->x, table_name};
      lut.outputs = {r->y};
      lut.attrs.push_back(ir::attr_int("input_signed", r->x_dtype == DType::kInt8 ? 1 : 0));
      lut.attrs.push_back(ir::attr_string("fused", fused_ops(g, *r)));
      for (size_t k : r->nodes) {
        dead[k] = 1;
        for (const auto& in : g.nodes[k].inputs)
          if (!in.empty() && g.find_initializer(in)) region_constants.insert(in);
      }
      tables.emplace(y_node, std::move(lut));
      ++stats.regions;
      stats.nodes_replaced += static_cast<int>(r->nodes.size());
      if (dead[i]) break;  // this node went into the table: its other inputs are inside it or constants
    }
  }
  if (!tables.empty()) {
    std::vector<ir::Node> nodes;
    nodes.reserve(g.nodes.size());
    for (size_t k = 0; k < g.nodes.size(); ++k) {
      if (auto t = tables.find(k); t != tables.end()) nodes.push_back(std::move(t->second));
      else if (!dead[k]) nodes.push_back(std::move(g.nodes[k]));
    }
    g.nodes = std::move(nodes);
  }
  if (stats.regions > 0) {
    // Constants only the replaced nodes read go with them (reads counted
    // with subgraphs' free variables and graph outputs).
    const auto reads = ir::count_reads(g);
    for (const auto& name : region_constants)
      if (!reads.count(name) && !g.is_graph_input(name) && g.find_initializer(name)) g.remove_initializer(name);
    if (m.opset(kCodeTableDomain) == 0) m.opsets.push_back({kCodeTableDomain, 1});
  }
  return stats;
}

}  // namespace qtk::rt
