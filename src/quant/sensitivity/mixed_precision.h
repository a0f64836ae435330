// Automatic mixed precision: per-layer weight widths (8/4/3/2 bits, or float)
// chosen from a sensitivity sweep so that the model meets an average-bits
// budget and/or an accuracy-drop limit, each candidate checked by a real
// quantization and evaluation.
//
// The search: weight-only sweeps give each layer's output noise-to-signal
// ratio at every width (noise from different layers roughly adds). Starting
// from all float (or all 8-bit), a greedy walk repeatedly lowers the layer
// whose extra noise per bit saved (bits x parameters) is smallest, down to
// all 2-bit; this orders the candidates from most to least precise. The
// first candidate within the bit budget is taken (then layers are raised
// again while the budget allows: raise_within_budget), or, with an accuracy
// target, the lowest-bit candidate whose MEASURED drop holds (binary search
// along the walk). With activations below 8 bits and an accuracy target not
// met, the layers whose activations matter most (their own sweep) get 8-bit
// activations, as few as the measured drop allows. A target that cannot be
// met is reported as not met, with the closest candidate.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "quant/sensitivity/sensitivity.h"

namespace qtk::quant::sensitivity {

struct MixedPrecisionOptions {
  std::optional<double> target_bits;  // average weight bits (float = 32), weighted by parameter count
  std::optional<double> target_drop;  // accuracy points (1.0 = one point) lost vs float on the validation set
  std::vector<QFormat> weight_formats = {QFormat::kInt8, QFormat::kInt4, QFormat::kInt3, QFormat::kInt2};
  bool allow_float = true;            // a layer may stay float (32 bits in the average)
  int64_t sweep_stats_samples = 128;  // calibration rows for weight statistics in the sweeps
  int threads = 1;
  // stage "sweep": trials done of total; "verify": candidates checked so far (total = upper bound).
  std::function<void(const std::string& stage, int64_t done, int64_t total)> progress;
};

struct LayerAssignment {
  WeightedLayer layer;
  std::optional<QFormat> weights;  // nullopt: the layer stays float
  int bits = 32;
  double sweep_sqnr_db = 200.0;    // output SQNR with only this layer's weights at this width (sweep, RTN)
  std::optional<QFormat> activations;  // set: widened to 8 bits (config's activations below 8 bits)
};

struct Candidate {
  double average_bits = 0.0;
  double accuracy = -1.0;
  double sqnr_db = 0.0;
};

struct MixedPrecisionResult {
  std::vector<LayerAssignment> layers;  // graph order
  double average_bits = 0.0;
  double float_accuracy = -1.0;         // on the validation set; -1 without labels
  OutputMetrics metrics;                // of the chosen model, measured on the validation set
  bool met = false;
  std::string verdict;                  // one sentence: met, or what was missed and by how much
  std::vector<Candidate> checked;       // every candidate quantized and measured, in search order
  QuantResult quantized;                // the chosen model
  SensitivityReport sweep;
  double seconds = 0.0;
};

// `config` is the scheme of every quantized layer (granularity, activation
// format, method, ...): the result sets its layer_precision. `val` must be
// labelled when target_drop is set.
Expected<MixedPrecisionResult> quantize_mixed_precision(const Model& model, const QuantConfig& config,
                                                        const CalibrationData& calib, EvalSet val,
                                                        const MixedPrecisionOptions& options);

// The greedy walk alone (for tests): assignments as option indices per layer,
// from the most precise to the least; `noise[l][k]` is layer l's
// noise-to-signal ratio at option k, `bits[k]` the option's width.
std::vector<std::vector<int>> precision_walk(const std::vector<std::vector<double>>& noise,
                                             const std::vector<int>& bits, const std::vector<int64_t>& params);

// Spends the bits `state` leaves under `budget` (average bits): repeatedly
// raises the layer with the most noise removed per bit added while the
// average stays within the budget (the walk lowers in steps, so its first
// point under a budget often undershoots it).
std::vector<int> raise_within_budget(std::vector<int> state, const std::vector<std::vector<double>>& noise,
                                     const std::vector<int>& bits, const std::vector<int64_t>& params, double budget);

}  // namespace qtk::quant::sensitivity
