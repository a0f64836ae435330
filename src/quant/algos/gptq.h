// GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for
// Generative Pre-trained Transformers"): quantizes a weight matrix column by
// column; each column's rounding error is spread over the columns not yet
// quantized so that the layer output on the calibration inputs, ||W X - Q X||,
// changes least. The propagation reads rows of U, the upper Cholesky factor
// of the damped inverse Hessian (H = sum x x^T), and is applied lazily: exactly
// within a block of columns, then to the rest with one GEMM per block.
#pragma once

#include <cstdint>
#include <vector>

#include "qtk/quantize.h"
#include "quant/algos/weight_grid.h"

namespace qtk::rt {
class ThreadPool;
}

namespace qtk::quant::algos {

struct GptqOptions {
  int64_t block = 128;  // columns per lazy batch update
  double damp = 0.01;   // lambda = damp * mean(diag H), raised x10 while Cholesky fails
  bool act_order = true;  // columns by decreasing diag(H) (the most excited inputs first)
  int max_damp_raises = 8;
};

struct GptqInfo {
  double damp = 0.0;        // lambda finally used (absolute)
  int damp_raises = 0;      // times lambda was raised because the Hessian was not positive definite
  int64_t dead_columns = 0;  // inputs that were always 0 in calibration (rounded to nearest)
};

// Quantizes W [rows x cols] (row-major) in place: on return w holds the
// dequantized values and codes[r * cols + c] the codes. `h` is the sum of
// x x^T over calibration rows (cols x cols; modified). Parameters: params[p]
// for p = grid.param(r, c); groups with fitted[p] == 0 are fitted when GPTQ
// first reaches one of their columns, from their values at that point
// (weighted by diag(H) for the clipping search), as in the paper's
// group-wise variant. Fails only if the Hessian stays indefinite after
// max_damp_raises (the caller then rounds to nearest).
Expected<GptqInfo> gptq_quantize_matrix(float* w, std::vector<float>& h, const MatrixGrid& grid,
                                        std::vector<QParams>& params, std::vector<uint8_t>& fitted,
                                        const QuantConfig& config, const GptqOptions& options, int32_t* codes,
                                        rt::ThreadPool* pool);

}  // namespace qtk::quant::algos
