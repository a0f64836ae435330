// Per-layer sensitivity to quantization: quantize one weighted layer at a
// time (its weights, then its input/output activations), run the model on a
// validation subset and measure how far the outputs move from the float
// model's (output SQNR, softmax KL, accuracy). Activation ranges are
// calibrated once and shared by every trial.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qtk/quantize.h"
#include "quant/sensitivity/eval_set.h"

namespace qtk::quant::sensitivity {

struct WeightedLayer {
  std::string node;
  std::string op_type;
  int64_t params = 0;  // weight values (not bias)
};

// The model as quantize() sees it: optimized (BN folded, constants folded),
// every node named (layers are addressed by node name).
Expected<Model> prepare_model(const Model& model);
// Conv/ConvTranspose/Gemm/MatMul nodes with a constant weight, in graph order.
std::vector<WeightedLayer> weighted_layers(const Model& prepared);

// `base` restricted to one layer: every other node is excluded (left float).
// A Relu/Clip reading only the layer's output stays in, so the layer's output
// range is the fused one a full quantization uses.
QuantConfig only_layer_config(const Model& prepared, const QuantConfig& base, const std::string& node);

// What the sweeps and the mixed-precision search share: the prepared model,
// the float reference outputs, the calibrated ranges and the small
// calibration subset each trial uses for weight statistics.
struct TrialContext {
  Model prepared;
  EvalSet val;
  Tensor reference;       // float outputs on val
  double float_accuracy = -1.0;
  CalibrationData stats;  // for bias correction / clipping in each trial
  ActivationRanges ranges;
};

struct TrialResult {
  OutputMetrics metrics;
  QuantResult quantized;
};

// `n` rows of every input, evenly spread (n <= 0 or n >= rows: all).
CalibrationData calibration_subset(const CalibrationData& calib, int64_t n);

// Calibrates `config`'s activation ranges once on `calib` (all of it) and
// computes the float reference. `stats_samples` rows of calib are kept for
// trials (0: all).
Expected<TrialContext> make_trial_context(const Model& model, const QuantConfig& config, const CalibrationData& calib,
                                          EvalSet val, int64_t stats_samples, int threads);
// Quantizes ctx.prepared with `config` (cached ranges) and measures it.
Expected<TrialResult> quantize_and_measure(const TrialContext& ctx, const QuantConfig& config, int threads = 1);

struct SensitivityOptions {
  QuantConfig config;  // the scheme each layer is quantized with (weights: the formats below)
  std::vector<QFormat> weight_formats;  // swept per layer; empty: config.weight_format
  bool sweep_activations = true;        // only with static activations
  bool keep_method = false;             // false: round to nearest in the sweeps (fast)
  int64_t stats_samples = 128;
  int threads = 1;                      // trials run in parallel, one thread each
  std::function<void(int64_t done, int64_t total)> progress;
};

struct LayerSensitivity {
  WeightedLayer layer;
  std::vector<std::pair<QFormat, OutputMetrics>> weights;  // one per swept format, in order
  std::optional<OutputMetrics> activations;
};

struct SensitivityReport {
  std::vector<LayerSensitivity> layers;  // graph order
  double float_accuracy = -1.0;          // -1 without labels
  int64_t samples = 0;
  int64_t trials = 0;
  double seconds = 0.0;
};

Expected<SensitivityReport> analyze_sensitivity(const TrialContext& ctx, const SensitivityOptions& options);

// Lower is more sensitive: the worst output SQNR over the layer's trials.
double sensitivity_score(const LayerSensitivity& s);

// Runs fn(0..n-1) on up to `threads` threads; the first error wins.
Status parallel_trials(int64_t n, int threads, const std::function<Status(int64_t)>& fn);

}  // namespace qtk::quant::sensitivity
