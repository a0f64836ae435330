// Quantization-aware training (QAT) on top of a post-training quantized
// (QDQ) model: to_qat_model() turns the QDQ graph into a float graph the
// training engine fine-tunes, with qtk.FakeQuant nodes (grad_ops_quant.cpp)
// wherever the QDQ model rounds:
//   weight  DequantizeLinear(codes, s, zp)  -> FakeQuant(W, s', zp), W = the
//           dequantized PTQ weights (so GPTQ/AdaRound rounding is the start)
//           and s' = r * s with r learnable (LSQ), starting at 1;
//   activation [Clip ->] QuantizeLinear -> DequantizeLinear -> FakeQuant with
//           the same code range and a learnable scale;
//   bias    int32 DequantizeLinear -> a float (trainable) bias.
// from_qat_model() writes the trained values back into the PTQ model's
// structure: weights re-quantized to their format with the learned scales,
// activation scales (and code Clips) updated, biases re-quantized to int32
// at s_x * s_w. The result is a standard QDQ model.
//
// BatchNormalization is folded into the convolutions by the load passes
// before PTQ, so QAT trains with frozen statistics: the deployed graph has no
// BatchNormalization, and re-estimating statistics on fake-quantized
// activations would change the scales the weights were quantized with.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/quantize.h"
#include "qtk/status.h"

namespace qtk::train {

// One place the QDQ model rounds, and where its trainable values live in the
// QAT model.
struct QatTensor {
  enum class Kind { kWeight, kActivation, kBias };
  Kind kind = Kind::kWeight;
  std::string dq_node;   // the DequantizeLinear's node name in the QDQ model
  std::string value;     // kWeight/kBias: the float initializer in the QAT model
  // kWeight/kActivation: the learnable relative scale (starts at 1) and the
  // PTQ scale it multiplies, both initializers of the QAT model.
  std::string scale, scale_base;
  int64_t qmin = 0, qmax = 0;  // code range (kWeight/kActivation)
};

struct QatModel {
  ir::Model model;      // float graph with qtk.FakeQuant nodes, ready for TrainGraph
  ir::Model qdq;        // the QDQ model it came from
  std::vector<QatTensor> tensors;
};

// Builds the QAT model from a QDQ model. `report` (the PTQ report) gives the
// formats of weights stored in wider containers (int2/int3 in int8); without
// it, weights use their storage type's full range.
Expected<QatModel> to_qat_model(const ir::Model& qdq, const QuantReport* report = nullptr);

// The QDQ model with the trained values of `trained` (a TrainGraph::to_model()
// of qat.model) written in.
Expected<ir::Model> from_qat_model(const QatModel& qat, const ir::Model& trained);

}  // namespace qtk::train
