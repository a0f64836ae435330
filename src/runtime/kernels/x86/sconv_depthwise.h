// Depthwise float Conv, one output plane at a time, with AVX-512: the plane
// copied into a zero-padded buffer, then each output row 16 outputs at a
// time (masked at the row's end; strides 1 and 2, other strides through the
// reference sum); at stride 1 a plane narrower than a vector runs as one
// stretch of the padded grid (a vector spans rows). Bit for bit the reference (ref/depthwise_plane.h): the
// same products, padding zeros included, rounded and added in the same order
// (no fused multiply-add).
#pragma once

#include "runtime/kernels/ref/depthwise_plane.h"

namespace qtk::rt::x86 {

bool sconv_depthwise_avx512_supported();
void sconv_depthwise_plane_avx512(const float* x, const float* w, float bias, const DepthwisePlane& g, float* y);

}  // namespace qtk::rt::x86
