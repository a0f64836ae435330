// qtk run: feed .npy files to a model and show (or save) its outputs.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>

#include "cli.h"
#include "core/cpu_features.h"
#include "core/json.h"
#include "data/npy.h"
#include "qtk/model.h"
#include "qtk/session.h"

namespace qtk::cli {
namespace {

constexpr OptionSpec kOptions[] = {
    {"--input", "[NAME=]FILE.npy", "feed FILE.npy to input NAME (NAME= optional for one-input models)", true},
    {"--output", "FILE.npz", "also write every output to FILE.npz (never over the model or an input)"},
    {"--threads", "N", "threads for the kernels (default: physical cores)"},
    {"--integer", "", "run a QDQ model with integer kernels (QLinearConv, QLinearMatMul, ...) as an int8 runtime does"},
    {"--show", "N", "how many leading values of each output to print (default 8)"},
    {"--json", "", "print one JSON object instead of text"},
};

std::string input_names(const std::vector<std::string>& inputs) {
  std::string names;
  for (const auto& i : inputs) names += (names.empty() ? "" : ", ") + i;
  return names.empty() ? "none" : names;
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  return std::filesystem::exists(a, ec) && std::filesystem::exists(b, ec) && std::filesystem::equivalent(a, b, ec);
}

// Resolves each --input to (model input name, file), following the
// NAME=FILE / FILE rules; every mistake is a usage error.
Outcome map_inputs(const std::vector<std::string>& inputs, const std::vector<std::string>& specs,
                   std::map<std::string, std::string>& files) {
  auto is_input = [&](const std::string& n) { return std::find(inputs.begin(), inputs.end(), n) != inputs.end(); };
  for (const auto& spec : specs) {
    std::string name, file;
    const size_t eq = spec.find('=');
    std::error_code ec;
    if (eq != std::string::npos && eq > 0 && is_input(spec.substr(0, eq))) {
      name = spec.substr(0, eq);
      file = spec.substr(eq + 1);
    } else if (inputs.size() == 1 && (eq == std::string::npos || std::filesystem::exists(spec, ec))) {
      name = inputs[0];
      file = spec;
    } else if (eq != std::string::npos) {
      return Outcome::usage("model has no input named '" + spec.substr(0, eq) + "' (inputs: " + input_names(inputs) + ")");
    } else {
      return Outcome::usage("model has " + std::to_string(inputs.size()) + " inputs (" + input_names(inputs) +
                            "): use --input NAME=FILE.npy");
    }
    if (file.empty()) return Outcome::usage("--input " + spec + " names no file");
    if (!files.emplace(name, file).second) return Outcome::usage("input '" + name + "' is given more than once");
  }
  for (const auto& i : inputs)
    if (!files.count(i)) return Outcome::usage("no value for model input '" + i + "' (use --input " + i + "=FILE.npy)");
  return Outcome::ok();
}

Outcome run_run(const ParsedArgs& args) {
  const std::string& model_path = args.positionals[0];
  int64_t threads = physical_core_count(), show = 8;
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--threads", 1, 1024, threads));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--show", 0, 1'000'000, show));
  const std::string* output_path = args.get("--output");
  const bool json = args.has("--json");

  // Problems with the command line and the files are reported before the
  // session is built, so they are not hidden behind an unsupported op.
  QTK_CLI_ASSIGN_OR_FAIL(Model model, load_model(model_path));
  std::vector<std::string> inputs;
  for (const auto* v : model.graph.runtime_inputs()) inputs.push_back(v->name);
  std::map<std::string, std::string> files;
  QTK_CLI_RETURN_IF_FAILED(map_inputs(inputs, args.all("--input"), files));
  if (output_path) {
    if (same_file(*output_path, model_path)) return Outcome::usage("refusing to overwrite the model file " + model_path + " with --output");
    for (const auto& [name, file] : files)
      if (same_file(*output_path, file)) return Outcome::usage("refusing to overwrite input file " + file + " with --output");
  }

  std::map<std::string, Tensor> feeds;
  for (const auto& [name, file] : files) {
    QTK_CLI_ASSIGN_OR_FAIL(Tensor t, data::read_npy(file));
    feeds.emplace(name, std::move(t));
  }
  SessionOptions options;
  options.threads = static_cast<int>(threads);
  options.integer = args.has("--integer");
  QTK_CLI_ASSIGN_OR_FAIL(std::unique_ptr<Session> session, Session::create(model, options));
  const auto start = std::chrono::steady_clock::now();
  QTK_CLI_ASSIGN_OR_FAIL(std::vector<Tensor> outputs, session->run(feeds));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (outputs.size() != session->outputs().size())
    return Outcome::failure("model returned " + std::to_string(outputs.size()) + " outputs, expected " +
                            std::to_string(session->outputs().size()));

  if (output_path) {
    data::NamedTensors arrays;
    for (size_t i = 0; i < outputs.size(); ++i) arrays.emplace_back(session->outputs()[i].name, outputs[i]);
    if (Status st = data::write_npz(arrays, *output_path); !st.ok()) return Outcome::failure(st);
  }

  if (json) {
    JsonWriter w;
    w.begin_object().key("model").value(model_path).key("threads").value(threads).key("seconds").value(seconds);
    w.key("outputs").begin_array();
    for (size_t i = 0; i < outputs.size(); ++i) {
      const Tensor& t = outputs[i];
      w.begin_object(true).key("name").value(session->outputs()[i].name).key("dtype").value(dtype_name(t.dtype()));
      w.key("shape").begin_array();
      for (int64_t d : t.shape()) w.value(d);
      w.end_array().key("first_values").begin_array();
      for (int64_t k = 0; k < std::min(show, t.numel()); ++k) w.value(t.get_as_double(k));
      w.end_array().end_object();
    }
    w.end_array();
    w.key("output_file");
    if (output_path) w.value(*output_path); else w.null();
    w.end_object();
    return print_out(w.str());
  }
  std::string text;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& t = outputs[i];
    text += session->outputs()[i].name + "  " + dtype_name(t.dtype()) + " " + format_shape(t.shape());
    if (show > 0) text += "  " + format_values(t, show);
    text += "\n";
  }
  char timing[64];
  std::snprintf(timing, sizeof timing, "ran in %.3f ms with %lld thread%s\n", seconds * 1e3,
                static_cast<long long>(threads), threads == 1 ? "" : "s");
  text += timing;
  if (output_path) text += "wrote " + std::to_string(outputs.size()) + " output(s) to " + *output_path + "\n";
  return print_out(text);
}

}  // namespace

const CommandSpec kRunCommand = {
    "run",
    "MODEL",
    1,
    "run a model on .npy inputs and print or save its outputs",
    "Runs MODEL once on inputs read from .npy files and prints each output's name, dtype, shape\n"
    "and first values. With --output, all outputs are written to an .npz file (named by output).\n"
    "Inputs must already have the dtype and shape the model declares; nothing is converted.",
    kOptions,
    run_run,
};

}  // namespace qtk::cli
