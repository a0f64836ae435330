#include "compress/channel_pruning.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <set>

#include "compress/weight_masks.h"
#include "ir/passes.h"

namespace qtk::compress {
namespace {

// Ops that treat every channel on its own: removing an input channel just
// removes the matching output channel.
bool is_channelwise(const ir::Node& n) {
  static const std::set<std::string> ops = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid",
                                            "HardSwish", "Elu", "Selu", "Softplus", "Abs", "Neg", "Erf",
                                            "BatchNormalization", "MaxPool", "AveragePool", "Identity",
                                            "Dropout"};
  return ir::is_default_domain(n.domain) && ops.count(n.op_type) > 0;
}

bool is_plain_conv(const ir::Node& n) {
  return ir::is_default_domain(n.domain) && n.op_type == "Conv" && n.attr_int("group", 1) == 1;
}

struct FlattenedGemm {
  size_t node;      // the Gemm reading Flatten's output
  int64_t spatial;  // elements per channel in the flattened rows
};

struct Plan {
  std::vector<size_t> norms;      // BatchNormalization nodes to slice
  std::vector<size_t> consumers;  // Conv nodes whose input channels go
  std::vector<FlattenedGemm> gemms;  // Gemm nodes whose input columns go (after Flatten)
  std::vector<std::string> values;  // values whose channel count changes
};

class Planner {
 public:
  explicit Planner(const ir::Graph& g) : g_(g), reads_(ir::count_reads(g)) {
    for (size_t i = 0; i < g.nodes.size(); ++i)
      for (size_t k = 0; k < g.nodes[i].inputs.size(); ++k)
        if (!g.nodes[i].inputs[k].empty()) readers_[g.nodes[i].inputs[k]].push_back({i, k});
  }

  bool sole_initializer(const ir::Node& n, size_t k) const {
    if (!n.has_input(k)) return false;
    const Tensor* t = g_.find_initializer(n.inputs[k]);
    auto r = reads_.find(n.inputs[k]);
    return t && t->dtype() == DType::kFloat32 && r != reads_.end() && r->second == 1 && !g_.is_graph_output(n.inputs[k]);
  }

  // Empty string when the conv's output channels can go; else why not.
  std::string plan(size_t p, int64_t channels, Plan& out) const {
    const ir::Node& conv = g_.nodes[p];
    if (!sole_initializer(conv, 1)) return "weight is not an initializer of its own";
    if (conv.has_input(2) && !sole_initializer(conv, 2)) return "bias is not an initializer of its own";
    std::vector<std::string> frontier{conv.outputs[0]};
    std::set<std::string> seen;
    while (!frontier.empty()) {
      const std::string v = frontier.back();
      frontier.pop_back();
      if (!seen.insert(v).second) continue;
      out.values.push_back(v);
      if (g_.is_graph_output(v)) return "its channels reach graph output '" + v + "'";
      auto it = readers_.find(v);
      const size_t direct = it == readers_.end() ? 0 : it->second.size();
      auto rc = reads_.find(v);
      if (rc != reads_.end() && static_cast<size_t>(rc->second) != direct) return "'" + v + "' is read by a subgraph";
      if (direct == 0) continue;
      for (const auto& [r, k] : it->second) {
        const ir::Node& n = g_.nodes[r];
        if (k == 0 && is_plain_conv(n) && sole_initializer(n, 1)) {
          const Tensor* w = g_.find_initializer(n.inputs[1]);
          if (w->rank() < 3 || w->dim(1) != channels) return n.describe() + " does not take its channels as input";
          out.consumers.push_back(r);
          continue;
        }
        if (k == 0 && ir::is_default_domain(n.domain) && n.op_type == "Flatten") {
          if (n.attr_int("axis", 1) != 1) return "its channels reach " + n.describe() + " with axis other than 1";
          out.values.push_back(n.outputs[0]);
          if (std::string why = plan_flatten(n, channels, out); !why.empty()) return why;
          continue;
        }
        if (k != 0 || !is_channelwise(n)) return "its channels reach " + n.describe();
        if (n.op_type == "BatchNormalization") {
          for (size_t j = 1; j <= 4; ++j) {
            if (!sole_initializer(n, j) || g_.find_initializer(n.inputs[j])->numel() != channels)
              return n.describe() + " has parameters that are not per-channel initializers of its own";
          }
          out.norms.push_back(r);
        } else if (n.op_type == "Clip") {
          for (size_t j = 1; j < n.inputs.size(); ++j) {
            if (n.inputs[j].empty()) continue;
            const Tensor* b = g_.find_initializer(n.inputs[j]);
            if (!b || b->numel() != 1) return n.describe() + " has bounds that are not constant scalars";
          }
        } else if (n.inputs.size() > 1 && n.op_type != "Dropout") {
          return n.describe() + " has more than one input";
        }
        for (size_t j = 1; j < n.outputs.size(); ++j)
          if (!n.outputs[j].empty()) return n.describe() + " has a second output";
        frontier.push_back(n.outputs[0]);
      }
    }
    return "";
  }

 private:
  // Flatten (axis 1) turns [N, C, d...] into rows of C blocks of prod(d)
  // elements; every reader must be a Gemm taking them as A (not transposed)
  // with a weight of its own, whose C * prod(d) inputs reveal prod(d).
  std::string plan_flatten(const ir::Node& flatten, int64_t channels, Plan& out) const {
    const std::string& v = flatten.outputs[0];
    if (g_.is_graph_output(v)) return "its channels reach graph output '" + v + "'";
    auto it = readers_.find(v);
    auto rc = reads_.find(v);
    const size_t direct = it == readers_.end() ? 0 : it->second.size();
    if (rc != reads_.end() && static_cast<size_t>(rc->second) != direct) return "'" + v + "' is read by a subgraph";
    if (direct == 0) return "";
    for (const auto& [r, k] : it->second) {
      const ir::Node& n = g_.nodes[r];
      if (k != 0 || !ir::is_default_domain(n.domain) || n.op_type != "Gemm" || n.attr_int("transA", 0) != 0)
        return "its channels reach " + n.describe() + " after " + flatten.describe();
      if (!sole_initializer(n, 1)) return n.describe() + " after " + flatten.describe() + " has a shared weight";
      const Tensor* w = g_.find_initializer(n.inputs[1]);
      const int64_t inputs = w->rank() == 2 ? w->dim(n.attr_int("transB", 0) != 0 ? 1 : 0) : 0;
      if (inputs <= 0 || inputs % channels != 0)
        return n.describe() + " takes " + std::to_string(inputs) + " inputs, not a multiple of the " +
               std::to_string(channels) + " channels";
      out.gemms.push_back({r, inputs / channels});
    }
    return "";
  }

  const ir::Graph& g_;
  std::unordered_map<std::string, int> reads_;
  std::map<std::string, std::vector<std::pair<size_t, size_t>>> readers_;
};

// Replaces an initializer and fixes a shape declared for it (models with
// initializers listed among the graph inputs).
void set_weight(ir::Graph& g, const std::string& name, Tensor t) {
  for (auto* infos : {&g.inputs, &g.value_infos})
    for (auto& vi : *infos)
      if (vi.name == name && vi.has_shape) {
        vi.shape.clear();
        for (int64_t d : t.shape()) vi.shape.push_back(ir::Dim{d, ""});
      }
  g.set_initializer(name, std::move(t));
}

}  // namespace

Tensor take_channels(const Tensor& t, int axis, const std::vector<int64_t>& keep) {
  Shape shape = t.shape();
  const int64_t outer = std::accumulate(shape.begin(), shape.begin() + axis, int64_t{1}, std::multiplies<>());
  const int64_t inner = std::accumulate(shape.begin() + axis + 1, shape.end(), int64_t{1}, std::multiplies<>());
  const int64_t c = shape[static_cast<size_t>(axis)];
  shape[static_cast<size_t>(axis)] = static_cast<int64_t>(keep.size());
  Tensor out(t.dtype(), shape);
  const size_t es = dtype_size(t.dtype());
  const auto* src = static_cast<const std::byte*>(t.raw());
  auto* dst = static_cast<std::byte*>(out.raw());
  for (int64_t o = 0; o < outer; ++o)
    for (size_t j = 0; j < keep.size(); ++j)
      std::memcpy(dst + ((o * static_cast<int64_t>(keep.size()) + static_cast<int64_t>(j)) * inner) * es,
                  src + ((o * c + keep[j]) * inner) * es, static_cast<size_t>(inner) * es);
  return out;
}

Expected<ChannelPruneReport> prune_channels(ir::Model& m, double fraction) {
  QTK_RETURN_IF_ERROR(check_sparsity(fraction, "channel fraction"));
  ir::Graph& g = m.graph;
  QTK_RETURN_IF_ERROR(ir::topological_sort(g));
  ChannelPruneReport report;
  std::set<std::string> changed_values;
  for (size_t p = 0; p < g.nodes.size(); ++p) {
    const ir::Node& conv = g.nodes[p];
    if (!ir::is_default_domain(conv.domain) || conv.op_type != "Conv") continue;
    if (!is_plain_conv(conv)) {
      report.kept.push_back(conv.describe() + ": grouped convolution");
      continue;
    }
    const Tensor* w = conv.has_input(1) ? g.find_initializer(conv.inputs[1]) : nullptr;
    if (!w || w->rank() < 3 || w->dtype() != DType::kFloat32) {
      report.kept.push_back(conv.describe() + ": weight is not a float initializer");
      continue;
    }
    const int64_t channels = w->dim(0);
    Plan plan;
    // Planned on the current graph: earlier rewrites already shrank shapes.
    const std::string why = Planner(g).plan(p, channels, plan);
    if (!why.empty()) {
      report.kept.push_back(conv.describe() + ": " + why);
      continue;
    }
    const int64_t remove =
        std::min<int64_t>(channels - 1, std::llround(fraction * static_cast<double>(channels)));
    if (remove <= 0) continue;
    // L1 importance of each output channel; the smallest go (ties by index).
    const int64_t per = w->numel() / channels;
    std::vector<double> l1(static_cast<size_t>(channels), 0.0);
    for (int64_t o = 0; o < channels; ++o)
      for (int64_t i = 0; i < per; ++i) l1[static_cast<size_t>(o)] += std::fabs(w->data<float>()[o * per + i]);
    std::vector<int64_t> order(static_cast<size_t>(channels));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return l1[a] < l1[b]; });
    std::vector<int64_t> keep(order.begin() + remove, order.end());
    std::sort(keep.begin(), keep.end());

    PrunedConv rec{conv.describe(), channels, static_cast<int64_t>(keep.size()), keep, {}};
    set_weight(g, conv.inputs[1], take_channels(*w, 0, keep));
    if (conv.has_input(2)) set_weight(g, conv.inputs[2], take_channels(*g.find_initializer(conv.inputs[2]), 0, keep));
    for (size_t bn : plan.norms)
      for (size_t j = 1; j <= 4; ++j)
        set_weight(g, g.nodes[bn].inputs[j], take_channels(*g.find_initializer(g.nodes[bn].inputs[j]), 0, keep));
    for (size_t c : plan.consumers) {
      const std::string& wn = g.nodes[c].inputs[1];
      set_weight(g, wn, take_channels(*g.find_initializer(wn), 1, keep));
      rec.consumers.push_back(g.nodes[c].describe());
    }
    for (const FlattenedGemm& fg : plan.gemms) {
      // Input column c * spatial + s belongs to channel c.
      std::vector<int64_t> columns;
      for (int64_t c : keep)
        for (int64_t s = 0; s < fg.spatial; ++s) columns.push_back(c * fg.spatial + s);
      const ir::Node& gemm = g.nodes[fg.node];
      const int axis = gemm.attr_int("transB", 0) != 0 ? 1 : 0;
      set_weight(g, gemm.inputs[1], take_channels(*g.find_initializer(gemm.inputs[1]), axis, columns));
      rec.consumers.push_back(gemm.describe());
    }
    changed_values.insert(plan.values.begin(), plan.values.end());
    report.pruned.push_back(std::move(rec));
  }
  // Declared shapes of the shrunk values are stale: drop them (loaders and
  // shape inference recompute them).
  std::erase_if(g.value_infos, [&](const ir::ValueInfo& vi) { return changed_values.count(vi.name) > 0; });
  return report;
}

}  // namespace qtk::compress
