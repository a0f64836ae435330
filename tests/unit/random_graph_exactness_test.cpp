// Random conv nets, quantized by qtk, run by the integer session with the
// optimized kernels and with the reference ones: the outputs agree bit for
// bit. The shared models cover a few shapes; these cover the odd ones a
// model qtk has not seen brings (1 or 3 channels, depthwise and grouped
// convs, strides, dilations, even kernels' pads, residual joins, concats,
// pools, tiny and non-square images), with the session's fusions (residual
// joins, clamps, code tables) and thread splits in play. A failure prints
// the seed and the net.
#include <gtest/gtest.h>

#include <sstream>

#include "random_conv_net.h"
#include "random_nets.h"

namespace qtk {
namespace {

TEST(RandomGraphExactness, OptimizedKernelsMatchReferenceKernels) {
  constexpr int kNets = 150;
  for (int net = 0; net < kNets; ++net) {
    const uint32_t seed = 1000 + static_cast<uint32_t>(net);
    std::ostringstream log;
    const testing::RandomConvNet n = testing::random_conv_net(seed, log);
    const Tensor calib = testing::uniform_tensor({8, n.c, n.h, n.w}, seed + 1, 0.f, 1.f);
    const int64_t batch = testing::RandomDims(seed + 3)(1, 3);
    // Past the calibrated range too.
    const Tensor x = testing::uniform_tensor({batch, n.c, n.h, n.w}, seed + 2, -0.2f, 1.2f);
    testing::expect_random_net_exact(n.model, net, log, calib, x);
  }
}

}  // namespace
}  // namespace qtk
