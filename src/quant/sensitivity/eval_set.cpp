#include "quant/sensitivity/eval_set.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "data/dataset.h"
#include "data/model_inputs.h"

namespace qtk::quant::sensitivity {
namespace {

constexpr uint64_t kSubsetSeed = 0;  // same rows on every run

// Rows [first, first + count) of `t`, zero-padded to `rows` rows.
Tensor batch_rows(const Tensor& t, int64_t first, int64_t count, int64_t rows) {
  Shape shape = t.shape();
  shape[0] = rows;
  Tensor b(t.dtype(), shape);
  const size_t row_bytes = t.numel() ? t.nbytes() / static_cast<size_t>(t.dim(0)) : 0;
  std::memcpy(b.raw(), static_cast<const std::byte*>(t.raw()) + first * row_bytes, count * row_bytes);
  return b;
}

}  // namespace

Expected<EvalSet> load_eval_set(const std::string& spec, const Model& model, int64_t limit) {
  const auto inputs = data::declared_runtime_inputs(model);
  EvalSet set;
  const auto specs = data::known_dataset_specs();
  if (std::find(specs.begin(), specs.end(), spec) != specs.end()) {
    // A data set: its first `limit` samples with their labels, shaped as the
    // calibration loader shapes images for this model.
    QTK_ASSIGN_OR_RETURN(data::Dataset ds, data::load_dataset(spec, limit));
    if (ds.labels.empty()) return invalid_argument("validation data " + spec + " is empty");
    if (inputs.size() != 1)
      return invalid_argument("validation data set " + spec + " feeds one-input models; this model has " +
                              std::to_string(inputs.size()) + " inputs (use an .npz file)");
    Shape shape = {static_cast<int64_t>(ds.labels.size())};
    const Shape sample(ds.images.shape().begin() + 1, ds.images.shape().end());
    const Shape want = data::sample_shape_for_input(inputs[0], sample);
    shape.insert(shape.end(), want.begin(), want.end());
    Tensor images = ds.images.reshaped(shape);
    QTK_RETURN_IF_ERROR(data::check_input_array(images, inputs[0], spec));
    set.inputs.push_back(std::move(images));
    set.labels = std::move(ds.labels);
    return set;
  }
  if (!data::is_array_file_spec(spec))
    return invalid_argument("validation data '" + spec + "' is neither a known data set nor an .npy/.npz file");
  QTK_ASSIGN_OR_RETURN(set.inputs, data::load_calibration_inputs(spec, inputs, limit, kSubsetSeed));
  if (set.samples() == 0) return invalid_argument("validation data " + spec + " is empty");
  return set;
}

Expected<Tensor> model_outputs(const Model& model, const EvalSet& set, int threads) {
  const int64_t n = set.samples();
  if (n == 0) return invalid_argument("the validation set is empty");
  SessionOptions so;
  so.threads = std::max(1, threads);
  QTK_ASSIGN_OR_RETURN(std::unique_ptr<Session> session, Session::create(model, so));
  if (session->inputs().size() != set.inputs.size())
    return invalid_argument("the model has " + std::to_string(session->inputs().size()) +
                            " inputs, the validation set feeds " + std::to_string(set.inputs.size()));
  int64_t batch = 64;
  bool fixed = false;
  const TensorInfo& first_in = session->inputs()[0];
  if (first_in.has_shape && !first_in.shape.empty() && first_in.shape[0] > 0) batch = first_in.shape[0], fixed = true;
  Tensor all;
  int64_t width = 0;
  for (int64_t first = 0; first < n; first += batch) {
    const int64_t count = std::min(batch, n - first), rows = fixed ? batch : count;
    std::vector<Tensor> feeds;
    for (const auto& t : set.inputs) feeds.push_back(batch_rows(t, first, count, rows));
    QTK_ASSIGN_OR_RETURN(std::vector<Tensor> outs, session->run(feeds));
    if (outs.empty() || outs[0].numel() == 0 || outs[0].numel() % rows != 0)
      return invalid_argument("the model's first output does not hold one row per sample");
    const std::vector<float> v = outs[0].to_float_vector();
    if (first == 0) {
      width = static_cast<int64_t>(v.size()) / rows;
      all = Tensor(DType::kFloat32, {n, width});
    } else if (static_cast<int64_t>(v.size()) != rows * width) {
      return invalid_argument("the model's first output changes size between batches");
    }
    std::memcpy(all.data<float>() + first * width, v.data(), count * width * sizeof(float));
  }
  return all;
}

double top1_accuracy(const Tensor& outputs, const std::vector<int64_t>& labels) {
  if (labels.empty() || outputs.rank() != 2 || outputs.dim(0) != static_cast<int64_t>(labels.size())) return -1.0;
  const int64_t n = outputs.dim(0), c = outputs.dim(1);
  const float* p = outputs.data<float>();
  int64_t correct = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = p + i * c;
    correct += (std::max_element(row, row + c) - row) == labels[i];
  }
  return static_cast<double>(correct) / static_cast<double>(n);
}

OutputMetrics compare_outputs(const Tensor& ref, const Tensor& out, const std::vector<int64_t>& labels) {
  OutputMetrics m;
  const int64_t n = ref.dim(0), c = ref.dim(1);
  const float* r = ref.data<float>();
  const float* q = out.data<float>();
  double signal = 0, noise = 0, kl = 0;
  std::vector<double> pr(c), pq(c);
  auto softmax = [c](const float* x, std::vector<double>& p) {
    const double mx = *std::max_element(x, x + c);
    double s = 0;
    for (int64_t k = 0; k < c; ++k) s += (p[k] = std::exp(static_cast<double>(x[k]) - mx));
    for (auto& v : p) v /= s;
  };
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < c; ++k) {
      const double d = static_cast<double>(r[i * c + k]) - q[i * c + k];
      signal += static_cast<double>(r[i * c + k]) * r[i * c + k];
      noise += d * d;
    }
    softmax(r + i * c, pr);
    softmax(q + i * c, pq);
    for (int64_t k = 0; k < c; ++k)
      if (pr[k] > 0) kl += pr[k] * (std::log(pr[k]) - std::log(std::max(pq[k], 1e-300)));
  }
  // NaN/Inf outputs are the worst case, not a silent 200 dB.
  if (!std::isfinite(noise)) m.sqnr_db = -200.0;
  else m.sqnr_db = noise > 0 ? std::clamp(10.0 * std::log10(signal / noise), -200.0, 200.0) : 200.0;
  m.kl = n > 0 ? kl / static_cast<double>(n) : 0.0;
  if (!std::isfinite(m.kl)) m.kl = 1e9;
  m.accuracy = top1_accuracy(out, labels);
  return m;
}

}  // namespace qtk::quant::sensitivity
