#include "data/model_inputs.h"

#include <algorithm>

#include "data/dataset.h"
#include "data/npy.h"
#include "ir/graph.h"

namespace qtk::data {

std::vector<TensorInfo> declared_runtime_inputs(const ir::Model& model) {
  std::vector<TensorInfo> out;
  for (const auto* v : model.graph.runtime_inputs()) {
    TensorInfo info;
    info.name = v->name;
    info.dtype = v->dtype;
    info.has_shape = v->has_shape;
    for (const auto& d : v->shape) info.shape.push_back(d.is_fixed() ? d.value : -1);
    out.push_back(std::move(info));
  }
  return out;
}
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string input_names(const std::vector<TensorInfo>& inputs) {
  std::string names;
  for (const auto& i : inputs) names += (names.empty() ? "'" : ", '") + i.name + "'";
  return names.empty() ? "none" : names;
}

// The batch an input fixes on axis 0, or 0 when it is dynamic/undeclared.
int64_t fixed_batch(const TensorInfo& info) {
  return info.has_shape && !info.shape.empty() && info.shape[0] > 0 ? info.shape[0] : 0;
}

Expected<std::vector<Tensor>> dataset_inputs(const std::string& spec, const std::vector<TensorInfo>& inputs,
                                             int64_t max_samples, uint64_t seed) {
  if (inputs.size() != 1)
    return invalid_argument("data set " + spec + " feeds one image input, but the model has " +
                            std::to_string(inputs.size()) + " inputs (" + input_names(inputs) +
                            "); use an .npz with one array per input");
  const TensorInfo& in = inputs[0];
  if (in.dtype != DType::kFloat32 && in.dtype != DType::kUndefined)
    return invalid_argument("data set " + spec + " holds float32 images, but input '" + in.name + "' is " +
                            dtype_name(in.dtype));
  QTK_ASSIGN_OR_RETURN(Dataset ds, load_dataset_sample(spec, max_samples, seed));
  const Shape& ishape = ds.images.shape();
  const Shape sample(ishape.begin() + 1, ishape.end());
  Shape shape = {ishape[0]};
  const Shape want = sample_shape_for_input(in, sample);
  shape.insert(shape.end(), want.begin(), want.end());
  Tensor images = ds.images.reshaped(shape);
  QTK_RETURN_IF_ERROR(check_input_array(images, in, spec));
  return std::vector<Tensor>{images};
}

Expected<std::vector<Tensor>> npz_inputs(const std::string& path, const std::vector<TensorInfo>& inputs,
                                         std::vector<std::string>& sources) {
  QTK_ASSIGN_OR_RETURN(NamedTensors arrays, read_npz(path));
  auto find = [&](const std::string& name) -> const Tensor* {
    for (const auto& [n, t] : arrays)
      if (n == name) return &t;
    return nullptr;
  };
  bool by_name = true;
  for (const auto& in : inputs) by_name = by_name && find(in.name) != nullptr;
  std::vector<Tensor> out;
  if (by_name) {
    for (const auto& in : inputs) {
      out.push_back(*find(in.name));
      sources.push_back(path + ":" + in.name);
    }
    return out;
  }
  if (arrays.size() != inputs.size()) {
    std::string names;
    for (const auto& [n, t] : arrays) names += (names.empty() ? "'" : ", '") + n + "'";
    return invalid_argument(path + " holds " + std::to_string(arrays.size()) + " arrays (" +
                            (names.empty() ? "none" : names) + "), but the model has " +
                            std::to_string(inputs.size()) + " inputs (" + input_names(inputs) +
                            "): name the arrays after the inputs, or give one per input in input order");
  }
  for (const auto& [n, t] : arrays) {
    out.push_back(t);
    sources.push_back(path + ":" + n);
  }
  return out;
}

}  // namespace

Shape sample_shape_for_input(const TensorInfo& info, const Shape& data_sample) {
  if (!info.has_shape || info.shape.size() < 2) return data_sample;
  Shape s(info.shape.begin() + 1, info.shape.end());
  for (int64_t d : s)
    if (d < 0) return data_sample;
  return shape_numel(s) == shape_numel(data_sample) ? s : data_sample;
}

std::string describe_input_shape(const TensorInfo& info) {
  if (!info.has_shape) return "(any shape)";
  std::string s = "[";
  for (size_t i = 0; i < info.shape.size(); ++i) {
    if (i) s += ",";
    s += info.shape[i] >= 0 ? std::to_string(info.shape[i]) : (i == 0 ? "N" : "?");
  }
  return s + "]";
}

Status check_input_array(const Tensor& array, const TensorInfo& info, const std::string& source) {
  const std::string what = "calibration data for input '" + info.name + "' (" + source + ")";
  if (info.dtype != DType::kUndefined && array.dtype() != info.dtype)
    return invalid_argument(what + " is " + dtype_name(array.dtype()) + ", the model wants " + dtype_name(info.dtype));
  if (array.rank() == 0) return invalid_argument(what + " is a scalar; samples go along axis 0");
  const std::string shapes = " has shape " + shape_to_string(array.shape()) + ", the model wants " +
                             describe_input_shape(info);
  if (info.has_shape) {
    if (static_cast<size_t>(array.rank()) != info.shape.size()) return invalid_argument(what + shapes);
    for (size_t i = 1; i < info.shape.size(); ++i)
      if (info.shape[i] >= 0 && array.dim(static_cast<int>(i)) != info.shape[i]) return invalid_argument(what + shapes);
  }
  if (array.dim(0) == 0) return invalid_argument(what + " holds no samples");
  return Status::Ok();
}

bool is_array_file_spec(const std::string& spec) { return ends_with(spec, ".npy") || ends_with(spec, ".npz"); }

Expected<std::vector<Tensor>> load_calibration_inputs(const std::string& spec, const std::vector<TensorInfo>& inputs,
                                                      int64_t max_samples, uint64_t seed) {
  if (inputs.empty()) return invalid_argument("the model has no runtime inputs to calibrate with");
  std::vector<Tensor> arrays;
  std::vector<std::string> sources;
  const auto specs = known_dataset_specs();
  if (std::find(specs.begin(), specs.end(), spec) != specs.end()) {
    // Sampled while loading; the same rows sample_indices() picks below.
    QTK_ASSIGN_OR_RETURN(arrays, dataset_inputs(spec, inputs, max_samples, seed));
    sources.push_back(spec);
  } else if (ends_with(spec, ".npy")) {
    if (inputs.size() != 1)
      return invalid_argument(spec + " is one array, but the model has " + std::to_string(inputs.size()) +
                              " inputs (" + input_names(inputs) + "); use an .npz with one array per input");
    QTK_ASSIGN_OR_RETURN(Tensor t, read_npy(spec));
    arrays.push_back(std::move(t));
    sources.push_back(spec);
  } else if (ends_with(spec, ".npz")) {
    QTK_ASSIGN_OR_RETURN(arrays, npz_inputs(spec, inputs, sources));
  } else {
    std::string known;
    for (const auto& s : specs) known += (known.empty() ? "" : ", ") + s;
    return invalid_argument("calibration data '" + spec + "' is neither a data set (" + known +
                            ") nor an .npy/.npz file");
  }
  for (size_t i = 0; i < inputs.size(); ++i) QTK_RETURN_IF_ERROR(check_input_array(arrays[i], inputs[i], sources[i]));
  const int64_t n = arrays[0].dim(0);
  for (size_t i = 1; i < arrays.size(); ++i)
    if (arrays[i].dim(0) != n)
      return invalid_argument("calibration arrays disagree on the sample count: '" + inputs[0].name + "' has " +
                              std::to_string(n) + ", '" + inputs[i].name + "' has " + std::to_string(arrays[i].dim(0)));

  int64_t keep = max_samples > 0 ? std::min(max_samples, n) : n;
  int64_t batch = 0;
  for (const auto& in : inputs) batch = batch ? batch : fixed_batch(in);
  if (batch > 0) {
    if (keep < batch)
      return invalid_argument("input '" + inputs[0].name + "' has a fixed batch of " + std::to_string(batch) +
                              ", but only " + std::to_string(keep) + " calibration samples are available");
    keep -= keep % batch;
  }
  if (keep == n) return arrays;
  const std::vector<int64_t> rows = sample_indices(n, keep, seed);
  for (auto& a : arrays) a = take_rows(a, rows);
  return arrays;
}

}  // namespace qtk::data
