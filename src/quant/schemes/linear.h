// Linear (affine) and power-of-two quantization of float rows: pure functions.
// Rounding is to nearest, ties to even (as ONNX QuantizeLinear), saturating.
#pragma once

#include <cstdint>

#include "quant/schemes/qformat.h"

namespace qtk::quant {

struct QParams {
  float scale = 1.f;
  int32_t zero_point = 0;
};

// Range -> (scale, zero point). The range is widened to contain 0 so that 0
// is exact (zero padding, ReLU outputs). Symmetric: zero point is the middle
// of the format (0 signed, 2^(b-1) unsigned), scale = max|x| / (2^(b-1) - 1)
// so that -max and +max are both representable.
QParams qparams_linear(float rmin, float rmax, QFormat f, bool symmetric);

// q = saturate(round_half_even(x / scale) + zero_point)
int32_t quantize_value_linear(float x, QParams p, QFormat f);
void quantize_row_linear_ref(const float* x, int64_t n, QParams p, QFormat f, int32_t* q);
void dequantize_row_linear_ref(const int32_t* q, int64_t n, QParams p, float* x);

// Power-of-two (logarithmic) levels for signed formats: code q with m = |q|
// means 0 when m == 0, else sign(q) * scale * 2^(m - qmax). The largest
// level is `scale` (set it to max|x|); each code step halves the magnitude.
// Values snap to the nearest level in the linear domain.
float qparams_log2_scale(float rmin, float rmax);
int32_t quantize_value_log2(float x, float scale, QFormat f);
float dequantize_value_log2(int32_t q, float scale, QFormat f);

// Signal-to-quantization-noise ratio in dB: 10*log10(sum x^2 / sum (x-y)^2).
// Returns +inf for an exact match.
double sqnr_db(const float* x, const float* y, int64_t n);

}  // namespace qtk::quant
