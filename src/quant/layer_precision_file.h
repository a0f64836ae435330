// Per-layer precision as a JSON file (qtk quantize --layer-precision):
//
//   {"conv1": {"weights": "int8", "activations": "uint8"},
//    "fc":    {"weights": "int4"},
//    "gemm2": "float"}
//
// Keys are node names (as `qtk inspect` lists them); a value is an object
// with optional "weights" / "activations" format names, or "float" (the node
// stays float). Which formats a config can hold is checked by quantize().
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "qtk/quantize.h"

namespace qtk::quant {

// Strict: malformed JSON, a value of another shape, an unknown key or format
// name are errors naming `what` (the file) and the node.
Expected<std::map<std::string, LayerPrecision>> parse_layer_precision(std::string_view text, const std::string& what);

Expected<std::map<std::string, LayerPrecision>> read_layer_precision(const std::string& path);

}  // namespace qtk::quant
