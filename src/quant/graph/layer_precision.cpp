#include "quant/graph/layer_precision.h"

#include <algorithm>

namespace qtk::quant {

namespace {

bool weighted_node(const ir::Graph& g, const ir::Node& n) {
  static const std::set<std::string> kWeighted = {"Conv", "ConvTranspose", "Gemm", "MatMul"};
  return ir::is_default_domain(n.domain) && kWeighted.count(n.op_type) && n.inputs.size() > 1 &&
         !n.inputs[1].empty() && g.find_initializer(n.inputs[1]) != nullptr;
}

}  // namespace

std::vector<std::string> first_last_weighted(const ir::Graph& g) {
  // after[t]: t is computed from a weighted layer's output; before[t]: t
  // reaches a weighted layer's input. Nodes are in topological order.
  std::set<std::string> after, before;
  std::vector<char> first(g.nodes.size(), 0), last(g.nodes.size(), 0);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const ir::Node& n = g.nodes[i];
    const bool fed = std::any_of(n.inputs.begin(), n.inputs.end(), [&](const std::string& t) { return after.count(t); });
    const bool weighted = weighted_node(g, n);
    first[i] = weighted && !fed;
    if (weighted || fed) after.insert(n.outputs.begin(), n.outputs.end());
  }
  for (size_t i = g.nodes.size(); i-- > 0;) {
    const ir::Node& n = g.nodes[i];
    const bool feeds =
        std::any_of(n.outputs.begin(), n.outputs.end(), [&](const std::string& t) { return before.count(t); });
    const bool weighted = weighted_node(g, n);
    last[i] = weighted && !feeds;
    if (weighted || feeds) before.insert(n.inputs.begin(), n.inputs.end());
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (first[i] || last[i]) out.push_back(g.nodes[i].name);
  return out;
}

bool first_last_8bit_on(const QuantConfig& c) {
  if (c.first_last_8bit.has_value()) return *c.first_last_8bit;
  return c.activations == ActivationMode::kStatic && traits(c.activation_format).bits < 8;
}

bool low_bit_gemm_inputs_only(const QuantConfig& c) {
  return c.activations == ActivationMode::kStatic && traits(c.activation_format).bits < 8 &&
         c.first_last_8bit.value_or(true);
}

QFormat widened_to_8bit(QFormat f) {
  const auto& t = traits(f);
  if (t.bits >= 8) return f;
  return t.is_signed ? QFormat::kInt8 : QFormat::kUInt8;
}

QFormat wider(QFormat a, QFormat b) { return traits(b).bits > traits(a).bits ? b : a; }

ResolvedPrecision resolve_layer_precision(const ir::Graph& g, const QuantConfig& c) {
  ResolvedPrecision r;
  r.layers = c.layer_precision;
  std::map<std::string, const ir::Node*> by_name;
  for (const auto& n : g.nodes) by_name.emplace(n.name, &n);
  std::vector<std::string> unknown;
  for (const auto& [name, lp] : c.layer_precision) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      unknown.push_back(name);
    } else if (lp.weights && !weighted_node(g, *it->second)) {
      r.warnings.push_back("layer_precision '" + name + "' (" + it->second->op_type +
                           ") has no constant weight: its weight format is not used");
    }
  }
  if (!unknown.empty()) {
    std::string list;
    for (const auto& u : unknown) list += (list.empty() ? "'" : ", '") + u + "'";
    r.warnings.push_back("layer_precision names no node " + list + " (after graph optimization)");
  }
  if (!first_last_8bit_on(c) || c.float_first_last) return r;
  // The first layer sees raw inputs and the last one writes the logits: both
  // are small and the most sensitive to narrow grids (W4A4 rows of
  // bench/quant_accuracy.sh), so they keep 8 bits.
  LayerPrecision eight;
  if (!c.fp16_weights && traits(c.weight_format).bits < 8) eight.weights = QFormat::kInt8;
  if (c.activations == ActivationMode::kStatic && traits(c.activation_format).bits < 8)
    eight.activations = widened_to_8bit(c.activation_format);
  if (!eight.weights && !eight.activations) return r;
  std::string changed, kept;
  for (const auto& name : first_last_weighted(g)) {
    if (r.layers.count(name)) {
      kept += (kept.empty() ? "" : ", ") + name;
      continue;
    }
    r.layers[name] = eight;
    changed += (changed.empty() ? "" : ", ") + name;
  }
  std::string what;
  if (eight.weights) what += "int8 weights";
  if (eight.activations) what += std::string(what.empty() ? "" : " and ") + traits(*eight.activations).name + " inputs";
  const std::string why = c.first_last_8bit.has_value() ? "first_last_8bit" : "automatic below 8-bit activations";
  if (!changed.empty())
    r.notes.push_back("first and last weighted layers kept at 8 bits (" + why + "): " + changed + " use " + what);
  if (!kept.empty()) r.notes.push_back("first/last layer " + kept + ": its layer_precision entry wins over 8 bits");
  return r;
}

Status check_layer_precision(const QuantConfig& c) {
  for (const auto& [name, lp] : c.layer_precision) {
    const std::string who = "layer_precision '" + name + "': ";
    if (name.empty()) return invalid_argument("layer_precision has an entry with an empty node name");
    if (lp.keep_float && (lp.weights || lp.activations))
      return invalid_argument(who + "keep_float leaves the node float; it cannot also give formats");
    if (lp.weights) {
      const auto& w = traits(*lp.weights);
      if (c.fp16_weights) return invalid_argument(who + "integer weights (" + w.name + ") but weights are fp16");
      if (w.bits > 8) return invalid_argument(who + "weights in " + w.name + " are not supported (8 bits at most)");
      if (c.mapping == Mapping::kLog2 && !w.is_signed)
        return invalid_argument(who + "log2 mapping needs signed weights, not " + w.name);
    }
    if (lp.activations) {
      const auto& a = traits(*lp.activations);
      if (c.activations == ActivationMode::kWeightOnly)
        return invalid_argument(who + "activations in " + a.name + " but activations are float (weight-only)");
      if (c.activations == ActivationMode::kDynamic && *lp.activations != QFormat::kUInt8)
        return invalid_argument(who + "dynamic activations are uint8, not " + a.name);
      if (weight_only_format(*lp.activations))
        return invalid_argument(who + "activations in " + a.name + ": a weight format, not one for activations");
    }
  }
  return Status::Ok();
}

}  // namespace qtk::quant
