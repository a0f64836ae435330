// Public API: post-training quantization of a float ONNX model.
//
//   qtk::QuantConfig cfg;                       // int8 per-channel weights, uint8 static activations
//   auto calib = qtk::CalibrationData{{images}}; // one tensor per model input, samples along axis 0
//   auto result = qtk::quantize(model, cfg, calib);
//   qtk::save_model(result->model, "model.int8.onnx");
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "qtk/model.h"
#include "qtk/status.h"
#include "qtk/tensor.h"
#include "quant/observers/observer.h"
#include "quant/schemes/qformat.h"

namespace qtk {

enum class Granularity { kPerTensor, kPerChannel, kPerGroup };
enum class Mapping { kLinear, kLog2 };
enum class ActivationMode { kStatic, kDynamic, kWeightOnly };
enum class ExportFormat { kQDQ, kQOperator };
// How weights are rounded to their grid (scales come from min/max or the
// clipping search in every case):
//   kRtn       round to nearest, each weight on its own (plus bias correction);
//   kGptq      GPTQ (Frantar et al. 2022): column by column, pushing each
//              rounding error onto the columns not yet quantized through the
//              inverse Hessian of the layer's calibration inputs;
//   kAdaRound  AdaRound (Nagel et al. 2020): learned up/down rounding that
//              reconstructs each layer's calibration outputs;
//   kAuto      kRtn for weights of 7 bits and more, the measured best choice
//              below (see resolve_weight_method).
enum class WeightMethod { kAuto, kRtn, kGptq, kAdaRound };

// One layer's precision, overriding the config-wide formats for one weighted
// node (Conv/ConvTranspose/Gemm/MatMul with constant weights), by node name.
// `activations` applies to the activation tensors the node reads; a tensor
// read by several nodes with different widths gets the widest of them.
struct LayerPrecision {
  std::optional<quant::QFormat> weights;      // nullopt: QuantConfig::weight_format
  std::optional<quant::QFormat> activations;  // nullopt: QuantConfig::activation_format
  bool keep_float = false;                    // leave the node float (like `exclude`)
};

struct QuantConfig {
  // Weights
  quant::QFormat weight_format = quant::QFormat::kInt8;
  bool fp16_weights = false;  // store weights as float16 instead of integers
  bool weight_symmetric = true;
  Granularity granularity = Granularity::kPerChannel;
  int64_t group_size = 128;   // kPerGroup: block length along the reduction axis
  Mapping mapping = Mapping::kLinear;
  // Search the weight clipping range per channel/group that minimises the
  // expected output error sum_k E[x_k^2] (w_k - q_k)^2 (plain min/max when
  // false). Off by default at 4 and 8 bits, where min/max + bias correction
  // did better on the shared models (README, "Measured results"); always on
  // below 4 bits.
  bool weight_clip_search = false;
  // Bias correction (Nagel et al. 2019): add E[(W - Wq) x] to each output
  // channel's bias, with E[x] per input channel measured on calibration data,
  // so weight rounding does not shift the layer's mean output.
  bool bias_correction = true;
  // 4-bit weights (and activations) as ONNX's INT4 / UINT4 types, packed two
  // per byte on disk (needs opset 21; the model is upgraded). false: int8
  // containers, any opset.
  bool int4_types = true;
  WeightMethod method = WeightMethod::kAuto;
  // Cross-layer equalization (Nagel et al. 2019) of Conv/Gemm pairs joined
  // by Relu (or nothing) before quantizing: rescales channels so both layers
  // use similar per-channel weight ranges; the float function is unchanged.
  bool equalize = false;
  // SmoothQuant (Xiao et al. 2022; src/quant/algos/smooth_quant.h): divides
  // the outlier channels of MatMul/Gemm inputs by s_j = max|X_j|^alpha /
  // max|W_j|^(1-alpha), folded into the producer (LayerNormalization, Gemm,
  // MatMul), and multiplies the weights' input channels by s_j; the float
  // function is unchanged. Unset: quantize() decides (quantize.cpp, measured).
  std::optional<bool> smooth_quant;
  float smooth_quant_alpha = 0.5f;
  bool gptq_act_order = true;     // GPTQ: quantize columns by decreasing Hessian diagonal
  // GPTQ: first refit each layer's float weights so that, on the inputs the
  // quantized layers before it produce, they give the float model's outputs
  // (a ridge regression; src/quant/algos/refit.h), then quantize those.
  bool gptq_refit = true;
  int adaround_iterations = 1000;  // AdaRound: optimizer steps per layer

  // Activations
  ActivationMode activations = ActivationMode::kStatic;
  // Static: any format of the table. Below 8 bits, uint4/int4 are ONNX's
  // 4-bit types when int4_types (opset 21), else (and int3/int2 always) codes
  // clamped to their range in 8-bit tensors by a Clip before the Q.
  quant::QFormat activation_format = quant::QFormat::kUInt8;
  bool activation_symmetric = false;
  quant::CalibConfig calibration;  // kStatic only
  int64_t calib_batch = 64;

  ExportFormat format = ExportFormat::kQDQ;
  // kQOperator: the accuracy_level of the com.microsoft MatMulNBits written
  // for weight-only 4-bit per-group MatMul/Gemm. 0: unset (float A); 4: A
  // quantized to int8 per block at run time (faster; qtk's and ONNX Runtime's
  // int8 kernels, within A's int8 rounding of the float result).
  int64_t nbits_accuracy_level = 0;
  std::vector<std::string> exclude;  // node names or op types left in float
  // Leave the first and the last weighted layers (Conv/ConvTranspose/Gemm/
  // MatMul with constant weights) in float: the layers most sensitive to
  // quantization in small classifiers. First: no weighted layer before it on
  // a path from an input; last: none after it on a path to an output (a
  // model with two inputs or two heads has two of each).
  bool float_first_last = false;
  // Per-layer overrides by node name (mixed precision; see LayerPrecision).
  std::map<std::string, LayerPrecision> layer_precision;
  // First and last weighted layers (as for float_first_last: one per input
  // and output path) at int8 weights and 8-bit activations (through
  // layer_precision; an explicit entry for them wins). Unset: on when static
  // activations are narrower than 8 bits, where those layers cost the most
  // accuracy (README, W4A4 rows).
  std::optional<bool> first_last_8bit;
  int threads = 1;                   // for calibration runs

  // Called as work advances (stage "calibrate": samples done of total;
  // "gptq" / "adaround": layers done of total).
  std::function<void(const std::string& stage, int64_t done, int64_t total)> progress;
};

// Representative inputs: one tensor per runtime input of the model, all with
// the same number of samples along axis 0.
struct CalibrationData {
  std::vector<Tensor> inputs;
};

struct TensorQuantReport {
  std::string tensor;
  std::string node;      // consumer (weights) or producer (activations)
  std::string op_type;
  std::string kind;      // "weight", "activation", "bias"
  std::string scheme;    // e.g. "int8 sym per-channel(axis 0)"
  float scale_min = 0.f, scale_max = 0.f;
  int64_t zero_point_min = 0, zero_point_max = 0;
  float range_min = 0.f, range_max = 0.f;  // activations: calibrated clip range
  double sqnr_db = 0.0;                    // weights: on the tensor; activations: on calibration data
  std::string method;                      // weights: "rtn", "gptq", "adaround" (as run for this tensor)
  double method_seconds = 0.0;             // weights: time the rounding method took for this tensor
};

struct QuantReport {
  std::vector<TensorQuantReport> tensors;
  std::vector<std::string> float_nodes;  // "name (OpType): why it stays float"
  std::vector<std::string> warnings;
  std::vector<std::string> notes;        // choices made for the user (e.g. first/last layers at 8 bits)
  int64_t calib_samples = 0;
  int64_t nonfinite_skipped = 0;
  double calib_seconds = 0.0;
  double quantize_seconds = 0.0;
  std::string method;           // the weight method that ran ("rtn", "gptq", "adaround"; auto resolved)
  bool equalized = false;       // cross-layer equalization ran
  double method_seconds = 0.0;  // GPTQ/AdaRound stage, including its calibration passes (part of quantize_seconds)
};

// The method `config.method` stands for with these weights (kAuto resolved).
WeightMethod resolve_weight_method(const QuantConfig& config);
const char* weight_method_name(WeightMethod m);

// Activation ranges by tensor name: what calibration produced, and what a
// calibration cache holds so a re-run does not calibrate again.
using ActivationRanges = std::map<std::string, quant::ObservedRange>;

struct QuantResult {
  Model model;
  QuantReport report;
  ActivationRanges ranges;  // calibrated (or cached) ranges, for a calibration cache
};

// Quantizes a float model. With `cached_ranges`, tensors found there are not
// calibrated again (calib may then be empty if it covers every tensor).
Expected<QuantResult> quantize(const Model& float_model, const QuantConfig& config, const CalibrationData& calib,
                               const ActivationRanges* cached_ranges = nullptr);

}  // namespace qtk
