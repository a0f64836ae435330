// Models qtk was not written around (tests/models: a transformer block with
// LayerNormalization, GELU and attention MatMuls; a MobileNet-like net with
// depthwise convolutions, ReLU6 and HardSwish) quantize in every mode and
// format, run in the float-simulated and the integer session, and stay close
// to the float model.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "qtk/model.h"
#include "qtk/quantize.h"
#include "qtk/session.h"

namespace qtk {
namespace {

const std::string kTestModels = std::string(QTK_SOURCE_DIR) + "/tests/models";

Tensor random_input(Shape shape, uint64_t seed, bool unit_interval) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  Tensor t(DType::kFloat32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = unit_interval ? uniform(rng) : normal(rng);
  return t;
}

// Signal-to-quantization-noise ratio of b against a, in dB.
double sqnr_db(const Tensor& a, const Tensor& b) {
  double signal = 0, noise = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double x = a.data<float>()[i], d = x - b.data<float>()[i];
    signal += x * x;
    noise += d * d;
  }
  return 10 * std::log10(signal / std::max(noise, 1e-30));
}

struct Unseen {
  const char* file;
  Shape sample_shape;  // one sample, without the batch dimension
  bool unit_interval;  // image-like inputs in [0, 1]
};

class QuantizeUnseen : public ::testing::TestWithParam<Unseen> {};

TEST_P(QuantizeUnseen, EveryModeRunsAndStaysCloseToFloat) {
  const Unseen& u = GetParam();
  auto model = load_model(kTestModels + "/" + u.file);
  ASSERT_TRUE(model.ok()) << model.status().message();
  Shape calib_shape = u.sample_shape, test_shape = u.sample_shape;
  calib_shape.insert(calib_shape.begin(), 64);
  test_shape.insert(test_shape.begin(), 8);
  const CalibrationData calib{{random_input(calib_shape, 1, u.unit_interval)}};
  const Tensor x = random_input(test_shape, 2, u.unit_interval);
  auto float_session = Session::create(*model);
  ASSERT_TRUE(float_session.ok()) << float_session.status().message();
  auto want = (*float_session)->run(std::vector<Tensor>{x});
  ASSERT_TRUE(want.ok());

  for (ActivationMode mode : {ActivationMode::kStatic, ActivationMode::kDynamic, ActivationMode::kWeightOnly})
    for (ExportFormat format : {ExportFormat::kQDQ, ExportFormat::kQOperator})
      for (bool integer : {false, true}) {
        SCOPED_TRACE(std::string(u.file) + " mode " + std::to_string(static_cast<int>(mode)) + " format " +
                     std::to_string(static_cast<int>(format)) + (integer ? " integer" : " float-simulated"));
        QuantConfig c;
        c.activations = mode;
        c.format = format;
        auto q = quantize(*model, c, calib);
        ASSERT_TRUE(q.ok()) << q.status().message();
        SessionOptions so;
        so.integer = integer;
        auto s = Session::create(q->model, so);
        ASSERT_TRUE(s.ok()) << s.status().message();
        auto got = (*s)->run(std::vector<Tensor>{x});
        ASSERT_TRUE(got.ok()) << got.status().message();
        ASSERT_EQ((*got)[0].shape(), (*want)[0].shape());
        // 8-bit weights and activations: ~40 dB per tensor; a few layers deep
        // the output keeps well over 20 dB.
        EXPECT_GT(sqnr_db((*want)[0], (*got)[0]), 20.0);
      }
}

INSTANTIATE_TEST_SUITE_P(Models, QuantizeUnseen,
                         ::testing::Values(Unseen{"transformer_block.onnx", {8, 32}, false},
                                           Unseen{"mobilenet_like.onnx", {3, 16, 16}, true}),
                         [](const auto& info) {
                           std::string n = info.param.file;
                           return n.substr(0, n.find('.'));
                         });

}  // namespace
}  // namespace qtk
