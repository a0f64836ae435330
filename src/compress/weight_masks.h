// Unstructured pruning masks: magnitude (the smallest |w| of each layer go to
// zero) and N:M (in every group of M consecutive weights along the reduction
// axis, only the N largest survive: 2:4 is what sparse tensor cores run).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "compress/prunable_weights.h"
#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::compress {

enum class PruneMethod { kMagnitude, kNofM, kChannels };
// "magnitude", "2:4" (any "N:M" with 0 < N < M), "channels".
Status parse_prune_method(const std::string& text, PruneMethod& method, int64_t& n, int64_t& m);

// 1 keeps the weight, 0 prunes it; one entry per element.
using Mask = std::vector<uint8_t>;
using MaskSet = std::map<std::string, Mask>;  // by initializer name

// Sparsity must lie in [0, 1): a layer needs at least one weight.
Status check_sparsity(double sparsity, const std::string& what = "sparsity");

// Zeros exactly round(sparsity * numel) weights: the smallest magnitudes,
// ties broken by position so the result is deterministic.
Mask magnitude_mask(const Tensor& w, double sparsity);
// Fails when the reduction length is not a multiple of m.
Expected<Mask> n_of_m_mask(const Tensor& w, const WeightLayout& l, int64_t n, int64_t m);

struct MaskOptions {
  PruneMethod method = PruneMethod::kMagnitude;
  double sparsity = 0.5;
  // First and last prunable layer (the stem sees raw pixels, the head makes
  // the decision; both are small and sensitive). Negative: same as sparsity.
  double edge_sparsity = -1;
  int64_t n = 2, m = 4;
};

// Masks for every prunable weight; `value` gives a weight's current values
// (the graph's initializers, or a training graph's parameters). Layers that
// cannot take the pattern (N:M on a reduction length not divisible by M)
// are left dense and named in `notes`.
Expected<MaskSet> make_masks(const std::vector<WeightLayout>& layers,
                             const std::function<const Tensor*(const std::string&)>& value, const MaskOptions& o,
                             std::vector<std::string>* notes = nullptr);

// Multiplies each masked initializer by its mask (sizes are checked).
Status apply_masks(ir::Graph& g, const MaskSet& masks);
Status apply_mask(Tensor& w, const Mask& mask, const std::string& name);

int64_t count_nonzero(const Tensor& t);

}  // namespace qtk::compress
