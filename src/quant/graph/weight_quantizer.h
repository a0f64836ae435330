// Quantizes one weight tensor under a QuantConfig: integer codes, scales and
// zero points per tensor / channel / group, plus the dequantized values (what
// the quantized model will compute with) and the SQNR they reach.
#pragma once

#include "qtk/quantize.h"
#include "quant/schemes/linear.h"
#include "quant/schemes/param_layout.h"

namespace qtk::quant {

struct QuantizedWeight {
  Tensor codes;       // container dtype of the format (int8 / uint8), shape of w
  Tensor scale;       // float32, layout.param_shape(w, axis)
  Tensor zero_point;  // container dtype, same shape as scale
  int axis = 0;       // per-channel / block axis (unused per tensor)
  ParamLayout layout;
  Tensor dequantized;  // float32, shape of w
  double sqnr_db = 0.0;
  std::string scheme;  // human-readable description for the report
};

// channel_axis: output-channel axis of w for its op (Conv 0, ConvTranspose 1,
// MatMul last, Gemm 0 if transB else 1). reduction_axis: the axis summed over
// (used for per-group blocks).
// importance (optional): E[x_k^2] of the input feature k that each index k of
// the reduction axis multiplies. The clipping search then minimises the
// expected output error sum_k E[x_k^2] (w_k - q_k)^2 instead of the plain
// weight error, so weights that meet large inputs are kept precise.
// (scale, zero point) for one parameter group's values under the config's
// format, symmetry and mapping: min/max, or the error-weighted clipping
// search (weights: per value, e.g. E[x^2] of the input it multiplies).
// Exposed for algorithms that fit groups one at a time (GPTQ).
QParams choose_weight_params(const std::vector<float>& vals, const std::vector<float>& weights, QFormat f,
                             const QuantConfig& c);

Expected<QuantizedWeight> quantize_weight(const Tensor& w, int channel_axis, int reduction_axis,
                                          const QuantConfig& config,
                                          const std::vector<float>* importance = nullptr);

}  // namespace qtk::quant
