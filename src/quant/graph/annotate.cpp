#include "quant/graph/annotate.h"

#include <algorithm>
#include <functional>
#include <unordered_map>

#include "quant/graph/layer_precision.h"

namespace qtk::quant {

namespace {

bool in_list(const std::vector<std::string>& list, const std::string& s) {
  return std::find(list.begin(), list.end(), s) != list.end();
}

const std::set<std::string> kDataMovement = {"MaxPool",   "Reshape", "Flatten", "Transpose",    "Squeeze",
                                             "Unsqueeze", "Resize",  "Slice",   "Gather",       "Split",
                                             "DepthToSpace", "SpaceToDepth"};
const std::set<std::string> kOwnRange = {"Add", "Mul", "Concat", "AveragePool", "GlobalAveragePool"};
const std::set<std::string> kFusableActivation = {"Relu", "Clip"};
const std::set<std::string> kWeighted = {"Conv", "ConvTranspose", "Gemm", "MatMul"};

// Whether a Resize's outputs stay inside its input's range, so that they can
// share its quantization (nearest picks inputs, linear averages them); cubic
// weights go negative and overshoot (bicubic upsampling of [0, 1] images
// spans about [-0.17, 1.2]), and tf_crop_and_resize writes its
// extrapolation value outside the image.
bool resize_keeps_range(const ir::Node& n) {
  const std::string mode = n.attr_string("mode", "nearest");
  return (mode == "nearest" || mode == "linear") &&
         n.attr_string("coordinate_transformation_mode", "half_pixel") != "tf_crop_and_resize";
}

class Annotator {
 public:
  Annotator(const ir::Graph& g, const QuantConfig& c) : g_(g), c_(c), precision_(resolve_layer_precision(g, c)) {
    for (size_t i = 0; i < g.nodes.size(); ++i)
      for (const auto& in : g.nodes[i].inputs)
        if (!in.empty()) consumers_[in].push_back(i);
    if (c.float_first_last)
      for (const auto& name : first_last_weighted(g)) kept_float_.insert(name);
  }

  QuantPlan run() {
    std::set<std::string> matched_excludes;
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      const ir::Node& n = g_.nodes[i];
      if (!ir::is_default_domain(n.domain)) {
        plan_.float_nodes.push_back(n.name + " (" + n.op_type + "): custom domain '" + n.domain + "'");
        continue;
      }
      if (in_list(c_.exclude, n.name) || in_list(c_.exclude, n.op_type)) {
        matched_excludes.insert(in_list(c_.exclude, n.name) ? n.name : n.op_type);
        plan_.float_nodes.push_back(n.name + " (" + n.op_type + "): excluded");
        continue;
      }
      if (kept_float_.count(n.name)) {
        plan_.float_nodes.push_back(n.name + " (" + n.op_type + "): first/last weighted layer kept float");
        continue;
      }
      if (auto lp = precision_.layers.find(n.name); lp != precision_.layers.end() && lp->second.keep_float) {
        plan_.float_nodes.push_back(n.name + " (" + n.op_type + "): kept float (layer_precision)");
        continue;
      }
      annotate_node(i, n);
    }
    for (const auto& e : c_.exclude)
      if (!matched_excludes.count(e)) plan_.warnings.push_back("--exclude '" + e + "' matches no node name or op type");
    plan_.warnings.insert(plan_.warnings.end(), precision_.warnings.begin(), precision_.warnings.end());
    plan_.notes.insert(plan_.notes.begin(), precision_.notes.begin(), precision_.notes.end());
    if (static_mode()) assign_activation_formats();
    return std::move(plan_);
  }

 private:
  bool is_weight(const std::string& name) const { return !name.empty() && g_.find_initializer(name) != nullptr; }
  bool static_mode() const { return c_.activations == ActivationMode::kStatic; }

  void activation(const std::string& name) {
    if (!name.empty() && !is_weight(name)) plan_.activations.insert(name);
  }

  // The output of a compute op: quantize it, unless its only reader is a
  // Relu/Clip, whose output range then stands for both (the activation is
  // fused into the producer's requantization).
  void output(const ir::Node& n) {
    if (!static_mode() || n.outputs.empty()) return;
    const std::string& out = n.outputs[0];
    auto it = consumers_.find(out);
    if (it != consumers_.end() && it->second.size() == 1 && !g_.is_graph_output(out)) {
      const ir::Node& next = g_.nodes[it->second[0]];
      if (kFusableActivation.count(next.op_type) && !in_list(c_.exclude, next.name) &&
          !in_list(c_.exclude, next.op_type)) {
        fused_.insert(next.name);
        activation(next.outputs[0]);
        return;
      }
    }
    activation(out);
  }

  void weight(size_t i, int slot, int channel_axis, int reduction_axis) {
    QFormat f = c_.weight_format;
    if (auto lp = precision_.layers.find(g_.nodes[i].name); lp != precision_.layers.end() && lp->second.weights)
      f = *lp->second.weights;
    plan_.weights.push_back({i, slot, channel_axis, reduction_axis, f});
  }

  // Each quantized tensor takes the widest format its readers ask for (their
  // layer_precision activations, else the config's); a data-movement chain
  // (same_range) shares its widest one, so a layer kept at 8 bits behind a
  // Flatten or MaxPool really reads 8-bit values. With low_bit_gemm_inputs_only
  // only the inputs of weighted layers (and readers with a layer_precision
  // entry) ask for a below-8-bit format: a tensor they read takes the widest
  // of those; any other tensor (residual Adds, Softmax, attention MatMuls)
  // takes the 8-bit version.
  // Whether codes of format f are written as ONNX's INT4/UINT4 (not in an
  // 8-bit container).
  bool onnx_4bit(QFormat f) const {
    const DType t = traits(f).onnx_type;
    return c_.int4_types && (t == DType::kInt4 || t == DType::kUInt4);
  }

  void assign_activation_formats() {
    const bool gemm_only = low_bit_gemm_inputs_only(c_);
    if (precision_.layers.empty() && !gemm_only) return;  // every tensor in the config's format
    auto root = [&](std::string t) {
      for (int guard = 0; guard < 1000; ++guard) {
        auto it = plan_.same_range.find(t);
        if (it == plan_.same_range.end()) break;
        t = it->second;
      }
      return t;
    };
    const QFormat eight = widened_to_8bit(c_.activation_format);
    // What each tensor's own readers ask for; a data-movement reader speaks
    // through its output, which is in the same group. `binding`: weighted
    // layers' inputs and layer_precision entries; `other`: the rest.
    struct Asks {
      std::optional<QFormat> binding, other;
    };
    auto ask = [](std::optional<QFormat>& f, QFormat x) { f = f ? wider(*f, x) : x; };
    std::map<std::string, Asks> by_root;
    for (const auto& t : plan_.activations) {
      Asks a;
      if (auto it = consumers_.find(t); it != consumers_.end())
        for (size_t r : it->second) {
          const ir::Node& reader = g_.nodes[r];
          const bool moves = std::any_of(reader.outputs.begin(), reader.outputs.end(), [&](const std::string& o) {
            auto sr = plan_.same_range.find(o);
            return sr != plan_.same_range.end() && sr->second == t;
          });
          if (moves) continue;
          auto lp = precision_.layers.find(reader.name);
          if (lp != precision_.layers.end() && lp->second.activations) ask(a.binding, *lp->second.activations);
          // A layer whose weights layer_precision stores in an 8-bit tensor
          // (int8, int7, or int3/int2 clamped) reads 8-bit inputs where the
          // activations would be ONNX 4-bit types: ONNX Runtime's QDQ fusion
          // turns that pair into a QLinearConv it then refuses as invalid
          // (mixed precision under 4-bit activations).
          else if (lp != precision_.layers.end() && lp->second.weights && !onnx_4bit(*lp->second.weights) &&
                   onnx_4bit(c_.activation_format) && is_weighted_input(reader, t))
            ask(a.binding, eight);
          else if (!gemm_only) ask(a.other, c_.activation_format);
          else if (is_weighted_input(reader, t)) ask(a.binding, c_.activation_format);
          else ask(a.other, eight);
        }
      if (gemm_only && !a.binding) ask(a.other, eight);
      Asks& group = by_root[root(t)];
      if (a.binding) ask(group.binding, *a.binding);
      if (a.other) ask(group.other, *a.other);
    }
    int kept = 0;
    for (const auto& t : plan_.activations) {
      auto it = by_root.find(root(t));
      if (it == by_root.end()) continue;
      const Asks& a = it->second;
      std::optional<QFormat> f;
      if (!gemm_only) {
        if (a.binding) ask(f, *a.binding);
        if (a.other) ask(f, *a.other);
      } else {
        f = a.binding ? a.binding : a.other;
        // graph outputs stay float (qdq_writer): not counted
        if (f && !a.binding && traits(*f).bits > traits(c_.activation_format).bits && !g_.is_graph_output(t)) ++kept;
      }
      if (f) plan_.activation_formats[t] = *f;
    }
    if (kept > 0)
      plan_.notes.push_back(std::to_string(kept) + " activation tensors read by no Conv/Gemm/MatMul weight "
                            "(residual adds, softmax, attention) kept at " + traits(eight).name + "; " +
                            traits(c_.activation_format).name + " applies to weighted layers' inputs");
  }

  // Whether `t` is the activation input of a weighted layer (the integer GEMM input).
  bool is_weighted_input(const ir::Node& n, const std::string& t) const {
    return kWeighted.count(n.op_type) && !n.inputs.empty() && n.inputs[0] == t && n.inputs.size() > 1 &&
           is_weight(n.inputs[1]);
  }

  void annotate_node(size_t i, const ir::Node& n) {
    const std::string& op = n.op_type;
    // A node without its first input or output (a malformed graph) is left
    // as it is: the session that calibrates it reports it.
    if (n.inputs.empty() || n.inputs[0].empty() || n.outputs.empty() || n.outputs[0].empty()) {
      plan_.float_nodes.push_back(n.name + " (" + op + "): no first input or output");
      return;
    }
    const bool weights_only = c_.activations == ActivationMode::kWeightOnly;
    if (op == "Conv" || op == "ConvTranspose" || op == "Gemm" || op == "MatMul") {
      const std::string& w = n.inputs.size() > 1 ? n.inputs[1] : std::string();
      if (!is_weight(w)) {
        if (op == "MatMul" && static_mode() && !w.empty()) {  // activation x activation (attention)
          activation(n.inputs[0]);
          activation(w);
          output(n);
        } else {
          plan_.float_nodes.push_back(n.name + " (" + op + "): weight is not a constant");
        }
        return;
      }
      const int rank = g_.find_initializer(w)->rank();
      if (op == "Conv") weight(i, 1, 0, 1);
      else if (op == "ConvTranspose") weight(i, 1, 1, 0);
      else if (op == "Gemm") {
        if (n.attr_int("transA", 0) != 0 && !weights_only) {
          plan_.float_nodes.push_back(n.name + " (Gemm): transA=1 is left float");
          return;
        }
        const bool tb = n.attr_int("transB", 0) != 0;
        weight(i, 1, tb ? 0 : 1, tb ? 1 : 0);
      } else {
        if (rank < 2) {
          plan_.float_nodes.push_back(n.name + " (MatMul): 1-D weight");
          return;
        }
        weight(i, 1, rank - 1, rank - 2);
        if (rank > 2 && c_.granularity == Granularity::kPerChannel && !weights_only) {  // DQ -> float MatMul takes it
          plan_.weights.back().per_tensor = true;
          plan_.notes.push_back(n.name + " (MatMul): weight of rank " + std::to_string(rank) +
                                " quantized per tensor (ONNX Runtime takes per-column parameters for 2-D weights only)");
        }
      }
      if (weights_only) return;
      activation(n.inputs[0]);
      // The bias slot (present or not: bias correction may add one) becomes
      // int32 when it holds a constant per output channel.
      const bool conv_bias = (op == "Conv" || op == "ConvTranspose") && (!n.has_input(2) || is_weight(n.inputs[2]));
      const bool gemm_bias = op == "Gemm" && n.attr_float("alpha", 1.f) == 1.f && n.attr_float("beta", 1.f) == 1.f &&
                             (!n.has_input(2) || (is_weight(n.inputs[2]) && g_.find_initializer(n.inputs[2])->rank() == 1));
      if (static_mode() && (conv_bias || gemm_bias)) plan_.biases.push_back({i, 2, n.inputs[0], w});
      output(n);
      return;
    }
    if (!static_mode()) {
      if (!kFusableActivation.count(op)) plan_.float_nodes.push_back(n.name + " (" + op + "): float in this mode");
      return;
    }
    if (kOwnRange.count(op)) {
      for (const auto& in : n.inputs) activation(in);
      output(n);
      return;
    }
    if (op == "Resize" && !resize_keeps_range(n)) {  // cubic overshoots; extrapolation adds a value
      activation(n.inputs[0]);
      output(n);
      return;
    }
    if (kDataMovement.count(op)) {
      activation(n.inputs[0]);
      for (const auto& o : n.outputs)
        if (!o.empty()) {
          plan_.activations.insert(o);
          plan_.same_range[o] = n.inputs[0];
        }
      return;
    }
    if (kFusableActivation.count(op)) {
      if (!fused_.count(n.name)) activation(n.outputs[0]);
      return;
    }
    plan_.float_nodes.push_back(n.name + " (" + op + "): no integer kernel, runs in float");
  }

  const ir::Graph& g_;
  const QuantConfig& c_;
  std::unordered_map<std::string, std::vector<size_t>> consumers_;
  std::set<std::string> kept_float_;  // first/last weighted layers (QuantConfig::float_first_last)
  std::set<std::string> fused_;
  ResolvedPrecision precision_;  // layer_precision plus first/last 8-bit
  QuantPlan plan_;
};

}  // namespace

QuantPlan annotate(const ir::Graph& g, const QuantConfig& config) { return Annotator(g, config).run(); }

QFormat activation_format_of(const QuantPlan& plan, const QuantConfig& config, const std::string& tensor) {
  auto it = plan.activation_formats.find(tensor);
  return it == plan.activation_formats.end() ? config.activation_format : it->second;
}

}  // namespace qtk::quant
