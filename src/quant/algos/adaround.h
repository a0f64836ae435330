// AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for
// Post-Training Quantization"): each weight is rounded down or up, chosen by
// learning a continuous variable V per weight, h(V) = clip(sigmoid(V) *
// (zeta - gamma) + gamma, 0, 1), that minimizes the layer's output
// reconstruction error on calibration rows,
//   || Y - X (s * (floor(W / s) + h(V)))^T ||^2 / rows
//     + lambda * sum (1 - |2 h(V) - 1|^beta),
// with beta annealed from 20 to 2 after a warm-up so that h ends at 0 or 1.
// Y is the float layer's output (on float inputs: the "asymmetric"
// reconstruction, when X comes from the already-quantized layers before).
// The error is expanded as tr(Wq G Wq^T) - 2 tr(C Wq^T) + const with
// G = X^T X / n and C = Y^T X / n, so every step uses all n rows (an exact
// gradient 2 (Wq G - C), one GEMM) and memory does not grow with n.
#pragma once

#include <cstdint>
#include <vector>

#include "qtk/quantize.h"
#include "quant/algos/weight_grid.h"

namespace qtk::rt {
class ThreadPool;
}

namespace qtk::quant::algos {

struct AdaRoundOptions {
  int iterations = 1000;
  float learning_rate = 1e-2f;  // Adam
  float reg_lambda = 0.01f;
  float beta_start = 20.f, beta_end = 2.f;
  float warmup = 0.2f;  // fraction of iterations without the rounding regularizer
};

// Rows below which AdaRound is not attempted for a layer (it would fit noise):
// the caller rounds to nearest and warns.
inline constexpr int64_t kAdaRoundMinRows = 64;

// The layer's calibration rows, in whichever form is cheaper per step:
// gram = X^T X / n (cols x cols) with cross = Y^T X / n (rows x cols), costing
// rows * cols^2 per step; or the rows themselves, x [n x cols] and
// y [n x rows], costing 2 n rows cols (better when n < cols / 2, e.g. a
// wide fully connected layer seen on a few hundred samples).
struct ReconstructionData {
  const float* gram = nullptr;
  const float* cross = nullptr;
  const float* x = nullptr;
  const float* y = nullptr;
  int64_t n = 0;
};

// w [rows x cols] float weights; params (linear grid only) per grid.param.
// Writes codes[r * cols + c], each floor(w / s) + zp or that + 1 (saturated
// to the format).
Status adaround_matrix(const float* w, const MatrixGrid& grid, const std::vector<QParams>& params,
                       const ReconstructionData& data, const QuantConfig& config, const AdaRoundOptions& options,
                       int32_t* codes, rt::ThreadPool* pool);

}  // namespace qtk::quant::algos
