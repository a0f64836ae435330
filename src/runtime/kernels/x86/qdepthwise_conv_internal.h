// Plane-level pieces of the depthwise QLinearConv shared by the scalar
// (qdepthwise_conv.cpp), AVX2 (qdepthwise_conv_avx2.cpp) and AVX-512
// (qdepthwise_conv_avx512.cpp) paths.
//
// All work on a zero-padded, zero-point-centred int16 copy of one input
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
  // When every w - w_zp of the channel fits int8: them as k_h x ceil(k_w / 4)
  // vpdpbusd quads (zero past k_w), with their sum and sum of magnitudes.
  const int32_t* w_quads = nullptr;
  int64_t w_sum = 0, w_abs_sum = 0;
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
  // Output codes at a wider row pitch, before they are packed into the
  // output plane (the AVX-512 planes' flat blocks).
  std::vector<uint8_t> codes;

  uint8_t* codes_buf(size_t bytes) {
    if (codes.size() < bytes) codes.resize(bytes);
    return codes.data();
  }

  // The channels-last path's quad vectors (qdepthwise_conv_channels_avx512.cpp).
  std::vector<uint8_t> wide;

  uint8_t* wide_buf(size_t bytes) {
    if (wide.size() < bytes) wide.resize(bytes);
    return wide.data();
  }
  // And its per-column blend masks.
  std::vector<uint64_t> masks;
  uint64_t* masks_buf(size_t n) {
    if (masks.size() < n) masks.resize(n);
    return masks.data();
  }

  // An 8-bit padded plane (the AVX-512 vpdpbusd planes): padding holds the
  // input zero point `fill` (which `k` must include), written once per key.
  std::vector<uint8_t> bytes;
  Key bytes_key{};

  // Element by element with an early exit, rather than std::array's memcmp
  // call or a vectorized compare: both stalled on loading the key just
  // stored, which cost as much as a small plane's arithmetic (7x7 planes of
  // MobileNetV2 on 28x28 inputs).
  static bool same_key(const Key& a, const Key& b) {
    for (size_t i = 0; i < a.size(); ++i)
      if (a[i] != b[i]) return false;
    return true;
  }

  uint8_t* get_bytes(const Key& k, size_t n, uint8_t fill) {
    if (bytes.size() < n) {
      bytes.assign(n, fill);
      bytes_key = k;
    } else if (!same_key(bytes_key, k)) {
      std::fill(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n), fill);
      bytes_key = k;
    }
    return bytes.data();
  }

  // The buffer for `elems` int16 laid out as `k`, padding zeroed.
  int16_t* get(const Key& k, size_t elems) {
    if (buf.size() < elems) {
      buf.assign(elems, 0);
      key = k;
    } else if (!same_key(key, k)) {
      std::fill(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(elems), int16_t{0});
      key = k;
    }
    return buf.data();
  }
};

// Two taps' centred weights as one int32 lane of vpmaddwd / vpdpwssd
// (a in the low half, b in the high half).
inline int32_t pair_bits(int16_t a, int16_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint16_t>(a)) |
                              (static_cast<uint32_t>(static_cast<uint16_t>(b)) << 16));
}

// Weight pairs (w[kh][2p], w[kh][2p+1]) per kernel row, the odd last tap
// paired with 0: k_h * ceil(k_w / 2) of them, row-major.
inline void row_weight_pairs(int64_t k_h, int64_t k_w, const int16_t* w, int32_t* out) {
  const int64_t kwp = (k_w + 1) / 2;
  for (int64_t kh = 0; kh < k_h; ++kh)
    for (int64_t p = 0; p < kwp; ++p) {
      const int16_t a = w[kh * k_w + 2 * p];
      const int16_t b = 2 * p + 1 < k_w ? w[kh * k_w + 2 * p + 1] : int16_t{0};
      out[kh * kwp + p] = pair_bits(a, b);
    }
}

// The 8-bit planes (AVX-512 vpdpbusd, AVX2 vpmaddubsw) sum x·w over the u8
// codes, pads holding the zero point's code. They need the weight quads,
// that code in [0, 255], and |Σ x·w| <= 255·Σ|w|, shifted by pre_shift, inside int32.
inline int32_t u8_zero_point(const PlaneJob& job) { return job.x_zero_point + (job.x_signed ? 128 : 0); }
inline bool u8_plane_fits(const PlaneJob& job) {
  if (job.w_quads == nullptr) return false;
  const int32_t zp = u8_zero_point(job);
  const int64_t bound = 255 * job.w_abs_sum;
  return zp >= 0 && zp <= 255 && bound <= INT32_MAX && (bound << job.params->pre_shift) <= INT32_MAX;
}
// Their rounding constant, with the bias less the zero point's share
// (bias - zp·Σw): ((bias' << pre_shift)·m + 2^(shift - 1)), wrapping in uint64
// as the vector sums do; the final sum equals the exact one, which fits.
inline uint64_t u8_plane_round(const PlaneJob& job) {
  const ChannelParams& p = *job.params;
  const int64_t bias = static_cast<int64_t>(p.bias) - static_cast<int64_t>(u8_zero_point(job)) * job.w_sum;
  return (static_cast<uint64_t>(bias) << p.pre_shift) * static_cast<uint64_t>(static_cast<int64_t>(p.mult.multiplier)) +
         (uint64_t{1} << (p.shift - 1));
}

// Per channel, for PlaneJob::w_quads: `fits` says whether the channel's
// k_h x k_w centred weights `w` fit int8 (then `out` gets its quads).
inline bool int8_weight_quads(int64_t k_h, int64_t k_w, const int16_t* w, int32_t* out) {
  for (int64_t i = 0; i < k_h * k_w; ++i)
    if (w[i] < -128 || w[i] > 127) return false;
  const int64_t kwq = (k_w + 3) / 4;
  for (int64_t kh = 0; kh < k_h; ++kh)
    for (int64_t t = 0; t < kwq; ++t) {
      uint32_t v = 0;
      for (int64_t b = 0; b < 4; ++b) {
        const int64_t kw = 4 * t + b;
        const int16_t c = kw < k_w ? w[kh * k_w + kw] : int16_t{0};
        v |= static_cast<uint32_t>(static_cast<uint8_t>(static_cast<int8_t>(c))) << (8 * b);
      }
      out[kh * kwq + t] = static_cast<int32_t>(v);
    }
  return true;
}

// ---------------------------------------------------------------------------
// Channels-last path (AVX-512 VNNI, qdepthwise_conv_channels_avx512.cpp): for
// small planes, where the per-plane paths' fixed costs outweigh their
// arithmetic. One task is one image and a block of 16 channels; the vector
// lanes are the channels. See the comment at the top of that file.
constexpr int64_t kChannelBlock = 16;

// Per block of 16 channels (lanes past the last channel zero), for one input
// type (the zero point's correction rides in `round`, as in the vpdpbusd
// planes): the rescale r = ((acc << pre) * mult + round) >> (32 + post) per
// lane, the 64-bit `round` split into even and odd lanes.
struct ChannelBlock {
  int32_t mult[kChannelBlock] = {};
  int64_t round_even[kChannelBlock / 2] = {}, round_odd[kChannelBlock / 2] = {};
  int32_t pre[kChannelBlock] = {}, post[kChannelBlock] = {};
  bool has_pre = false;
};

// Everything the channels-last path needs of one conv, for one input type.
struct ChannelsPrepared {
  int64_t kwq = 0;                  // weight quads per kernel row
  std::vector<ChannelBlock> blocks;  // ceil(C / 16)
  // [block][k_h * kwq][16 lanes]: channel lane's weight quad (0 past C).
  std::vector<int32_t> quads;
};

// Whether the channels-last path can take this geometry (stride 1 or 2 along
// W, no dilation along W).
inline bool channels_geometry_ok(const Geometry& g) { return (g.stride_w == 1 || g.stride_w == 2) && g.dil_w == 1; }

// Whether every channel can take the channels-last path's arithmetic: the
// vpdpbusd planes' condition (weights w - w_zp in int8, sum x w over u8 x
// shifted by pre_shift fits int32) and vector_exact. Then `out` gets the
// blocks for input codes of that signedness.
bool prepare_channels(int64_t channels, int64_t k_h, int64_t k_w, const int32_t* quads, const uint8_t* quads_fit,
                      const int64_t* w_sum, const int64_t* w_abs, const ChannelParams* params, int32_t x_zero_point,
                      bool x_signed, ChannelsPrepared& out);

// One image's channels [16 * block, 16 * block + 16) (clipped to C): x and y
// point at the image (NCHW). Only with avx512_supported().
struct ChannelsJob {
  const Geometry* g = nullptr;
  const ChannelsPrepared* prep = nullptr;
  int64_t channels = 0;
  int32_t x_zero_point = 0;  // as given (int8 codes are shifted by 128 inside)
  bool x_signed = false;
  int32_t y_zero_point = 0;
  bool y_signed = false;
};
void run_channels_avx512(const ChannelsJob& job, const uint8_t* x, uint8_t* y, int64_t block, PlaneScratch& scratch);

void run_plane_scalar(const Geometry& g, const PlaneJob& job, PlaneScratch& scratch);
// Only with avx2_supported() and job.params->vector_exact.
void run_plane_avx2(const Geometry& g, const PlaneJob& job, PlaneScratch& scratch);
// Only with avx512_supported() and job.params->vector_exact. Strides along W
// other than 1 and 2, and dilation along W, go to run_plane_avx2.
void run_plane_avx512(const Geometry& g, const PlaneJob& job, PlaneScratch& scratch);

}  // namespace qtk::rt::qdw
