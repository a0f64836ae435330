// Text and JSON renderings of a `qtk quantize` run.
#include "quantize_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "cli.h"
#include "core/json.h"

namespace qtk::cli {
namespace {

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : sep) + i;
  return out;
}

std::string size_ratio(const QuantizeSummary& s) {
  if (s.size_after == 0) return "";
  const double r = static_cast<double>(s.size_before) / static_cast<double>(s.size_after);
  return r >= 1.0 ? fmt("%.2fx smaller", r) : fmt("%.2fx larger", 1.0 / r);
}

std::string weights_text(const QuantizeSettings& st) {
  if (st.weights == "fp16") return "fp16";
  std::string w = st.weights + ", " + (st.mapping == "log2" ? "log2" : st.weight_symmetric ? "symmetric" : "asymmetric");
  w += ", per-" + st.granularity;
  w += st.weight_clip_search ? ", clip search" : ", min/max (clip search below 4 bits)";
  if (st.bias_correction) w += ", bias correction";
  return w;
}

std::string activations_text(const QuantizeSettings& st) {
  if (st.activations == "float") return "float (weight-only)";
  if (st.activations == "dynamic") return "uint8 dynamic (quantized at run time)";
  return st.activations + " static, asymmetric per-tensor";
}

// Calibration serves two purposes: activation ranges (static mode) and
// input statistics for weight clipping and bias correction (any mode). A
// cache holds only the ranges, so the statistics may still need the data.
std::string calibration_text(const QuantizeSummary& s) {
  const QuantizeSettings& st = s.settings;
  const QuantReport& r = s.report;
  const std::string run = r.calib_samples > 0 ? format_count(static_cast<uint64_t>(r.calib_samples)) +
                                                    " samples of " + st.calib + fmt(" in %.3f s", r.calib_seconds)
                                              : "";
  std::string t;
  if (!st.calibrated) {
    t = "no activation ranges (" + st.activations + ")";
    if (!run.empty()) t += "; input statistics for the weights from " + run;
  } else if (s.cache_status == "loaded") {
    t = st.calibrate + " ranges: " + std::to_string(s.cache_ranges_used) + " loaded from " + st.calib_cache;
    if (s.ranges_calibrated > 0) t += ", " + std::to_string(s.ranges_calibrated) + " calibrated on " + run;
    else if (!run.empty()) t += " (range calibration skipped); input statistics for the weights from " + run;
    else t += " (calibration skipped)";
  } else {
    t = st.calibrate + " on " + (run.empty() ? std::string("no samples") : run);
    if (s.cache_status == "written") t += "; ranges written to " + st.calib_cache;
  }
  if (r.nonfinite_skipped > 0)
    t += "; " + format_count(static_cast<uint64_t>(r.nonfinite_skipped)) + " NaN/Inf values skipped";
  return t;
}

// What rounded the weights: the method that ran (auto resolved), how many
// layers it handled and how long it took; equalization when asked.
std::string method_text(const QuantizeSummary& s) {
  const QuantReport& r = s.report;
  std::string t = r.method.empty() ? std::string("rtn") : r.method;
  if (s.settings.method == "auto") t += " (chosen by auto)";
  if (!r.method.empty() && r.method != "rtn") {
    // Layers per method that ran (auto may hand wide layers to GPTQ; some
    // layers may fall back to rounding to nearest, with a warning).
    std::map<std::string, int64_t> layers;
    for (const auto& x : r.tensors)
      if (x.kind == "weight") ++layers[x.method.empty() ? "rtn" : x.method];
    std::string counts;
    for (const auto& [m, n] : layers) counts += (counts.empty() ? "" : ", ") + std::to_string(n) + " " + m;
    t += ": " + counts + fmt(" layers in %.3f s", r.method_seconds);
  }
  if (r.equalized) t += "; cross-layer equalization";
  return t;
}

std::string range_text(float lo, float hi, const char* f) {
  return lo == hi ? fmt(f, lo) : fmt(f, lo) + ".." + fmt(f, hi);
}

std::string zero_point_text(int64_t lo, int64_t hi) {
  return lo == hi ? std::to_string(lo) : std::to_string(lo) + ".." + std::to_string(hi);
}

// The library leaves an activation's SQNR at 0 when it had no calibration
// batch of that tensor to measure it on (e.g. a tensor sharing its producer's
// range, or ranges from a cache); that is "not measured", not 0 dB.
bool sqnr_measured(const TensorQuantReport& t) { return !(t.kind == "activation" && t.sqnr_db == 0.0); }

std::string sqnr_text(double db) {
  if (std::isnan(db)) return "nan";
  if (std::isinf(db)) return db > 0 ? "exact" : "-inf";
  return fmt("%.1f", db);
}

// A table with columns padded to their widest cell; the last column is not padded.
std::string table(const std::vector<std::vector<std::string>>& rows, const std::string& indent) {
  std::vector<size_t> width;
  for (const auto& r : rows)
    for (size_t c = 0; c < r.size(); ++c) {
      if (width.size() <= c) width.push_back(0);
      width[c] = std::max(width[c], r[c].size());
    }
  std::string out;
  for (const auto& r : rows) {
    std::string line = indent;
    for (size_t c = 0; c < r.size(); ++c) {
      std::string cell = r[c];
      if (c + 1 < r.size()) cell.resize(width[c] + 2, ' ');
      line += cell;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

void json_eval(JsonWriter& w, const eval::EvalResult& r) {
  w.begin_object(true);
  w.key("samples").value(r.samples).key("correct").value(r.correct).key("accuracy").value(r.accuracy);
  w.key("seconds").value(r.seconds).key("images_per_second").value(r.images_per_second);
  w.end_object();
}

}  // namespace

std::string render_quantize_text(const QuantizeSummary& s) {
  const QuantizeSettings& st = s.settings;
  const QuantReport& r = s.report;
  std::string out;
  out += "model        " + s.input + " -> " + s.output + "\n";
  out += "size         " + format_bytes(s.size_before) + " -> " + format_bytes(s.size_after) + " (" +
         format_count(s.size_before) + " -> " + format_count(s.size_after) + " bytes, " + size_ratio(s) + ")\n";
  out += "weights      " + weights_text(st) + "\n";
  out += "activations  " + activations_text(st) + "\n";
  out += "calibration  " + calibration_text(s) + "\n";
  out += "format       " + st.format + (st.exclude.empty() ? "" : ", excluding " + join(st.exclude, ", ")) + ", " +
         std::to_string(st.threads) + (st.threads == 1 ? " thread" : " threads") + "\n";
  out += "method       " + method_text(s) + "\n";
  out += "time         " + fmt("%.3f s calibration, ", r.calib_seconds) +
         fmt("%.3f s quantization", r.quantize_seconds) + "\n";

  out += "\ntensors (" + std::to_string(r.tensors.size()) + "):\n";
  std::vector<std::vector<std::string>> rows = {
      {"tensor", "kind", "op", "scheme", "scale", "zero point", "clip range", "SQNR dB"}};
  for (const auto& t : r.tensors) {
    const bool has_scale = t.scale_max > 0.f;
    rows.push_back({t.tensor, t.kind, t.op_type.empty() ? "-" : t.op_type, t.scheme,
                    has_scale ? range_text(t.scale_min, t.scale_max, "%.4g") : "-",
                    has_scale ? zero_point_text(t.zero_point_min, t.zero_point_max) : "-",
                    t.kind == "activation" ? "[" + fmt("%.4g", t.range_min) + ", " + fmt("%.4g", t.range_max) + "]" : "-",
                    sqnr_measured(t) ? sqnr_text(t.sqnr_db) : "-"});
  }
  out += r.tensors.empty() ? "  none\n" : table(rows, "  ");

  if (!r.notes.empty()) {
    out += "\nprecision choices:\n";
    for (const auto& n : r.notes) out += "  " + n + "\n";
  }
  out += "\nleft in float (" + std::to_string(r.float_nodes.size()) + "):\n";
  for (const auto& f : r.float_nodes) out += "  " + f + "\n";
  if (r.float_nodes.empty()) out += "  none\n";
  out += "\nwarnings (" + std::to_string(r.warnings.size()) + "):\n";
  for (const auto& w : r.warnings) out += "  " + w + "\n";
  if (r.warnings.empty()) out += "  none\n";

  if (s.eval) {
    const auto& e = *s.eval;
    out += "\nevaluation on " + e.data + " (" + format_count(static_cast<uint64_t>(e.before.samples)) + " samples):\n";
    auto change = [&](const eval::EvalResult& q) {
      return std::vector<std::string>{
          "", fmt("%+.4f", q.accuracy - e.before.accuracy),
          e.before.images_per_second > 0 ? fmt("%.2fx", q.images_per_second / e.before.images_per_second) : "-"};
    };
    std::vector<std::vector<std::string>> ev = {
        {"", "accuracy", "images/s"},
        {"float", fmt("%.4f", e.before.accuracy), fmt("%.1f", e.before.images_per_second)},
        {"quantized, qtk int8 runtime", fmt("%.4f", e.integer.accuracy), fmt("%.1f", e.integer.images_per_second)},
        change(e.integer),
        {"quantized, QDQ graph in float", fmt("%.4f", e.after.accuracy), fmt("%.1f", e.after.images_per_second)},
        change(e.after),
    };
    ev[3][0] = "  change";
    ev[5][0] = "  change";
    out += table(ev, "  ");
  }
  return out;
}

std::string render_quantize_json(const QuantizeSummary& s) {
  const QuantizeSettings& st = s.settings;
  const QuantReport& r = s.report;
  JsonWriter w;
  w.begin_object();
  w.key("input").value(s.input).key("output").value(s.output);
  w.key("size_before").value(s.size_before).key("size_after").value(s.size_after);
  w.key("size_ratio").value(s.size_after ? static_cast<double>(s.size_before) / static_cast<double>(s.size_after) : 0.0);

  w.key("settings").begin_object();
  w.key("weights").value(st.weights).key("weight_symmetric").value(st.weight_symmetric);
  w.key("granularity").value(st.granularity).key("mapping").value(st.mapping);
  w.key("weight_clip_search").value(st.weight_clip_search).key("bias_correction").value(st.bias_correction);
  w.key("method").value(st.method).key("equalize").value(st.equalize);
  w.key("activations").value(st.activations);
  w.key("calibrate").value(st.calibrate).key("calib").value(st.calib).key("calib_samples").value(st.calib_samples);
  w.key("calib_seed").value(st.calib_seed).key("calib_cache");
  if (st.calib_cache.empty()) w.null();
  else w.value(st.calib_cache);
  w.key("format").value(st.format);
  w.key("exclude").begin_array(true);
  for (const auto& e : st.exclude) w.value(e);
  w.end_array();
  w.key("threads").value(st.threads);
  w.end_object();

  w.key("calibration").begin_object();
  w.key("method");
  if (st.calibrated) w.value(st.calibrate);
  else w.null();
  w.key("samples").value(r.calib_samples).key("seconds").value(r.calib_seconds);
  w.key("nonfinite_skipped").value(r.nonfinite_skipped);
  // "skipped": no activation range was calibrated in this run (none needed,
  // or all came from the cache); samples may still have been run for the
  // weights' input statistics.
  w.key("skipped").value(s.ranges_calibrated == 0);
  w.key("ranges_calibrated").value(static_cast<int64_t>(s.ranges_calibrated));
  w.key("ranges_from_cache").value(static_cast<int64_t>(s.cache_ranges_used));
  w.key("cache");
  if (s.cache_status.empty()) w.null();
  else w.value(s.cache_status);
  w.end_object();
  w.key("quantize_seconds").value(r.quantize_seconds);
  w.key("method").value(r.method.empty() ? std::string("rtn") : r.method);
  w.key("method_seconds").value(r.method_seconds).key("equalized").value(r.equalized);

  w.key("tensors").begin_array();
  for (const auto& t : r.tensors) {
    w.begin_object(true);
    w.key("tensor").value(t.tensor).key("kind").value(t.kind).key("node").value(t.node).key("op").value(t.op_type);
    w.key("scheme").value(t.scheme);
    w.key("method");
    if (t.kind == "weight") w.value(t.method.empty() ? std::string("rtn") : t.method);
    else w.null();
    w.key("method_seconds").value(t.method_seconds);
    w.key("scale_min").value(t.scale_min).key("scale_max").value(t.scale_max);
    w.key("zero_point_min").value(t.zero_point_min).key("zero_point_max").value(t.zero_point_max);
    w.key("range");
    if (t.kind == "activation") w.begin_array(true).value(t.range_min).value(t.range_max).end_array();
    else w.null();
    w.key("sqnr_db");
    if (sqnr_measured(t)) w.value(t.sqnr_db);
    else w.null();
    w.end_object();
  }
  w.end_array();
  w.key("float_nodes").begin_array();
  for (const auto& f : r.float_nodes) w.value(f);
  w.end_array();
  w.key("warnings").begin_array();
  for (const auto& x : r.warnings) w.value(x);
  w.end_array();
  w.key("notes").begin_array();
  for (const auto& x : r.notes) w.value(x);
  w.end_array();
  if (s.eval) {
    const auto& e = *s.eval;
    w.key("eval_data").value(e.data).key("eval_samples").value(e.before.samples);
    w.key("accuracy_before").value(e.before.accuracy).key("accuracy_after").value(e.after.accuracy);
    w.key("images_per_second_before").value(e.before.images_per_second);
    w.key("images_per_second_after").value(e.after.images_per_second);
    w.key("eval_before");
    json_eval(w, e.before);
    w.key("eval_after");
    json_eval(w, e.after);
    w.key("accuracy_integer").value(e.integer.accuracy);
    w.key("images_per_second_integer").value(e.integer.images_per_second);
    w.key("eval_integer");
    json_eval(w, e.integer);
  }
  w.end_object();
  return w.str();
}

}  // namespace qtk::cli
