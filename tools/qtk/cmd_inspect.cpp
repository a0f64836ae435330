// qtk inspect: what is in an ONNX file, without running it.
#include <algorithm>
#include <map>

#include "cli.h"
#include "core/json.h"
#include "qtk/model.h"

namespace qtk::cli {
namespace {

constexpr OptionSpec kOptions[] = {
    {"--json", "", "print one JSON object instead of text"},
};

struct GraphStats {
  std::map<std::string, int64_t> ops;  // "Conv", or "domain.Op" outside the default domain
  int64_t nodes = 0, initializers = 0;
  uint64_t parameters = 0, parameter_bytes = 0;
};

// Counts nodes and initializers in a graph and every subgraph under it.
void collect(const ir::Graph& g, GraphStats& s) {
  for (const auto& [name, t] : g.initializers) {
    ++s.initializers;
    s.parameters += static_cast<uint64_t>(t.numel());
    s.parameter_bytes += t.nbytes();
  }
  for (const auto& n : g.nodes) {
    ++s.nodes;
    ++s.ops[ir::is_default_domain(n.domain) ? n.op_type : n.domain + "." + n.op_type];
    for (const auto& a : n.attrs) {
      if (a.g) collect(*a.g, s);
      for (const auto& sub : a.graphs)
        if (sub) collect(*sub, s);
    }
  }
}

std::vector<std::pair<std::string, int64_t>> sorted_ops(const GraphStats& s) {
  std::vector<std::pair<std::string, int64_t>> v(s.ops.begin(), s.ops.end());
  std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  return v;
}

std::string domain_name(const std::string& d) { return d.empty() ? "ai.onnx" : d; }

std::string dim_text(const ir::Dim& d) {
  if (d.is_fixed()) return std::to_string(d.value);
  return d.param.empty() ? "?" : d.param;
}

std::string type_text(const ir::ValueInfo& v) {
  if (!v.is_tensor) return "(non-tensor type)";
  std::string s = dtype_name(v.dtype);
  if (!v.has_shape) return s + " (shape unknown)";
  s += " [";
  for (size_t i = 0; i < v.shape.size(); ++i) s += (i ? "," : "") + dim_text(v.shape[i]);
  return s + "]";
}

void json_value_info(JsonWriter& w, const ir::ValueInfo& v) {
  w.begin_object(true).key("name").value(v.name);
  w.key("dtype").value(v.is_tensor ? dtype_name(v.dtype) : "non-tensor");
  w.key("shape");
  if (!v.has_shape) {
    w.null();
  } else {
    // Fixed dims as numbers, symbolic ones by name, unknown ones as null.
    w.begin_array(true);
    for (const auto& d : v.shape) {
      if (d.is_fixed()) w.value(d.value);
      else if (!d.param.empty()) w.value(d.param);
      else w.null();
    }
    w.end_array();
  }
  w.end_object();
}

std::vector<const ir::ValueInfo*> outputs_of(const ir::Graph& g) {
  std::vector<const ir::ValueInfo*> v;
  for (const auto& o : g.outputs) v.push_back(&o);
  return v;
}

std::string render_json(const std::string& path, const Model& m, const GraphStats& s) {
  JsonWriter w;
  w.begin_object();
  w.key("model").value(path);
  w.key("ir_version").value(m.ir_version);
  w.key("producer_name").value(m.producer_name);
  w.key("producer_version").value(m.producer_version);
  w.key("domain").value(m.domain);
  w.key("model_version").value(m.model_version);
  w.key("opset_imports").begin_array();
  for (const auto& o : m.opsets) w.begin_object(true).key("domain").value(domain_name(o.domain)).key("version").value(o.version).end_object();
  w.end_array();
  w.key("inputs").begin_array();
  for (const auto* v : m.graph.runtime_inputs()) json_value_info(w, *v);
  w.end_array();
  w.key("outputs").begin_array();
  for (const auto* v : outputs_of(m.graph)) json_value_info(w, *v);
  w.end_array();
  w.key("node_count").value(s.nodes);
  w.key("op_histogram").begin_object();
  for (const auto& [op, n] : sorted_ops(s)) w.key(op).value(n);
  w.end_object();
  w.key("initializer_count").value(s.initializers);
  w.key("parameter_count").value(s.parameters);
  w.key("parameter_bytes").value(s.parameter_bytes);
  w.key("metadata").begin_object();
  for (const auto& [k, v] : m.metadata) w.key(k).value(v);
  w.end_object();
  w.key("warnings").begin_array();
  for (const auto& warning : m.warnings) w.value(warning);
  w.end_array();
  w.end_object();
  return w.str();
}

std::string render_text(const std::string& path, const Model& m, const GraphStats& s) {
  auto row = [](const std::string& label, const std::string& value) {
    std::string l = label;
    l.resize(12, ' ');
    return l + value + "\n";
  };
  std::string opsets;
  for (const auto& o : m.opsets) opsets += (opsets.empty() ? "" : ", ") + domain_name(o.domain) + " " + std::to_string(o.version);
  std::string producer = m.producer_name.empty() ? "(not recorded)" : m.producer_name + " " + m.producer_version;
  std::string out = row("model", path) + row("ir_version", std::to_string(m.ir_version)) +
                    row("opsets", opsets.empty() ? "(none)" : opsets) + row("producer", producer);
  auto list_values = [&](const char* label, const std::vector<const ir::ValueInfo*>& vs) {
    size_t width = 0;
    for (const auto* v : vs) width = std::max(width, v->name.size());
    out += std::string(label) + ":" + (vs.empty() ? " (none)" : "") + "\n";
    for (const auto* v : vs) {
      std::string name = v->name;
      name.resize(width, ' ');
      out += "  " + name + "  " + type_text(*v) + "\n";
    }
  };
  list_values("inputs", m.graph.runtime_inputs());
  list_values("outputs", outputs_of(m.graph));
  out += row("parameters", format_count(s.parameters) + " in " + std::to_string(s.initializers) + " initializers (" +
                               format_bytes(s.parameter_bytes) + ")");
  out += row("nodes", std::to_string(s.nodes));
  out += "ops:\n";
  size_t width = 22;  // names longer than that (custom domains) widen the column
  for (const auto& [op, n] : sorted_ops(s)) width = std::max(width, op.size() + 2);
  for (const auto& [op, n] : sorted_ops(s)) {
    std::string name = op;
    name.resize(width, ' ');
    out += "  " + name + std::to_string(n) + "\n";
  }
  for (const auto& [k, v] : m.metadata) out += row("metadata", k + " = " + v);
  out += "warnings:" + std::string(m.warnings.empty() ? " (none)" : "") + "\n";
  for (const auto& warning : m.warnings) out += "  " + warning + "\n";
  return out;
}

Outcome run_inspect(const ParsedArgs& args) {
  const std::string& path = args.positionals[0];
  QTK_CLI_ASSIGN_OR_FAIL(Model m, load_model(path));
  GraphStats stats;
  collect(m.graph, stats);
  return print_out(args.has("--json") ? render_json(path, m, stats) : render_text(path, m, stats));
}

}  // namespace

const CommandSpec kInspectCommand = {
    "inspect",
    "MODEL",
    1,
    "show a model's inputs, outputs, ops and parameters",
    "Shows what MODEL (an .onnx file) holds: IR and opset versions, producer, inputs and outputs\n"
    "with dtypes and shapes (symbolic dimensions by name), an op histogram, the parameter count\n"
    "(initializer elements) and size, and any warnings from loading it.",
    kOptions,
    run_inspect,
};

}  // namespace qtk::cli
