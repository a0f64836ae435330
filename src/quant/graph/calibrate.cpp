#include "quant/graph/calibrate.h"

#include <algorithm>
#include <cmath>
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


// Adds the per-channel (axis) sums of x and x^2 into acc and acc_sq; returns
// the number of values per channel.
int64_t add_channel_moments(const Tensor& x, int axis, std::vector<double>& acc, std::vector<double>& acc_sq) {
  const int rank = x.rank();
  if (rank == 0) return 0;
  if (axis < 0) axis += rank;
  if (axis < 0 || axis >= rank) return 0;
  const int64_t c = x.dim(axis);
  int64_t inner = 1;
  for (int d = axis + 1; d < rank; ++d) inner *= x.dim(d);
  if (acc.empty()) acc.assign(static_cast<size_t>(c), 0.0), acc_sq.assign(static_cast<size_t>(c), 0.0);
  if (static_cast<int64_t>(acc.size()) != c) return 0;
  const float* v = x.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double f = std::isfinite(v[i]) ? v[i] : 0.0;
    acc[(i / inner) % c] += f;
    acc_sq[(i / inner) % c] += f * f;
  }
  return c > 0 ? x.numel() / c : 0;
}

}  // namespace

Expected<CalibrationResult> calibrate(const ir::Model& model, const std::vector<std::string>& observed,
                                      const CalibrationData& data, const QuantConfig& config,
                                      const std::map<std::string, int>& moment_axes,
                                      const std::map<std::string, QFormat>& formats) {
  CalibrationResult result;
  std::vector<std::string> tensors = observed;
  for (const auto& [t, axis] : moment_axes)
    if (std::find(tensors.begin(), tensors.end(), t) == tensors.end()) tensors.push_back(t);
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
  for (const auto& t : observed) observers[t] = make_observer(config.calibration);
  std::map<std::string, std::vector<double>> sum, sq_sum;
  std::map<std::string, int64_t> sq_count;

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
    for (const auto& [name, axis] : moment_axes) {
      const Tensor& v = (*out)[index.at(name)];
      if (v.dtype() == DType::kFloat32) sq_count[name] += add_channel_moments(v, axis, sum[name], sq_sum[name]);
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
    auto f = formats.find(name);
    result.ranges[name] = obs->range(f == formats.end() ? config.activation_format : f->second,
                                     config.activation_symmetric);
  }
  for (const auto& [name, sums] : sq_sum) {
    const int64_t cnt = sq_count[name];
    if (cnt <= 0) continue;
    auto& mean_sq = result.channel_sq_mean[name];
    for (double v : sums) mean_sq.push_back(static_cast<float>(v / cnt));
    auto& mean = result.channel_mean[name];
    for (double v : sum[name]) mean.push_back(static_cast<float>(v / cnt));
  }
  result.samples = n;
  return result;
}

}  // namespace qtk::quant
