// Reference Resize (opset 10-19) and Upsample (opset 1-9): the interpolation
// core, independent of how the op's inputs and attributes spell its options.
// Semantics follow the ONNX reference implementation (onnx/reference/ops/
// op_resize.py): coordinates are computed in double precision from the
// float scales, "length_resized" is scale * length_original.
#pragma once

#include <vector>

#include "qtk/status.h"
#include "qtk/tensor.h"
#include "runtime/thread_pool.h"

namespace qtk::rt::ref {

enum class ResizeMode { kNearest, kLinear, kCubic };

enum class ResizeCoordMode {
  kHalfPixel,
  kHalfPixelSymmetric,  // opset 19
  kPytorchHalfPixel,
  kAlignCorners,
  kAsymmetric,
  kTfHalfPixelForNn,
  kTfCropAndResize,
};

enum class ResizeNearestMode {
  kRoundPreferFloor,
  kRoundPreferCeil,
  kFloor,
  kCeil,
  // Resize-10 and Upsample had no nearest_mode: floor when an axis grows,
  // ceil when it shrinks (what ONNX Runtime does for those versions).
  kLegacy,
};

struct ResizeParams {
  ResizeMode mode = ResizeMode::kNearest;
  ResizeCoordMode coord = ResizeCoordMode::kHalfPixel;
  ResizeNearestMode nearest = ResizeNearestMode::kRoundPreferFloor;
  double cubic_coeff_a = -0.75;
  bool exclude_outside = false;
  bool antialias = false;           // linear/cubic only: widen the filter when shrinking
  double extrapolation_value = 0.0;  // tf_crop_and_resize outside the input
  std::vector<double> scales;        // one per axis of the input
  Shape out_shape;                   // one per axis of the input
  std::vector<double> roi;           // tf_crop_and_resize: starts for every axis, then ends
};

// Resizes x. Nearest mode moves bytes (any fixed-size dtype); linear and cubic
// compute in double and need a numeric dtype (integer results are rounded to
// nearest and saturated).
Expected<Tensor> resize_ref(const Tensor& x, const ResizeParams& p, ThreadPool* pool);

}  // namespace qtk::rt::ref
