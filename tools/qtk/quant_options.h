// The quantization scheme options that qtk quantize and qtk qat share: their
// specs (for the options tables and --help) and their parsing into a
// QuantConfig.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "cli.h"
#include "qtk/quantize.h"
#include "quantize_report.h"

namespace qtk::cli {

// --weights ... --calibrate: formats, granularity, rounding method, ranges.
#define QTK_QUANT_SCHEME_OPTIONS \
    {"--weights", "int8|int7|int4|int3|int2|fp16|auto", "weight format (default int8; int7: exact on AVX2 int8 kernels, see README; auto: int7 where qtk's integer kernels here are AVX2 without VNNI, else int8)"}, \
    {"--activations", "uint8|int8|int16|uint16|uint4|int4|int3|int2|dynamic|float", \
     "activation format; dynamic: uint8 scales computed at run time; float: weight-only (default uint8). " \
     "uint4/int4 use ONNX's 4-bit types (opset 21; --int8-containers: 8-bit tensors clamped to 16 levels); " \
     "int3/int2 always use 8-bit tensors clamped to their levels"}, \
    {"--granularity", "tensor|channel|group:N", \
     "one weight scale per tensor, per output channel, or per N values along the reduction axis (default channel; " \
     "channel raises an opset-11/12 model to 13, group to 21; a MatMul weight with batch dimensions stays per tensor)"}, \
    {"--symmetric", "", "symmetric weights, zero point 0 (the default)"}, \
    {"--asymmetric", "", "asymmetric weights, with a zero point per scale"}, \
    {"--mapping", "linear|log2", "weight levels evenly spaced or powers of two (default linear)"}, \
    {"--weight-clip-search", "", "search each weight group's clipping range (output-error weighted) instead of plain min/max; always on below 4 bits"}, \
    {"--no-bias-correction", "", "leave biases as they are (no correction of the mean shift weight rounding causes)"}, \
    {"--int8-containers", "", "store 4-bit weights in int8/uint8 tensors (any opset) instead of ONNX's packed INT4/UINT4 (opset 21)"}, \
    {"--float-first-last", "", "leave the first and the last Conv/Gemm/MatMul layers in float (one per input / output path: the layers with no weighted layer before / after them)"}, \
    {"--first-last-8bit", "", \
     "int8 weights and 8-bit activations for the first and the last Conv/Gemm/MatMul layers (on by default when " \
     "activations are below 8 bits)"}, \
    {"--no-first-last-8bit", "", \
     "uniform formats below 8 bits: the first and last layer, and activations read by no Conv/Gemm/MatMul weight " \
     "(residual adds, softmax, attention; 8-bit by default), take the same formats as the others"}, \
    {"--layer-precision", "FILE.json", \
     "per-layer formats by node name: {\"conv1\": {\"weights\": \"int8\", \"activations\": \"uint8\"}, " \
     "\"fc\": \"float\"}; a tensor read by layers of different widths gets the widest"}, \
    {"--method", "auto|rtn|gptq|adaround", \
     "how weights are rounded: rtn (to nearest), gptq (second-order error compensation), adaround (learned " \
     "rounding); auto: rtn at 8 bits, adaround below (gptq for layers too wide for it) (default auto)"}, \
    {"--equalize", "", "cross-layer equalization of Conv/Gemm pairs joined by Relu before quantizing"}, \
    {"--smooth-quant", "", \
     "SmoothQuant: move MatMul/Gemm input outliers into the weights (LayerNorm/Gemm/MatMul producers absorb 1/s)"}, \
    {"--smooth-quant-alpha", "A", "SmoothQuant migration strength in [0, 1] (implies --smooth-quant; default 0.5)"}, \
    {"--no-smooth-quant", "", "never apply SmoothQuant"}, \
    {"--calibrate", "METHOD", \
     "activation ranges: minmax, ma-minmax, percentile[:P], entropy or mse (default minmax; mse for activations " \
     "below 8 bits)"}

// --format and --exclude.
#define QTK_QUANT_EXPORT_OPTIONS \
    {"--format", "qdq|qoperator", "form of the quantized graph (default qdq)"}, \
    {"--exclude", "LIST", "comma-separated node names or op types to leave in float", true}

// Every quantization option into `cfg` (and its echo into `st`); all
// mistakes are usage errors.
Outcome config_from_args(const ParsedArgs& args, QuantConfig& cfg, QuantizeSettings& st);

// "a, b, c".
std::string known_list(const std::vector<std::string>& names);

// The seed every command draws its calibration subset with: the same data
// and sample count pick the same samples in qtk quantize, qat and analyze.
inline constexpr uint64_t kCalibSeed = 0;
// --calib SPEC: a known data set or an .npy/.npz file (a usage error otherwise).
Outcome check_calib_spec(const std::string& spec);
// The calibration inputs SPEC holds for `model` (a fixed subset of `samples`,
// 0 = all); a model with a fixed batch sets cfg.calib_batch to it.
Expected<std::vector<Tensor>> load_calibration(const Model& model, const std::string& spec, int64_t samples,
                                               QuantConfig& cfg);

}  // namespace qtk::cli
