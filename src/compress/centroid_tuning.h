// Fine-tuning the shared values of clustered weights (Han et al. 2016,
// "Deep Compression", section 3.1): the assignment of weights to clusters
// stays fixed and each centroid moves by the sum of the gradients of the
// weights that share it.
//
// Done on the per-weight parameters the training engine already has:
// before each optimizer step every weight's gradient is replaced by its
// cluster's sum, so all members of a cluster see the same gradient, get the
// same per-element update (SGD momentum, AdamW moments and weight decay act
// identically on equal inputs) and stay equal — the update the optimizer
// would give the centroid as a parameter of its own. After the step the
// members are set to one value again, so the sharing stays exact whatever
// the rounding of a vectorized update. A cluster at exactly zero (pruned
// weights) gets no gradient and stays zero.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compress/prunable_weights.h"
#include "qtk/status.h"
#include "train/train_graph.h"

namespace qtk::compress {

class CentroidTuner {
 public:
  // Reads the cluster assignment from the current values of `layers`
  // (weights with equal values share a cluster; at most 256 per layer, as
  // cluster_weights leaves them). Fails naming a layer that is not a
  // parameter of the graph or has more distinct values.
  static Expected<CentroidTuner> create(train::TrainGraph& graph, const std::vector<WeightLayout>& layers);

  // For train::TrainOptions::before_step: each weight's gradient becomes
  // the sum over its cluster (zero for a zero cluster).
  Status before_step();
  // For train::TrainOptions::after_step: every member of a cluster takes
  // the value of the cluster's first member.
  Status after_step();

  // The current shared values of layer `name`, in the order of its
  // clusters (ascending initial value); empty for an unknown name.
  std::vector<float> centroids(const std::string& name) const;

 private:
  struct Layer {
    std::string name;
    train::Param* param = nullptr;
    std::vector<uint8_t> cluster;   // per weight
    std::vector<int64_t> first;     // per cluster: index of its first member
    std::vector<bool> frozen;       // per cluster: the value is zero (pruned)
    std::vector<double> grad_sum;   // per cluster, scratch
  };
  std::vector<Layer> layers_;
};

}  // namespace qtk::compress
