// Runs a model over calibration data, batch by batch, and hands chosen
// tensors to a callback: only the part of the graph that computes them runs,
// and memory stays bounded by one batch.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/quantize.h"

namespace qtk::quant::algos {

// fn(i, value, first_sample) for tensors[i] on samples [first_sample,
// first_sample + value.dim(0)). Graph inputs are handed over from the data.
using CaptureFn = std::function<Status(size_t, const Tensor&, int64_t)>;

Status capture_tensors(const ir::Model& model, const std::vector<std::string>& tensors, const CalibrationData& data,
                       const QuantConfig& config, const CaptureFn& fn);

// Number of samples in the calibration data (axis 0), or an error.
Expected<int64_t> calibration_samples(const CalibrationData& data);

}  // namespace qtk::quant::algos
