// Parsing of the quantization scheme options shared by qtk quantize and qtk qat.
#include "quant_options.h"

#include <algorithm>
#include <charconv>

#include "core/cpu_features.h"
#include "data/dataset.h"
#include "data/model_inputs.h"
#include "quant/layer_precision_file.h"

namespace qtk::cli {

std::string known_list(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

namespace {

// Signed integer formats of at most 8 bits, from the format table, plus fp16.
std::vector<std::string> weight_choices() {
  std::vector<std::string> names;
  for (const auto& t : quant::kQFormats)
    if (t.is_signed && t.bits <= 8) names.push_back(t.name);
  names.push_back("fp16");
  names.push_back("auto");
  return names;
}

// --weights auto: the int8 format qtk's integer session multiplies fastest on
// this CPU (after QTK_ISA). Without AVX-512 VNNI the int8 GEMMs and convs run
// their AVX2 kernels, exact at full speed only for 7-bit weights (vpmaddubsw
// pairs stay below 2^15); full-range ones take the int16 path, about 20%
// slower (README). The scalar kernels are exact and as fast either way.
const char* auto_weight_format() { return cpu_has_avx2() && !cpu_has_avx512_vnni() ? "int7" : "int8"; }

// Static activation formats (below 8 bits: ONNX's 4-bit types, or codes
// clamped in 8-bit tensors), plus the two modes. int7 is a weight format
// (what AVX2 multiplies exactly), not offered for activations.
std::vector<std::string> activation_choices() {
  std::vector<std::string> names;
  for (const auto& t : quant::kQFormats)
    if (!quant::weight_only_format(t.format)) names.push_back(t.name);
  names.push_back("dynamic");
  names.push_back("float");
  return names;
}

Outcome bad_value(std::string_view option, const std::string& value, const std::string& choices) {
  return Outcome::usage("unknown " + std::string(option) + " value '" + value + "' (choose from " + choices + ")");
}

std::vector<std::string> split_list(const std::vector<std::string>& values) {
  std::vector<std::string> out;
  for (const auto& v : values) {
    size_t start = 0;
    while (start <= v.size()) {
      size_t end = v.find(',', start);
      if (end == std::string::npos) end = v.size();
      std::string item = v.substr(start, end - start);
      while (!item.empty() && item.front() == ' ') item.erase(item.begin());
      while (!item.empty() && item.back() == ' ') item.pop_back();
      if (!item.empty()) out.push_back(item);
      start = end + 1;
    }
  }
  return out;
}

}  // namespace

Outcome config_from_args(const ParsedArgs& args, QuantConfig& cfg, QuantizeSettings& st) {
  if (const std::string* w = args.get("--weights")) {
    const auto choices = weight_choices();
    if (std::find(choices.begin(), choices.end(), *w) == choices.end())
      return bad_value("--weights", *w, known_list(choices));
    const std::string name = *w == "auto" ? auto_weight_format() : *w;
    st.weights = name;  // the report names the format auto chose
    if (name == "fp16") cfg.fp16_weights = true;
    else cfg.weight_format = *quant::qformat_from_name(name);
  }
  if (const std::string* a = args.get("--activations")) {
    const auto choices = activation_choices();
    if (std::find(choices.begin(), choices.end(), *a) == choices.end())
      return bad_value("--activations", *a, known_list(choices));
    st.activations = *a;
    if (*a == "dynamic") {
      cfg.activations = ActivationMode::kDynamic;
      cfg.activation_format = quant::QFormat::kUInt8;
    } else if (*a == "float") {
      cfg.activations = ActivationMode::kWeightOnly;
    } else {
      cfg.activations = ActivationMode::kStatic;
      cfg.activation_format = *quant::qformat_from_name(*a);
    }
  }
  st.calibrated = cfg.activations == ActivationMode::kStatic;
  if (const std::string* g = args.get("--granularity")) {
    if (*g == "tensor") {
      cfg.granularity = Granularity::kPerTensor;
    } else if (*g == "channel") {
      cfg.granularity = Granularity::kPerChannel;
    } else if (g->rfind("group:", 0) == 0) {
      const std::string n = g->substr(6);
      int64_t size = 0;
      auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), size);
      if (ec != std::errc() || end != n.data() + n.size() || size < 1 || size > (int64_t{1} << 30))
        return Outcome::usage("--granularity group:N needs a positive group size N, got '" + n + "'");
      cfg.granularity = Granularity::kPerGroup;
      cfg.group_size = size;
    } else {
      return bad_value("--granularity", *g, "tensor, channel, group:N");
    }
    st.granularity = *g;
  }
  if (args.has("--symmetric") && args.has("--asymmetric"))
    return Outcome::usage("--symmetric and --asymmetric exclude each other");
  cfg.weight_symmetric = !args.has("--asymmetric");
  st.weight_symmetric = cfg.weight_symmetric;
  if (const std::string* m = args.get("--mapping")) {
    if (*m == "linear") cfg.mapping = Mapping::kLinear;
    else if (*m == "log2") cfg.mapping = Mapping::kLog2;
    else return bad_value("--mapping", *m, "linear, log2");
    st.mapping = *m;
  }
  cfg.weight_clip_search = args.has("--weight-clip-search");
  st.weight_clip_search = cfg.weight_clip_search;
  cfg.bias_correction = !args.has("--no-bias-correction");
  cfg.int4_types = !args.has("--int8-containers");
  cfg.float_first_last = args.has("--float-first-last");
  if (args.has("--first-last-8bit") && args.has("--no-first-last-8bit"))
    return Outcome::usage("--first-last-8bit and --no-first-last-8bit exclude each other");
  if (args.has("--first-last-8bit")) cfg.first_last_8bit = true;
  if (args.has("--no-first-last-8bit")) cfg.first_last_8bit = false;
  if (const std::string* lp = args.get("--layer-precision")) {
    auto layers = quant::read_layer_precision(*lp);
    if (!layers.ok()) return Outcome::failure(layers.status());
    cfg.layer_precision = std::move(*layers);
  }
  if (const std::string* m = args.get("--method")) {
    if (*m == "auto") cfg.method = WeightMethod::kAuto;
    else if (*m == "rtn") cfg.method = WeightMethod::kRtn;
    else if (*m == "gptq") cfg.method = WeightMethod::kGptq;
    else if (*m == "adaround") cfg.method = WeightMethod::kAdaRound;
    else return bad_value("--method", *m, "auto, rtn, gptq, adaround");
    st.method = *m;
  }
  cfg.equalize = args.has("--equalize");
  if (args.has("--no-smooth-quant") && (args.has("--smooth-quant") || args.get("--smooth-quant-alpha")))
    return Outcome::usage("--no-smooth-quant excludes --smooth-quant and --smooth-quant-alpha");
  if (args.has("--smooth-quant")) cfg.smooth_quant = true;
  if (args.has("--no-smooth-quant")) cfg.smooth_quant = false;
  if (args.get("--smooth-quant-alpha")) {
    double alpha = 0.5;
    QTK_CLI_RETURN_IF_FAILED(real_option(args, "--smooth-quant-alpha", 0.0, 1.0, alpha));
    cfg.smooth_quant = true;
    cfg.smooth_quant_alpha = static_cast<float>(alpha);
  }
  st.equalize = cfg.equalize;
  st.bias_correction = cfg.bias_correction;
  if (const std::string* c = args.get("--calibrate")) {
    auto method = quant::parse_calib_method(*c);
    if (!method.ok()) return Outcome::usage("--calibrate: " + method.status().message());
    cfg.calibration = *method;
  } else if (cfg.activations == ActivationMode::kStatic && quant::traits(cfg.activation_format).bits < 8) {
    // 16 levels or fewer: min/max spends them on rare outliers. MSE measured
    // best at W4A4 (README, W4A4 rows: resnet20 -0.7 points vs -13.2 with
    // minmax; entropy collapses at 4 bits).
    cfg.calibration.method = quant::CalibMethod::kMse;
  }
  st.calibrate = quant::calib_method_name(cfg.calibration);
  if (const std::string* f = args.get("--format")) {
    if (*f == "qdq") cfg.format = ExportFormat::kQDQ;
    else if (*f == "qoperator") cfg.format = ExportFormat::kQOperator;
    else return bad_value("--format", *f, "qdq, qoperator");
    st.format = *f;
  }
  if (const std::string* v = args.get("--nbits-accuracy")) {
    if (*v == "int8") cfg.nbits_accuracy_level = 4;
    else if (*v == "float") cfg.nbits_accuracy_level = 0;
    else return bad_value("--nbits-accuracy", *v, "int8, float");
    if (cfg.format != ExportFormat::kQOperator) return Outcome::usage("--nbits-accuracy needs --format qoperator");
  }
  cfg.exclude = split_list(args.all("--exclude"));
  st.exclude = cfg.exclude;
  return Outcome::ok();
}


Outcome check_calib_spec(const std::string& spec) {
  const auto specs = data::known_dataset_specs();
  if (std::find(specs.begin(), specs.end(), spec) == specs.end() && !data::is_array_file_spec(spec))
    return Outcome::usage("--calib '" + spec + "' is neither a data set (" + known_list(specs) +
                          ") nor an .npy/.npz file");
  return Outcome::ok();
}

Expected<std::vector<Tensor>> load_calibration(const Model& model, const std::string& spec, int64_t samples,
                                               QuantConfig& cfg) {
  const std::vector<TensorInfo> inputs = data::declared_runtime_inputs(model);
  QTK_ASSIGN_OR_RETURN(std::vector<Tensor> batches, data::load_calibration_inputs(spec, inputs, samples, kCalibSeed));
  for (const auto& in : inputs)
    if (in.has_shape && !in.shape.empty() && in.shape[0] > 0) {
      cfg.calib_batch = in.shape[0];  // a model with a fixed batch gets exactly that
      break;
    }
  return batches;
}

}  // namespace qtk::cli
