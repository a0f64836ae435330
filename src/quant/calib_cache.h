// Calibration cache: the activation ranges a calibration produced, saved as
// JSON so a re-run (other weight settings, another export format) reuses them
// instead of running the float model over the calibration data again.
//
//   {"qtk_calibration": 1, "method": "minmax", "samples": 512, "model": "cnn.onnx",
//    "activations": "uint8", "ranges": {"input": [0, 1], "conv1_out": [-3.25, 7.5]}}
//
// "activations" is optional: histogram methods (entropy, mse) choose ranges
// for a target format, so a reader can refuse ranges chosen for another.
//
// Floats are written as the shortest text that reads back as the same float,
// so a cached run is bit-identical to the run that wrote the cache.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "qtk/quantize.h"
#include "qtk/status.h"

namespace qtk::quant {

inline constexpr int64_t kCalibrationCacheVersion = 1;

struct CalibrationCache {
  std::string method;   // calib_method_name() of the method that produced the ranges
  int64_t samples = 0;  // calibration samples seen
  std::string model;    // file name of the float model (informational)
  std::string activations;  // activation format the ranges were chosen for ("uint8"); "" if unknown
  ActivationRanges ranges;
};

// Fails (kInvalidArgument) on a range that is not finite or has min > max,
// which no calibration produces and no reader would accept back.
Expected<std::string> serialize_calibration_cache(const CalibrationCache& cache);

// Strict: malformed JSON, a missing or mistyped field, a version other than 1
// (kUnsupported), a range that is not [min, max] of finite numbers with
// min <= max, are errors naming `what` (the file) and the field.
Expected<CalibrationCache> parse_calibration_cache(std::string_view text, const std::string& what);

// File versions; writing goes through a temporary file and a rename.
Status write_calibration_cache(const CalibrationCache& cache, const std::string& path);
Expected<CalibrationCache> read_calibration_cache(const std::string& path);

}  // namespace qtk::quant
