// What `qtk quantize` reports: the settings it ran with, the library's
// QuantReport, file sizes and (with --eval) accuracy before and after,
// rendered as text or as JSON with the same content.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "eval/classifier_eval.h"
#include "qtk/quantize.h"

namespace qtk::cli {

struct QuantizeSettings {
  std::string weights = "int8";  // a signed format name, or "fp16"
  bool weight_symmetric = true;
  std::string granularity = "channel";  // "tensor" | "channel" | "group:N"
  std::string mapping = "linear";
  bool weight_clip_search = false;
  bool bias_correction = true;
  std::string method = "auto";  // as asked: auto|rtn|gptq|adaround (the report holds what ran)
  bool equalize = false;
  std::string activations = "uint8";  // a format name, "dynamic" or "float"
  bool calibrated = true;             // static activations: ranges come from calibration
  std::string calibrate = "minmax";   // calib_method_name()
  std::string calib = "fashion-mnist:train";
  int64_t calib_samples = 512;  // requested; 0 = all
  uint64_t calib_seed = 0;
  std::string calib_cache;  // path, or empty
  std::string format = "qdq";
  std::vector<std::string> exclude;
  int64_t threads = 1;
};

struct EvalComparison {
  std::string data;  // data set spec
  // after: the written QDQ graph with float kernels between Q/DQ pairs (the
  // accuracy any QDQ runtime's simulation gets); integer: the same file on
  // qtk's integer runtime (SessionOptions::integer), whose speed is the one
  // a user of qtk gets.
  eval::EvalResult before, after, integer;
};

struct QuantizeSummary {
  std::string input, output;
  uint64_t size_before = 0, size_after = 0;
  QuantizeSettings settings;
  QuantReport report;
  // "loaded" (ranges came from the cache), "written" (calibrated, then
  // saved), or empty without --calib-cache.
  std::string cache_status;
  size_t cache_ranges_used = 0;  // activation ranges taken from the cache
  size_t ranges_calibrated = 0;  // activation ranges calibrated in this run
  std::optional<EvalComparison> eval;
};

std::string render_quantize_text(const QuantizeSummary& s);
std::string render_quantize_json(const QuantizeSummary& s);

}  // namespace qtk::cli
