// Runs a float model over calibration data and observes chosen tensors.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/quantize.h"

namespace qtk::quant {

struct CalibrationResult {
  ActivationRanges ranges;
  std::map<std::string, Tensor> first_batch;  // one batch of each tensor, for SQNR in the report
  // Per-channel mean of x^2 for the tensors asked for in `moment_axes`.
  std::map<std::string, std::vector<float>> channel_sq_mean;
  std::map<std::string, std::vector<float>> channel_mean;  // per-channel mean of x, same tensors
  int64_t samples = 0;
  int64_t nonfinite = 0;
};

// Observes `tensors` (float32 values produced while running `model`) with the
// config's calibration method, batch by batch; memory stays bounded by the
// observers' state plus one batch. For each tensor in moment_axes (tensor ->
// channel axis, negative counts from the end) it also accumulates the
// per-channel mean of x^2, which weight quantization uses as importance.
// Ranges are chosen for config.activation_format, or for the format
// `formats` gives a tensor (per-layer precision).
Expected<CalibrationResult> calibrate(const ir::Model& model, const std::vector<std::string>& tensors,
                                      const CalibrationData& data, const QuantConfig& config,
                                      const std::map<std::string, int>& moment_axes = {},
                                      const std::map<std::string, QFormat>& formats = {});

}  // namespace qtk::quant
