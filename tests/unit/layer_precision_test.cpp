// Per-layer precision (QuantConfig::layer_precision, first/last 8-bit) and
// static activations below 8 bits: formats land on exactly the named layers,
// shared tensors take the widest format, 4-bit QDQ graphs load and run, and
// bad values are refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "data/dataset.h"
#include "onnx/model_io.h"
#include "qtk/quantize.h"
#include "qtk/session.h"
#include "quant/layer_precision_file.h"
#include "test_models.h"

namespace qtk {
namespace {

const std::string kModels = QTK_MODELS_DIR;

ir::ValueInfo value(const std::string& name, DType dt, std::vector<int64_t> shape = {}) {
  ir::ValueInfo v;
  v.name = name;
  v.dtype = dt;
  for (int64_t d : shape) v.shape.push_back(ir::Dim{d, ""});
  v.has_shape = !shape.empty();
  return v;
}

Tensor random_tensor(Shape shape, uint32_t seed, float scale = 1.f) {
  Tensor t(DType::kFloat32, shape);
  uint32_t s = seed * 2654435761u + 1;
  for (int64_t i = 0; i < t.numel(); ++i) {
    s = s * 1664525u + 1013904223u;
    t.data<float>()[i] = scale * (static_cast<float>(s >> 8) / static_cast<float>(1 << 24) - 0.5f);
  }
  return t;
}

// One single-output node appended to g.
void add_node(ir::Graph& g, const std::string& name, const std::string& op, std::vector<std::string> in,
              std::string out) {
  ir::Node n;
  n.name = name;
  n.op_type = op;
  n.inputs = std::move(in);
  n.outputs = {std::move(out)};
  g.nodes.push_back(n);
}

// x [N, 8] is read by two Gemms, a and b; y = a(x) + b(x) -> Gemm c.
Model two_readers() {
  Model m;
  m.opsets = {{"", 17}};
  m.ir_version = 8;
  auto& g = m.graph;
  g.inputs.push_back(value("x", DType::kFloat32));
  g.outputs.push_back(value("out", DType::kFloat32));
  g.set_initializer("wa", random_tensor({8, 8}, 1));
  g.set_initializer("wb", random_tensor({8, 8}, 2));
  g.set_initializer("wc", random_tensor({8, 4}, 3));
  add_node(g, "a", "Gemm", {"x", "wa"}, "ya");
  add_node(g, "b", "Gemm", {"x", "wb"}, "yb");
  add_node(g, "add", "Add", {"ya", "yb"}, "s");
  add_node(g, "c", "Gemm", {"s", "wc"}, "out");
  return m;
}

CalibrationData two_readers_calib() { return {{random_tensor({64, 8}, 7, 4.f)}}; }

const TensorQuantReport* find_report(const QuantReport& r, const std::string& tensor) {
  for (const auto& t : r.tensors)
    if (t.tensor == tensor) return &t;
  return nullptr;
}

std::string first_word(const std::string& s) { return s.substr(0, s.find(' ')); }

QuantConfig rtn_config() {
  QuantConfig c;
  c.method = WeightMethod::kRtn;  // formats under test, not rounding methods
  return c;
}

TEST(LayerPrecision, OverridesChangeExactlyTheNamedLayer) {
  QuantConfig c = rtn_config();
  c.layer_precision["b"] = {quant::QFormat::kInt4, std::nullopt, false};
  c.layer_precision["c"] = {std::nullopt, quant::QFormat::kUInt4, false};
  auto r = quantize(two_readers(), c, two_readers_calib());
  ASSERT_TRUE(r.ok()) << r.status().message();
  int weights = 0;
  for (const auto& t : r->report.tensors) {
    if (t.kind != "weight") continue;
    ++weights;
    EXPECT_EQ(first_word(t.scheme), t.node == "b" ? "int4" : "int8") << t.node << ": " << t.scheme;
  }
  EXPECT_EQ(weights, 3);
  // c's input s is uint4; x (read by a and b, no activation override) stays uint8.
  const auto* s = find_report(r->report, "s");
  const auto* x = find_report(r->report, "x");
  ASSERT_TRUE(s && x);
  EXPECT_EQ(first_word(s->scheme), "uint4");
  EXPECT_EQ(first_word(x->scheme), "uint8");
  EXPECT_NEAR(s->zero_point_max, s->zero_point_min, 0);
  EXPECT_LE(s->zero_point_max, 15);
  EXPECT_EQ(r->model.opset(), 21);  // INT4 weights and UINT4 activations
  EXPECT_TRUE(r->report.warnings.empty()) << r->report.warnings[0];
}

TEST(LayerPrecision, SharedTensorTakesTheWidestFormat) {
  // a asks for uint4, b for nothing (the config's uint8): x is uint8.
  QuantConfig c = rtn_config();
  c.activation_format = quant::QFormat::kUInt8;
  c.layer_precision["a"] = {std::nullopt, quant::QFormat::kUInt4, false};
  auto r = quantize(two_readers(), c, two_readers_calib());
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(first_word(find_report(r->report, "x")->scheme), "uint8");
  // Both ask for 4 bits: x is 4-bit.
  c.layer_precision["b"] = {std::nullopt, quant::QFormat::kUInt4, false};
  r = quantize(two_readers(), c, two_readers_calib());
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(first_word(find_report(r->report, "x")->scheme), "uint4");
  // 4 bits under a 4-bit config, one reader asks for int8: x is int8.
  c.activation_format = quant::QFormat::kUInt4;
  c.first_last_8bit = false;
  c.layer_precision.erase("a");
  c.layer_precision["b"] = {std::nullopt, quant::QFormat::kInt8, false};
  r = quantize(two_readers(), c, two_readers_calib());
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(first_word(find_report(r->report, "x")->scheme), "int8");
  EXPECT_EQ(first_word(find_report(r->report, "s")->scheme), "uint4");
}

// x -> Gemm a -> ya; ya is read by Gemms b and c, whose outputs meet in an
// Add (read by nothing weighted) -> Softmax -> Gemm d -> out.
Model branches_into_add() {
  Model m;
  m.opsets = {{"", 17}};
  m.ir_version = 8;
  auto& g = m.graph;
  g.inputs.push_back(value("x", DType::kFloat32));
  g.outputs.push_back(value("out", DType::kFloat32));
  for (const char* w : {"wa", "wb", "wc", "wd"}) g.set_initializer(w, random_tensor({8, 8}, w[1]));
  add_node(g, "a", "Gemm", {"x", "wa"}, "ya");
  add_node(g, "b", "Gemm", {"ya", "wb"}, "yb");
  add_node(g, "c", "Gemm", {"ya", "wc"}, "yc");
  add_node(g, "add", "Add", {"yb", "yc"}, "s");
  add_node(g, "softmax", "Softmax", {"s"}, "p");
  add_node(g, "d", "Gemm", {"p", "wd"}, "out");
  return m;
}

TEST(LayerPrecision, BelowEightBitsOnlyWeightedInputsAreNarrow) {
  QuantConfig c = rtn_config();
  c.weight_format = quant::QFormat::kInt4;
  c.activation_format = quant::QFormat::kUInt4;
  auto scheme = [](const QuantReport& r, const std::string& t) {
    const auto* rep = find_report(r, t);
    return rep ? first_word(rep->scheme) : "(not quantized)";
  };
  auto r = quantize(branches_into_add(), c, two_readers_calib());
  ASSERT_TRUE(r.ok()) << r.status().message();
  // ya is the input of the inner Gemms b and c: 4 bits. x and p feed the
  // first and last layer (8 bits); yb, yc (Add inputs) and s (Add output,
  // read by the float Softmax) feed no weight: 8 bits. Graph outputs stay float.
  EXPECT_EQ(scheme(r->report, "ya"), "uint4");
  EXPECT_EQ(scheme(r->report, "out"), "(not quantized)");
  for (const char* t : {"x", "yb", "yc", "s", "p"}) EXPECT_EQ(scheme(r->report, t), "uint8") << t;
  const auto note = std::find_if(r->report.notes.begin(), r->report.notes.end(),
                                 [](const std::string& n) { return n.find("kept at uint8") != std::string::npos; });
  ASSERT_NE(note, r->report.notes.end());
  EXPECT_EQ(note->rfind("3 activation tensors", 0), 0u) << *note;  // yb, yc, s
  EXPECT_EQ(r->model.opset(), 21);

  // A layer_precision entry on the non-weighted Add binds like a weighted
  // reader: its inputs take the format it names.
  c.layer_precision["add"] = {std::nullopt, quant::QFormat::kUInt4, false};
  r = quantize(branches_into_add(), c, two_readers_calib());
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(scheme(r->report, "yb"), "uint4");
  EXPECT_EQ(scheme(r->report, "yc"), "uint4");
  EXPECT_EQ(scheme(r->report, "s"), "uint8");

  // first_last_8bit = false asks for uniform formats: every tensor 4-bit, no note.
  c.layer_precision.clear();
  c.first_last_8bit = false;
  r = quantize(branches_into_add(), c, two_readers_calib());
  ASSERT_TRUE(r.ok()) << r.status().message();
  for (const char* t : {"x", "ya", "yb", "yc", "s", "p"}) EXPECT_EQ(scheme(r->report, t), "uint4") << t;
  EXPECT_TRUE(r->report.notes.empty()) << r->report.notes[0];

  // 8-bit activations: nothing changes width.
  QuantConfig c8 = rtn_config();
  r = quantize(branches_into_add(), c8, two_readers_calib());
  ASSERT_TRUE(r.ok()) << r.status().message();
  for (const char* t : {"x", "ya", "yb", "yc", "s", "p"}) EXPECT_EQ(scheme(r->report, t), "uint8") << t;
  EXPECT_TRUE(r->report.notes.empty()) << r->report.notes[0];
}

// Two inputs through one shared first layer (a1, a2), a middle layer, two
// heads (h1, h2).
Model siamese_heads() {
  Model m;
  m.opsets = {{"", 17}};
  m.ir_version = 8;
  auto& g = m.graph;
  g.inputs = {value("x1", DType::kFloat32), value("x2", DType::kFloat32)};
  g.outputs = {value("o1", DType::kFloat32), value("o2", DType::kFloat32)};
  g.set_initializer("wa", random_tensor({8, 8}, 1));
  g.set_initializer("wm", random_tensor({8, 8}, 2));
  g.set_initializer("w1", random_tensor({8, 4}, 3));
  g.set_initializer("w2", random_tensor({8, 3}, 4));
  add_node(g, "a1", "Gemm", {"x1", "wa"}, "y1");
  add_node(g, "a2", "Gemm", {"x2", "wa"}, "y2");
  add_node(g, "add", "Add", {"y1", "y2"}, "s");
  add_node(g, "relu", "Relu", {"s"}, "r");
  add_node(g, "mid", "Gemm", {"r", "wm"}, "t");
  add_node(g, "h1", "Gemm", {"t", "w1"}, "o1");
  add_node(g, "h2", "Gemm", {"t", "w2"}, "o2");
  return m;
}

CalibrationData siamese_heads_calib() { return {{random_tensor({64, 8}, 7, 4.f), random_tensor({64, 8}, 8, 4.f)}}; }

// Two inputs through one shared first layer (siamese towers), a middle
// layer, two heads: every layer with no weighted layer before it on a path
// from an input is a first layer (a1 and a2), every one with none after it
// a last layer (h1 and h2). Before, only a1 and h2 were: a2 read a 4-bit
// input through 8-bit weights, a mix ONNX Runtime's QDQ fusion turns into a
// QLinearConv it then refuses as invalid (uint4 x).
TEST(LayerPrecision, FirstAndLastLayersOnEveryPath) {
  const Model m = siamese_heads();
  const CalibrationData calib = siamese_heads_calib();

  QuantConfig c = rtn_config();
  c.weight_format = quant::QFormat::kInt4;
  c.activation_format = quant::QFormat::kUInt4;
  auto r = quantize(m, c, calib);
  ASSERT_TRUE(r.ok()) << r.status().message();
  const auto note = std::find_if(r->report.notes.begin(), r->report.notes.end(), [](const std::string& n) {
    return n.find("first and last weighted layers") != std::string::npos;
  });
  ASSERT_NE(note, r->report.notes.end());
  EXPECT_NE(note->find(": a1, a2, h1, h2 use"), std::string::npos) << *note;
  auto scheme = [&](const std::string& t) {
    const auto* rep = find_report(r->report, t);
    return rep ? first_word(rep->scheme) : "(not quantized)";
  };
  for (const char* t : {"x1", "x2", "t"}) EXPECT_EQ(scheme(t), "uint8") << t;  // inputs of first / last layers
  EXPECT_EQ(scheme("r"), "uint4");                                               // the middle layer's input
  for (const char* w : {"wa", "w1", "w2"}) EXPECT_EQ(scheme(w), "int8") << w;
  EXPECT_EQ(scheme("wm"), "int4");

  // float_first_last leaves the same four float.
  c.float_first_last = true;
  r = quantize(m, c, calib);
  ASSERT_TRUE(r.ok()) << r.status().message();
  for (const char* n : {"a1", "a2", "h1", "h2"}) {
    const bool kept = std::any_of(r->report.float_nodes.begin(), r->report.float_nodes.end(),
                                  [&](const std::string& f) { return f.rfind(std::string(n) + " (", 0) == 0; });
    EXPECT_TRUE(kept) << n;
  }
  EXPECT_EQ(scheme("wm"), "int4");
}

// Under 4-bit activations, a layer whose layer_precision weights are stored
// in 8-bit tensors (and that names no activation format) reads 8-bit inputs:
// ONNX Runtime's QDQ fusion turns an 8-bit weight on a 4-bit input into a
// QLinearConv it then refuses (resnet20, W4A4, one layer at int8, int7 or int3).
TEST(LayerPrecision, EightBitWeightsReadEightBitInputs) {
  QuantConfig c = rtn_config();
  c.weight_format = quant::QFormat::kInt4;
  c.activation_format = quant::QFormat::kUInt4;
  c.layer_precision["mid"] = {quant::QFormat::kInt8, std::nullopt, false};
  auto r = quantize(siamese_heads(), c, siamese_heads_calib());
  ASSERT_TRUE(r.ok()) << r.status().message();
  const auto* rep = find_report(r->report, "r");
  ASSERT_NE(rep, nullptr);
  EXPECT_EQ(first_word(rep->scheme), "uint8");
  const auto* w = find_report(r->report, "wm");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(first_word(w->scheme), "int8");
  // Weights stored in 8-bit tensors below 8 bits (int3) count the same.
  c.layer_precision["mid"] = {quant::QFormat::kInt3, std::nullopt, false};
  r = quantize(siamese_heads(), c, siamese_heads_calib());
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(first_word(find_report(r->report, "r")->scheme), "uint8");
  // An explicit activation format still wins.
  c.layer_precision["mid"] = {quant::QFormat::kInt8, quant::QFormat::kUInt4, false};
  r = quantize(siamese_heads(), c, siamese_heads_calib());
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(first_word(find_report(r->report, "r")->scheme), "uint4");
}

TEST(LayerPrecision, KeepFloatAndUnknownNames) {
  QuantConfig c = rtn_config();
  c.layer_precision["a"].keep_float = true;
  c.layer_precision["no_such_node"] = {quant::QFormat::kInt4, std::nullopt, false};
  c.layer_precision["add"] = {quant::QFormat::kInt4, std::nullopt, false};  // no weight
  auto r = quantize(two_readers(), c, two_readers_calib());
  ASSERT_TRUE(r.ok()) << r.status().message();
  bool a_float = false;
  for (const auto& f : r->report.float_nodes) a_float |= f.rfind("a (Gemm)", 0) == 0;
  EXPECT_TRUE(a_float);
  for (const auto& t : r->report.tensors) EXPECT_NE(t.tensor, "wa");
  int unknown = 0, no_weight = 0;
  for (const auto& w : r->report.warnings) {
    unknown += w.find("'no_such_node'") != std::string::npos;
    no_weight += w.find("'add'") != std::string::npos && w.find("no constant weight") != std::string::npos;
  }
  EXPECT_EQ(unknown, 1);
  EXPECT_EQ(no_weight, 1);
}

TEST(LayerPrecision, BadValuesAreRefused) {
  auto refused = [](const QuantConfig& c, const std::string& words) {
    auto r = quantize(two_readers(), c, two_readers_calib());
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status().message();
  };
  QuantConfig c = rtn_config();
  c.layer_precision["a"] = {quant::QFormat::kInt16, std::nullopt, false};
  refused(c, "layer_precision 'a': weights in int16");
  c.layer_precision["a"] = {quant::QFormat::kInt4, std::nullopt, true};
  refused(c, "keep_float");
  c.layer_precision["a"] = {std::nullopt, quant::QFormat::kUInt4, false};
  c.activations = ActivationMode::kWeightOnly;
  refused(c, "weight-only");
  c.activations = ActivationMode::kDynamic;
  refused(c, "dynamic activations are uint8");
  c = rtn_config();
  c.fp16_weights = true;
  c.layer_precision["a"] = {quant::QFormat::kInt4, std::nullopt, false};
  refused(c, "fp16");
  // int7 is for weights only, per layer or for the whole model.
  c = rtn_config();
  c.layer_precision["a"] = {quant::QFormat::kInt7, quant::QFormat::kInt7, false};
  refused(c, "layer_precision 'a': activations in int7: a weight format");
  c = rtn_config();
  c.activation_format = quant::QFormat::kInt7;
  refused(c, "activations in int7: a weight format");
  c = rtn_config();
  c.layer_precision["a"] = {quant::QFormat::kInt7, std::nullopt, false};
  EXPECT_TRUE(quantize(two_readers(), c, two_readers_calib()).ok());
}

TEST(LayerPrecision, FileFormatParsesAndRefusesMistakes) {
  auto ok = quant::parse_layer_precision(R"({"a": {"weights": "int4", "activations": "uint8"}, "c": "float"})", "lp.json");
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_EQ(ok->at("a").weights, quant::QFormat::kInt4);
  EXPECT_EQ(ok->at("a").activations, quant::QFormat::kUInt8);
  EXPECT_TRUE(ok->at("c").keep_float);
  for (const char* bad : {R"([1])", R"({"a": "int4"})", R"({"a": {"weights": "int5"}})", R"({"a": {"bits": 4}})",
                          R"({"a": {}})", R"({"a": {"weights": 4}})", R"({"a": 1})", "{"}) {
    auto r = quant::parse_layer_precision(bad, "lp.json");
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) EXPECT_NE(r.status().message().find("lp.json"), std::string::npos) << r.status().message();
  }
}

struct FourBitActivations : ::testing::Test {
  static void SetUpTestSuite() {
    auto m = load_model(kModels + "/cnn.onnx");
    ASSERT_TRUE(m.ok());
    model = new Model(*m);
    auto c = data::load_dataset("fashion-mnist:train", 128);
    auto t = data::load_dataset("fashion-mnist:test", 500);
    ASSERT_TRUE(c.ok() && t.ok());
    calib = new CalibrationData{{c->images}};
    test = new data::Dataset(*t);
  }
  static inline Model* model = nullptr;
  static inline CalibrationData* calib = nullptr;
  static inline data::Dataset* test = nullptr;
};

double accuracy(const Model& m, const data::Dataset& d, bool integer = false) {
  return testing::top1_accuracy(m, d, integer);
}

int count_dtype_zero_points(const Model& m, DType t) {
  int n = 0;
  for (const auto& node : m.graph.nodes)
    if (node.op_type == "QuantizeLinear" && node.has_input(2))
      if (const Tensor* z = m.graph.find_initializer(node.inputs[2])) n += z->dtype() == t;
  return n;
}

TEST_F(FourBitActivations, Uint4QdqLoadsAndRunsAndContainersAgree) {
  QuantConfig c;
  c.weight_format = quant::QFormat::kInt4;
  c.activation_format = quant::QFormat::kUInt4;
  c.method = WeightMethod::kRtn;
  auto r = quantize(*model, c, *calib);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->model.opset(), 21);
  EXPECT_GT(count_dtype_zero_points(r->model, DType::kUInt4), 0);
  // first/last 8-bit is on by default below 8-bit activations: a note says so,
  // and the network input (read by the first conv) is uint8.
  ASSERT_FALSE(r->report.notes.empty());
  EXPECT_NE(r->report.notes[0].find("first and last"), std::string::npos);
  int four = 0, eight = 0;
  for (const auto& t : r->report.tensors)
    if (t.kind == "activation") (first_word(t.scheme) == "uint4" ? four : eight) += 1;
  EXPECT_GT(four, 0);
  EXPECT_GT(eight, 0);

  const std::string packed = ::testing::TempDir() + "/cnn_w4a4.onnx";
  ASSERT_TRUE(save_model(r->model, packed).ok());
  auto back = load_model(packed);
  ASSERT_TRUE(back.ok()) << back.status().message();
  const double a4 = accuracy(*back, *test);
  EXPECT_GT(a4, 0.5);  // far above chance (0.1)

  // int8 containers: the same codes clamped in uint8 tensors, any opset; the
  // ONNX checker (libonnx knows opset <= 17) has nothing to say.
  QuantConfig c8 = c;
  c8.int4_types = false;
  auto r8 = quantize(*model, c8, *calib);
  ASSERT_TRUE(r8.ok()) << r8.status().message();
  EXPECT_LT(r8->model.opset(), 21);
  EXPECT_EQ(count_dtype_zero_points(r8->model, DType::kUInt4), 0);
  const std::string wide = ::testing::TempDir() + "/cnn_w4a4_int8.onnx";
  ASSERT_TRUE(save_model(r8->model, wide).ok());
  auto back8 = load_model(wide);
  ASSERT_TRUE(back8.ok()) << back8.status().message();
  EXPECT_TRUE(back8->warnings.empty()) << back8->warnings[0];
  EXPECT_DOUBLE_EQ(accuracy(*back8, *test), a4);
  // The integer session (QOperator rewrite) runs both on the 8-bit kernels,
  // 4-bit codes clamped: it agrees with the float-between-Q/DQ run closely.
  EXPECT_NEAR(accuracy(*back, *test, true), a4, 0.02);
  EXPECT_NEAR(accuracy(*back8, *test, true), a4, 0.02);
}

TEST_F(FourBitActivations, QOperatorExportUsesIntegerKernels) {
  QuantConfig c;
  c.weight_format = quant::QFormat::kInt4;
  c.activation_format = quant::QFormat::kUInt4;
  c.method = WeightMethod::kRtn;
  c.format = ExportFormat::kQOperator;
  auto r = quantize(*model, c, *calib);
  ASSERT_TRUE(r.ok()) << r.status().message();
  int qconv = 0;
  for (const auto& n : r->model.graph.nodes) qconv += n.op_type == "QLinearConv";
  EXPECT_GT(qconv, 0);
  EXPECT_GT(accuracy(r->model, *test), 0.5);
}

TEST_F(FourBitActivations, ThreeAndTwoBitActivationsUseClampedContainers) {
  for (quant::QFormat f : {quant::QFormat::kInt3, quant::QFormat::kInt2}) {
    QuantConfig c;
    c.activation_format = f;
    c.method = WeightMethod::kRtn;
    c.first_last_8bit = false;
    auto r = quantize(*model, c, *calib);
    ASSERT_TRUE(r.ok()) << r.status().message();
    const auto& t = quant::traits(f);
    for (const auto& rep : r->report.tensors) {
      if (rep.kind != "activation") continue;
      EXPECT_EQ(first_word(rep.scheme), t.name);
      EXPECT_GE(rep.zero_point_min, t.qmin);
      EXPECT_LE(rep.zero_point_max, t.qmax);
    }
    int clips = 0;
    for (const auto& n : r->model.graph.nodes) clips += n.op_type == "Clip";
    EXPECT_GT(clips, 0);
    EXPECT_GE(accuracy(r->model, *test), 0.0);  // runs
  }
}

}  // namespace
}  // namespace qtk
