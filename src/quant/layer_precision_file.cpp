#include "quant/layer_precision_file.h"

#include "core/json.h"
#include "data/file_io.h"

namespace qtk::quant {

namespace {

constexpr size_t kMaxBytes = size_t{16} << 20;

std::string format_names() {
  std::string s;
  for (const auto& t : kQFormats) s += (s.empty() ? "" : ", ") + std::string(t.name);
  return s;
}

Expected<QFormat> format_field(const JsonValue& v, const std::string& where) {
  if (!v.is_string()) return parse_error(where + " must be a format name (" + format_names() + ")");
  auto f = qformat_from_name(v.as_string());
  if (!f) return parse_error(where + ": unknown format '" + v.as_string() + "' (choose from " + format_names() + ")");
  return *f;
}

}  // namespace

Expected<std::map<std::string, LayerPrecision>> parse_layer_precision(std::string_view text, const std::string& what) {
  JsonParseLimits limits;
  limits.max_depth = 8;
  limits.max_bytes = kMaxBytes;
  QTK_ASSIGN_OR_RETURN(JsonValue doc, parse_json(text, what, limits));
  if (!doc.is_object())
    return parse_error(what + ": layer precision must be an object of node name -> {\"weights\", \"activations\"} or "
                              "\"float\"");
  std::map<std::string, LayerPrecision> out;
  for (const auto& [node, v] : doc.members()) {
    const std::string where = what + ": node '" + node + "'";
    LayerPrecision lp;
    if (v.is_string()) {
      if (v.as_string() != "float")
        return parse_error(where + ": \"" + v.as_string() + "\" is not \"float\" nor an object with \"weights\" / "
                                   "\"activations\"");
      lp.keep_float = true;
    } else if (v.is_object()) {
      if (v.members().empty()) return parse_error(where + ": empty object (give \"weights\" and/or \"activations\")");
      for (const auto& [key, f] : v.members()) {
        if (key == "weights") {
          QTK_ASSIGN_OR_RETURN(lp.weights, format_field(f, where + " \"weights\""));
        } else if (key == "activations") {
          QTK_ASSIGN_OR_RETURN(lp.activations, format_field(f, where + " \"activations\""));
        } else {
          return parse_error(where + ": unknown key \"" + key + "\" (known: weights, activations)");
        }
      }
    } else {
      return parse_error(where + " must be \"float\" or an object with \"weights\" / \"activations\", not " +
                         JsonValue::type_name(v.type()));
    }
    out.emplace(node, lp);
  }
  return out;
}

Expected<std::map<std::string, LayerPrecision>> read_layer_precision(const std::string& path) {
  QTK_ASSIGN_OR_RETURN(std::string bytes, data::read_file_bytes(path));
  return parse_layer_precision(bytes, path);
}

}  // namespace qtk::quant
