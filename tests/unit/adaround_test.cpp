// AdaRound: every code is floor(w/s) or ceil(w/s) of the rounding-to-nearest
// grid, the learned rounding lowers the layer's output error on held-out
// rows, both forms of the data (Gram matrices or rows) agree, and too few
// calibration rows fall back to rounding to nearest with a warning.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "data/dataset.h"
#include "qtk/model.h"
#include "qtk/quantize.h"
#include "quant/algos/adaround.h"
#include "qtk/session.h"
#include "quant/graph/weight_quantizer.h"
#include "quant/schemes/linear.h"
#include "runtime/kernels/ref/sgemm.h"
#include "runtime/thread_pool.h"

namespace qtk::quant::algos {
namespace {

struct Layer {
  int64_t rows, cols, n;
  Tensor w;
  std::vector<float> x, y, held_x;  // training rows, their float outputs, held-out rows
};

// Correlated inputs x = z A + 0.5 (positive mean, like post-ReLU activations).
std::vector<float> inputs(int64_t n, int64_t k, const std::vector<float>& a, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> z(n * k), x(n * k);
  for (auto& v : z) v = nd(rng);
  rt::ref::sgemm(false, false, n, k, k, 1.f, z.data(), k, a.data(), k, 0.f, x.data(), k);
  for (auto& v : x) v += 0.5f;
  return x;
}

Layer make_layer(int64_t rows, int64_t cols, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  Layer l{rows, cols, n, Tensor(DType::kFloat32, {rows, cols}), {}, {}, {}};
  for (int64_t i = 0; i < l.w.numel(); ++i) l.w.data<float>()[i] = 0.3f * nd(rng);
  std::vector<float> a(cols * cols);
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) a[i * cols + j] = (i == j) + 0.4f * nd(rng) / std::sqrt(float(cols));
  l.x = inputs(n, cols, a, rng);
  l.held_x = inputs(512, cols, a, rng);
  l.y.resize(n * rows);
  rt::ref::sgemm(false, true, n, rows, cols, 1.f, l.x.data(), cols, l.w.data<float>(), cols, 0.f, l.y.data(), rows);
  return l;
}

double output_mse(const Layer& l, const float* q) {
  const int64_t n = static_cast<int64_t>(l.held_x.size()) / l.cols;
  double e = 0;
  for (int64_t s = 0; s < n; ++s)
    for (int64_t r = 0; r < l.rows; ++r) {
      double d = 0;
      for (int64_t c = 0; c < l.cols; ++c) d += (double(l.w.data<float>()[r * l.cols + c]) - q[r * l.cols + c]) * l.held_x[s * l.cols + c];
      e += d * d;
    }
  return e / static_cast<double>(n);
}

struct Rounded {
  std::vector<int32_t> codes;
  std::vector<float> dq;
};

Rounded run_adaround(const Layer& l, const QuantConfig& c, bool gram_form, rt::ThreadPool* pool) {
  auto rtn = quantize_weight(l.w, 0, 1, c);
  EXPECT_TRUE(rtn.ok());
  LayerGeometry geo;
  geo.rows = l.rows;
  geo.cols = l.cols;
  auto grid = matrix_grid(geo, 0, l.w.shape(), rtn->layout);
  EXPECT_TRUE(grid.ok());
  const auto params = weight_params(*rtn);
  std::vector<float> gram(l.cols * l.cols), cross(l.rows * l.cols);
  ReconstructionData data{nullptr, nullptr, l.x.data(), l.y.data(), l.n};
  if (gram_form) {
    const float inv = 1.f / static_cast<float>(l.n);
    rt::ref::sgemm(true, false, l.cols, l.cols, l.n, inv, l.x.data(), l.cols, l.x.data(), l.cols, 0.f, gram.data(),
                   l.cols);
    rt::ref::sgemm(true, false, l.rows, l.cols, l.n, inv, l.y.data(), l.rows, l.x.data(), l.cols, 0.f, cross.data(),
                   l.cols);
    data = {gram.data(), cross.data(), nullptr, nullptr, l.n};
  }
  AdaRoundOptions o;
  o.iterations = 1000;
  Rounded r;
  r.codes.resize(l.w.numel());
  Status s = adaround_matrix(l.w.data<float>(), *grid, params, data, c, o, r.codes.data(), pool);
  EXPECT_TRUE(s.ok()) << s.message();
  for (int64_t i = 0; i < l.w.numel(); ++i) {
    const QParams& p = params[grid->param(i / l.cols, i % l.cols)];
    r.dq.push_back(static_cast<float>(r.codes[i] - p.zero_point) * p.scale);
  }
  return r;
}

TEST(AdaRound, CodesAreFloorOrCeilAndOutputErrorFallsBelowRtn) {
  rt::ThreadPool pool(2);
  struct Case {
    QFormat f;
    bool symmetric;
    Granularity g;
  };
  for (const Case& k : {Case{QFormat::kInt4, true, Granularity::kPerChannel}, Case{QFormat::kInt3, false, Granularity::kPerGroup},
                        Case{QFormat::kInt2, true, Granularity::kPerChannel}}) {
    for (auto [rows, cols, n, seed] : {std::tuple<int64_t, int64_t, int64_t, uint32_t>{20, 48, 400, 1u}, {33, 16, 200, 2u}}) {
      SCOPED_TRACE(std::string(traits(k.f).name) + " sym " + std::to_string(k.symmetric) + " shape " +
                   std::to_string(rows) + "x" + std::to_string(cols) + " rows " + std::to_string(n) + " seed " +
                   std::to_string(seed));
      const Layer l = make_layer(rows, cols, n, seed);
      QuantConfig c;
      c.weight_format = k.f;
      c.weight_symmetric = k.symmetric;
      c.granularity = k.g;
      c.group_size = 8;
      const Rounded r = run_adaround(l, c, /*gram_form=*/true, &pool);
      auto rtn = quantize_weight(l.w, 0, 1, c);
      ASSERT_TRUE(rtn.ok());
      const auto params = weight_params(*rtn);
      const auto& t = traits(k.f);
      for (int64_t i = 0; i < l.w.numel(); ++i) {
        const QParams& p = params[rtn->layout.index_of(i)];
        const float down = std::floor(l.w.data<float>()[i] / p.scale) + p.zero_point;
        const float lo = std::clamp(down, float(t.qmin), float(t.qmax));
        const float hi = std::clamp(down + 1.f, float(t.qmin), float(t.qmax));
        ASSERT_TRUE(r.codes[i] == lo || r.codes[i] == hi) << "element " << i << " code " << r.codes[i];
      }
      const double e_ada = output_mse(l, r.dq.data()), e_rtn = output_mse(l, rtn->dequantized.data<float>());
      EXPECT_LT(e_ada, 0.92 * e_rtn) << "adaround " << e_ada << " rtn " << e_rtn;
    }
  }
}

TEST(AdaRound, GramAndRowFormsAgree) {
  // The same objective either way: the codes may differ only where float
  // rounding tips a weight that sits on the fence.
  const Layer l = make_layer(12, 40, 60, 9);
  QuantConfig c;
  c.weight_format = QFormat::kInt4;
  const Rounded a = run_adaround(l, c, true, nullptr), b = run_adaround(l, c, false, nullptr);
  int64_t differ = 0;
  for (size_t i = 0; i < a.codes.size(); ++i) differ += a.codes[i] != b.codes[i];
  EXPECT_LE(differ, static_cast<int64_t>(a.codes.size()) / 50) << "of " << a.codes.size();
}

TEST(AdaRound, LogLevelsAreRefused) {
  const Layer l = make_layer(4, 8, 100, 4);
  QuantConfig c;
  c.weight_format = QFormat::kInt4;
  c.mapping = Mapping::kLog2;
  auto rtn = quantize_weight(l.w, 0, 1, c);
  ASSERT_TRUE(rtn.ok());
  LayerGeometry geo;
  geo.rows = 4;
  geo.cols = 8;
  auto grid = matrix_grid(geo, 0, l.w.shape(), rtn->layout);
  std::vector<int32_t> codes(32);
  EXPECT_FALSE(adaround_matrix(l.w.data<float>(), *grid, weight_params(*rtn), {nullptr, nullptr, l.x.data(), l.y.data(), 100},
                               c, {}, codes.data(), nullptr)
                   .ok());
}

// Fewer calibration rows than AdaRound's minimum: the layer is rounded to
// nearest, with a warning naming it, and the model is still valid.
TEST(AdaRoundPipeline, TooFewRowsFallBackToRtnWithWarning) {
  auto model = load_model(std::string(QTK_MODELS_DIR) + "/mlp.onnx");
  auto calib = data::load_dataset("fashion-mnist:train", 16);
  ASSERT_TRUE(model.ok() && calib.ok());
  QuantConfig c;
  c.weight_format = QFormat::kInt4;
  c.method = WeightMethod::kAdaRound;
  auto r = quantize(*model, c, CalibrationData{{calib->images}});
  ASSERT_TRUE(r.ok()) << r.status().message();
  int fallbacks = 0;
  for (const auto& t : r->report.tensors)
    if (t.kind == "weight") EXPECT_EQ(t.method, "rtn") << t.tensor;
  for (const auto& w : r->report.warnings) fallbacks += w.find("AdaRound has 16 input rows") != std::string::npos;
  EXPECT_EQ(fallbacks, 3);
  for (const auto& [name, t] : r->model.graph.initializers)
    if (t.dtype() == DType::kFloat32)
      for (int64_t i = 0; i < t.numel(); ++i) ASSERT_TRUE(std::isfinite(t.data<float>()[i])) << name;
}

// NaN/Inf in the calibration data never reach the model: the rows the
// algorithms see count them as 0, and every written weight is finite.
TEST(AdaRoundPipeline, NonFiniteCalibrationValuesGiveAFiniteModel) {
  auto model = load_model(std::string(QTK_MODELS_DIR) + "/mlp.onnx");
  auto calib = data::load_dataset("fashion-mnist:train", 64);
  ASSERT_TRUE(model.ok() && calib.ok());
  Tensor images = calib->images.clone();
  for (int64_t i = 0; i < images.numel(); i += 97) images.data<float>()[i] = i % 2 ? NAN : INFINITY;
  for (WeightMethod m : {WeightMethod::kGptq, WeightMethod::kAdaRound}) {
    SCOPED_TRACE(weight_method_name(m));
    QuantConfig c;
    c.weight_format = QFormat::kInt2;
    c.activations = ActivationMode::kWeightOnly;
    c.method = m;
    c.adaround_iterations = 200;
    auto r = quantize(*model, c, CalibrationData{{images}});
    ASSERT_TRUE(r.ok()) << r.status().message();
    for (const auto& t : r->report.tensors)
      if (t.kind == "weight") EXPECT_EQ(t.method, weight_method_name(m)) << t.tensor;
    for (const auto& [name, t] : r->model.graph.initializers)
      if (t.dtype() == DType::kFloat32)
        for (int64_t i = 0; i < t.numel(); ++i) ASSERT_TRUE(std::isfinite(t.data<float>()[i])) << name;
  }
}

}  // namespace
}  // namespace qtk::quant::algos

namespace qtk::quant::algos {
namespace {

// Measurement for the README (not a check): output SQNR of the quantized
// test models (untrained, tests/models) against float on random held-out
// inputs, per method and scheme. Run with --gtest_also_run_disabled_tests.
TEST(WeightMethodsOnTestModels, DISABLED_OutputSqnrTable) {
  struct ModelCase {
    const char* file;
    Shape shape;
    bool normal;  // N(0,1) inputs (token features), else U(0,1) (images)
  };
  const std::vector<ModelCase> models = {{"mobilenet_like.onnx", {0, 3, 16, 16}, false},
                                         {"transformer_block.onnx", {0, 8, 32}, true}};
  auto random_input = [](Shape s, int64_t n, bool normal, uint32_t seed) {
    s[0] = n;
    Tensor t(DType::kFloat32, s);
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::uniform_real_distribution<float> u(0.f, 1.f);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = normal ? nd(rng) : u(rng);
    return t;
  };
  struct Scheme {
    const char* name;
    QFormat f;
    Granularity g;
    int64_t group;
    ActivationMode a;
  };
  const std::vector<Scheme> schemes = {{"W4A8 per-channel", QFormat::kInt4, Granularity::kPerChannel, 0, ActivationMode::kStatic},
                                       {"W2A8 per-channel", QFormat::kInt2, Granularity::kPerChannel, 0, ActivationMode::kStatic},
                                       {"W2A8 group:16", QFormat::kInt2, Granularity::kPerGroup, 16, ActivationMode::kStatic},
                                       {"W4 weight-only", QFormat::kInt4, Granularity::kPerChannel, 0, ActivationMode::kWeightOnly}};
  for (const auto& mc : models) {
    auto model = load_model(std::string(QTK_SOURCE_DIR) + "/tests/models/" + mc.file);
    ASSERT_TRUE(model.ok()) << model.status().message();
    const Tensor calib = random_input(mc.shape, 512, mc.normal, 1), test = random_input(mc.shape, 256, mc.normal, 2);
    auto fs = Session::create(*model);
    ASSERT_TRUE(fs.ok());
    const Tensor ref = (*(*fs)->run(std::vector<Tensor>{test}))[0];
    for (const auto& sc : schemes)
      for (WeightMethod m : {WeightMethod::kRtn, WeightMethod::kGptq, WeightMethod::kAdaRound, WeightMethod::kAuto}) {
        QuantConfig c;
        c.weight_format = sc.f;
        c.granularity = sc.g;
        if (sc.group) c.group_size = sc.group;
        c.activations = sc.a;
        c.method = m;
        auto q = quantize(*model, c, CalibrationData{{calib}});
        ASSERT_TRUE(q.ok()) << q.status().message();
        auto qs = Session::create(q->model);
        ASSERT_TRUE(qs.ok()) << qs.status().message();
        const Tensor y = (*(*qs)->run(std::vector<Tensor>{test}))[0];
        std::printf("%-24s %-18s %-9s output SQNR %6.2f dB  (%.2f s)\n", mc.file, sc.name, weight_method_name(m),
                    sqnr_db(ref.data<float>(), y.data<float>(), ref.numel()), q->report.method_seconds);
      }
  }
}

}  // namespace
}  // namespace qtk::quant::algos
