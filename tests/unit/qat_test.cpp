// Quantization-aware training: qtk.FakeQuant's forward and its straight-through
// / LSQ gradients against their formulas (and against finite differences
// where the function is smooth), the QDQ -> QAT -> QDQ round trip on real
// PTQ models, and a short QAT run that lowers the loss and exports a model
// that runs (float and integer sessions) with the trained accuracy.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include "qtk/model.h"
#include "qtk/quantize.h"
#include "qtk/session.h"
#include "test_models.h"
#include "train/arch.h"
#include "train/grad_op.h"
#include "train/loss.h"
#include "train/qat.h"
#include "train/train_graph.h"
#include "train/trainer.h"

namespace qtk::train {
namespace {

Tensor random_tensor(const Shape& s, uint32_t seed, float lo, float hi) {
  return testing::uniform_tensor(s, seed, lo, hi);
}

ir::Node fq_node(int64_t qmin, int64_t qmax, int64_t axis = 1, int n_inputs = 3) {
  ir::Node n;
  n.name = "fq";
  n.op_type = "FakeQuant";
  n.domain = kQtkDomain;
  for (int i = 0; i < n_inputs; ++i) n.inputs.push_back("x" + std::to_string(i));
  n.outputs = {"y"};
  n.set_attr(ir::attr_int("qmin", qmin));
  n.set_attr(ir::attr_int("qmax", qmax));
  n.set_attr(ir::attr_int("axis", axis));
  return n;
}

struct FqRun {
  Tensor y, dx, ds;
};

FqRun run_fq(const ir::Node& n, const std::vector<Tensor>& in, const Tensor& dy) {
  const GradOp* op = find_grad_op(kQtkDomain, "FakeQuant");
  EXPECT_NE(op, nullptr);
  ForwardContext f{n, in, {}, {}, true, nullptr, {}};
  Status s = op->forward(f);
  EXPECT_TRUE(s.ok()) << s.message();
  BackwardContext b{n, f.in, f.out, f.saved, {dy}, {true, true, false}, {}, nullptr};
  b.need.resize(in.size(), false);
  b.din.resize(in.size());
  s = op->backward(b);
  EXPECT_TRUE(s.ok()) << s.message();
  return {f.out[0], b.din[0], b.din[1]};
}

TEST(FakeQuant, ForwardBackwardMatchFormulasPerChannel) {
  // x [2, 3, 4], per-channel along axis 1, asymmetric uint4-like range.
  const Tensor x = random_tensor({2, 3, 4}, 1, -2.f, 2.f);
  Tensor s = Tensor::from_vector<float>({3}, {0.1f, 0.2f, 0.05f});
  Tensor zp = Tensor::from_vector<float>({3}, {8.f, 3.f, 0.f});
  const int64_t qmin = 0, qmax = 15;
  const Tensor dy = random_tensor({2, 3, 4}, 2, -1.f, 1.f);
  const ir::Node n = fq_node(qmin, qmax);
  FqRun r = run_fq(n, {x, s, zp}, dy);
  std::vector<double> want_ds(3, 0.0);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = (i / 4) % 3;
    const double sc = s.data<float>()[c], z = zp.data<float>()[c], v = x.data<float>()[i] / sc;
    const double q = std::clamp<double>(std::nearbyint(v) + z, qmin, qmax);
    EXPECT_NEAR(r.y.data<float>()[i], (q - z) * sc, 1e-6) << i;
    const bool inside = v + z >= qmin && v + z <= qmax;
    EXPECT_EQ(r.dx.data<float>()[i], inside ? dy.data<float>()[i] : 0.f) << i;
    want_ds[c] += dy.data<float>()[i] * (inside ? std::nearbyint(v) - v : (v + z < qmin ? qmin - z : qmax - z));
  }
  // LSQ gradient scale: 1 / sqrt(values per scale * qmax).
  const double g = 1.0 / std::sqrt(8.0 * qmax);
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(r.ds.data<float>()[c], want_ds[c] * g, 1e-5) << c;
}

TEST(FakeQuant, ClampedScaleGradientEqualsFiniteDifferences) {
  // Every value far outside the range: y = (qmin - zp) * s or (qmax - zp) * s,
  // smooth in s, so LSQ's gradient (before its gradient scale) is exact.
  Tensor x = random_tensor({16}, 3, 5.f, 9.f);
  for (int i = 0; i < 16; i += 2) x.data<float>()[i] = -x.data<float>()[i];
  const float s0 = 0.1f;
  const Tensor dy = random_tensor({16}, 4, -1.f, 1.f);
  const ir::Node n = fq_node(-8, 7);
  const Tensor zp = Tensor::scalar<float>(0.f);
  FqRun r = run_fq(n, {x, Tensor::scalar<float>(s0), zp}, dy);
  auto loss = [&](float s) {
    FqRun k = run_fq(n, {x, Tensor::scalar<float>(s), zp}, dy);
    double l = 0;
    for (int i = 0; i < 16; ++i) l += static_cast<double>(k.y.data<float>()[i]) * dy.data<float>()[i];
    return l;
  };
  const double h = 1e-3, fd = (loss(s0 + h) - loss(s0 - h)) / (2 * h);
  const double g = 1.0 / std::sqrt(16.0 * 7);
  EXPECT_NEAR(r.ds.data<float>()[0] / g, fd, 1e-3 * std::max(1.0, std::fabs(fd)));
  for (int i = 0; i < 16; ++i) EXPECT_EQ(r.dx.data<float>()[i], 0.f);
}

TEST(FakeQuant, ScaleBaseMultipliesAndChainsTheGradient) {
  const Tensor x = random_tensor({10}, 5, -1.f, 1.f);
  const Tensor dy = random_tensor({10}, 6, -1.f, 1.f);
  const Tensor zp = Tensor::scalar<float>(0.f);
  FqRun plain = run_fq(fq_node(-8, 7), {x, Tensor::scalar<float>(0.125f), zp}, dy);
  FqRun rel = run_fq(fq_node(-8, 7, 1, 4), {x, Tensor::scalar<float>(0.5f), zp, Tensor::scalar<float>(0.25f)}, dy);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(plain.y.data<float>()[i], rel.y.data<float>()[i]);
  EXPECT_NEAR(rel.ds.data<float>()[0], plain.ds.data<float>()[0] * 0.25f, 1e-6);
}

TEST(FakeQuant, BadScaleSizeIsAnError) {
  const GradOp* op = find_grad_op(kQtkDomain, "FakeQuant");
  ASSERT_NE(op, nullptr);
  const ir::Node n = fq_node(-8, 7);
  ForwardContext f{n, {Tensor(DType::kFloat32, {2, 3}), Tensor(DType::kFloat32, {2}), Tensor()}, {}, {}, false,
                   nullptr, {}};
  Status s = op->forward(f);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("fq"), std::string::npos) << s.message();
}

Expected<QuantResult> ptq(const ir::Model& m, const Tensor& calib, quant::QFormat w, quant::QFormat a,
                          bool float_first_last = false) {
  QuantConfig cfg;
  cfg.float_first_last = float_first_last;
  cfg.weight_format = w;
  cfg.activation_format = a;
  cfg.method = WeightMethod::kRtn;
  cfg.first_last_8bit = false;
  return quantize(m, cfg, CalibrationData{{calib}});
}

std::vector<float> session_out(const ir::Model& m, const Tensor& x, bool integer = false) {
  SessionOptions so;
  so.integer = integer;
  auto s = Session::create(m, so);
  EXPECT_TRUE(s.ok()) << s.status().message();
  if (!s.ok()) return {};
  auto y = (*s)->run(std::vector<Tensor>{x});
  EXPECT_TRUE(y.ok()) << y.status().message();
  if (!y.ok()) return {};
  return (*y)[0].to_float_vector();
}

// Untrained: the QAT graph computes what the PTQ model computes, and writing
// it back gives the PTQ model's tensors bit for bit.
void check_round_trip(const ir::Model& float_model, const Tensor& calib, const Tensor& x, quant::QFormat w,
                      quant::QFormat a) {
  auto q = ptq(float_model, calib, w, a);
  ASSERT_TRUE(q.ok()) << q.status().message();
  auto qat = to_qat_model(q->model, &q->report);
  ASSERT_TRUE(qat.ok()) << qat.status().message();
  int fake_quants = 0;
  for (const auto& n : qat->model.graph.nodes) {
    EXPECT_NE(n.op_type, "QuantizeLinear");
    EXPECT_NE(n.op_type, "DequantizeLinear");
    fake_quants += n.op_type == "FakeQuant";
  }
  EXPECT_GE(fake_quants, 4);
  auto tg = TrainGraph::create(qat->model);
  ASSERT_TRUE(tg.ok()) << tg.status().message();
  auto y = tg->forward(x, false);
  ASSERT_TRUE(y.ok()) << y.status().message();
  const std::vector<float> ref = session_out(q->model, x);
  ASSERT_EQ(ref.size(), static_cast<size_t>(y->numel()));
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(y->data<float>()[i], ref[i], 1e-4 + 1e-4 * std::fabs(ref[i]));

  auto back = from_qat_model(*qat, tg->to_model());
  ASSERT_TRUE(back.ok()) << back.status().message();
  const ir::Graph& a_g = q->model.graph;
  const ir::Graph& b_g = back->graph;
  ASSERT_EQ(a_g.initializers.size(), b_g.initializers.size());
  for (const auto& [name, t] : a_g.initializers) {
    const Tensor* u = b_g.find_initializer(name);
    ASSERT_NE(u, nullptr) << name;
    ASSERT_EQ(u->dtype(), t.dtype()) << name;
    ASSERT_EQ(u->shape(), t.shape()) << name;
    EXPECT_EQ(std::memcmp(u->raw(), t.raw(), t.nbytes()), 0) << name;
  }
}

TEST(Qat, UntrainedRoundTripReproducesPtqMlp) {
  auto m = build_architecture("mlp:12,16,3", 1);
  ASSERT_TRUE(m.ok());
  const data::Dataset d = testing::blobs(96, 12, 1, 0.4f);
  for (auto [w, a] : {std::pair{quant::QFormat::kInt4, quant::QFormat::kUInt4},
                      std::pair{quant::QFormat::kInt2, quant::QFormat::kUInt8},
                      std::pair{quant::QFormat::kInt8, quant::QFormat::kInt3}}) {
    SCOPED_TRACE(quant::traits(w).name + std::string(" ") + quant::traits(a).name);
    check_round_trip(*m, d.images, d.images, w, a);
  }
}

TEST(Qat, UntrainedRoundTripReproducesPtqCnn) {
  auto m = load_model(std::string(QTK_MODELS_DIR) + "/cnn.onnx");
  ASSERT_TRUE(m.ok()) << m.status().message();
  const Tensor calib = random_tensor({16, 1, 28, 28}, 7, 0.f, 1.f);
  const Tensor x = random_tensor({4, 1, 28, 28}, 8, 0.f, 1.f);
  check_round_trip(*m, calib, x, quant::QFormat::kInt4, quant::QFormat::kUInt4);
}

double mean_loss(TrainGraph& tg, const data::Dataset& d) {
  auto y = tg.forward(d.images, false);
  EXPECT_TRUE(y.ok());
  auto l = softmax_cross_entropy(*y, d.labels);
  EXPECT_TRUE(l.ok());
  return l->loss;
}

TEST(Qat, TrainingLowersTheLossAndExportKeepsIt) {
  auto m = build_architecture("mlp:12,16,3", 3);
  ASSERT_TRUE(m.ok());
  const data::Dataset train = testing::blobs(300, 12, 1, 0.4f), val = testing::blobs(90, 12, 2, 0.4f);
  // A briefly trained float model, then W2A4: PTQ loses much of it.
  auto ftg = TrainGraph::create(*m);
  ASSERT_TRUE(ftg.ok());
  TrainOptions fo;
  fo.epochs = 3;
  fo.batch = 16;
  fo.lr = 0.01f;
  ASSERT_TRUE(train_classifier(*ftg, train, nullptr, fo).ok());
  auto q = ptq(ftg->to_model(), train.images, quant::QFormat::kInt2, quant::QFormat::kUInt4);
  ASSERT_TRUE(q.ok()) << q.status().message();
  auto qat = to_qat_model(q->model, &q->report);
  ASSERT_TRUE(qat.ok()) << qat.status().message();
  auto tg = TrainGraph::create(qat->model);
  ASSERT_TRUE(tg.ok()) << tg.status().message();
  // Weights, biases and the relative scales all train.
  int scales = 0;
  for (const auto& p : tg->params()) scales += p.name.find("_qat_scale") != std::string::npos;
  EXPECT_GE(scales, 4);
  const double before = mean_loss(*tg, train);
  TrainOptions o;
  o.epochs = 6;
  o.batch = 16;
  o.lr = 3e-3f;
  auto r = train_classifier(*tg, train, &val, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_FALSE(r->diverged);
  const double after = mean_loss(*tg, train);
  EXPECT_LT(after, 0.8 * before) << "before " << before << " after " << after;

  auto out = from_qat_model(*qat, tg->to_model());
  ASSERT_TRUE(out.ok()) << out.status().message();
  // The exported QDQ model computes what the trained QAT graph computes, in
  // the float session and (same top-1 on nearly every sample) the integer one.
  auto y = tg->forward(val.images, false);
  ASSERT_TRUE(y.ok());
  const std::vector<float> f = session_out(*out, val.images);
  const std::vector<float> iq = session_out(*out, val.images, true);
  ASSERT_EQ(f.size(), static_cast<size_t>(y->numel()));
  ASSERT_EQ(iq.size(), f.size());
  int agree = 0;
  for (int64_t i = 0; i < 90; ++i) {
    auto argmax = [&](const float* p) { return std::max_element(p, p + 3) - p; };
    for (int k = 0; k < 3; ++k) EXPECT_NEAR(f[i * 3 + k], y->data<float>()[i * 3 + k], 1e-3);
    agree += argmax(&f[i * 3]) == argmax(&iq[i * 3]);
  }
  EXPECT_GE(agree, 88);
  // Saves and loads as a standard model.
  const std::string path = ::testing::TempDir() + "qtk_qat_test.onnx";
  ASSERT_TRUE(save_model(*out, path).ok());
  auto reloaded = load_model(path);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status().message();
  std::remove(path.c_str());
}

TEST(Qat, FloatLayersTrainAndExportToo) {
  auto m = build_architecture("mlp:12,16,16,3", 4);
  ASSERT_TRUE(m.ok());
  const data::Dataset train = testing::blobs(120, 12, 1, 0.4f);
  auto q = ptq(*m, train.images, quant::QFormat::kInt4, quant::QFormat::kUInt8, /*float_first_last=*/true);
  ASSERT_TRUE(q.ok()) << q.status().message();
  auto qat = to_qat_model(q->model, &q->report);
  ASSERT_TRUE(qat.ok()) << qat.status().message();
  auto tg = TrainGraph::create(qat->model);
  ASSERT_TRUE(tg.ok()) << tg.status().message();
  TrainOptions o;
  o.epochs = 2;
  o.batch = 16;
  o.lr = 1e-2f;
  ASSERT_TRUE(train_classifier(*tg, train, nullptr, o).ok());
  auto out = from_qat_model(*qat, tg->to_model());
  ASSERT_TRUE(out.ok()) << out.status().message();
  auto y = tg->forward(train.images, false);
  ASSERT_TRUE(y.ok());
  const std::vector<float> f = session_out(*out, train.images);
  ASSERT_EQ(f.size(), static_cast<size_t>(y->numel()));
  for (size_t i = 0; i < f.size(); ++i) EXPECT_NEAR(f[i], y->data<float>()[i], 1e-3) << i;
}

TEST(Qat, DynamicActivationsAreRejected) {
  auto m = build_architecture("mlp:12,16,3", 1);
  ASSERT_TRUE(m.ok());
  QuantConfig cfg;
  cfg.activations = ActivationMode::kDynamic;
  auto q = quantize(*m, cfg, CalibrationData{{testing::blobs(30, 12, 1, 0.4f).images}});
  ASSERT_TRUE(q.ok()) << q.status().message();
  auto qat = to_qat_model(q->model, &q->report);
  ASSERT_FALSE(qat.ok());
  EXPECT_NE(qat.status().message().find("DequantizeLinear"), std::string::npos) << qat.status().message();
}

}  // namespace
}  // namespace qtk::train
