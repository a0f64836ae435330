// Models qtk was not written around (tests/models: a transformer block with
// LayerNormalization, GELU and attention MatMuls; a MobileNet-like net with
// depthwise convolutions, ReLU6 and HardSwish) quantize in every mode and
// format, run in the float-simulated and the integer session, and stay close
// to the float model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "ir/graph.h"
#include "qtk/model.h"
#include "qtk/quantize.h"
#include "qtk/session.h"
#include "test_models.h"

namespace qtk {
namespace {

using testing::attr_node;

const std::string kTestModels = std::string(QTK_SOURCE_DIR) + "/tests/models";

Tensor random_input(Shape shape, uint64_t seed, bool unit_interval) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  Tensor t(DType::kFloat32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = unit_interval ? uniform(rng) : normal(rng);
  return t;
}

// The model's first output on x, in the float-simulated or the integer session.
Expected<Tensor> first_output(const ir::Model& model, const Tensor& x, bool integer) {
  SessionOptions so;
  so.integer = integer;
  QTK_ASSIGN_OR_RETURN(auto s, Session::create(model, so));
  QTK_ASSIGN_OR_RETURN(auto out, s->run(std::vector<Tensor>{x}));
  return out[0];
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

// The quantized model's first output on x, float-simulated and on integer
// kernels, each within min_db SQNR of the float model's.
void expect_near_float(const ir::Model& float_model, const ir::Model& quantized, const Tensor& x, double min_db,
                       const std::string& what = "") {
  const std::vector<Tensor> want = testing::run_model(float_model, x);
  ASSERT_EQ(want.size(), 1u);
  for (bool integer : {false, true}) {
    auto got = first_output(quantized, x, integer);
    ASSERT_TRUE(got.ok()) << got.status().message();
    EXPECT_GT(sqnr_db(want[0], *got), min_db) << what << (integer ? " integer" : " float-simulated");
  }
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
        auto got = first_output(q->model, x, integer);
        ASSERT_TRUE(got.ok()) << got.status().message();
        ASSERT_EQ(got->shape(), (*want)[0].shape());
        // 8-bit weights and activations: ~40 dB per tensor; a few layers deep
        // the output keeps well over 20 dB.
        EXPECT_GT(sqnr_db((*want)[0], *got), 20.0);
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

namespace qtk {
namespace {

using testing::attr_node;

ir::ValueInfo float_value(const std::string& name) {
  ir::ValueInfo v;
  v.name = name;
  v.dtype = DType::kFloat32;
  return v;
}

// Named initializers of the given shapes, uniform in [-bound, bound).
void add_uniform_weights(ir::Graph& g, const std::vector<std::pair<std::string, Shape>>& weights, uint32_t seed,
                         float bound) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-bound, bound);
  for (const auto& [name, shape] : weights) {
    Tensor t(DType::kFloat32, shape);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = u(rng);
    g.initializers[name] = t;
    g.initializer_order.push_back(name);
  }
}

// Checks `nodes` hold Split and ReduceMean in their opset-18+ forms, counting them.
void expect_opset21_forms(const std::vector<ir::Node>& nodes, int& splits, int& reduces) {
  for (const auto& n : nodes) {
    if (n.op_type == "Split") {
      ++splits;
      const bool split_input = n.inputs.size() > 1 && !n.inputs[1].empty();
      EXPECT_TRUE(split_input || n.has_attr("num_outputs")) << n.name << " has neither split nor num_outputs";
      if (!split_input) EXPECT_EQ(n.attr_int("num_outputs", 0), 2);
    }
    if (n.op_type == "ReduceMean") {
      ++reduces;
      EXPECT_FALSE(n.has_attr("axes"));
      EXPECT_EQ(n.inputs.size(), 2u);
    }
  }
}

// 4-bit types raise the opset to 21. PyTorch exports chunk()/GLU at opset
// 13-17 as a Split with neither a split input nor num_outputs (equal parts);
// from opset 18 Split needs one of them (ONNX Runtime refuses the model), and
// Reduce* ops other than ReduceSum take their axes as an input. The raised
// model must say both in the opset-21 form and still compute the same.
TEST(QuantizeUnseenOpsetRaise, SplitAndReduceAreRewrittenForOpset21) {
  ir::Model m;
  m.opsets = {{"", 17}};
  ir::Graph& g = m.graph;
  g.inputs.push_back(float_value("x"));
  g.outputs.push_back(float_value("y"));
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-0.5f, 0.5f);
  auto weight = [&](const std::string& name, Shape shape) {
    Tensor t(DType::kFloat32, std::move(shape));
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = u(rng);
    g.initializers[name] = t;
    g.initializer_order.push_back(name);
  };
  weight("w1", {16, 32});
  weight("w2", {16, 8});
  auto node = [&](const std::string& op, std::vector<std::string> in, std::vector<std::string> out,
                  std::vector<ir::Attribute> attrs = {}) {
    g.nodes.push_back(attr_node(op, std::move(in), std::move(out), std::move(attrs)));
  };
  node("MatMul", {"x", "w1"}, {"h"});
  node("Split", {"h"}, {"a", "b"}, {ir::attr_int("axis", 1)});  // no split input: two equal parts
  node("Sigmoid", {"b"}, {"gate"});
  node("Mul", {"a", "gate"}, {"glu"});
  node("MatMul", {"glu", "w2"}, {"z"});
  node("ReduceMean", {"z"}, {"mean"}, {ir::attr_ints("axes", {1}), ir::attr_int("keepdims", 1)});
  node("Sub", {"z", "mean"}, {"y"});

  const Tensor calib_x = random_input({64, 16}, 1, false), x = random_input({8, 16}, 2, false);

  QuantConfig c;
  c.weight_format = quant::QFormat::kInt4;
  c.method = WeightMethod::kRtn;
  auto q = quantize(m, c, CalibrationData{{calib_x}});
  ASSERT_TRUE(q.ok()) << q.status().message();
  ASSERT_EQ(q->model.opset(), 21);
  int splits = 0, reduces = 0;
  expect_opset21_forms(q->model.graph.nodes, splits, reduces);
  EXPECT_EQ(splits, 1);
  EXPECT_EQ(reduces, 1);
  expect_near_float(m, q->model, x, 10.0);
}

// The same rewrites reach If bodies, on copies: the caller's model keeps its own.
TEST(QuantizeUnseenOpsetRaise, IfBodiesAreRewrittenOnCopies) {
  ir::Model m;
  m.opsets = {{"", 17}};
  ir::Graph& g = m.graph;
  const auto value = float_value;
  const auto node = [](const std::string& op, std::vector<std::string> in, std::vector<std::string> out,
                       std::vector<ir::Attribute> attrs = {}) {
    return attr_node(op, std::move(in), std::move(out), std::move(attrs));
  };
  g.inputs.push_back(value("x"));
  g.outputs.push_back(value("y"));
  Tensor w(DType::kFloat32, {16, 8});
  std::mt19937 rng(5);
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = std::uniform_real_distribution<float>(-0.5f, 0.5f)(rng);
  g.initializers["w"] = w;
  g.initializer_order.push_back("w");
  Tensor cond(DType::kBool, {});
  cond.data<bool>()[0] = true;
  g.initializers["cond"] = cond;
  g.initializer_order.push_back("cond");
  g.nodes.push_back(node("MatMul", {"x", "w"}, {"z"}));
  ir::Graph then_body, else_body;
  then_body.outputs.push_back(value("t"));
  then_body.nodes.push_back(node("Split", {"z"}, {"p", "q"}, {ir::attr_int("axis", 1)}));
  then_body.nodes.push_back(node("ReduceMean", {"p"}, {"r"}, {ir::attr_ints("axes", {1}), ir::attr_int("keepdims", 1)}));
  then_body.nodes.push_back(node("Mul", {"q", "r"}, {"t"}));
  else_body.outputs.push_back(value("e"));
  else_body.nodes.push_back(node("Split", {"z"}, {"p2", "q2"}, {ir::attr_int("axis", 1)}));
  else_body.nodes.push_back(node("Identity", {"q2"}, {"e"}));
  g.nodes.push_back(node("If", {"cond"}, {"y"},
                         {ir::attr_graph("then_branch", then_body), ir::attr_graph("else_branch", else_body)}));

  QuantConfig c;
  c.weight_format = quant::QFormat::kInt4;
  c.method = WeightMethod::kRtn;
  auto q = quantize(m, c, CalibrationData{{random_input({64, 16}, 1, false)}});
  ASSERT_TRUE(q.ok()) << q.status().message();
  ASSERT_EQ(q->model.opset(), 21);
  int splits = 0, reduces = 0;
  for (const auto& n : q->model.graph.nodes)
    for (const auto& a : n.attrs) {
      if (a.g) expect_opset21_forms(a.g->nodes, splits, reduces);
    }
  EXPECT_EQ(splits, 2);
  EXPECT_EQ(reduces, 1);
  for (const auto& a : m.graph.nodes.back().attrs)  // the input model's bodies are untouched
    for (const auto& b : a.g->nodes) {
      EXPECT_FALSE(b.has_attr("num_outputs")) << b.name;
      if (b.op_type == "ReduceMean") EXPECT_TRUE(b.has_attr("axes"));
    }
  const Tensor x = random_input({8, 16}, 2, false);
  auto want = (*Session::create(m))->run(std::vector<Tensor>{x});
  ASSERT_TRUE(want.ok()) << want.status().message();
  auto got = first_output(q->model, x, false);
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_GT(sqnr_db((*want)[0], *got), 10.0);
}

}  // namespace
}  // namespace qtk

namespace qtk {
namespace {

using testing::attr_node;

// A MatMul whose constant weight has batch dimensions ([G, K, N], broadcast
// over the input's leading axes) gets per-tensor parameters even when the
// config asks per channel: a 1-D scale over N (the only per-axis form
// DequantizeLinear has) is refused by ONNX Runtime's QLinearMatMul and
// MatMulInteger at run time. A 2-D weight beside it stays per channel, and
// the report says why the other does not.
TEST(QuantizeUnseenBatchedWeight, RankThreeMatMulWeightIsPerTensor) {
  ir::Model m;
  m.opsets = {{"", 17}};
  ir::Graph& g = m.graph;
  g.inputs.push_back(float_value("x"));
  g.outputs.push_back(float_value("y"));
  add_uniform_weights(g, {{"w3", {4, 8, 6}}, {"w2", {6, 5}}}, 5, 0.5f);
  g.nodes.push_back(attr_node("MatMul", {"x", "w3"}, {"h"}, {}));
  g.nodes.push_back(attr_node("Relu", {"h"}, {"r"}, {}));
  g.nodes.push_back(attr_node("MatMul", {"r", "w2"}, {"y"}, {}));

  const Tensor calib_x = random_input({64, 4, 2, 8}, 1, false), x = random_input({3, 4, 2, 8}, 2, false);

  for (auto activations : {ActivationMode::kStatic, ActivationMode::kDynamic}) {
    QuantConfig c;  // int8, per channel
    c.activations = activations;
    auto q = quantize(m, c, CalibrationData{{calib_x}});
    ASSERT_TRUE(q.ok()) << q.status().message();
    int checked = 0;
    for (const auto& n : q->model.graph.nodes) {
      if (n.op_type != "DequantizeLinear") continue;
      const Tensor* codes = q->model.graph.find_initializer(n.inputs[0]);
      const Tensor* scale = q->model.graph.find_initializer(n.inputs[1]);
      if (!codes || !scale) continue;
      if (codes->rank() == 3) {
        EXPECT_EQ(scale->numel(), 1) << "rank-3 weight " << n.inputs[0];
        ++checked;
      } else if (codes->rank() == 2) {
        EXPECT_EQ(scale->numel(), 5) << "2-D weight " << n.inputs[0];
        ++checked;
      }
    }
    EXPECT_EQ(checked, 2);
    bool noted = false;
    for (const auto& note : q->report.notes) noted = noted || note.find("quantized per tensor") != std::string::npos;
    EXPECT_TRUE(noted);
    expect_near_float(m, q->model, x, 25.0);
  }
}


// A bicubic Resize overshoots its input (negative lobes of the cubic
// kernel at edges), so its output gets a range of its own; nearest and
// linear ones keep sharing their input's. Found by the unseen-model sweep
// (ESPCN with a bicubic skip): sharing clipped the overshoot, 10% of the
// output range at worst.
TEST(QuantizeUnseenResize, CubicResizeGetsItsOwnRange) {
  for (const char* mode : {"cubic", "linear"}) {
    ir::Model m;
    m.opsets = {{"", 17}};
    ir::Graph& g = m.graph;
    g.inputs.push_back(float_value("x"));
    g.outputs.push_back(float_value("y"));
    g.initializers["scales"] = Tensor::from_vector<float>({4}, {1.f, 1.f, 2.f, 2.f});
    g.initializers["w"] = Tensor::from_vector<float>({1, 1, 1, 1}, {1.f});
    g.initializer_order = {"scales", "w"};
    g.nodes.push_back(attr_node("Resize", {"x", "", "scales"}, {"up"}, {ir::attr_string("mode", mode)}));
    g.nodes.push_back(attr_node("Conv", {"up", "w"}, {"y"}, {}));
    // Black-and-white blocks: the edges make cubic interpolation overshoot [0, 1].
    auto blocks = [](int64_t n, uint32_t seed) {
      Tensor t(DType::kFloat32, {n, 1, 8, 8});
      std::mt19937 rng(seed);
      for (int64_t i = 0; i < t.numel(); i += 2) t.data<float>()[i] = t.data<float>()[i + 1] = static_cast<float>(rng() & 1);
      return t;
    };
    const Tensor calib_x = blocks(32, 1), x = blocks(4, 2);
    QuantConfig c;
    auto q = quantize(m, c, CalibrationData{{calib_x}});
    ASSERT_TRUE(q.ok()) << q.status().message();
    float up_min = 0.f, up_max = 0.f;
    bool found = false;
    for (const auto& t : q->report.tensors)
      if (t.tensor == "up") up_min = t.range_min, up_max = t.range_max, found = true;
    ASSERT_TRUE(found) << "no report entry for the Resize output";
    if (std::string(mode) == "cubic") {
      EXPECT_LT(up_min, -0.05f);
      EXPECT_GT(up_max, 1.05f);
    } else {
      EXPECT_GE(up_min, 0.f);
      EXPECT_LE(up_max, 1.f);
    }
    expect_near_float(m, q->model, x, 35.0, mode);
  }
}


// DepthToSpace and SpaceToDepth move values without changing them: their
// outputs share their inputs' quantization. The QOperator form (and the
// integer session) runs DepthToSpace on uint8 codes between QLinearConvs;
// SpaceToDepth stays float there (ONNX Runtime has no 8-bit kernel for it).
// Found float by the unseen-model sweep (ESPCN).
TEST(QuantizeUnseenSpaceDepth, DepthToSpaceMovesCodes) {
  ir::Model m;
  m.opsets = {{"", 17}};
  ir::Graph& g = m.graph;
  g.inputs.push_back(float_value("x"));
  g.outputs.push_back(float_value("y"));
  add_uniform_weights(g, {{"w1", {8, 4, 1, 1}}, {"w2", {8, 8, 3, 3}}}, 7, 0.5f);
  g.nodes.push_back(attr_node("Conv", {"x", "w1"}, {"c"}, {}));
  g.nodes.push_back(attr_node("DepthToSpace", {"c"}, {"d"}, {ir::attr_int("blocksize", 2), ir::attr_string("mode", "CRD")}));
  g.nodes.push_back(attr_node("SpaceToDepth", {"d"}, {"e"}, {ir::attr_int("blocksize", 2)}));
  g.nodes.push_back(attr_node("Conv", {"e", "w2"}, {"y"}, {ir::attr_ints("pads", {1, 1, 1, 1})}));
  const Tensor calib_x = random_input({32, 4, 5, 5}, 1, false), x = random_input({2, 4, 5, 5}, 2, false);

  QuantConfig c;
  c.format = ExportFormat::kQOperator;
  auto q = quantize(m, c, CalibrationData{{calib_x}});
  ASSERT_TRUE(q.ok()) << q.status().message();
  std::map<std::string, std::string> producer;
  for (const auto& n : q->model.graph.nodes)
    for (const auto& o : n.outputs) producer[o] = n.op_type;
  int seen = 0;
  for (const auto& n : q->model.graph.nodes) {
    if (n.op_type == "DepthToSpace") EXPECT_NE(producer[n.inputs[0]], "DequantizeLinear") << "runs on float";
    if (n.op_type == "SpaceToDepth") EXPECT_EQ(producer[n.inputs[0]], "DequantizeLinear") << "runs on codes";
    seen += n.op_type == "DepthToSpace" || n.op_type == "SpaceToDepth";
  }
  EXPECT_EQ(seen, 2);
  for (const char* t : {"c", "d", "e"})
    for (const auto& r : q->report.float_nodes) EXPECT_EQ(r.find(t + std::string(" (")), std::string::npos) << r;
  expect_near_float(m, q->model, x, 30.0);
}

// A 3-D Conv (rank-5 weight) has no optimized integer kernel: the integer
// session leaves it DQ -> float Conv -> Q instead of running the reference
// QLinearConv (35-73x slower than float on the sweep's video net), with the
// reference kernels too, so both sessions still give the same bits.
TEST(QuantizeUnseenConv3d, IntegerSessionRunsConv3dInFloat) {
  ir::Model m;
  m.opsets = {{"", 17}};
  ir::Graph& g = m.graph;
  g.inputs.push_back(float_value("x"));
  g.outputs.push_back(float_value("y"));
  add_uniform_weights(g, {{"w1", {4, 2, 3, 3, 3}}, {"w2", {3, 4, 3, 3, 3}}}, 9, 0.3f);
  const std::vector<int64_t> pads = {1, 1, 1, 1, 1, 1};
  g.nodes.push_back(attr_node("Conv", {"x", "w1"}, {"c"}, {ir::attr_ints("pads", pads)}));
  g.nodes.push_back(attr_node("Relu", {"c"}, {"r"}, {}));
  g.nodes.push_back(attr_node("Conv", {"r", "w2"}, {"y"}, {ir::attr_ints("pads", pads)}));
  const Tensor calib_x = random_input({16, 2, 4, 6, 6}, 1, true), x = random_input({2, 2, 4, 6, 6}, 2, true);
  const std::vector<Tensor> want = testing::run_model(m, x);
  ASSERT_EQ(want.size(), 1u);
  auto q = quantize(m, QuantConfig{}, CalibrationData{{calib_x}});
  ASSERT_TRUE(q.ok()) << q.status().message();
  std::vector<Tensor> outs;
  for (bool reference : {false, true}) {
    SessionOptions so;
    so.integer = true;
    so.profile = true;
    so.reference_kernels = reference;
    auto s = Session::create(q->model, so);
    ASSERT_TRUE(s.ok()) << s.status().message();
    auto got = (*s)->run(std::vector<Tensor>{x});
    ASSERT_TRUE(got.ok()) << got.status().message();
    int float_convs = 0;
    for (const auto& t : (*s)->profile()) {
      EXPECT_NE(t.op_type, "QLinearConv") << t.node;
      float_convs += t.op_type == "Conv";
    }
    EXPECT_EQ(float_convs, 2);
    EXPECT_GT(sqnr_db(want[0], (*got)[0]), 30.0);
    outs.push_back((*got)[0]);
  }
  ASSERT_EQ(outs[0].nbytes(), outs[1].nbytes());
  EXPECT_EQ(std::memcmp(outs[0].raw(), outs[1].raw(), outs[0].nbytes()), 0) << "optimized vs reference kernels";
}

}  // namespace
}  // namespace qtk
