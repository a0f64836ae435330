// `qtk quantize --target-bits B / --target-drop P --val SPEC`: automatic
// mixed precision (src/quant/sensitivity/mixed_precision.h), parsed and
// reported here so cmd_quantize.cpp only branches to it.
#pragma once

#include <optional>
#include <string>

#include "cli.h"
#include "qtk/quantize.h"

namespace qtk::cli {

struct MixedPrecisionRequest {
  std::optional<double> target_bits;
  std::optional<double> target_drop;
  std::string val;  // validation data spec
};

// The options cmd_quantize adds to its table for this.
#define QTK_MIXED_PRECISION_OPTIONS                                                                              \
  {"--target-bits", "B", "mixed precision: choose per-layer weight widths (8/4/3/2 bits or float) for at most B " \
                         "average weight bits, weighted by parameter count (needs --val)"},                       \
  {"--target-drop", "P", "mixed precision: lose at most P accuracy points on --val (a labelled data set)"},       \
  {"--val", "SPEC", "with --target-*: validation data the choice is measured on (with --limit N: its first N)"}

// Usage errors for the mixed-precision options; `out` stays empty when none is given.
Outcome parse_mixed_precision(const ParsedArgs& args, std::optional<MixedPrecisionRequest>& out);

// Chooses the widths, quantizes, and fills `result` with the chosen model;
// `text` and `json` describe the choice (json: one "mixed_precision" member).
Outcome run_mixed_precision(const MixedPrecisionRequest& req, const Model& model, const QuantConfig& config,
                            const CalibrationData& calib, int64_t limit, int64_t threads, QuantResult& result,
                            std::string& text, std::string& json);

// `report_json` (one object) with the member `member_json` ("\"key\": {...}") added at its end.
std::string add_json_member(const std::string& report_json, const std::string& member_json);

}  // namespace qtk::cli
