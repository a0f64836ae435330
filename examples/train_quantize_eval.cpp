// The articles' worked example through qtk's C++ API: train a small dense
// network on Fashion-MNIST, quantize it to int8 (and int4 weights), and
// evaluate every version on the test set, in float and with the integer
// runtime.
//
//   build/examples/qtk_train_quantize_eval [EPOCHS] [OUT_DIR]
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "data/dataset.h"
#include "eval/classifier_eval.h"
#include "qtk/model.h"
#include "qtk/quantize.h"
#include "qtk/session.h"
#include "runtime/thread_pool.h"
#include "train/arch.h"
#include "train/train_graph.h"
#include "train/trainer.h"

namespace {

int fail(const qtk::Status& s) {
  std::fprintf(stderr, "error: %s\n", s.message().c_str());
  return 1;
}

// Top-1 accuracy of `model` on `test`, float or integer kernels.
qtk::Expected<double> accuracy(const qtk::Model& model, const qtk::data::Dataset& test, bool integer) {
  QTK_ASSIGN_OR_RETURN(auto session, qtk::Session::create(model, {.threads = 2, .integer = integer}));
  QTK_ASSIGN_OR_RETURN(qtk::eval::EvalResult r, qtk::eval::evaluate_classifier(*session, test));
  return r.accuracy;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t epochs = argc > 1 ? std::atoll(argv[1]) : 10;
  const std::filesystem::path out = argc > 2 ? argv[2] : ".";
  if (epochs < 1) return fail(qtk::invalid_argument("EPOCHS must be >= 1"));

  auto train_set = qtk::data::load_dataset("fashion-mnist:train");
  auto test_set = qtk::data::load_dataset("fashion-mnist:test");
  if (!train_set.ok()) return fail(train_set.status());
  if (!test_set.ok()) return fail(test_set.status());

  // 1. Train: 784 -> 128 -> ReLU -> 10, AdamW, cosine schedule.
  auto arch = qtk::train::build_architecture("mlp:784,128,10", /*seed=*/0);
  if (!arch.ok()) return fail(arch.status());
  auto graph = qtk::train::TrainGraph::create(*arch);
  if (!graph.ok()) return fail(graph.status());
  qtk::rt::ThreadPool pool(2);
  qtk::train::TrainOptions opt;
  opt.epochs = epochs;
  opt.batch = 128;
  opt.lr = 1e-3f;
  opt.pool = &pool;
  opt.on_epoch = [&](const qtk::train::EpochStats& e) {
    std::printf("epoch %lld: loss %.4f, train accuracy %.4f\n", static_cast<long long>(e.epoch), e.loss,
                e.accuracy);
  };
  auto report = qtk::train::train_classifier(*graph, *train_set, nullptr, opt);
  if (!report.ok()) return fail(report.status());
  if (report->diverged) return fail(qtk::invalid_argument(report->divergence));
  const qtk::Model trained = graph->to_model();
  if (auto s = qtk::save_model(trained, (out / "mlp_trained.onnx").string()); !s.ok()) return fail(s);

  // 2. Quantize: calibrate on 512 training images; int8 and int4 weights.
  const qtk::data::Dataset calib = qtk::data::sample_subset(*train_set, 512, /*seed=*/1);
  qtk::Shape calib_shape{calib.images.dim(0)};  // [512, 784]: the model's per-sample shape
  for (int64_t d : graph->sample_shape()) calib_shape.push_back(d);
  const qtk::Tensor calib_images = calib.images.reshaped(calib_shape);
  qtk::QuantConfig w8;  // int8 per-channel weights, uint8 static activations
  qtk::QuantConfig w4 = w8;
  w4.weight_format = qtk::quant::QFormat::kInt4;
  auto q8 = qtk::quantize(trained, w8, qtk::CalibrationData{{calib_images}});
  auto q4 = qtk::quantize(trained, w4, qtk::CalibrationData{{calib_images}});
  if (!q8.ok()) return fail(q8.status());
  if (!q4.ok()) return fail(q4.status());
  if (auto s = qtk::save_model(q8->model, (out / "mlp_w8a8.onnx").string()); !s.ok()) return fail(s);

  // 3. Evaluate on the 10,000 test images.
  auto f = accuracy(trained, *test_set, false);
  auto a8 = accuracy(q8->model, *test_set, false);
  auto i8 = accuracy(q8->model, *test_set, true);
  auto a4 = accuracy(q4->model, *test_set, false);
  for (const auto* r : {&f, &a8, &i8, &a4})
    if (!r->ok()) return fail(r->status());
  std::printf("float            %.4f\n", *f);
  std::printf("W8A8 (QDQ)       %.4f  (drop %+.2f points)\n", *a8, 100 * (*f - *a8));
  std::printf("W8A8 (integer)   %.4f  (drop %+.2f points)\n", *i8, 100 * (*f - *i8));
  std::printf("W4A8 (QDQ)       %.4f  (drop %+.2f points)\n", *a4, 100 * (*f - *a4));
  // int8 should cost well under a point on this network; say so when not.
  if (*f - *i8 > 0.01) {
    std::fprintf(stderr, "error: int8 lost more than 1 point\n");
    return 2;
  }
  return 0;
}
