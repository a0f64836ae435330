// Refits a layer's float weights to the inputs it will really see: after
// the layers before it are quantized, its inputs x_q differ from the float
// model's x_f, and W x_q no longer gives the float output W x_f. GPTQ on its
// own only keeps W x_q (its objective is ||W X_q - Q X_q||); refitting first,
//   W* = argmin (1/n) ||Y - X_q W*^T||^2 + lambda ||W* - W||^2
//      = (C + lambda W) (H + lambda I)^{-1},   H = X_q^T X_q / n, C = Y^T X_q / n,
// with Y = X_f W^T the float outputs, lets GPTQ aim at the float outputs
// (||W X_f - Q X_q||^2 = ||W X_f - W* X_q||^2 + ||(W* - Q) X_q||^2 up to the
// ridge term). lambda, relative to the mean of diag(H), shrinks W* towards W
// where the calibration rows say little (a wide layer seen on few samples).
// On the shared models this takes GPTQ at W2A8 from 12.7 to 0.8 points lost
// on resnet20 (bench/quant_accuracy.sh).
#pragma once

#include <cstdint>

namespace qtk::rt {
class ThreadPool;
}

namespace qtk::quant::algos {

inline constexpr double kRefitRidge = 0.1;  // lambda / mean(diag H); 0.01 and 1 did worse on resnet20 W2

// w [rows x cols] is replaced by W*; x [n x cols] the quantized-model input
// rows, y [n x rows] the float model's outputs on the same rows. Returns
// false (w unchanged) if the ridge system cannot be factored.
bool refit_to_float_outputs(float* w, int64_t rows, int64_t cols, const float* x, const float* y, int64_t n,
                            double ridge, rt::ThreadPool* pool);

}  // namespace qtk::quant::algos
