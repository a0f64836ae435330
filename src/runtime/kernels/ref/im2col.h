// Window geometry shared by Conv, ConvTranspose and the pooling ops; the
// padded, stride-phase-split image copy through which Conv runs as an
// implicit GEMM; and col2im for ConvTranspose.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qtk/status.h"
#include "qtk/tensor.h"

namespace qtk::rt::ref {

enum class AutoPad { kNotSet, kSameUpper, kSameLower, kValid };

// Parses ONNX's auto_pad attribute ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID").
Expected<AutoPad> parse_auto_pad(const std::string& s);

// Spatial geometry of a sliding window over one image: output position o and
// kernel tap k read input position o * stride - pad_begin + k * dilation.
struct ConvGeometry {
  Shape in;          // input spatial dims
  Shape out;         // output spatial dims
  Shape kernel;      // window extent per dim
  Shape strides;     // > 0
  Shape dilations;   // > 0
  Shape pads_begin;  // may be negative only for ConvTranspose with output_shape
  Shape pads_end;

  int rank() const { return static_cast<int>(in.size()); }
  int64_t in_size() const { return shape_numel(in); }
  int64_t out_size() const { return shape_numel(out); }
  int64_t kernel_size() const { return shape_numel(kernel); }
};

// Fills g.strides / g.dilations (defaults 1) and g.pads_* / g.out from the
// ONNX attributes, given g.in and g.kernel. `pads` is the attribute as read
// ([b0, b1, ..., e0, e1, ...] or empty for zeros). ceil_mode is the pooling
// rounding for explicit pads (a last window that would start inside the end
// padding is dropped, as ONNX's reference and PyTorch do). Errors name the
// offending attribute and the shapes.
Status resolve_window_geometry(AutoPad auto_pad, const std::vector<int64_t>& strides,
                               const std::vector<int64_t>& dilations, const std::vector<int64_t>& pads,
                               bool ceil_mode, ConvGeometry& g);

// Convolutions read a zero-padded copy of the image in which every window
// lies inside, so no read needs a bounds check, split by stride phase: along a
// dim of stride s, padded position q * s + r lands in phase plane r at index q.
// Output position o then reads tap k at phase (k * d) % s, index
// o + (k * d) / s: for every stride, the taps of consecutive outputs are
// consecutive floats. So with
//   k_off[p]   the offset of tap row p (channel-major, then row-major taps),
//   row_off[r] the offset of output row r (all dims but the last) in a phase plane,
// input element (p, o) of output o = (r, ow) is padded[k_off[p] + row_off[r] + ow]:
// the convolution is a GEMM over the "grid" of columns [0, grid_cols) in
// which output row r is columns [row_off[r], row_off[r] + ow_n) and the
// other columns (between the end of a row and the start of the next) are
// computed but dropped. The layout is
// computed once per geometry; each image is then copied in with
// fill_padded_image. Stride 1 is the one-phase case: a plainly padded copy
// (whose rows share their padding along the last dim: the zeros between two
// rows serve as the end pad of one and the begin pad of the next).
inline constexpr int64_t kPaddedImageSlack = 32;  // >= every micro-tile width
struct PaddedImage {
  int64_t plane = 0;                // floats per channel (all phase planes)
  std::vector<int64_t> k_off;       // per tap row p of `channels` channels
  std::vector<int64_t> row_off;     // per output row
  int64_t ow_n = 0;                 // outputs per row
  int64_t grid_cols = 0;            // row_off.back() + ow_n
  // How fill_padded_image places the input: element i of input row r (all
  // dims but the last) lands at in_row_off[r] + ((i + last_pad) % last_stride)
  // * last_phase_stride + (i + last_pad) / last_stride.
  std::vector<int64_t> in_row_off;
  int64_t in_row_len = 0, last_pad = 0, last_stride = 1, last_phase_stride = 0;
  // Zeros the last row of the last plane reads past it (rows share their
  // padding along a last dim of stride 1, see padded_image_layout).
  int64_t tail = 0;
  // Images side by side in each row, and how far image i's part of a row is
  // from image i - 1's.
  int64_t images = 1, image_shift = 0;
  // Floats fill_padded_image writes for `channels` channels: the copies, the
  // tail and kPaddedImageSlack zeros after them, which the last micro-tile of
  // a row may read.
  int64_t floats(int64_t channels) const { return channels * plane + tail + kPaddedImageSlack; }
};
// With images > 1 (and stride 1 along the last dim; otherwise one image is
// laid out, see .images), that many images lie side by side in each row:
// row_off then has an entry per (output row r, image i), at r * images + i,
// and the grid is one GEMM over all of them (fewer columns lost to tile
// rounding and padding per image when images are small).
PaddedImage padded_image_layout(const ConvGeometry& g, int64_t channels, int64_t images = 1);
// Copies layout.images images of `channels` channels of shape g.in into dst
// (layout.floats(channels) floats), zeros around and after them; image i
// starts image_stride floats after image i - 1. With zeros_in_place, dst
// already holds an earlier fill of this layout and channel count: only the
// images are copied, as the zeros around them are where they were (Conv's
// per-thread buffer, refilled image after image).
void fill_padded_image(const float* image, int64_t channels, const ConvGeometry& g, const PaddedImage& layout,
                       float* dst, bool zeros_in_place = false, int64_t image_stride = 0);

// The adjoint of im2col, from a plain row-major col[K, P]: adds every entry
// back into image (which the caller initialises), skipping positions outside
// g.in (pads_begin may be negative here).
void col2im(const float* col, int64_t channels, const ConvGeometry& g, float* image);

}  // namespace qtk::rt::ref
