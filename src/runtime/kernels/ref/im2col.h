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

// Lays `channels` images of shape g.in out as columns:
//   col[(c * kernel_size + kidx) * out_size + oidx]
// = image[c, oidx * strides - pads_begin + kidx * dilations], 0 outside.
void im2col(const float* image, int64_t channels, const ConvGeometry& g, float* col);

// im2col straight into sgemm's pre-packed B layout (see sgemm_packed_b) with
// sliver width nr: element (row p, column j) goes to
//   packed[(j / nr) * rows * nr + p * nr + j % nr],  rows = channels * kernel_size,
// and the columns of the last sliver past out_size are zeroed.
void im2col_packed(const float* image, int64_t channels, const ConvGeometry& g, int64_t nr, float* packed);

// The adjoint of im2col: adds every column entry back into image (which the
// caller initialises), skipping positions outside g.in.
void col2im(const float* col, int64_t channels, const ConvGeometry& g, float* image);

}  // namespace qtk::rt::ref
