#include "runtime/optimize.h"

#include <algorithm>

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

}  // namespace qtk::rt
