#include "compress/prunable_weights.h"

#include <set>

namespace qtk::compress {

std::vector<WeightLayout> prunable_weights(const ir::Graph& g) {
  std::vector<WeightLayout> out;
  std::set<std::string> seen;
  for (const auto& n : g.nodes) {
    if (!ir::is_default_domain(n.domain) || !n.has_input(1)) continue;
    const bool conv = n.op_type == "Conv", gemm = n.op_type == "Gemm", matmul = n.op_type == "MatMul";
    if (!conv && !gemm && !matmul) continue;
    const Tensor* w = g.find_initializer(n.inputs[1]);
    if (!w || w->dtype() != DType::kFloat32 || w->numel() == 0 || seen.count(n.inputs[1])) continue;
    WeightLayout l;
    l.name = n.inputs[1];
    l.node = n.describe();
    if (conv) {
      if (w->rank() < 3) continue;
      l.outputs = w->dim(0);
      l.conv_channels = w->dim(1);
      l.conv_kernel = w->numel() / (l.outputs * l.conv_channels);
      l.reduce = l.conv_channels * l.conv_kernel;
    } else {
      if (w->rank() != 2) continue;
      const bool trans = gemm && n.attr_int("transB", 0) != 0;
      l.outputs = trans ? w->dim(0) : w->dim(1);
      l.reduce = trans ? w->dim(1) : w->dim(0);
      l.row_stride = trans ? l.reduce : 1;
      l.reduce_stride = trans ? 1 : l.outputs;
    }
    seen.insert(l.name);
    out.push_back(std::move(l));
  }
  return out;
}

}  // namespace qtk::compress
