// End-to-end post-training quantization on the bundled MLP: accuracy, graph
// shape, determinism and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "data/dataset.h"
#include "onnx/model_io.h"
#include "qtk/quantize.h"
#include "qtk/session.h"
#include "test_models.h"

namespace qtk {
namespace {

const std::string kModels = QTK_MODELS_DIR;

double accuracy(const Model& m, const data::Dataset& d) { return testing::top1_accuracy(m, d); }

struct QuantizeMlp : ::testing::Test {
  static void SetUpTestSuite() {
    auto m = load_model(kModels + "/mlp.onnx");
    ASSERT_TRUE(m.ok());
    model = new Model(*m);
    auto t = data::load_dataset("fashion-mnist:test", 2000);
    auto c = data::load_dataset("fashion-mnist:train", 256);
    ASSERT_TRUE(t.ok() && c.ok());
    test = new data::Dataset(*t);
    calib = new CalibrationData{{c->images}};
    float_acc = accuracy(*model, *test);
  }
  static inline Model* model = nullptr;
  static inline data::Dataset* test = nullptr;
  static inline CalibrationData* calib = nullptr;
  static inline double float_acc = 0;
};

int count_op(const Model& m, const std::string& op) {
  int n = 0;
  for (const auto& node : m.graph.nodes) n += node.op_type == op;
  return n;
}

TEST_F(QuantizeMlp, StaticInt8StaysWithinTwoTenthsOfAPoint) {
  QuantConfig c;
  auto r = quantize(*model, c, *calib);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_GT(count_op(r->model, "QuantizeLinear"), 0);
  EXPECT_GT(count_op(r->model, "DequantizeLinear"), 0);
  // Weights are stored as int8 now: no float Gemm weight initializer is left.
  for (const auto& n : r->model.graph.nodes)
    if (n.op_type == "Gemm") EXPECT_EQ(r->model.graph.find_initializer(n.inputs[1]), nullptr);
  EXPECT_NEAR(accuracy(r->model, *test), float_acc, 0.002 + 1e-9);
  EXPECT_EQ(r->report.calib_samples, 256);
  bool has_weight = false, has_act = false;
  for (const auto& t : r->report.tensors) {
    has_weight |= t.kind == "weight";
    has_act |= t.kind == "activation";
    if (t.kind == "weight") EXPECT_GT(t.sqnr_db, 30.0) << t.tensor;  // int8 weights: ~40 dB
  }
  EXPECT_TRUE(has_weight && has_act);
}

TEST_F(QuantizeMlp, DynamicAndWeightOnlyModes) {
  for (ActivationMode mode : {ActivationMode::kDynamic, ActivationMode::kWeightOnly}) {
    QuantConfig c;
    c.activations = mode;
    auto r = quantize(*model, c, *calib);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(count_op(r->model, "DynamicQuantizeLinear") > 0, mode == ActivationMode::kDynamic);
    EXPECT_NEAR(accuracy(r->model, *test), float_acc, 0.002 + 1e-9);
  }
}

TEST_F(QuantizeMlp, LowBitFormatsDegradeInOrder) {
  double prev = 1.0;
  for (quant::QFormat f : {quant::QFormat::kInt8, quant::QFormat::kInt4, quant::QFormat::kInt2}) {
    QuantConfig c;
    c.weight_format = f;
    c.activations = ActivationMode::kWeightOnly;
    c.method = WeightMethod::kRtn;  // formats under test, not rounding methods (gptq_test, adaround_test)
    auto r = quantize(*model, c, *calib);
    ASSERT_TRUE(r.ok()) << r.status().message();
    double a = accuracy(r->model, *test);
    EXPECT_LE(a, prev + 0.005) << quant::traits(f).name;
    EXPECT_GT(a, 0.5) << quant::traits(f).name;  // far above chance (0.1) even at 2 bits
    prev = a;
  }
}

// int7 weights (AVX2's exact vpmaddubsw path needs |w0| + |w1| <= 128 for
// every pair): codes in [-64, 63] in int8 tensors, accuracy as at 8 bits.
TEST_F(QuantizeMlp, Int7WeightsStayInSevenBits) {
  QuantConfig c;
  c.weight_format = quant::QFormat::kInt7;
  auto r = quantize(*model, c, *calib);
  ASSERT_TRUE(r.ok()) << r.status().message();
  int weights = 0, at_edge = 0;
  for (const auto& [name, t] : r->model.graph.initializers) {
    if (t.dtype() != DType::kInt8 || t.numel() < 100) continue;  // the weight codes, not zero points
    ++weights;
    for (int64_t i = 0; i < t.numel(); ++i) {
      const int v = t.data<int8_t>()[i];
      ASSERT_TRUE(v >= -64 && v <= 63) << name << "[" << i << "] = " << v;
      at_edge += v == -64 || v == 63;
    }
  }
  EXPECT_GE(weights, 3);
  EXPECT_GT(at_edge, 0);  // the grid is used to its ends, not squeezed further
  EXPECT_NEAR(accuracy(r->model, *test), float_acc, 0.003);
}

TEST_F(QuantizeMlp, GroupLog2AndFp16Weights) {
  QuantConfig g;
  g.weight_format = quant::QFormat::kInt4;
  g.method = WeightMethod::kRtn;  // layouts under test, not rounding methods
  g.granularity = Granularity::kPerGroup;
  g.group_size = 64;
  auto r = quantize(*model, g, *calib);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->model.opset(), 21);  // blocked DequantizeLinear
  EXPECT_GT(accuracy(r->model, *test), float_acc - 0.02);

  QuantConfig l;
  l.mapping = Mapping::kLog2;
  l.weight_format = quant::QFormat::kInt4;
  l.activations = ActivationMode::kWeightOnly;
  r = quantize(*model, l, *calib);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_GT(accuracy(r->model, *test), 0.5);

  QuantConfig h;
  h.fp16_weights = true;
  h.activations = ActivationMode::kWeightOnly;
  r = quantize(*model, h, *calib);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_GT(count_op(r->model, "Cast"), 0);
  EXPECT_NEAR(accuracy(r->model, *test), float_acc, 0.001 + 1e-9);
}

TEST_F(QuantizeMlp, SameInputsGiveIdenticalBytes) {
  QuantConfig c;
  auto a = quantize(*model, c, *calib), b = quantize(*model, c, *calib);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*onnx_io::serialize_model(a->model), *onnx_io::serialize_model(b->model));
}

TEST_F(QuantizeMlp, CachedRangesSkipCalibration) {
  QuantConfig c;
  auto a = quantize(*model, c, *calib);
  ASSERT_TRUE(a.ok());
  c.bias_correction = false;  // needs data; the cache holds ranges only
  auto first = quantize(*model, c, *calib);
  auto again = quantize(*model, c, CalibrationData{}, &first->ranges);
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(again->report.calib_samples, 0);
  EXPECT_EQ(*onnx_io::serialize_model(first->model), *onnx_io::serialize_model(again->model));
}

TEST_F(QuantizeMlp, BadCalibrationDataIsAnError) {
  QuantConfig c;
  // NaN in part: skipped and counted.
  Tensor x = calib->inputs[0].clone();
  for (int64_t i = 0; i < 784 * 10; ++i) x.data<float>()[i] = NAN;
  auto r = quantize(*model, c, CalibrationData{{x}});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_GT(r->report.nonfinite_skipped, 0);
  EXPECT_FALSE(r->report.warnings.empty());
  // All NaN: nothing valid remains.
  Tensor all_nan(DType::kFloat32, {8, 1, 28, 28});
  for (int64_t i = 0; i < all_nan.numel(); ++i) all_nan.data<float>()[i] = NAN;
  EXPECT_FALSE(quantize(*model, c, CalibrationData{{all_nan}}).ok());
  // Empty, wrong shape, wrong dtype, wrong count.
  EXPECT_FALSE(quantize(*model, c, CalibrationData{}).ok());
  EXPECT_FALSE(quantize(*model, c, CalibrationData{{Tensor(DType::kFloat32, {0, 1, 28, 28})}}).ok());
  EXPECT_FALSE(quantize(*model, c, CalibrationData{{Tensor(DType::kFloat32, {4, 3, 28, 28})}}).ok());
  EXPECT_FALSE(quantize(*model, c, CalibrationData{{Tensor(DType::kInt64, {4, 1, 28, 28})}}).ok());
  EXPECT_FALSE(quantize(*model, c, CalibrationData{{calib->inputs[0], calib->inputs[0]}}).ok());
  // The error says which pass failed: static ranges are "calibration"; with
  // dynamic activations the run only weighs the layers' inputs.
  auto st = quantize(*model, c, CalibrationData{{Tensor(DType::kFloat32, {4, 3, 28, 28})}});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.status().message().rfind("calibration:", 0), 0u) << st.status().message();
  c.activations = ActivationMode::kDynamic;
  auto dyn = quantize(*model, c, CalibrationData{{Tensor(DType::kFloat32, {4, 3, 28, 28})}});
  ASSERT_FALSE(dyn.ok());
  EXPECT_EQ(dyn.status().message().find("calibration:"), std::string::npos) << dyn.status().message();
  EXPECT_NE(dyn.status().message().find("input importance"), std::string::npos) << dyn.status().message();
}

TEST_F(QuantizeMlp, ExcludeKeepsNodesFloatAndWarnsOnNoMatch) {
  QuantConfig c;
  c.exclude = {"Gemm", "no_such_node"};
  auto r = quantize(*model, c, *calib);
  ASSERT_TRUE(r.ok());
  for (const auto& t : r->report.tensors) EXPECT_NE(t.kind, "weight");
  bool warned = false;
  for (const auto& w : r->report.warnings) warned |= w.find("no_such_node") != std::string::npos;
  EXPECT_TRUE(warned);
}

TEST_F(QuantizeMlp, Int4WeightsArePackedInt4TensorsAtOpset21) {
  QuantConfig c;
  c.weight_format = quant::QFormat::kInt4;
  c.method = WeightMethod::kRtn;  // packing under test, not rounding methods
  auto r = quantize(*model, c, *calib);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->model.opset(), 21);
  int int4_tensors = 0;
  for (const auto& [name, t] : r->model.graph.initializers) int4_tensors += t.dtype() == DType::kInt4;
  EXPECT_GE(int4_tensors, 4);  // codes and zero points of both Gemm weights

  // On disk two codes share a byte: the file is smaller than with int8
  // containers, reads back to the same values, and runs the same.
  const std::string packed = ::testing::TempDir() + "/mlp_w4_packed.onnx";
  const std::string wide = ::testing::TempDir() + "/mlp_w4_int8.onnx";
  ASSERT_TRUE(save_model(r->model, packed).ok());
  QuantConfig c8 = c;
  c8.int4_types = false;
  auto r8 = quantize(*model, c8, *calib);
  ASSERT_TRUE(r8.ok());
  EXPECT_LT(r8->model.opset(), 21);
  ASSERT_TRUE(save_model(r8->model, wide).ok());
  EXPECT_LT(std::filesystem::file_size(packed) * 10, std::filesystem::file_size(wide) * 6);
  auto back = load_model(packed);
  ASSERT_TRUE(back.ok()) << back.status().message();
  for (const auto& [name, t] : r->model.graph.initializers) {
    const Tensor* u = back->graph.find_initializer(name);
    ASSERT_NE(u, nullptr) << name;
    ASSERT_EQ(u->dtype(), t.dtype()) << name;
    ASSERT_EQ(u->nbytes(), t.nbytes()) << name;
    EXPECT_EQ(std::memcmp(u->raw(), t.raw(), t.nbytes()), 0) << name;
  }
  const double a = accuracy(*back, *test);
  EXPECT_DOUBLE_EQ(a, accuracy(r8->model, *test));
  // The integer session reads the 4-bit codes as int8 operands.
  SessionOptions integer;
  integer.integer = true;
  auto s = Session::create(*back, integer);
  ASSERT_TRUE(s.ok()) << s.status().message();
  auto out = (*s)->run(std::vector<Tensor>{calib->inputs[0]});
  ASSERT_TRUE(out.ok()) << out.status().message();
}

TEST_F(QuantizeMlp, FloatFirstLastKeepsOuterLayersFloat) {
  QuantConfig c;
  c.float_first_last = true;
  auto r = quantize(*model, c, *calib);
  ASSERT_TRUE(r.ok()) << r.status().message();
  int kept = 0;
  for (const auto& f : r->report.float_nodes) kept += f.find("first/last") != std::string::npos;
  EXPECT_EQ(kept, 2);  // mlp's Gemms f1, f2, f3: f1 and f3 stay float
  int weights = 0;
  for (const auto& t : r->report.tensors) {
    if (t.kind != "weight") continue;
    ++weights;
    EXPECT_EQ(t.tensor, "f2.weight");
  }
  EXPECT_EQ(weights, 1);
  EXPECT_NEAR(accuracy(r->model, *test), float_acc, 0.002 + 1e-9);
}

}  // namespace
}  // namespace qtk
