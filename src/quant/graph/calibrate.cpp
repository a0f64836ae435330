#include "quant/graph/calibrate.h"

#include <cstring>

#include "qtk/session.h"

namespace qtk::quant {

namespace {
// Rows [begin, begin+count) of a tensor along axis 0 (a copy).
Tensor slice_rows(const Tensor& t, int64_t begin, int64_t count) {
  Shape s = t.shape();
  const int64_t row = s.empty() || s[0] == 0 ? 0 : t.numel() / s[0];
  s[0] = count;
  Tensor out(t.dtype(), s);
  std::memcpy(out.raw(), static_cast<const char*>(t.raw()) + begin * row * dtype_size(t.dtype()),
              static_cast<size_t>(count * row) * dtype_size(t.dtype()));
  return out;
}
}  // namespace

Expected<CalibrationResult> calibrate(const ir::Model& model, const std::vector<std::string>& tensors,
                                      const CalibrationData& data, const QuantConfig& config) {
  CalibrationResult result;
  if (tensors.empty()) return result;
  // Expose every observed tensor as an extra graph output.
  ir::Model m = model;
  for (const auto& t : tensors) {
    if (m.graph.is_graph_output(t)) continue;
    ir::ValueInfo vi;
    vi.name = t;
    m.graph.outputs.push_back(vi);
  }
  SessionOptions so;
  so.threads = config.threads;
  so.optimize = false;  // keep every observed tensor alive
  QTK_ASSIGN_OR_RETURN(auto session, Session::create(m, so));
  const auto& ins = session->inputs();
  if (data.inputs.size() != ins.size())
    return invalid_argument("calibration data has " + std::to_string(data.inputs.size()) + " arrays, the model has " +
                            std::to_string(ins.size()) + " inputs");
  int64_t n = -1;
  for (size_t i = 0; i < ins.size(); ++i) {
    const Tensor& t = data.inputs[i];
    if (t.rank() == 0) return invalid_argument("calibration array for '" + ins[i].name + "' is a scalar");
    if (n >= 0 && t.dim(0) != n)
      return invalid_argument("calibration arrays disagree on the sample count (" + std::to_string(n) + " vs " +
                              std::to_string(t.dim(0)) + ")");
    n = t.dim(0);
  }
  if (n <= 0) return invalid_argument("calibration data is empty");

  // Output index of each observed tensor.
  std::map<std::string, size_t> index;
  const auto& outs = session->outputs();
  for (size_t i = 0; i < outs.size(); ++i) index.emplace(outs[i].name, i);
  std::map<std::string, std::unique_ptr<Observer>> observers;
  for (const auto& t : tensors) observers[t] = make_observer(config.calibration);

  const int64_t batch = std::max<int64_t>(1, config.calib_batch);
  for (int64_t b = 0; b < n; b += batch) {
    const int64_t count = std::min(batch, n - b);
    std::vector<Tensor> feeds;
    for (const auto& t : data.inputs) feeds.push_back(slice_rows(t, b, count));
    auto out = session->run(feeds);
    if (!out.ok()) return out.status().with_context("calibration batch at sample " + std::to_string(b));
    for (auto& [name, obs] : observers) {
      const Tensor& v = (*out)[index.at(name)];
      if (v.dtype() != DType::kFloat32) continue;
      obs->observe(v.data<float>(), v.numel());
      if (b == 0) result.first_batch[name] = v;
    }
    if (config.progress) config.progress("calibrate", b + count, n);
  }
  for (auto& [name, obs] : observers) {
    result.nonfinite += obs->nonfinite_count();
    if (obs->finite_count() == 0) {
      if (obs->nonfinite_count() > 0)
        return invalid_argument("tensor '" + name + "' had no finite value in calibration (" +
                                std::to_string(obs->nonfinite_count()) + " NaN/Inf)");
      continue;  // not float: nothing to calibrate
    }
    result.ranges[name] = obs->range(config.activation_format, config.activation_symmetric);
  }
  result.samples = n;
  return result;
}

}  // namespace qtk::quant
