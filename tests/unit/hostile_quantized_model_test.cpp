// Quantized models that load but are wrong inside: one random change to an
// attribute, an initializer (shape, type, values), a node's inputs or its op
// type. The integer session must refuse them with an error that says
// something, or build and run; never crash or read out of bounds (this test
// is one of those run under AddressSanitizer, README "Development").
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "ir/graph.h"
#include "qtk/model.h"
#include "qtk/quantize.h"
#include "qtk/session.h"
#include "test_models.h"

namespace qtk {
namespace {

class Mutator {
 public:
  explicit Mutator(uint32_t seed) : rng_(seed) {}

  // Applies one random change to m and says what it was.
  std::string mutate(ir::Model& m) {
    ir::Graph& g = m.graph;
    switch (pick(0, 3)) {
      case 0: return attribute(g);
      case 1: return initializer(g);
      case 2: return inputs(g);
      default: {
        ir::Node& n = g.nodes[static_cast<size_t>(pick(0, static_cast<int>(g.nodes.size()) - 1))];
        static const char* kOps[] = {"QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QuantizeLinear",
                                     "DequantizeLinear", "ConvInteger", "MatMulInteger", "MaxPool", "Conv"};
        const std::string from = n.op_type;
        n.op_type = kOps[pick(0, 9)];
        return n.name + ": op " + from + " -> " + n.op_type;
      }
    }
  }

 private:
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  int64_t odd_int() {
    static const int64_t kValues[] = {-3, -1, 0, 1, 2, 3, 5, 64};
    return kValues[pick(0, 7)];
  }
  float odd_float() {
    static const float kValues[] = {0.f, -1.f, 1e-30f, 1e30f, std::numeric_limits<float>::quiet_NaN(),
                                    std::numeric_limits<float>::infinity()};
    return kValues[pick(0, 5)];
  }

  std::string attribute(ir::Graph& g) {
    std::vector<ir::Node*> with;
    for (auto& n : g.nodes)
      if (!n.attrs.empty()) with.push_back(&n);
    if (with.empty()) return "no attribute";
    ir::Node& n = *with[static_cast<size_t>(pick(0, static_cast<int>(with.size()) - 1))];
    ir::Attribute& a = n.attrs[static_cast<size_t>(pick(0, static_cast<int>(n.attrs.size()) - 1))];
    const std::string what = n.name + ": attribute " + a.name;
    switch (a.type) {
      case ir::AttrType::kInt: a.i = odd_int(); return what + " = " + std::to_string(a.i);
      case ir::AttrType::kFloat: a.f = odd_float(); return what + " = " + std::to_string(a.f);
      case ir::AttrType::kInts:
        if (pick(0, 2) == 0) {
          a.ints.resize(static_cast<size_t>(pick(0, 5)), 1);
          return what + " resized to " + std::to_string(a.ints.size());
        }
        if (!a.ints.empty()) a.ints[static_cast<size_t>(pick(0, static_cast<int>(a.ints.size()) - 1))] = odd_int();
        return what + " element changed";
      default:
        n.attrs.erase(n.attrs.begin() + (&a - n.attrs.data()));
        return what + " removed";
    }
  }

  std::string initializer(ir::Graph& g) {
    if (g.initializers.empty()) return "no initializer";
    auto it = g.initializers.begin();
    std::advance(it, pick(0, static_cast<int>(g.initializers.size()) - 1));
    Tensor& t = it->second;
    const std::string what = "initializer " + it->first;
    switch (pick(0, 3)) {
      case 0: {  // another shape, same type
        Shape s(static_cast<size_t>(pick(0, 4)));
        for (auto& d : s) d = pick(0, 5);
        t = Tensor(t.dtype(), s);
        return what + " reshaped to " + shape_to_string(s);
      }
      case 1: {  // another type, same shape
        static const DType kTypes[] = {DType::kFloat32, DType::kInt8, DType::kUInt8, DType::kInt32, DType::kInt64};
        t = Tensor(kTypes[pick(0, 4)], t.shape());
        return what + " retyped";
      }
      case 2:  // an odd value somewhere
        if (t.numel() == 0) return what + " empty";
        if (t.dtype() == DType::kFloat32) t.data<float>()[pick(0, static_cast<int>(t.numel()) - 1)] = odd_float();
        else if (dtype_size(t.dtype()) == 1)
          static_cast<uint8_t*>(t.raw())[pick(0, static_cast<int>(t.numel()) - 1)] = static_cast<uint8_t>(pick(0, 255));
        else if (t.dtype() == DType::kInt32) t.data<int32_t>()[pick(0, static_cast<int>(t.numel()) - 1)] = INT32_MIN;
        return what + " value changed";
      default:
        t = Tensor();
        return what + " undefined";
    }
  }

  std::string inputs(ir::Graph& g) {
    ir::Node& n = g.nodes[static_cast<size_t>(pick(0, static_cast<int>(g.nodes.size()) - 1))];
    if (n.inputs.empty()) return n.name + ": no inputs";
    const size_t i = static_cast<size_t>(pick(0, static_cast<int>(n.inputs.size()) - 1));
    switch (pick(0, 3)) {
      case 0: n.inputs[i] = ""; return n.name + ": input " + std::to_string(i) + " absent";
      case 1: n.inputs[i] = "no_such_tensor"; return n.name + ": input " + std::to_string(i) + " undefined";
      case 2: n.inputs.pop_back(); return n.name + ": last input dropped";
      default: {
        const size_t j = static_cast<size_t>(pick(0, static_cast<int>(n.inputs.size()) - 1));
        std::swap(n.inputs[i], n.inputs[j]);
        return n.name + ": inputs " + std::to_string(i) + " and " + std::to_string(j) + " swapped";
      }
    }
  }

  std::mt19937 rng_;
};

// Builds and runs each mutant of `quantized`: an error must say something.
void expect_mutants_fail_cleanly(const ir::Model& quantized, const Tensor& x, uint32_t seed, int mutants) {
  Mutator mutator(seed);
  for (int k = 0; k < mutants; ++k) {
    ir::Model m = quantized;
    for (auto& [name, t] : m.graph.initializers) t = t.clone();  // mutated in place below
    const std::string change = mutator.mutate(m);
    SCOPED_TRACE("mutant " + std::to_string(k) + ": " + change);
    SessionOptions o;
    o.integer = true;
    o.threads = 2;
    auto s = Session::create(m, o);
    if (!s.ok()) {
      EXPECT_FALSE(s.status().message().empty());
      continue;
    }
    auto y = (*s)->run(std::vector<Tensor>{x});
    if (!y.ok()) EXPECT_FALSE(y.status().message().empty());
  }
}

TEST(HostileQuantizedModel, MutantsAreRefusedOrRunNeverCrash) {
  auto calib = data::load_dataset("fashion-mnist:train", 16);
  ASSERT_TRUE(calib.ok()) << calib.status().message();
  const Tensor x = testing::uniform_tensor({2, 1, 28, 28}, 7, 0.f, 1.f);
  uint32_t seed = 77;
  for (const char* name : {"cnn", "resnet20", "mlp"})
    for (ExportFormat format : {ExportFormat::kQDQ, ExportFormat::kQOperator}) {
      SCOPED_TRACE(std::string(name) + (format == ExportFormat::kQDQ ? " QDQ" : " QOperator"));
      auto model = load_model(std::string(QTK_MODELS_DIR) + "/" + name + ".onnx");
      ASSERT_TRUE(model.ok()) << model.status().message();
      QuantConfig cfg;
      cfg.format = format;
      auto q = quantize(*model, cfg, CalibrationData{{calib->images}});
      ASSERT_TRUE(q.ok()) << q.status().message();
      expect_mutants_fail_cleanly(q->model, x, seed++, 60);
    }
}

// The quantizer's passes a mutant goes through: the default, then
// equalization, SmoothQuant, GPTQ, AdaRound (few steps), 4-bit per group,
// log2 levels, dynamic and weight-only modes, QOperator.
QuantConfig mutant_config(int k) {
  QuantConfig cfg;
  switch (k % 10) {
    case 1: cfg.equalize = true; break;
    case 2: cfg.smooth_quant = true; break;
    case 3: cfg.method = WeightMethod::kGptq; break;
    case 4:
      cfg.method = WeightMethod::kAdaRound;
      cfg.adaround_iterations = 3;
      break;
    case 5:
      cfg.weight_format = quant::QFormat::kInt4;
      cfg.granularity = Granularity::kPerGroup;
      cfg.group_size = 16;
      break;
    case 6: cfg.mapping = Mapping::kLog2; break;
    case 7: cfg.activations = ActivationMode::kDynamic; break;
    case 8: cfg.activations = ActivationMode::kWeightOnly; break;
    case 9: cfg.format = ExportFormat::kQOperator; break;
    default: break;
  }
  return cfg;
}

// The same changes to the float models, handed to the quantizer (which
// calibrates by running them): an error that says something, or a model.
TEST(HostileQuantizedModel, MutatedFloatModelsQuantizeOrFailCleanly) {
  auto calib = data::load_dataset("fashion-mnist:train", 8);
  ASSERT_TRUE(calib.ok()) << calib.status().message();
  uint32_t seed = 177;
  for (const char* name : {"cnn", "resnet20", "mlp"}) {
    SCOPED_TRACE(name);
    auto model = load_model(std::string(QTK_MODELS_DIR) + "/" + name + ".onnx");
    ASSERT_TRUE(model.ok()) << model.status().message();
    Mutator mutator(seed++);
    for (int k = 0; k < 20; ++k) {
      ir::Model m = *model;
      for (auto& [n, t] : m.graph.initializers) t = t.clone();
      const std::string change = mutator.mutate(m);
      SCOPED_TRACE("mutant " + std::to_string(k) + ": " + change);
      auto q = quantize(m, mutant_config(k), CalibrationData{{calib->images}});
      if (!q.ok()) EXPECT_FALSE(q.status().message().empty());
    }
  }
}

// An all-zero tensor quantized at run time (DynamicQuantizeLinear) has scale
// 0; the DequantizeLinear after it gives zeros. The float session refused
// that scale ("scale must be non-zero") and failed on an all-zero image.
TEST(HostileQuantizedModel, AllZeroInputsRunThroughDynamicQuantization) {
  auto calib = data::load_dataset("fashion-mnist:train", 8);
  ASSERT_TRUE(calib.ok()) << calib.status().message();
  auto model = load_model(std::string(QTK_MODELS_DIR) + "/cnn.onnx");
  ASSERT_TRUE(model.ok()) << model.status().message();
  QuantConfig cfg;
  cfg.activations = ActivationMode::kDynamic;
  auto q = quantize(*model, cfg, CalibrationData{{calib->images}});
  ASSERT_TRUE(q.ok()) << q.status().message();
  const Tensor zeros(DType::kFloat32, {2, 1, 28, 28});
  std::vector<Tensor> outputs;
  for (bool integer : {false, true}) {
    SessionOptions o;
    o.integer = integer;
    auto s = Session::create(q->model, o);
    ASSERT_TRUE(s.ok()) << s.status().message();
    auto y = (*s)->run(std::vector<Tensor>{zeros});
    ASSERT_TRUE(y.ok()) << (integer ? "integer: " : "float: ") << y.status().message();
    outputs.push_back((*y)[0]);
  }
  for (int64_t i = 0; i < outputs[0].numel(); ++i)
    EXPECT_NEAR(outputs[0].data<float>()[i], outputs[1].data<float>()[i], 1e-3) << "logit " << i;
}

// Inputs of the wrong shape or type: refused by the session, naming the input.
TEST(HostileQuantizedModel, WrongInputsAreRefused) {
  auto calib = data::load_dataset("fashion-mnist:train", 16);
  ASSERT_TRUE(calib.ok()) << calib.status().message();
  auto model = load_model(std::string(QTK_MODELS_DIR) + "/cnn.onnx");
  ASSERT_TRUE(model.ok()) << model.status().message();
  auto q = quantize(*model, QuantConfig{}, CalibrationData{{calib->images}});
  ASSERT_TRUE(q.ok()) << q.status().message();
  SessionOptions o;
  o.integer = true;
  auto s = Session::create(q->model, o);
  ASSERT_TRUE(s.ok()) << s.status().message();
  for (const Tensor& x : {Tensor(DType::kFloat32, {2, 1, 27, 28}), Tensor(DType::kFloat32, {2, 3, 28, 28}),
                          Tensor(DType::kFloat32, {1, 28, 28}), Tensor(DType::kUInt8, {2, 1, 28, 28}),
                          Tensor(DType::kFloat32, {0, 1, 28, 28})}) {
    SCOPED_TRACE(shape_to_string(x.shape()));
    auto y = (*s)->run(std::vector<Tensor>{x});
    if (x.numel() == 0) continue;  // an empty batch may run
    ASSERT_FALSE(y.ok());
    EXPECT_NE(y.status().message().find("input"), std::string::npos) << y.status().message();
  }
}

}  // namespace
}  // namespace qtk
