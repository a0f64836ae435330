#include "quant/graph/matmul_nbits_writer.h"

#include <optional>
#include <unordered_map>

#include "ir/passes.h"

namespace qtk::quant {

namespace {

constexpr const char* kMsDomain = "com.microsoft";

bool is_signed_code(DType t) { return t == DType::kInt8 || t == DType::kInt4; }
bool is_code(DType t) {
  return t == DType::kInt8 || t == DType::kUInt8 || t == DType::kInt4 || t == DType::kUInt4;
}

// A block-wise DequantizeLinear of constants, seen as a [K, N] weight.
struct BlockedWeight {
  const Tensor* codes = nullptr;
  const Tensor* scale = nullptr;
  const Tensor* zero_point = nullptr;  // may be null
  bool k_major = true;                 // codes are [K, N] (else [N, K])
  int64_t k = 0, n = 0, block = 0;

  int64_t code_index(int64_t kk, int64_t nn) const { return k_major ? kk * n + nn : nn * k + kk; }
  int64_t param_index(int64_t kb, int64_t nn) const {
    const int64_t blocks = (k + block - 1) / block;
    return k_major ? kb * n + nn : nn * blocks + kb;
  }
};

std::optional<BlockedWeight> blocked_weight(const ir::Graph& g, const ir::Node* dq, bool k_major) {
  if (!dq || dq->op_type != "DequantizeLinear" || !ir::is_default_domain(dq->domain) || !dq->has_input(1))
    return std::nullopt;
  BlockedWeight w;
  w.block = dq->attr_int("block_size", 0);
  if (w.block < 16 || (w.block & (w.block - 1)) != 0) return std::nullopt;
  w.codes = g.find_initializer(dq->inputs[0]);
  w.scale = g.find_initializer(dq->inputs[1]);
  w.zero_point = dq->has_input(2) ? g.find_initializer(dq->inputs[2]) : nullptr;
  if (!w.codes || !w.scale || (dq->has_input(2) && !w.zero_point)) return std::nullopt;
  if (w.codes->rank() != 2 || !is_code(w.codes->dtype()) || w.scale->dtype() != DType::kFloat32) return std::nullopt;
  int64_t axis = dq->attr_int("axis", 1);
  if (axis < 0) axis += 2;
  if (axis != (k_major ? 0 : 1)) return std::nullopt;  // blocks must run along the reduction axis
  w.k_major = k_major;
  w.k = w.codes->dim(k_major ? 0 : 1);
  w.n = w.codes->dim(k_major ? 1 : 0);
  const int64_t blocks = (w.k + w.block - 1) / w.block;
  if (w.scale->numel() != blocks * w.n) return std::nullopt;
  if (w.zero_point && w.zero_point->numel() != w.scale->numel()) return std::nullopt;
  return w;
}

// The MatMulNBits operands of w, or nullopt when a code does not fit 4 bits.
struct NBitsOperands {
  Tensor b, scales, zero_points;  // zero_points undefined when all are 8
};

std::optional<NBitsOperands> pack_nbits(const BlockedWeight& w) {
  const int64_t shift = is_signed_code(w.codes->dtype()) ? 8 : 0;
  const int64_t blocks = (w.k + w.block - 1) / w.block, blob = w.block / 2;
  NBitsOperands o;
  o.b = Tensor(DType::kUInt8, {w.n, blocks, blob});
  o.scales = Tensor(DType::kFloat32, {w.n * blocks});
  std::vector<uint8_t> zp(static_cast<size_t>(w.n * blocks));
  bool all_eight = true;
  for (int64_t nn = 0; nn < w.n; ++nn)
    for (int64_t kb = 0; kb < blocks; ++kb) {
      const int64_t p = w.param_index(kb, nn);
      const int64_t z = (w.zero_point ? w.zero_point->get_as_int64(p) : 0) + shift;
      if (z < 0 || z > 15) return std::nullopt;
      zp[nn * blocks + kb] = static_cast<uint8_t>(z);
      all_eight &= z == 8;
      o.scales.data<float>()[nn * blocks + kb] = w.scale->data<float>()[p];
      uint8_t* dst = o.b.data<uint8_t>() + (nn * blocks + kb) * blob;
      for (int64_t j = 0; j < w.block; ++j) {
        const int64_t kk = kb * w.block + j;
        // Past K (a partial last block): the zero point, which dequantizes to 0.
        const int64_t u = kk < w.k ? w.codes->get_as_int64(w.code_index(kk, nn)) + shift : z;
        if (u < 0 || u > 15) return std::nullopt;
        dst[j / 2] = static_cast<uint8_t>(dst[j / 2] | (u << (4 * (j % 2))));
      }
    }
  if (!all_eight) {
    const int64_t zbytes = (blocks + 1) / 2;
    o.zero_points = Tensor(DType::kUInt8, {w.n * zbytes});
    for (int64_t nn = 0; nn < w.n; ++nn)
      for (int64_t kb = 0; kb < blocks; ++kb) {
        uint8_t& byte = o.zero_points.data<uint8_t>()[nn * zbytes + kb / 2];
        byte = static_cast<uint8_t>(byte | (zp[nn * blocks + kb] << (4 * (kb % 2))));
      }
  }
  return o;
}

}  // namespace

Expected<int> weight_only_to_matmul_nbits(ir::Model& m, int64_t accuracy_level) {
  ir::Graph& g = m.graph;
  std::unordered_map<std::string, const ir::Node*> producer;
  for (const auto& n : g.nodes)
    for (const auto& o : n.outputs) producer[o] = &n;
  auto producer_of = [&](const std::string& v) -> const ir::Node* {
    auto it = producer.find(v);
    return it == producer.end() ? nullptr : it->second;
  };
  ir::NameTable names(g);
  std::vector<std::pair<size_t, ir::Node>> replacements;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const ir::Node& n = g.nodes[i];
    if (!ir::is_default_domain(n.domain) || n.outputs.size() != 1 || n.inputs.size() < 2) continue;
    bool k_major = true;
    std::string bias;
    if (n.op_type == "MatMul") {
      if (n.inputs.size() != 2) continue;
    } else if (n.op_type == "Gemm") {
      if (n.attr_int("transA", 0) != 0 || n.attr_float("alpha", 1.f) != 1.f) continue;
      k_major = n.attr_int("transB", 0) == 0;
      if (n.has_input(2)) {
        const Tensor* c = g.find_initializer(n.inputs[2]);
        if (n.attr_float("beta", 1.f) != 1.f || !c || c->dtype() != DType::kFloat32 || c->rank() != 1) continue;
        bias = n.inputs[2];
      }
    } else {
      continue;
    }
    auto w = blocked_weight(g, producer_of(n.inputs[1]), k_major);
    if (!w || (!bias.empty() && g.find_initializer(bias)->numel() != w->n)) continue;
    auto ops = pack_nbits(*w);
    if (!ops) continue;
    const std::string base = n.inputs[1];
    ir::Node r;
    r.op_type = "MatMulNBits";
    r.domain = kMsDomain;
    r.name = n.name.empty() ? names.fresh("MatMulNBits") : n.name + "_MatMulNBits";
    const std::string b_name = names.fresh(base + "_nbits");
    const std::string s_name = names.fresh(base + "_nbits_scales");
    g.set_initializer(b_name, ops->b);
    g.set_initializer(s_name, ops->scales);
    std::string zp_name;
    if (ops->zero_points.defined()) {
      zp_name = names.fresh(base + "_nbits_zero_points");
      g.set_initializer(zp_name, ops->zero_points);
    }
    r.inputs = {n.inputs[0], b_name, s_name, zp_name, "", bias};
    while (!r.inputs.empty() && r.inputs.back().empty()) r.inputs.pop_back();
    r.outputs = n.outputs;
    r.set_attr(ir::attr_int("K", w->k));
    r.set_attr(ir::attr_int("N", w->n));
    r.set_attr(ir::attr_int("bits", 4));
    r.set_attr(ir::attr_int("block_size", w->block));
    if (accuracy_level != 0) r.set_attr(ir::attr_int("accuracy_level", accuracy_level));
    replacements.emplace_back(i, std::move(r));
  }
  for (auto& [i, r] : replacements) g.nodes[i] = std::move(r);
  if (!replacements.empty() && m.opset(kMsDomain) == 0) m.opsets.push_back({kMsDomain, 1});
  QTK_RETURN_IF_ERROR(ir::remove_dead_nodes(m).status());
  return static_cast<int>(replacements.size());
}

}  // namespace qtk::quant
