// The integer grid a weight matrix W_g (see layer_inputs.h) is rounded to:
// which (scale, zero point) each element uses, rounding to and from codes,
// and writing an algorithm's codes back as the QuantizedWeight that the QDQ
// writer consumes (so export and every runtime stay unchanged).
#pragma once

#include <cstdint>
#include <vector>

#include "qtk/quantize.h"
#include "quant/algos/layer_inputs.h"
#include "quant/graph/weight_quantizer.h"
#include "quant/schemes/linear.h"

namespace qtk::quant::algos {

// The parameter groups of one matrix W_g. In every layout qtk writes (per
// tensor, per output channel, per block along the reduction axis) the
// columns of a row split into the same groups in every row, so an element's
// parameter is row_params[r][col_group[c]].
struct MatrixGrid {
  int64_t rows = 0, cols = 0, groups_per_row = 1;
  std::vector<int32_t> col_group;                // per column: its group within the row
  std::vector<std::vector<int32_t>> members;     // per group within a row: its columns
  std::vector<int64_t> row_params;               // rows x groups_per_row: index into the tensor's parameters
  bool params_shared_by_rows = false;            // per tensor: one parameter for several rows
  int64_t param(int64_t r, int64_t c) const { return row_params[r * groups_per_row + col_group[c]]; }
};

// The grid of group g of a weight with this geometry under `layout`; an
// error if the layout does not split rows that way.
Expected<MatrixGrid> matrix_grid(const LayerGeometry& geo, int64_t g, const Shape& weight_shape,
                                 const ParamLayout& layout);

// Code of v on the grid of p (linear or log2 levels, saturating), and back.
int32_t quantize_code(float v, const QParams& p, const QuantConfig& c);
float dequantize_code(int32_t code, const QParams& p, const QuantConfig& c);

// The RTN parameters of q (as quantize_weight chose them), one per group.
std::vector<QParams> weight_params(const QuantizedWeight& q);

// Replaces q's parameters and codes (flat, in w's layout) with an
// algorithm's, recomputing the dequantized values and the SQNR. Fails,
// naming the problem, if a scale or a dequantized value is not finite.
Status store_codes(QuantizedWeight& q, const Tensor& w, const std::vector<QParams>& params,
                   const std::vector<int32_t>& codes, const QuantConfig& c);

}  // namespace qtk::quant::algos
