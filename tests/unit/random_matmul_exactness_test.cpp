// Random MLP and attention-like nets on x [N, T, D], quantized by qtk, run
// by the integer session with optimized and with reference kernels: the
// outputs agree bit for bit (QLinearMatMul with constant and with
// activation B, QGemm, the Linear layers' bias fusion, code tables, and
// what stays float between them). A failure prints the seed and the net.
#include <gtest/gtest.h>

#include <sstream>

#include "random_nets.h"
#include "random_seq_net.h"

namespace qtk {
namespace {

TEST(RandomMatMulExactness, OptimizedKernelsMatchReferenceKernels) {
  constexpr int kNets = 150;
  for (int net = 0; net < kNets; ++net) {
    const uint32_t seed = 5000 + static_cast<uint32_t>(net);
    std::ostringstream log;
    const testing::RandomSeqNet n = testing::random_seq_net(seed, log);
    const Tensor calib = testing::uniform_tensor({8, n.t, n.d}, seed + 1, -1.f, 1.f);
    const int64_t batch = testing::RandomDims(seed + 3)(1, 3);
    const Tensor x = testing::uniform_tensor({batch, n.t, n.d}, seed + 2, -1.2f, 1.2f);  // past the calibrated range too
    testing::expect_random_net_exact(n.model, net, log, calib, x);
  }
}

}  // namespace
}  // namespace qtk
