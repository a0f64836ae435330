// Runs GPTQ or AdaRound over the weights a QuantPlan quantizes, layer after
// layer: each layer sees the inputs its quantized predecessors produce (the
// "sequential" / "asymmetric" setting of both papers), so it can make up for
// their error. Layers are processed in waves by depth (layers at the same
// depth, such as a residual block's shortcut, share one pass), and each pass
// runs only the part of the graph in front of them.
//
// The result per weight is the QuantizedWeight the QDQ writer consumes, plus
// an empirical bias correction W E[x_float] - Wq E[x_quantized] per output
// channel that also removes the mean shift of the layers before.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/quantize.h"
#include "quant/graph/annotate.h"
#include "quant/graph/weight_quantizer.h"

namespace qtk::quant {

struct AlgoWeight {
  QuantizedWeight q;
  std::vector<float> bias_delta;  // per output channel, added to the node's bias; empty: no correction
  std::string method;             // "gptq" or "adaround" (what ran on this layer)
  double seconds = 0.0;           // the algorithm on this layer (not the capture passes)
};

// By weight initializer name. Weights not in the map (unsupported layers,
// layers that fell back) are rounded to nearest by the writer as before;
// the reasons are in report.warnings.
using AlgoWeights = std::map<std::string, AlgoWeight>;

// How a layer input is quantized in the exported model (static activations),
// by tensor name: the passes feed each layer its input quantized this way, so
// the rounding is fitted to what the layer will read.
struct InputQuant {
  QParams params;
  QFormat format = QFormat::kUInt8;
};
using InputQuantMap = std::map<std::string, InputQuant>;

// method: kGptq, kAdaRound, or kAuto: AdaRound on every layer where its
// cost is moderate, GPTQ on the rest (kRtn: nothing to do); auto leaves
// layers with 8-bit weights (layer_precision) to rounding to nearest.
// Each layer uses its own weight format (WeightUse::format). importance:
// per-channel E[x^2] of the layers' inputs (as calibration measured it), for
// the clipping search of the scales the algorithms start from.
Expected<AlgoWeights> run_weight_method(const ir::Model& model, const QuantPlan& plan, const CalibrationData& calib,
                                        const QuantConfig& config, WeightMethod method,
                                        const std::map<std::string, std::vector<float>>& importance,
                                        QuantReport& report, const InputQuantMap& input_quant = {});

// --method auto's rule: grids of at least this many bits round to nearest
// (int7 RTN is within 0.03 points of AdaRound on cnn and resnet20).
inline constexpr int kAutoRoundToNearestBits = 7;

}  // namespace qtk::quant

