#include "eval/classifier_eval.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "data/model_inputs.h"

namespace qtk::eval {
namespace {

double ratio(int64_t a, int64_t b) { return b > 0 ? static_cast<double>(a) / static_cast<double>(b) : 0.0; }

Status check_dataset(const data::Dataset& ds) {
  const int64_t n = static_cast<int64_t>(ds.labels.size());
  if (n == 0) return invalid_argument("the data set is empty");
  if (ds.num_classes <= 0) return invalid_argument("the data set declares no classes");
  if (ds.images.dtype() != DType::kFloat32 || ds.images.rank() < 1 || ds.images.dim(0) != n)
    return invalid_argument("data set images are " + std::string(dtype_name(ds.images.dtype())) + " " +
                            shape_to_string(ds.images.shape()) + ", expected float32 [" + std::to_string(n) + ",...]");
  for (int64_t i = 0; i < n; ++i)
    if (ds.labels[i] < 0 || ds.labels[i] >= ds.num_classes)
      return invalid_argument("label " + std::to_string(ds.labels[i]) + " of sample " + std::to_string(i) +
                              " is outside 0.." + std::to_string(ds.num_classes - 1));
  return Status::Ok();
}

}  // namespace

Expected<EvalResult> evaluate_classifier(const Session& session, const data::Dataset& ds, const EvalOptions& options) {
  QTK_RETURN_IF_ERROR(check_dataset(ds));
  if (session.inputs().size() != 1)
    return invalid_argument("evaluation needs a model with one input; this one has " +
                            std::to_string(session.inputs().size()));
  if (session.outputs().empty()) return invalid_argument("the model has no outputs");
  const TensorInfo& input = session.inputs()[0];
  if (input.dtype != DType::kFloat32 && input.dtype != DType::kUndefined)
    return invalid_argument("evaluation feeds float32 images, but input '" + input.name + "' is " +
                            dtype_name(input.dtype));
  if (options.batch < 0) return invalid_argument("batch must be positive, got " + std::to_string(options.batch));
  int64_t batch = options.batch > 0 ? options.batch : 64;
  bool fixed_batch = false;
  if (input.has_shape && !input.shape.empty() && input.shape[0] > 0) {
    if (options.batch > 0 && options.batch != input.shape[0])
      return invalid_argument("model input '" + input.name + "' has a fixed batch of " +
                              std::to_string(input.shape[0]) + ", not " + std::to_string(options.batch));
    batch = input.shape[0];
    fixed_batch = true;
  }

  const int64_t n = static_cast<int64_t>(ds.labels.size());
  const Shape data_sample(ds.images.shape().begin() + 1, ds.images.shape().end());
  const Shape sample = data::sample_shape_for_input(input, data_sample);
  const int64_t per_sample = shape_numel(sample);
  EvalResult r;
  r.batch = batch;
  r.class_samples.assign(ds.num_classes, 0);
  r.class_correct.assign(ds.num_classes, 0);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t first = 0; first < n; first += batch) {
    const int64_t count = std::min(batch, n - first);
    const int64_t rows = fixed_batch ? batch : count;
    Shape shape = {rows};
    shape.insert(shape.end(), sample.begin(), sample.end());
    Tensor images(DType::kFloat32, shape);  // zero padding rows when the batch is fixed
    std::memcpy(images.data<float>(), ds.images.data<float>() + first * per_sample,
                static_cast<size_t>(count * per_sample) * sizeof(float));
    QTK_ASSIGN_OR_RETURN(std::vector<Tensor> outputs, session.run(std::vector<Tensor>{images}));
    if (outputs.empty()) return internal_error("the model returned no outputs");
    const Tensor& logits = outputs[0];
    if (logits.rank() < 1 || logits.dim(0) != rows || logits.numel() == 0 || logits.numel() % rows != 0)
      return invalid_argument("output '" + session.outputs()[0].name + "' has shape " +
                              shape_to_string(logits.shape()) + ", expected [" + std::to_string(rows) +
                              ", classes] scores");
    const int64_t classes = logits.numel() / rows;
    for (int64_t i = 0; i < count; ++i) {
      // First maximum wins; NaN scores never win.
      int64_t best = 0;
      double best_score = logits.get_as_double(i * classes);
      for (int64_t c = 1; c < classes; ++c) {
        const double score = logits.get_as_double(i * classes + c);
        if (score > best_score || (best_score != best_score && score == score)) {
          best_score = score;
          best = c;
        }
      }
      const int64_t label = ds.labels[first + i];
      ++r.class_samples[label];
      if (best == label) {
        ++r.correct;
        ++r.class_correct[label];
      }
    }
    r.samples += count;
    if (options.progress) options.progress(r.samples, n);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.accuracy = ratio(r.correct, r.samples);
  r.images_per_second = r.seconds > 0 ? static_cast<double>(r.samples) / r.seconds : 0.0;
  for (int c = 0; c < ds.num_classes; ++c) r.class_accuracy.push_back(ratio(r.class_correct[c], r.class_samples[c]));
  return r;
}

}  // namespace qtk::eval
