// Weight sharing (Han et al. 2016, "Deep Compression"): the weights of each
// layer are replaced by the nearest of k = 2^bits shared values found by 1-D
// k-means, so the layer stores a small codebook and bits-wide indices. A
// pruned layer keeps zero as one of its k values and clusters the rest.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compress/prunable_weights.h"
#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::compress {

enum class ClusterInit { kLinear, kKMeansPlusPlus };

struct ClusterOptions {
  int bits = 4;  // 1..8
  // Linear init (evenly spaced between min and max) keeps the rare large
  // weights represented, which Han et al. found to matter most.
  ClusterInit init = ClusterInit::kLinear;
  int iterations = 30;
  uint64_t seed = 0;  // k-means++ draws
};

struct ClusteredLayer {
  std::string name;
  int64_t clusters = 0;  // distinct values after clustering
  double rms_error = 0;  // root mean square change of the weights
};

// Sorted centroids of `values` (at most k; fewer when there are fewer
// distinct values).
std::vector<float> kmeans_1d(const std::vector<float>& values, int64_t k, const ClusterOptions& o);

// Clusters every prunable weight of the graph in place.
Expected<std::vector<ClusteredLayer>> cluster_weights(ir::Graph& g, const ClusterOptions& o);

}  // namespace qtk::compress
