// Plane-level pieces of the depthwise QLinearConv shared by the scalar
// (qdepthwise_conv.cpp) and AVX2 (qdepthwise_conv_avx2.cpp) paths.
//
// Both work on a zero-padded, zero-point-centred int16 copy of one input
// plane (a padding position contributes 0, as the reference skips it), so the
// inner loops have no bounds tests.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "quant/schemes/fixed_point.h"

namespace qtk::rt::qdw {

struct Geometry {
  int64_t in_h = 0, in_w = 0, out_h = 0, out_w = 0;
  int64_t k_h = 0, k_w = 0, stride_h = 1, stride_w = 1, dil_h = 1, dil_w = 1;
  int64_t pad_top = 0, pad_left = 0;
};

// Per output channel, fixed at prepare time.
struct ChannelParams {
  int32_t bias = 0;
  quant::FixedPointMultiplier mult;
  // The vector path rescales
  //   r = (((acc + bias) << pre_shift) * m + 2^(shift - 1)) >> shift,  shift in [32, 62],
  // which equals the reference when no int32 sum can overflow (acc + bias,
  // and its left shift by pre_shift). vector_exact says that was proven from
  // the weights and bias; channels without it take the scalar path.
  int32_t pre_shift = 0;
  int32_t shift = 32;
  bool vector_exact = false;
};

// One (image, channel) plane.
struct PlaneJob {
  const void* x = nullptr;  // in_h x in_w, uint8 or int8
  bool x_signed = false;
  int32_t x_zero_point = 0;
  const int16_t* w = nullptr;  // k_h x k_w, minus the weight zero point
  const ChannelParams* params = nullptr;
  int32_t y_zero_point = 0;
  bool y_signed = false;
  void* y = nullptr;  // out_h x out_w, uint8 or int8
};

// One per thread. The padding of a padded plane is the same for every plane
// of one layout, so it is zeroed once per layout (`key`) and each plane then
// writes only its interior.
struct PlaneScratch {
  using Key = std::array<int64_t, 10>;
  std::vector<int16_t> buf;
  Key key{};

  // The buffer for `elems` int16 laid out as `k`, padding zeroed.
  int16_t* get(const Key& k, size_t elems) {
    if (buf.size() < elems) {
      buf.assign(elems, 0);
      key = k;
    } else if (key != k) {
      std::fill(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(elems), int16_t{0});
      key = k;
    }
    return buf.data();
  }
};

void run_plane_scalar(const Geometry& g, const PlaneJob& job, PlaneScratch& scratch);
// Only with avx2_supported() and job.params->vector_exact.
void run_plane_avx2(const Geometry& g, const PlaneJob& job, PlaneScratch& scratch);

}  // namespace qtk::rt::qdw
