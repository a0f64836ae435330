#include "quant/graph/opset_upgrade.h"

#include <memory>
#include <utility>
#include <vector>

namespace qtk::quant {

namespace {

class Upgrader {
 public:
  Upgrader(ir::Graph& top, int64_t from, int64_t target, const std::function<std::string(const std::string&)>& unique)
      : top_(top), from_(from), target_(target), unique_(unique) {}

  // `g` is the graph that holds `nodes` (for its value shapes); constants go
  // to the top graph, which every body sees by name.
  Status upgrade(ir::Graph& g) {
    std::vector<ir::Node> out;
    out.reserve(g.nodes.size());
    for (auto& n : g.nodes) {
      for (auto& a : n.attrs) {
        if (a.g) {
          a.g = std::make_shared<ir::Graph>(*a.g);
          QTK_RETURN_IF_ERROR(upgrade(*a.g));
        }
        for (auto& body : a.graphs) {
          body = std::make_shared<ir::Graph>(*body);
          QTK_RETURN_IF_ERROR(upgrade(*body));
        }
      }
      if (!ir::is_default_domain(n.domain)) {
        out.push_back(std::move(n));
        continue;
      }
      QTK_RETURN_IF_ERROR(rewrite(g, std::move(n), out));
    }
    g.nodes = std::move(out);
    return Status::Ok();
  }

 private:
  // An int64 attribute list as a new constant input (at `slot`, inputs
  // before it kept, empty ones added).
  void attr_to_input(ir::Node& n, const std::string& attr, size_t slot) {
    const std::vector<int64_t> v = n.attr_ints(attr);
    const std::string name = unique_(n.name + "_" + attr);
    top_.set_initializer(name, Tensor::from_vector<int64_t>({static_cast<int64_t>(v.size())}, v));
    n.remove_attr(attr);
    n.inputs.resize(slot);
    n.inputs.push_back(name);
  }

  Status rewrite(const ir::Graph& g, ir::Node n, std::vector<ir::Node>& out) {
    const std::string& op = n.op_type;
    if (from_ < 13) {
      if (op == "Split" && n.has_attr("split")) attr_to_input(n, "split", 1);
      if ((op == "Squeeze" || op == "Unsqueeze" || op == "ReduceSum") && n.has_attr("axes"))
        attr_to_input(n, "axes", 1);
      if (op == "Resize" && n.attr_string("coordinate_transformation_mode", "") == "tf_half_pixel_for_nn")
        return unsupported(n.describe() + ": coordinate_transformation_mode tf_half_pixel_for_nn is gone at opset 13; "
                           "cannot upgrade the model from opset " + std::to_string(from_));
      if (op == "Softmax" || op == "LogSoftmax" || op == "Hardmax") return flattened_softmax(g, std::move(n), out);
    }
    if (from_ < 18 && target_ >= 18) {
      if (op.rfind("Reduce", 0) == 0 && op != "ReduceSum" && n.has_attr("axes")) attr_to_input(n, "axes", 1);
      // Split-18 needs the split input or num_outputs (ONNX Runtime refuses
      // the node without either); before 18 no split meant equal parts,
      // which num_outputs = the output count gives (equal when divisible).
      if (op == "Split" && (n.inputs.size() < 2 || n.inputs[1].empty()) && !n.has_attr("num_outputs")) {
        n.inputs.resize(1);
        n.attrs.push_back(ir::attr_int("num_outputs", static_cast<int64_t>(n.outputs.size())));
      }
    }
    if (from_ < 14 && op == "BatchNormalization" && n.outputs.size() > 1)
      return unsupported(n.describe() + ": the training-mode outputs changed at opset 14; cannot upgrade the model "
                         "from opset " + std::to_string(from_));
    if (from_ < 16 && target_ >= 16 && op == "RoiAlign" && !n.has_attr("coordinate_transformation_mode"))
      n.attrs.push_back(ir::attr_string("coordinate_transformation_mode", "output_half_pixel"));  // the old default
    if (from_ < 20 && target_ >= 20 && op == "GridSample") {
      const std::string mode = n.attr_string("mode", "bilinear");
      n.set_attr(ir::attr_string("mode", mode == "bilinear" ? "linear" : mode == "bicubic" ? "cubic" : mode));
    }
    if (from_ < 20 && target_ >= 20 && op == "DFT")
      return unsupported(n.describe() + ": its axis became an input at opset 20; cannot upgrade the model");
    if (from_ < 21 && target_ >= 21 && op == "GroupNormalization")
      return unsupported(n.describe() + " changed meaning at opset 21; cannot upgrade for per-group export");
    out.push_back(std::move(n));
    return Status::Ok();
  }

  // Before opset 13 these ops coerce the input to 2-D [d0 *..* d(axis-1),
  // d(axis) *..* d(r-1)] and normalize each row; from 13 they normalize along
  // one axis (default -1). Where `axis` is the last axis the two agree (the
  // axis is written out: the default changed); else the old meaning is
  // spelled out as Flatten(axis) -> op(axis 1) -> Reshape(Shape(x)).
  Status flattened_softmax(const ir::Graph& g, ir::Node n, std::vector<ir::Node>& out) {
    int64_t axis = n.attr_int("axis", 1);
    int64_t rank = -1;
    if (!n.inputs.empty())
      if (const ir::ValueInfo* v = g.find_value_info(n.inputs[0]); v && v->has_shape)
        rank = static_cast<int64_t>(v->shape.size());
    if (rank >= 0 && (axis < -rank || axis >= rank))
      return invalid_argument(n.describe() + ": axis " + std::to_string(axis) + " is out of range for a rank-" +
                              std::to_string(rank) + " input");
    if (rank >= 0 && axis < 0) axis += rank;
    // axis -1 is the last axis whatever the rank (the usual attention Softmax).
    if (n.inputs.empty() || n.outputs.empty() || axis == -1 || (rank >= 0 && axis == rank - 1)) {
      n.set_attr(ir::attr_int("axis", axis));
      out.push_back(std::move(n));
      return Status::Ok();
    }
    const std::string x = n.inputs[0], y = n.outputs[0], base = n.name.empty() ? n.op_type : n.name;
    const std::string flat = unique_(base + "_flat"), norm = unique_(base + "_rows"), shape = unique_(base + "_shape");
    auto make = [&](const std::string& op, std::vector<std::string> in, std::string o, std::vector<ir::Attribute> a) {
      ir::Node m;
      m.name = unique_(base + "_" + op);
      m.op_type = op;
      m.inputs = std::move(in);
      m.outputs = {std::move(o)};
      m.attrs = std::move(a);
      out.push_back(std::move(m));
    };
    make("Flatten", {x}, flat, {ir::attr_int("axis", axis)});
    n.inputs[0] = flat;
    n.outputs[0] = norm;
    n.set_attr(ir::attr_int("axis", 1));
    out.push_back(std::move(n));
    make("Shape", {x}, shape, {});
    make("Reshape", {norm, shape}, y, {});
    return Status::Ok();
  }

  ir::Graph& top_;
  int64_t from_, target_;
  const std::function<std::string(const std::string&)>& unique_;
};

}  // namespace

Status upgrade_opset(ir::Model& m, int64_t target, const std::function<std::string(const std::string&)>& unique) {
  const int64_t from = m.opset();
  if (from >= target) return Status::Ok();
  if (from < 11)
    return unsupported("this export needs opset " + std::to_string(target) + "; models below opset 11 are not upgraded (" +
                       "the model has opset " + std::to_string(from) + ")");
  Upgrader up(m.graph, from, target, unique);
  QTK_RETURN_IF_ERROR(up.upgrade(m.graph));
  for (auto& o : m.opsets)
    if (ir::is_default_domain(o.domain)) o.version = target;
  const int64_t ir_needed = target >= 21 ? 10 : 7;  // the IR versions that opset came with
  if (m.ir_version < ir_needed) m.ir_version = ir_needed;
  return Status::Ok();
}

}  // namespace qtk::quant
