#include "runtime/optimize.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <unordered_map>
#include <utility>

#include "ir/passes.h"
#include "onnx/model_io.h"
#include "runtime/constant_folding.h"

namespace qtk::rt {

int infer_model_shapes(ir::Model& m) {
  for (const auto& problem : onnx_io::infer_shapes(m)) {
    const std::string w = "shape inference: " + problem;
    if (std::find(m.warnings.begin(), m.warnings.end(), w) == m.warnings.end()) m.warnings.push_back(w);
  }
  return static_cast<int>(m.graph.value_infos.size());
}

Status optimize_model(ir::Model& m, const OptimizeOptions& options, OptimizeStats* stats) {
  OptimizeStats local;
  OptimizeStats& st = stats ? *stats : local;
  st = OptimizeStats{};
  QTK_RETURN_IF_ERROR(ir::topological_sort(m.graph));
  ConstantFoldingOptions fold_options;
  fold_options.max_output_bytes = options.max_folded_bytes;

  // Each pass leaves the node order valid (a replaced value keeps its
  // name, a merged node keeps its place), so one sort at each end suffices;
  // remove_dead_nodes relies on that order.
  bool changed = true;
  for (int round = 0; round < options.max_rounds && changed; ++round) {
    // Shapes of the graph as it is now: folding may have made more known,
    // and the last, unchanged round leaves value_infos matching the result.
    if (options.infer_shapes) infer_model_shapes(m);
    int before = st.total();
    auto run = [&](auto&& pass, int& counter) -> Status {
      auto n = pass();
      if (!n.ok()) return n.status();
      counter += *n;
      return Status::Ok();
    };
    QTK_RETURN_IF_ERROR(run([&] { return ir::remove_identities(m); }, st.identities_removed));
    QTK_RETURN_IF_ERROR(run([&] { return ir::constants_to_initializers(m); }, st.constants_to_initializers));
    if (options.fold_shape_chains)
      QTK_RETURN_IF_ERROR(run([&] { return ir::fold_shape_chains(m); }, st.shape_values_folded));
    if (options.fold_constants)
      QTK_RETURN_IF_ERROR(run([&] { return fold_constants(m, fold_options); }, st.nodes_folded));
    if (options.fold_batchnorm)
      QTK_RETURN_IF_ERROR(run([&] { return ir::fold_batchnorm(m); }, st.batchnorms_folded));
    QTK_RETURN_IF_ERROR(run([&] { return ir::remove_dead_nodes(m); }, st.dead_nodes_removed));
    ++st.rounds;
    changed = st.total() != before;
  }
  return ir::topological_sort(m.graph);
}

Status optimize_model(ir::Model& m) { return optimize_model(m, OptimizeOptions{}); }

namespace {

// The bounds a Relu or Clip node clamps to, when they are known now; the
// defaults are those of the Clip kernel (lowest / max float, not infinities).
std::optional<std::pair<float, float>> clamp_bounds(const ir::Graph& g, const ir::Node& n, int64_t opset) {
  if (n.op_type == "Relu") return std::pair{0.f, std::numeric_limits<float>::infinity()};
  if (n.op_type != "Clip") return std::nullopt;
  float lo = std::numeric_limits<float>::lowest(), hi = std::numeric_limits<float>::max();
  if (opset > 0 && opset < 11) {
    if (n.inputs.size() != 1) return std::nullopt;
    if (n.has_attr("min")) lo = n.attr_float("min", lo);
    if (n.has_attr("max")) hi = n.attr_float("max", hi);
    return std::pair{lo, hi};
  }
  if (n.inputs.size() > 3) return std::nullopt;
  for (size_t k = 1; k < n.inputs.size(); ++k) {
    if (!n.has_input(k)) continue;
    const Tensor* t = g.find_initializer(n.inputs[k]);
    // Anything else (a runtime bound, another dtype) stays a Clip node.
    if (t == nullptr || t->dtype() != DType::kFloat32 || t->numel() != 1) return std::nullopt;
    (k == 1 ? lo : hi) = t->data<float>()[0];
  }
  return std::pair{lo, hi};
}

// A MaxPool the Conv kernel can apply itself: 2x2 windows, stride 2, no
// pads, dilation or ceil mode, no Indices output.
bool is_plain_2x2_max_pool(const ir::Node& n) {
  using V = std::vector<int64_t>;
  if (n.outputs.size() != 1 || n.attr_ints("kernel_shape") != V{2, 2} || n.attr_ints("strides") != V{2, 2})
    return false;
  const V pads = n.attr_ints("pads"), dilations = n.attr_ints("dilations");
  if (!pads.empty() && pads != V{0, 0, 0, 0}) return false;
  if (!dilations.empty() && dilations != V{1, 1}) return false;
  const std::string auto_pad = n.attr_string("auto_pad", "NOTSET");
  return (auto_pad == "NOTSET" || auto_pad == "VALID") && n.attr_int("ceil_mode", 0) == 0;
}

// The session fusions' bookkeeping: who writes each value, how often it is
// read, which nodes are folded away.
struct Absorber {
  ir::Graph& g;
  std::unordered_map<std::string, int> reads;
  std::unordered_map<std::string, size_t> producer;
  std::vector<bool> erase;

  explicit Absorber(ir::Graph& graph) : g(graph), reads(ir::count_reads(graph)), erase(graph.nodes.size(), false) {
    for (size_t i = 0; i < g.nodes.size(); ++i)
      for (const auto& o : g.nodes[i].outputs)
        if (!o.empty()) producer[o] = i;
  }
  // The node writing x when x has that one reader (no graph output, no
  // subgraph) and the node is not folded away; else null.
  ir::Node* sole_producer(const std::string& x) {
    auto it = producer.find(x);
    if (x.empty() || it == producer.end() || erase[it->second] || reads[x] != 1) return nullptr;
    return &g.nodes[it->second];
  }
  // p now writes node i's output, in its place; node i goes.
  void absorb(ir::Node& p, size_t i) {
    const std::string old = p.outputs[0];
    p.outputs[0] = g.nodes[i].outputs[0];
    producer[p.outputs[0]] = producer[old];
    producer.erase(old);
    std::erase_if(g.value_infos, [&](const ir::ValueInfo& v) { return v.name == old; });
    erase[i] = true;
  }
  // Drops the folded nodes and sorts again (an absorbed operand may be
  // written after the node that took it).
  Status finish() {
    std::vector<ir::Node> kept;
    kept.reserve(g.nodes.size());
    for (size_t i = 0; i < g.nodes.size(); ++i)
      if (!erase[i]) kept.push_back(std::move(g.nodes[i]));
    g.nodes = std::move(kept);
    return ir::topological_sort(g);
  }
};

}  // namespace

Expected<int> fuse_conv_epilogues(ir::Model& m) {
  ir::Graph& g = m.graph;
  QTK_RETURN_IF_ERROR(ir::topological_sort(g));
  Absorber ab(g);
  const int64_t opset = m.opset("");

  // The Conv that writes `x` and may absorb the node reading it (x read only
  // there); nothing may follow a fused pool.
  auto fusable_conv = [&](const std::string& x) -> ir::Node* {
    ir::Node* c = ab.sole_producer(x);
    if (c == nullptr || c->op_type != "Conv" || !ir::is_default_domain(c->domain) || c->outputs.size() != 1 ||
        c->inputs.size() < 2 || c->has_attr(kFusedPoolAttr))
      return nullptr;
    return c;
  };
  int fused = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const ir::Node& n = g.nodes[i];
    if (!ir::is_default_domain(n.domain) || n.outputs.size() != 1 || n.outputs[0].empty() || ir::has_subgraph(n))
      continue;
    if (n.op_type == "Add" && n.inputs.size() == 2) {
      for (int k = 0; k < 2; ++k) {
        const std::string& x = n.inputs[k];
        const std::string& z = n.inputs[1 - k];
        ir::Node* c = fusable_conv(x);
        if (c == nullptr || c->has_attr(kFusedMinAttr) || z.empty() || z == x || c->inputs.size() > 3 ||
            c->has_attr(kFusedAddAttr))
          continue;
        c->inputs.resize(4);  // an absent bias stays ""
        c->inputs[3] = z;
        c->set_attr(ir::attr_int(kFusedAddAttr, 1));
        ab.absorb(*c, i);
        ++fused;
        break;
      }
      continue;
    }
    if ((n.op_type == "Relu" && n.inputs.size() == 1) || n.op_type == "Clip") {
      if (n.inputs.empty()) continue;
      ir::Node* c = fusable_conv(n.inputs[0]);
      if (c == nullptr || c->has_attr(kFusedMinAttr)) continue;
      const auto bounds = clamp_bounds(g, n, opset);
      if (!bounds) continue;
      c->set_attr(ir::attr_float(kFusedMinAttr, bounds->first));
      c->set_attr(ir::attr_float(kFusedMaxAttr, bounds->second));
      ab.absorb(*c, i);
      ++fused;
      continue;
    }
    if (n.op_type == "MaxPool" && n.inputs.size() == 1 && is_plain_2x2_max_pool(n)) {
      ir::Node* c = fusable_conv(n.inputs[0]);
      if (c == nullptr || c->attr_int("group", 1) != 1) continue;
      c->set_attr(ir::attr_int(kFusedPoolAttr, 1));
      ab.absorb(*c, i);
      ++fused;
    }
  }
  if (fused > 0) QTK_RETURN_IF_ERROR(ab.finish());
  return fused;
}

Expected<int> fuse_matmul_bias(ir::Model& m) {
  ir::Graph& g = m.graph;
  QTK_RETURN_IF_ERROR(ir::topological_sort(g));
  Absorber ab(g);
  int fused = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const ir::Node& add = g.nodes[i];
    if (add.op_type != "Add" || !ir::is_default_domain(add.domain) || add.inputs.size() != 2 ||
        add.outputs.size() != 1 || add.outputs[0].empty())
      continue;
    for (int k = 0; k < 2; ++k) {
      const Tensor* bias = g.find_initializer(add.inputs[1 - k]);
      ir::Node* mm = bias != nullptr ? ab.sole_producer(add.inputs[k]) : nullptr;
      if (mm == nullptr || mm->op_type != "MatMul" || !ir::is_default_domain(mm->domain) || mm->inputs.size() != 2 ||
          mm->outputs.size() != 1)
        continue;
      const Tensor* b = g.find_initializer(mm->inputs[1]);
      if (b == nullptr || b->dtype() != DType::kFloat32 || b->rank() != 2 || bias->dtype() != DType::kFloat32 ||
          bias->rank() != 1 || bias->numel() != b->dim(1))  // [N]: the product's shape stays
        continue;
      mm->inputs.push_back(add.inputs[1 - k]);
      mm->set_attr(ir::attr_int(kFusedBiasAttr, 1));
      ab.absorb(*mm, i);
      ++fused;
      break;
    }
  }
  if (fused > 0) QTK_RETURN_IF_ERROR(ab.finish());
  return fused;
}

Status optimize_for_session(ir::Model& m) {
  QTK_RETURN_IF_ERROR(optimize_model(m));
  QTK_RETURN_IF_ERROR(fuse_conv_epilogues(m).status());
  return fuse_matmul_bias(m).status();
}

}  // namespace qtk::rt
