#include "quant/algos/capture.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "ir/passes.h"
#include "qtk/session.h"

namespace qtk::quant::algos {

namespace {

Tensor slice_samples(const Tensor& t, int64_t begin, int64_t count) {
  Shape s = t.shape();
  const int64_t row = s[0] == 0 ? 0 : t.numel() / s[0];
  s[0] = count;
  Tensor out(t.dtype(), s);
  std::memcpy(out.raw(), static_cast<const char*>(t.raw()) + begin * row * dtype_size(t.dtype()),
              static_cast<size_t>(count * row) * dtype_size(t.dtype()));
  return out;
}

}  // namespace

Expected<int64_t> calibration_samples(const CalibrationData& data) {
  if (data.inputs.empty()) return invalid_argument("no calibration data");
  int64_t n = -1;
  for (const auto& t : data.inputs) {
    if (t.rank() == 0) return invalid_argument("a calibration array is a scalar");
    if (n >= 0 && t.dim(0) != n) return invalid_argument("calibration arrays disagree on the sample count");
    n = t.dim(0);
  }
  if (n <= 0) return invalid_argument("calibration data is empty");
  return n;
}

Status capture_tensors(const ir::Model& model, const std::vector<std::string>& tensors, const CalibrationData& data,
                       const QuantConfig& config, const CaptureFn& fn) {
  QTK_ASSIGN_OR_RETURN(const int64_t n, calibration_samples(data));
  const auto runtime_inputs = model.graph.runtime_inputs();
  if (runtime_inputs.size() != data.inputs.size())
    return invalid_argument("calibration data has " + std::to_string(data.inputs.size()) + " arrays, the model has " +
                            std::to_string(runtime_inputs.size()) + " inputs");
  std::map<std::string, size_t> input_index;
  for (size_t i = 0; i < runtime_inputs.size(); ++i) input_index[runtime_inputs[i]->name] = i;

  // Only what the requested tensors need: they become the graph's outputs.
  ir::Model m = model;
  m.graph.outputs.clear();
  std::vector<std::string> computed;
  for (const auto& t : tensors)
    if (!input_index.count(t) && std::find(computed.begin(), computed.end(), t) == computed.end()) {
      computed.push_back(t);
      ir::ValueInfo vi;
      vi.name = t;
      m.graph.outputs.push_back(vi);
    }
  std::unique_ptr<Session> session;
  std::map<std::string, size_t> out_index;
  if (!computed.empty()) {
    QTK_RETURN_IF_ERROR(ir::remove_dead_nodes(m).status());
    SessionOptions so;
    so.threads = config.threads;
    so.optimize = false;
    QTK_ASSIGN_OR_RETURN(session, Session::create(m, so));
    for (size_t i = 0; i < session->outputs().size(); ++i) out_index[session->outputs()[i].name] = i;
  }
  const int64_t batch = std::max<int64_t>(1, config.calib_batch);
  for (int64_t b = 0; b < n; b += batch) {
    const int64_t count = std::min(batch, n - b);
    std::map<std::string, Tensor> feeds;
    std::vector<Tensor> by_position;
    for (size_t i = 0; i < data.inputs.size(); ++i) {
      by_position.push_back(slice_samples(data.inputs[i], b, count));
      feeds[runtime_inputs[i]->name] = by_position.back();
    }
    std::vector<Tensor> outs;
    if (session) {
      std::map<std::string, Tensor> used;
      for (const auto& in : session->inputs()) used[in.name] = feeds.at(in.name);
      auto r = session->run(used);
      if (!r.ok()) return r.status().with_context("batch at sample " + std::to_string(b));
      outs = std::move(*r);
    }
    for (size_t i = 0; i < tensors.size(); ++i) {
      auto in = input_index.find(tensors[i]);
      const Tensor& v = in != input_index.end() ? by_position[in->second] : outs[out_index.at(tensors[i])];
      QTK_RETURN_IF_ERROR(fn(i, v, b));
    }
  }
  return Status::Ok();
}

}  // namespace qtk::quant::algos
