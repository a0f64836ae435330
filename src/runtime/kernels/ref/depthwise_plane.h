// One output plane of a depthwise-style float Conv (one input channel per
// group, 1-D or 2-D): the reference sum, shared by the plain loop
// (conv_ops.cpp) and the vector kernel (x86/sconv_depthwise.h), so both add
// the same products in the same order:
//   y = bias, then + x·w for each tap in (kh, kw) order, each product
//   rounded before it is added; a tap in the padding reads x = 0 (ONNX pads
//   with zeros: 0·w is added, as the im2col path does, so a NaN or infinite
//   weight poisons the output as in ONNX's reference).
#pragma once

#include <cstdint>

namespace qtk::rt {

// A 2-D view of the plane (1-D convs: one row).
struct DepthwisePlane {
  int64_t in_h = 1, in_w = 1, out_h = 1, out_w = 1;
  int64_t k_h = 1, k_w = 1, s_h = 1, s_w = 1, d_h = 1, d_w = 1, p_h = 0, p_w = 0;
};

inline float depthwise_output(const float* x, const float* w, float bias, const DepthwisePlane& g, int64_t oh,
                              int64_t ow) {
  float sum = bias;
  for (int64_t kh = 0; kh < g.k_h; ++kh) {
    const int64_t ih = oh * g.s_h - g.p_h + kh * g.d_h;
    const bool row_in = ih >= 0 && ih < g.in_h;
    const float* wr = w + kh * g.k_w;
    for (int64_t kw = 0; kw < g.k_w; ++kw) {
      const int64_t iw = ow * g.s_w - g.p_w + kw * g.d_w;
      const float v = row_in && iw >= 0 && iw < g.in_w ? x[ih * g.in_w + iw] : 0.f;
      const float p = v * wr[kw];
      sum = sum + p;
    }
  }
  return sum;
}

// The whole plane with depthwise_output. Never inlined into a caller
// compiled with FMA enabled, where its multiply and add could be fused.
__attribute__((noinline)) inline void depthwise_plane_reference(const float* x, const float* w, float bias,
                                                                const DepthwisePlane& g, float* y) {
  for (int64_t oh = 0; oh < g.out_h; ++oh)
    for (int64_t ow = 0; ow < g.out_w; ++ow) y[oh * g.out_w + ow] = depthwise_output(x, w, bias, g, oh, ow);
}

}  // namespace qtk::rt
