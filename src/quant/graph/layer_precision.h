// Per-layer precision (QuantConfig::layer_precision, first/last layer at
// 8 bits): which format each weighted node's weights and each quantized
// activation tensor get. annotate() applies it; nothing here edits a graph.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/quantize.h"

namespace qtk::quant {

// The first and last weighted layers (Conv/ConvTranspose/Gemm/MatMul with a
// constant weight), in graph order: every one with no weighted layer before
// it on any path from the inputs, and every one with none after it on any
// path to the outputs. So a two-input model (siamese towers, both applying
// the same first conv) has a first layer per input, and a model with
// several heads a last layer per head. Empty when the graph has none.
std::vector<std::string> first_last_weighted(const ir::Graph& g);

// Whether QuantConfig::first_last_8bit is in effect: as set, or (unset) when
// static activations are narrower than 8 bits.
bool first_last_8bit_on(const QuantConfig& c);

// Whether below-8-bit static activation formats apply only to the inputs of
// weighted layers (the integer GEMM inputs, as W4A4 means in BRECQ/QDrop),
// every other quantized tensor (residual adds, softmax, attention MatMuls
// between activations, graph outputs) taking the 8-bit version. On when
// static activations are narrower than 8 bits, unless first_last_8bit is set
// false: that asks for uniform formats, every layer and tensor at the
// config's width (bench/quant_accuracy.sh, "all layers 4-bit" row).
bool low_bit_gemm_inputs_only(const QuantConfig& c);

// The 8-bit format of the same signedness as `f` (uint4 -> uint8, int4/int3/int2 -> int8).
QFormat widened_to_8bit(QFormat f);

// The wider of two formats (more bits; on a tie `a`).
QFormat wider(QFormat a, QFormat b);

struct ResolvedPrecision {
  std::map<std::string, LayerPrecision> layers;  // node name -> precision (user entries + first/last 8-bit)
  std::vector<std::string> notes;                // report lines (what first/last 8-bit did)
  std::vector<std::string> warnings;             // names that match no node, overrides that cannot apply
};

// The user's layer_precision plus, when first_last_8bit is on, int8 weights
// and 8-bit activations on the first and last weighted layer (a user entry
// for such a layer wins; float_first_last leaves them float instead).
ResolvedPrecision resolve_layer_precision(const ir::Graph& g, const QuantConfig& c);

// Checks the values of config.layer_precision against the rest of the config
// (formats each mode can hold); errors name the node.
Status check_layer_precision(const QuantConfig& c);

}  // namespace qtk::quant
