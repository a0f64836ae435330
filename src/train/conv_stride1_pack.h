// im2col of a stride-1 2-D convolution written straight into sgemm's
// AVX-512 packed-B layout (32-wide slivers, see rt::ref::sgemm_pack_b) from
// the zero-padded image of conv_weight_grad.h: position j = (oy, ox) of tap
// r reads padded_flat[off[r] + oy * Wp + ox], so each 16-lane half of a
// sliver row is one masked load per output row it spans (two at 28 wide),
// with no bounds tests, no row buffer and no second copy into the slivers
// (the generic im2col was a fifth of resnet20's training step).
#pragma once

#include <cstdint>
#include <vector>

#include "train/conv_geometry.h"

namespace qtk::train {

// The width of the packed slivers this path writes.
inline constexpr int64_t kStride1PackWidth = 32;

// Whether Conv may use it: the window qualifies for conv_weight_grad.h's
// padded layout and sgemm runs its AVX-512 path (NR = 32).
bool stride1_pack_applies(const Window2d& w);

// Per 16-lane half of each sliver: the output rows it spans, as (lane mask,
// offset of lane 0 in the padded plane). Built once per call.
struct Stride1PackPlan {
  struct Segment {
    uint16_t mask;
    int64_t src;  // padded-plane offset that lane 0 of the half would read
  };
  int64_t slivers = 0;
  std::vector<int64_t> first;  // per half: its segments are [first[h], first[h + 1])
  std::vector<Segment> segments;
};
Stride1PackPlan plan_stride1_pack(const Window2d& w);

// packed[(s * k + r) * 32 + lane] = padded[off[r] + position s * 32 + lane],
// positions past oh * ow zero. `padded` as pad_image writes it, `off` as
// tap_offsets gives it (k entries).
void stride1_pack(const Stride1PackPlan& plan, const float* padded, const int64_t* off, int64_t k, float* packed);
// Slivers [s0, s1) only, written from packed[0] (Conv packs a few slivers at
// a time so that they stay in L1 for the GEMM that reads them).
void stride1_pack(const Stride1PackPlan& plan, const float* padded, const int64_t* off, int64_t k, int64_t s0,
                  int64_t s1, float* packed);

}  // namespace qtk::train
