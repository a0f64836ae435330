// The weight gradient of a stride-1 2-D convolution without im2col.
//
// With the image zero-padded to Hp x Wp (Hp = pt + ih + pb, Wp = pl + iw +
// pr) and the output gradient spread to rows of Wp floats (zero in the
// columns ox >= ow), tap r = (c, ky, kx) of output position q = oy * Wp + ox
// reads padded[c, oy + ky*dh, ox + kx*dw] = padded_flat[off[r] + q] with
//   off[r] = c * Hp * Wp + ky * dh * Wp + kx * dw,
// so dW[m, r] = sum over q < oh * Wp of dy_spread[m, q] * padded_flat[off[r] + q]:
// one dot product of two contiguous rows per weight, no im2col matrix and no
// transposition (im2col + transposed packing was about a fifth of resnet20's
// training step). The columns past ow cost (Wp - ow) / ow more
// multiply-adds, and read nothing but zeros of dy_spread.
#pragma once

#include <cstdint>
#include <vector>

#include "train/conv_geometry.h"

namespace qtk::train {

// False when QTK_TRAIN_IM2COL=1 (read once): Conv's training then takes
// im2col + GEMM everywhere, the path the direct ones are compared with in
// tests and benchmarks.
bool direct_paths_enabled();
// Whether the direct path covers this window (stride 1, non-negative pads)
// and this CPU runs its vector kernel (AVX-512F, not capped by
// QTK_SGEMM_AVX2 / QTK_SGEMM_SCALAR); otherwise Conv keeps im2col + GEMM.
bool direct_weight_grad_applies(const Window2d& w);

// Floats of the padded image of `channels` channels, including the slack
// the last taps read past the last plane.
int64_t padded_image_floats(int64_t channels, const Window2d& w);
// Floats of `rows` spread output-gradient rows (oh * Wp each).
int64_t spread_rows_floats(int64_t rows, const Window2d& w);
// image [channels, ih, iw] -> [channels, Hp, Wp] zero-padded, then zero slack.
void pad_image(const float* image, int64_t channels, const Window2d& w, float* padded);
// dy [rows, oh, ow] -> [rows, oh * Wp], zero in columns >= ow.
void spread_rows(const float* dy, int64_t rows, const Window2d& w, float* spread);
// The plain loops pad_image and spread_rows are tested against (they run
// them where the CPU has no AVX-512F).
void pad_image_reference(const float* image, int64_t channels, const Window2d& w, float* padded);
void spread_rows_reference(const float* dy, int64_t rows, const Window2d& w, float* spread);
// off[r] for the taps of `channels` channels (K = channels * kh * kw entries).
std::vector<int64_t> tap_offsets(int64_t channels, const Window2d& w);

// dw[i * ldw + r] += sum over n < images, q < len of
//   dy[n * dy_image + i * ldy + q] * x[n * x_image + off[r] + q]
// for i < m, r < k: several images per call so that each weight's vector
// accumulators are summed once per call, not once per image (at 7x7 the
// sums would cost as much as the dots). The vector kernel needs AVX-512F (see
// direct_weight_grad_applies); shifted_dots_reference is the plain loop (in
// double) it is tested against.
void shifted_dots(int64_t m, int64_t k, int64_t len, int64_t images, const float* dy, int64_t ldy, int64_t dy_image,
                  const float* x, int64_t x_image, const int64_t* off, float* dw, int64_t ldw);
void shifted_dots_reference(int64_t m, int64_t k, int64_t len, int64_t images, const float* dy, int64_t ldy,
                            int64_t dy_image, const float* x, int64_t x_image, const int64_t* off, float* dw,
                            int64_t ldw);

}  // namespace qtk::train
