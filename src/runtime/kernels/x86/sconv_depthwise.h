// Depthwise float Conv, one output plane at a time, with AVX-512: the plane
// copied into a zero-padded buffer, then each output row 16 outputs at a
// time (masked at the row's end; strides 1 and 2, other strides through the
// reference sum); at stride 1 a plane narrower than a vector runs as one
// stretch of the padded grid (a vector spans rows). Bit for bit the reference (ref/depthwise_plane.h): the
// same products, padding zeros included, rounded and added in the same order
// (no fused multiply-add).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/kernels/ref/depthwise_plane.h"

namespace qtk::rt::x86 {

bool sconv_depthwise_avx512_supported();
void sconv_depthwise_plane_avx512(const float* x, const float* w, float bias, const DepthwisePlane& g, float* y);

// Channels in the vector instead, for small planes, whose rows fill little
// of a vector (MobileNet-style nets at low resolution): 16 channels per
// vector for each output position. The same sums as the reference, bit for
// bit. Prepared once per run (weights tap-major, each output's window), then
// run per image and block of channels.
struct SconvDepthwiseChannels {
  DepthwisePlane g;
  int64_t channels = 0;
  std::vector<float> weights;      // (taps + 1) rows of channels rounded up to 16: the taps, then the bias
  std::vector<int64_t> first_tap;  // per output, its window's first position in the padded image
  std::vector<int64_t> tap;        // per tap, its offset from there, in positions
};
// w: channels x k_h x k_w; bias: one per channel, or null.
void sconv_depthwise_channels_prepare(const float* w, const float* bias, int64_t channels, const DepthwisePlane& g,
                                      SconvDepthwiseChannels& out);
// Channels [c_begin, c_begin + c_count) of one image (c_begin a multiple of
// 16: a block's weights are read 16 at a time from there): x their input
// planes, y their output planes, plane after plane.
void sconv_depthwise_channels_avx512(const SconvDepthwiseChannels& prep, const float* x, int64_t c_begin,
                                     int64_t c_count, float* y);
// Whether the channel-vector kernel is the faster one for this plane
// (measured on MobileNetV2-style planes: see conv_ops.cpp's use).
bool sconv_depthwise_prefers_channels(const DepthwisePlane& g, int64_t channels);

}  // namespace qtk::rt::x86
