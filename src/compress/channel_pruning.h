// Structured pruning: whole output channels of Conv layers are removed (the
// least important by L1 norm of their kernels), together with the input
// channels of the Conv layers they feed, so tensors, weights and compute
// really shrink. A Conv qualifies when its output only flows through
// channel-wise ops (Relu, Clip, BatchNormalization, pools, ...) into other
// ungrouped Conv layers, or through Flatten (axis 1) into Gemm layers, whose
// input columns of the removed channels (channel x spatial positions) go
// too; channels that reach Add (residuals), Concat, Reshape, anything else
// or a graph output are kept, since their consumers need all of them. In a
// ResNet this prunes the first conv of each block and the input of the
// second; in a plain CNN every conv, the last one through to the classifier.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::compress {

struct PrunedConv {
  std::string node;  // "name (Conv)"
  int64_t channels_before = 0, channels_after = 0;
  std::vector<int64_t> kept_channels;  // indices into the channels before, ascending
  std::vector<std::string> consumers;  // Conv (and Gemm, after Flatten) nodes whose inputs went too
};

struct ChannelPruneReport {
  std::vector<PrunedConv> pruned;
  std::vector<std::string> kept;  // "node: why its channels stay"
};

// Removes round(fraction * C) output channels (at most C - 1) of every
// qualifying Conv; rewrites every affected initializer and drops the
// declared shapes of the values whose channel count changed.
Expected<ChannelPruneReport> prune_channels(ir::Model& m, double fraction);

// Channels of `t` along `axis` listed in `keep`, in that order.
Tensor take_channels(const Tensor& t, int axis, const std::vector<int64_t>& keep);

}  // namespace qtk::compress
