#include "quant/calib_cache.h"

#include <cmath>

#include "core/json.h"
#include "data/file_io.h"

namespace qtk::quant {
namespace {

// Calibration caches are small; a cap keeps a wrong path (say, a model file)
// from being read whole into a JSON tree.
constexpr size_t kMaxCacheBytes = size_t{256} << 20;

bool valid_range(const ObservedRange& r) { return std::isfinite(r.min) && std::isfinite(r.max) && r.min <= r.max; }

}  // namespace

Expected<std::string> serialize_calibration_cache(const CalibrationCache& cache) {
  JsonWriter w;
  w.begin_object();
  w.key("qtk_calibration").value(kCalibrationCacheVersion);
  w.key("method").value(cache.method);
  w.key("samples").value(cache.samples);
  w.key("model").value(cache.model);
  if (!cache.activations.empty()) w.key("activations").value(cache.activations);
  w.key("ranges").begin_object();
  for (const auto& [name, r] : cache.ranges) {
    if (!valid_range(r))
      return invalid_argument("range of '" + name + "' is [" + json_number(r.min) + ", " + json_number(r.max) +
                              "], not finite with min <= max");
    w.key(name).begin_array(true).value(r.min).value(r.max).end_array();
  }
  w.end_object();
  w.end_object();
  return w.str();
}

Expected<CalibrationCache> parse_calibration_cache(std::string_view text, const std::string& what) {
  JsonParseLimits limits;
  limits.max_depth = 16;
  limits.max_bytes = kMaxCacheBytes;
  QTK_ASSIGN_OR_RETURN(JsonValue doc, parse_json(text, what, limits));
  const std::string bad = what + ": not a qtk calibration cache: ";
  if (!doc.is_object()) return parse_error(bad + "the document is " + JsonValue::type_name(doc.type()) + ", not an object");
  const JsonValue* version = doc.find("qtk_calibration");
  int64_t v = 0;
  if (!version || !version->as_int64(v)) return parse_error(bad + "no integer \"qtk_calibration\" version field");
  if (v != kCalibrationCacheVersion)
    return unsupported(what + ": calibration cache version " + std::to_string(v) + " (this qtk reads version " +
                       std::to_string(kCalibrationCacheVersion) + ")");

  CalibrationCache cache;
  const JsonValue* method = doc.find("method");
  if (!method || !method->is_string()) return parse_error(bad + "\"method\" must be a string");
  cache.method = method->as_string();
  const JsonValue* samples = doc.find("samples");
  if (!samples || !samples->as_int64(cache.samples) || cache.samples < 0)
    return parse_error(bad + "\"samples\" must be a non-negative integer");
  if (const JsonValue* model = doc.find("model")) {
    if (!model->is_string()) return parse_error(bad + "\"model\" must be a string");
    cache.model = model->as_string();
  }
  if (const JsonValue* act = doc.find("activations")) {
    if (!act->is_string()) return parse_error(bad + "\"activations\" must be a string");
    cache.activations = act->as_string();
  }
  const JsonValue* ranges = doc.find("ranges");
  if (!ranges || !ranges->is_object()) return parse_error(bad + "\"ranges\" must be an object");
  for (const auto& [name, r] : ranges->members()) {
    const std::string where = what + ": range of '" + name + "'";
    if (!r.is_array() || r.items().size() != 2 || !r.items()[0].is_number() || !r.items()[1].is_number())
      return parse_error(where + " must be [min, max]");
    ObservedRange range{r.items()[0].as_float(), r.items()[1].as_float()};
    if (!valid_range(range)) return parse_error(where + " must be finite floats with min <= max");
    cache.ranges.emplace(name, range);
  }
  return cache;
}

Status write_calibration_cache(const CalibrationCache& cache, const std::string& path) {
  auto text = serialize_calibration_cache(cache);
  if (!text.ok()) return text.status().with_context(path);
  return data::write_file_atomic(path, *text);
}

Expected<CalibrationCache> read_calibration_cache(const std::string& path) {
  QTK_ASSIGN_OR_RETURN(std::string bytes, data::read_file_bytes(path));
  return parse_calibration_cache(bytes, path);
}

}  // namespace qtk::quant
