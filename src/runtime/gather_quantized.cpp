#include "runtime/gather_quantized.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ir/passes.h"

namespace qtk::rt {

namespace {

bool is_op(const ir::Node& n, const char* op) { return n.op_type == op && ir::is_default_domain(n.domain); }

// Code types the DequantizeLinear kernel reads (4-bit ones are held one per byte).
bool dequantizable(DType t) {
  switch (t) {
    case DType::kUInt8: case DType::kInt8: case DType::kUInt4: case DType::kInt4:
    case DType::kUInt16: case DType::kInt16: case DType::kInt32: return true;
    default: return false;
  }
}

std::optional<int> axis_in(int64_t axis, int rank) {
  if (axis < -rank || axis >= rank) return std::nullopt;
  return static_cast<int>(axis < 0 ? axis + rank : axis);
}

// The value of a one-element initializer `name` (empty: absent), as int64
// for zero points and as float bits for scales; nullopt if not constant.
std::optional<std::pair<DType, int64_t>> one_value(const ir::Graph& g, const std::string& name) {
  if (name.empty()) return std::pair{DType::kUndefined, int64_t{0}};
  const Tensor* t = g.find_initializer(name);
  if (!t || t->numel() != 1) return std::nullopt;
  if (t->dtype() != DType::kFloat32) return std::pair{t->dtype(), t->get_as_int64(0)};
  uint32_t bits;
  std::memcpy(&bits, t->data<float>(), 4);
  return std::pair{t->dtype(), int64_t{bits}};
}

// Whether q, reading DQ(codes, scale, zp) of 8-bit codes, gives back the
// codes: same per-tensor parameters and dtype, and a scale for which
// (c - zp) * s / s rounds to c - zp for every |c - zp| <= 255 (no
// subnormal or overflowing products: a relative error of 2^-23 is far
// below the half code rounding allows).
bool returns_codes(const ir::Graph& g, const ir::Node& q, DType codes, const std::string& scale, const std::string& zp) {
  if (!is_op(q, "QuantizeLinear") || q.outputs.size() != 1 || q.inputs.size() > 3 || !q.has_input(1) ||
      q.attr_int("block_size", 0) != 0 || q.attr_int("output_dtype", 0) != 0 || !is_8bit(codes))
    return false;
  const auto qs = one_value(g, q.inputs[1]), qz = one_value(g, q.has_input(2) ? q.inputs[2] : "");
  const auto ds = one_value(g, scale), dz = one_value(g, zp);
  if (!qs || !qz || !ds || !dz || *qs != *ds || qs->first != DType::kFloat32 || qz->second != dz->second) return false;
  if ((qz->first == DType::kUndefined ? DType::kUInt8 : qz->first) != codes) return false;  // Q's output type
  if (dz->first != DType::kUndefined && dz->first != codes) return false;
  const float s = std::fabs(g.find_initializer(scale)->data<float>()[0]);
  return s >= std::numeric_limits<float>::min() && s <= std::numeric_limits<float>::max() / 256;
}

// The nodes that replace one Gather: the Gather on the codes (its own name
// and attributes, first, so a bad index fails there as before), the Gathers
// of a per-row scale and zero point, and the DequantizeLinear writing the
// Gather's old output.
struct Rewrite {
  std::vector<ir::Node> nodes;
  std::string dq_output;  // the DQ the Gather read, dropped if nobody reads it now
  std::optional<size_t> cancelled_q;  // a Q the codes go straight through
};

}  // namespace

Expected<int> gather_before_dequantize(ir::Model& m) {
  ir::Graph& g = m.graph;
  std::unordered_map<std::string_view, size_t> producer;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (const auto& o : g.nodes[i].outputs)
      if (!o.empty()) producer[o] = i;
  const auto reads = ir::count_reads(g);
  std::unordered_map<std::string_view, size_t> reader;  // of values read by one node input
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (const auto& in : g.nodes[i].inputs)
      if (!in.empty()) reader[in] = i;
  ir::NameTable names(g);
  std::unordered_map<size_t, Rewrite> rewrites;  // by the Gather's index
  std::vector<std::pair<std::string, Tensor>> new_initializers;

  for (size_t gi = 0; gi < g.nodes.size(); ++gi) {
    const ir::Node& gather = g.nodes[gi];
    if (!is_op(gather, "Gather") || gather.inputs.size() != 2 || !gather.has_input(0) || !gather.has_input(1) ||
        gather.outputs.size() != 1 || gather.outputs[0].empty())
      continue;
    auto p = producer.find(gather.inputs[0]);
    if (p == producer.end()) continue;
    const ir::Node& dq = g.nodes[p->second];
    if (!is_op(dq, "DequantizeLinear") || dq.outputs.size() != 1 || dq.inputs.size() > 3 || !dq.has_input(0) ||
        !dq.has_input(1) || dq.attr_int("block_size", 0) != 0)
      continue;
    const Tensor* codes = g.find_initializer(dq.inputs[0]);
    const Tensor* scale = g.find_initializer(dq.inputs[1]);
    const Tensor* zp = dq.has_input(2) ? g.find_initializer(dq.inputs[2]) : nullptr;
    // Anything the kernel would reject stays, to fail as it did.
    if (!codes || !dequantizable(codes->dtype()) || codes->rank() == 0 || !scale ||
        scale->dtype() != DType::kFloat32 || scale->numel() == 0 || (dq.has_input(2) && !zp) ||
        (zp && zp->numel() != scale->numel()))
      continue;
    const int r = codes->rank();
    const auto ga = axis_in(gather.attr_int("axis", 0), r);
    if (!ga) continue;

    ir::Node codes_gather = gather;
    codes_gather.inputs[0] = dq.inputs[0];
    codes_gather.outputs[0] = names.fresh(gather.outputs[0] + "_codes");
    ir::Node out_dq;
    out_dq.name = names.fresh((gather.name.empty() ? gather.outputs[0] : gather.name) + "_dequantize");
    out_dq.op_type = "DequantizeLinear";
    out_dq.domain = dq.domain;
    out_dq.inputs = {codes_gather.outputs[0], dq.inputs[1]};
    if (zp) out_dq.inputs.push_back(dq.inputs[2]);
    out_dq.outputs = {gather.outputs[0]};
    Rewrite rw;
    rw.dq_output = dq.outputs[0];

    if (scale->numel() == 1) {  // per tensor: the kernel ignores the axis
      // Gather → Q with the same parameters (ONNX Runtime's quantizer writes
      // that): the Q gives back the codes, so the Gather writes its output.
      auto rd = reader.find(gather.outputs[0]);
      auto nr = reads.find(gather.outputs[0]);
      if (rd != reader.end() && nr != reads.end() && nr->second == 1 &&
          returns_codes(g, g.nodes[rd->second], codes->dtype(), dq.inputs[1], zp ? dq.inputs[2] : "")) {
        codes_gather.outputs[0] = g.nodes[rd->second].outputs[0];
        rw.nodes.push_back(std::move(codes_gather));
        rw.cancelled_q = rd->second;
        rewrites.emplace(gi, std::move(rw));
        continue;
      }
    } else {
      const auto da = axis_in(dq.attr_int("axis", 1), r);
      if (!da || scale->numel() != codes->dim(*da)) continue;
      if (*da != *ga) {
        out_dq.set_attr(ir::attr_int("axis", *da < *ga ? *da : *da - r));
      } else if (r == 2 && codes->dim(1 - *da) > 0) {
        // Row (or column) parameters, gathered with the rows: [N, 1] (or
        // [1, D]) gathered gives idx.shape + [1] (or [1] + idx.shape), one
        // block per gathered row along the output's other axis.
        const Shape ps = *da == 0 ? Shape{scale->numel(), 1} : Shape{1, scale->numel()};
        auto param_gather = [&](const std::string& input, const Tensor& t) {
          const std::string table = names.fresh(input + "_gather_table");
          new_initializers.emplace_back(table, t.reshaped(ps));
          ir::Node n = gather;
          n.name = names.fresh(codes_gather.name + "_" + input);
          n.inputs[0] = table;
          n.outputs[0] = names.fresh(table + "_rows");
          rw.nodes.push_back(n);
          return n.outputs[0];
        };
        rw.nodes.push_back(codes_gather);  // first: the index errors come from it
        out_dq.inputs[1] = param_gather(dq.inputs[1], *scale);
        if (zp) out_dq.inputs[2] = param_gather(dq.inputs[2], *zp);
        out_dq.set_attr(ir::attr_int("axis", *da == 0 ? -1 : 0));
        out_dq.set_attr(ir::attr_int("block_size", codes->dim(1 - *da)));
      } else {
        continue;
      }
    }
    if (rw.nodes.empty()) rw.nodes.push_back(codes_gather);
    rw.nodes.push_back(std::move(out_dq));
    rewrites.emplace(gi, std::move(rw));
  }
  if (rewrites.empty()) return 0;

  for (auto& [name, t] : new_initializers) g.set_initializer(name, std::move(t));
  std::vector<ir::Node> nodes;
  nodes.reserve(g.nodes.size() + 3 * rewrites.size());
  std::vector<std::string> dq_outputs;
  std::vector<bool> cancelled(g.nodes.size(), false);
  for (const auto& [i, rw] : rewrites)
    if (rw.cancelled_q) cancelled[*rw.cancelled_q] = true;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (cancelled[i]) continue;
    auto it = rewrites.find(i);
    if (it == rewrites.end()) {
      nodes.push_back(std::move(g.nodes[i]));
      continue;
    }
    for (auto& n : it->second.nodes) nodes.push_back(std::move(n));
    dq_outputs.push_back(it->second.dq_output);
  }
  g.nodes = std::move(nodes);
  // A table DQ nobody reads any more goes (it would dequantize the table for nothing).
  const auto now_read = ir::count_reads(g);
  std::erase_if(g.nodes, [&](const ir::Node& n) {
    if (!is_op(n, "DequantizeLinear") || n.outputs.size() != 1) return false;
    if (std::find(dq_outputs.begin(), dq_outputs.end(), n.outputs[0]) == dq_outputs.end()) return false;
    auto it = now_read.find(n.outputs[0]);
    return it == now_read.end() || it->second == 0;
  });
  QTK_RETURN_IF_ERROR(ir::topological_sort(g));
  return static_cast<int>(rewrites.size());
}

}  // namespace qtk::rt
