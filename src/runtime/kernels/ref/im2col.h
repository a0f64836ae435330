// Window geometry shared by Conv, ConvTranspose and the pooling ops, and the
// im2col / col2im transforms that turn a convolution into one GEMM.
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

// The column matrix of `channels` images of shape g.in, K = channels *
// kernel_size rows by P = out_size columns:
//   col[c * kernel_size + kidx, oidx] = image[c, oidx * strides - pads_begin + kidx * dilations]
// (0 outside the image), written straight into sgemm's pre-packed B layout
// (see sgemm_pack_b) with sliver width nr:
//   packed[(j / nr) * K * nr + p * nr + j % nr] = col[p, j],
// the last sliver's columns past P zeroed. `packed` needs
// sgemm_packed_b_floats(K, P) + kIm2colPackedSlack floats: the copies write
// whole 16-float blocks. Returns false if its scratch cannot be allocated.
inline constexpr int64_t kIm2colPackedSlack = 16;
bool im2col_packed(const float* image, int64_t channels, const ConvGeometry& g, int64_t nr, float* packed);

// Stride-1 convolutions skip im2col: on the zero-padded input grid, column q
// of tap row p is padded[k_off[p] + q], so each packed sliver row is one
// contiguous block. The GEMM then computes `cols` grid columns, of which
// output row r (all dims but the last) is columns [row_start[r],
// row_start[r] + row_len); the others are discarded.
struct ShiftedColumns {
  int64_t cols = 0;
  int64_t row_len = 0;
  std::vector<int64_t> row_start;
};
// False (and nothing filled) when a stride is not 1.
bool shifted_columns(const ConvGeometry& g, ShiftedColumns& sc);
// Packs the K x cols shifted-column matrix in sgemm's packed-B layout (nr <= 16).
// `packed` needs sgemm_packed_b_floats(K, cols) floats. Returns false if its
// scratch cannot be allocated.
bool pack_shifted_columns(const float* image, int64_t channels, const ConvGeometry& g, int64_t cols, int64_t nr,
                          float* packed);

// The adjoint of im2col, from a plain row-major col[K, P]: adds every entry
// back into image (which the caller initialises), skipping positions outside
// g.in (pads_begin may be negative here).
void col2im(const float* col, int64_t channels, const ConvGeometry& g, float* image);

}  // namespace qtk::rt::ref
