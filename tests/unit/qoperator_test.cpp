// QDQ → QOperator rewrite (quant/graph/qoperator_writer.h) and integer
// execution: the com.microsoft contrib kernels against real arithmetic, the
// rewrite's activation folding and parameter checks on small graphs, and the
// rewritten cnn / resnet20 against the float-simulated QDQ graphs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "ir/graph.h"
#include "qtk/model.h"
#include "qtk/quantize.h"
#include "qtk/session.h"
#include "quant/graph/qoperator_writer.h"

namespace qtk {
namespace {

const std::string kModels = QTK_MODELS_DIR;

ir::Attribute int_attr(const std::string& n, int64_t v) { return ir::attr_int(n, v); }

ir::ValueInfo value(const std::string& name, DType dt) {
  ir::ValueInfo v;
  v.name = name;
  v.dtype = dt;
  return v;
}

template <class T>
Tensor scalar(T v) {
  return Tensor::scalar<T>(v);
}

// One com.microsoft node with every input fed at run time ("" = absent).
Expected<Tensor> run_ms_node(const std::string& op, const std::vector<std::string>& names,
                             const std::vector<Tensor>& inputs, std::vector<ir::Attribute> attrs = {}) {
  ir::Model m;
  m.opsets = {{"", 17}, {"com.microsoft", 1}};
  ir::Node n;
  n.name = "node";
  n.op_type = op;
  n.domain = "com.microsoft";
  n.inputs = names;
  n.outputs = {"y"};
  n.attrs = std::move(attrs);
  std::vector<Tensor> feeds;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i].empty()) continue;
    m.graph.inputs.push_back(value(names[i], inputs[i].dtype()));
    feeds.push_back(inputs[i]);
  }
  m.graph.outputs.push_back(value("y", DType::kUndefined));
  m.graph.nodes.push_back(n);
  SessionOptions o;
  o.optimize = false;
  QTK_ASSIGN_OR_RETURN(auto s, Session::create(m, o));
  QTK_ASSIGN_OR_RETURN(auto out, s->run(feeds));
  return out[0];
}

Tensor random_codes(DType t, Shape shape, std::mt19937& rng) {
  Tensor r(t, std::move(shape));
  std::uniform_int_distribution<int> d(t == DType::kUInt8 ? 0 : -128, t == DType::kUInt8 ? 255 : 127);
  for (int64_t i = 0; i < r.numel(); ++i) {
    if (t == DType::kUInt8) r.data<uint8_t>()[i] = static_cast<uint8_t>(d(rng));
    else r.data<int8_t>()[i] = static_cast<int8_t>(d(rng));
  }
  return r;
}

Tensor zp_tensor(DType t, int v) {
  return t == DType::kUInt8 ? scalar<uint8_t>(static_cast<uint8_t>(v)) : scalar<int8_t>(static_cast<int8_t>(v));
}

// The rounding contract of the integer kernels: `got` equals real `r` rounded
// to nearest (+ zero point, clamped); where r lies within 1e-3 of a tie the
// fixed-point rescale may land on either side.
void expect_rounded(int64_t got, double r, int32_t zp, DType t, const std::string& where) {
  const double lo = t == DType::kUInt8 ? 0 : -128, hi = t == DType::kUInt8 ? 255 : 127;
  const double want = std::clamp(std::floor(r + 0.5) + zp, lo, hi);
  const double frac = r - std::floor(r);
  if (std::fabs(frac - 0.5) < 1e-3) {
    EXPECT_LE(std::fabs(got - want), 1) << where << " real " << r;
  } else {
    EXPECT_EQ(got, want) << where << " real " << r;
  }
}

int count_op(const ir::Model& m, const std::string& op) {
  int n = 0;
  for (const auto& node : m.graph.nodes) n += node.op_type == op;
  return n;
}

// ---------------------------------------------------------------------------
// Contrib kernels

TEST(QLinearContrib, AddRoundsOnceWithBroadcast) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> sd(0.002f, 0.2f);
  for (DType t : {DType::kUInt8, DType::kInt8}) {
    for (int trial = 0; trial < 20; ++trial) {
      const float sa = sd(rng), sb = sd(rng), sc = sd(rng);
      std::uniform_int_distribution<int> zd(t == DType::kUInt8 ? 0 : -128, t == DType::kUInt8 ? 255 : 127);
      const int za = zd(rng), zb = zd(rng), zc = zd(rng);
      Tensor a = random_codes(t, {2, 3, 4}, rng), b = random_codes(t, {3, 1}, rng);
      auto y = run_ms_node("QLinearAdd", {"a", "as", "az", "b", "bs", "bz", "cs", "cz"},
                           {a, scalar(sa), zp_tensor(t, za), b, scalar(sb), zp_tensor(t, zb), scalar(sc), zp_tensor(t, zc)});
      ASSERT_TRUE(y.ok()) << y.status().message();
      ASSERT_EQ(y->shape(), (Shape{2, 3, 4}));
      ASSERT_EQ(y->dtype(), t);
      for (int64_t i = 0; i < y->numel(); ++i) {
        const int64_t row = (i / 4) % 3;
        const double r = (static_cast<double>(sa) * (a.get_as_int64(i) - za) +
                          static_cast<double>(sb) * (b.get_as_int64(row) - zb)) / sc;
        expect_rounded(y->get_as_int64(i), r, zc, t, "trial " + std::to_string(trial) + " element " + std::to_string(i));
      }
    }
  }
}

TEST(QLinearContrib, MulRoundsOnce) {
  std::mt19937 rng(12);
  std::uniform_real_distribution<float> sd(0.002f, 0.2f);
  for (DType t : {DType::kUInt8, DType::kInt8}) {
    for (int trial = 0; trial < 20; ++trial) {
      const float sa = sd(rng), sb = sd(rng), sc = sd(rng) * 20;
      const int za = t == DType::kUInt8 ? 128 : 3, zb = t == DType::kUInt8 ? 7 : -5, zc = t == DType::kUInt8 ? 60 : 0;
      Tensor a = random_codes(t, {5, 6}, rng), b = random_codes(t, {5, 6}, rng);
      auto y = run_ms_node("QLinearMul", {"a", "as", "az", "b", "bs", "bz", "cs", "cz"},
                           {a, scalar(sa), zp_tensor(t, za), b, scalar(sb), zp_tensor(t, zb), scalar(sc), zp_tensor(t, zc)});
      ASSERT_TRUE(y.ok()) << y.status().message();
      for (int64_t i = 0; i < y->numel(); ++i) {
        const double r = static_cast<double>(sa) * sb / sc * (a.get_as_int64(i) - za) * (b.get_as_int64(i) - zb);
        expect_rounded(y->get_as_int64(i), r, zc, t, "element " + std::to_string(i));
      }
    }
  }
}

TEST(QLinearContrib, GlobalAveragePoolBothLayouts) {
  std::mt19937 rng(13);
  for (DType t : {DType::kUInt8, DType::kInt8}) {
    for (bool channels_last : {false, true}) {
      const int64_t n = 2, c = 3, h = 5, w = 7;
      Tensor x = random_codes(t, channels_last ? Shape{n, h, w, c} : Shape{n, c, h, w}, rng);
      const float xs = 0.05f, ys = 0.013f;
      const int xz = t == DType::kUInt8 ? 100 : -10, yz = t == DType::kUInt8 ? 17 : 4;
      auto y = run_ms_node("QLinearGlobalAveragePool", {"x", "xs", "xz", "ys", "yz"},
                           {x, scalar(xs), zp_tensor(t, xz), scalar(ys), zp_tensor(t, yz)},
                           {int_attr("channels_last", channels_last)});
      ASSERT_TRUE(y.ok()) << y.status().message();
      ASSERT_EQ(y->shape(), channels_last ? (Shape{n, 1, 1, c}) : (Shape{n, c, 1, 1}));
      for (int64_t b = 0; b < n; ++b)
        for (int64_t ch = 0; ch < c; ++ch) {
          int64_t sum = 0;
          for (int64_t s = 0; s < h * w; ++s)
            sum += x.get_as_int64(channels_last ? (b * h * w + s) * c + ch : (b * c + ch) * h * w + s) - xz;
          const double r = static_cast<double>(xs) / (h * w * static_cast<double>(ys)) * sum;
          expect_rounded(y->get_as_int64(b * c + ch), r, yz, t, "n " + std::to_string(b) + " c " + std::to_string(ch));
        }
    }
  }
}

TEST(QLinearContrib, QGemmPerColumnWeightsWithBias) {
  std::mt19937 rng(14);
  const int64_t M = 4, K = 9, N = 5;
  Tensor a = random_codes(DType::kUInt8, {M, K}, rng);
  Tensor b = random_codes(DType::kInt8, {N, K}, rng);  // transB = 1
  Tensor bs(DType::kFloat32, {N}), bz(DType::kInt8, {N}), c(DType::kInt32, {N});
  for (int64_t j = 0; j < N; ++j) {
    bs.data<float>()[j] = 0.01f * (j + 1);
    bz.data<int8_t>()[j] = static_cast<int8_t>(j - 2);
    c.data<int32_t>()[j] = static_cast<int32_t>(1000 * j - 2000);
  }
  const float as = 0.02f, ys = 0.7f;
  const int az = 120, yz = 30;
  auto acc = [&](int64_t i, int64_t j) {
    int64_t s = c.data<int32_t>()[j];
    for (int64_t k = 0; k < K; ++k) s += (a.get_as_int64(i * K + k) - az) * (b.get_as_int64(j * K + k) - (j - 2));
    return s;
  };
  auto q = run_ms_node("QGemm", {"a", "as", "az", "b", "bs", "bz", "c", "ys", "yz"},
                       {a, scalar(as), scalar<uint8_t>(az), b, bs, bz, c, scalar(ys), scalar<uint8_t>(yz)},
                       {int_attr("transB", 1)});
  ASSERT_TRUE(q.ok()) << q.status().message();
  ASSERT_EQ(q->dtype(), DType::kUInt8);
  ASSERT_EQ(q->shape(), (Shape{M, N}));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j)
      expect_rounded(q->get_as_int64(i * N + j), static_cast<double>(as) * bs.data<float>()[j] / ys * acc(i, j), yz,
                     DType::kUInt8, "y[" + std::to_string(i) + "," + std::to_string(j) + "]");
  // Without y_scale the output is the dequantized accumulator.
  auto f = run_ms_node("QGemm", {"a", "as", "az", "b", "bs", "bz", "c"},
                       {a, scalar(as), scalar<uint8_t>(az), b, bs, bz, c}, {int_attr("transB", 1)});
  ASSERT_TRUE(f.ok()) << f.status().message();
  ASSERT_EQ(f->dtype(), DType::kFloat32);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      const double want = static_cast<double>(as) * bs.data<float>()[j] * acc(i, j);
      EXPECT_NEAR(f->data<float>()[i * N + j], want, 1e-5 * std::fabs(want) + 1e-6);
    }
}

TEST(QLinearContrib, BadInputsAreErrors) {
  std::mt19937 rng(15);
  Tensor a = random_codes(DType::kUInt8, {3}, rng), b = random_codes(DType::kInt8, {3}, rng);
  auto y = run_ms_node("QLinearAdd", {"a", "as", "az", "b", "bs", "bz", "cs", "cz"},
                       {a, scalar(0.1f), scalar<uint8_t>(0), b, scalar(0.1f), scalar<int8_t>(0), scalar(0.1f),
                        scalar<uint8_t>(0)});
  EXPECT_FALSE(y.ok());
  auto g = run_ms_node("QGemm", {"a", "as", "az", "b", "bs", "bz"},
                       {random_codes(DType::kUInt8, {2, 3, 4}, rng), scalar(0.1f), scalar<uint8_t>(0),
                        random_codes(DType::kInt8, {4, 2}, rng), scalar(0.1f), scalar<int8_t>(0)});
  EXPECT_FALSE(g.ok());
  auto p = run_ms_node("QLinearGlobalAveragePool", {"x", "xs", "xz", "ys", "yz"},
                       {random_codes(DType::kUInt8, {2, 3, 4}, rng), scalar(-1.f), scalar<uint8_t>(0), scalar(0.1f),
                        scalar<uint8_t>(0)});
  EXPECT_FALSE(p.ok());
}

// ---------------------------------------------------------------------------
// The rewrite on small QDQ graphs

struct QdqBuilder {
  ir::Model m;
  int counter = 0;

  QdqBuilder() {
    m.opsets = {{"", 17}};
    m.graph.inputs.push_back(value("x", DType::kFloat32));
  }
  std::string init(const std::string& base, Tensor t) {
    const std::string name = base + std::to_string(counter++);
    m.graph.set_initializer(name, std::move(t));
    return name;
  }
  void node(const std::string& op, std::vector<std::string> in, std::vector<std::string> out,
            std::vector<ir::Attribute> attrs = {}) {
    ir::Node n;
    n.op_type = op;
    n.name = op + std::to_string(counter++);
    n.inputs = std::move(in);
    n.outputs = std::move(out);
    n.attrs = std::move(attrs);
    m.graph.nodes.push_back(std::move(n));
  }
  // v → Q → DQ with uint8 parameters; returns the DQ output.
  std::string qdq(const std::string& v, float s, int zp) {
    const std::string sn = init("s", scalar(s)), zn = init("z", scalar<uint8_t>(static_cast<uint8_t>(zp)));
    node("QuantizeLinear", {v, sn, zn}, {v + "_q"});
    node("DequantizeLinear", {v + "_q", sn, zn}, {v + "_dq"});
    return v + "_dq";
  }
  // A DQ'd int8 conv weight [m, c, 3, 3], per channel.
  std::string weight(int64_t mo, int64_t c, std::mt19937& rng) {
    Tensor w = random_codes(DType::kInt8, {mo, c, 3, 3}, rng);
    Tensor s(DType::kFloat32, {mo}), z(DType::kInt8, {mo});
    for (int64_t i = 0; i < mo; ++i) s.data<float>()[i] = 0.01f + 0.002f * i;
    const std::string out = "w" + std::to_string(counter) + "_dq";
    node("DequantizeLinear", {init("wq", w), init("ws", s), init("wz", z)}, {out}, {int_attr("axis", 0)});
    return out;
  }
  void output(const std::string& v) { m.graph.outputs.push_back(value(v, DType::kFloat32)); }
};

Tensor random_image(Shape shape, std::mt19937& rng) {
  Tensor t(DType::kFloat32, std::move(shape));
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(rng);
  return t;
}

// Float-simulated (plain session) and integer outputs of one model.
std::pair<Tensor, Tensor> run_both(const ir::Model& m, const Tensor& x) {
  SessionOptions f, i;
  i.integer = true;
  auto sf = Session::create(m, f);
  auto si = Session::create(m, i);
  EXPECT_TRUE(sf.ok() && si.ok()) << sf.status().message() << " / " << si.status().message();
  if (!sf.ok() || !si.ok()) return {};
  auto yf = (*sf)->run(std::vector<Tensor>{x});
  auto yi = (*si)->run(std::vector<Tensor>{x});
  EXPECT_TRUE(yf.ok() && yi.ok()) << yf.status().message() << " / " << yi.status().message();
  if (!yf.ok() || !yi.ok()) return {};
  return {(*yf)[0], (*yi)[0]};
}

// Conv → act → Q(y_scale, y_zp) → DQ, read as the graph output.
QdqBuilder conv_act_graph(const std::string& act, float y_scale, int y_zp, std::mt19937& rng) {
  QdqBuilder b;
  const std::string x = b.qdq("x", 0.01f, 128);
  b.node("Conv", {x, b.weight(4, 2, rng)}, {"c"}, {int_attr("group", 1)});
  if (act == "Relu") {
    b.node("Relu", {"c"}, {"a"});
  } else {
    b.node("Clip", {"c", b.init("lo", scalar(-0.2f)), b.init("hi", scalar(0.25f))}, {"a"});
  }
  b.output(b.qdq("a", y_scale, y_zp));
  return b;
}

TEST(QOperatorRewrite, ReluWithZeroPointAtQminFoldsAway) {
  std::mt19937 rng(21);
  QdqBuilder b = conv_act_graph("Relu", 0.004f, 0, rng);
  ir::Model m = b.m;
  quant::QOperatorStats st;
  quant::QOperatorOptions o;
  o.stats = &st;
  ASSERT_TRUE(quant::qdq_to_qoperator(m, o).ok());
  EXPECT_EQ(st.qlinear_conv, 1);
  EXPECT_EQ(st.activations_folded, 1);
  EXPECT_EQ(st.integer_clips, 0);
  EXPECT_EQ(count_op(m, "Relu"), 0);
  EXPECT_EQ(count_op(m, "Clip"), 0);
  EXPECT_EQ(count_op(m, "Conv"), 0);
}

// Relu / Clip whose bounds fall inside the code range need an integer Clip;
// the integer result then matches dequant → conv → act → quant up to one
// code of rounding, and respects the activation's bounds exactly.
TEST(QOperatorRewrite, ActivationInsideRangeBecomesIntegerClip) {
  for (const std::string act : {"Relu", "Clip"}) {
    std::mt19937 rng(22);
    const float ys = 0.004f;
    QdqBuilder b = conv_act_graph(act, ys, 100, rng);
    ir::Model m = b.m;
    quant::QOperatorStats st;
    quant::QOperatorOptions o;
    o.stats = &st;
    ASSERT_TRUE(quant::qdq_to_qoperator(m, o).ok());
    EXPECT_EQ(st.qlinear_conv, 1) << act;
    EXPECT_EQ(st.integer_clips, 1) << act;
    EXPECT_EQ(count_op(m, "Clip"), 1) << act;
    EXPECT_EQ(count_op(m, "Relu"), 0) << act;

    const Tensor x = random_image({2, 2, 6, 6}, rng);
    auto [yf, yi] = run_both(b.m, x);
    ASSERT_TRUE(yf.defined() && yi.defined());
    ASSERT_EQ(yf.shape(), yi.shape());
    const float lo = act == "Relu" ? 0.f : -0.2f, hi = act == "Relu" ? 1e9f : 0.25f;
    int64_t off_by_one = 0, below = 0;
    for (int64_t i = 0; i < yf.numel(); ++i) {
      const float f = yf.data<float>()[i], v = yi.data<float>()[i];
      EXPECT_NEAR(v, f, ys * 1.01f) << act << " element " << i;
      off_by_one += v != f;
      below += f <= lo + ys;
      EXPECT_GE(v, lo - ys / 2) << act;
      EXPECT_LE(v, hi + ys / 2) << act;
    }
    EXPECT_GT(below, 0) << act << ": the test should exercise the lower bound";
    EXPECT_LT(off_by_one, yf.numel() / 20) << act;
  }
}

// Data movement is rewritten only when input and output share parameters,
// and then it is exact.
TEST(QOperatorRewrite, MaxPoolOnIntegersNeedsEqualParameters) {
  for (bool equal : {true, false}) {
    QdqBuilder b;
    const std::string x = b.qdq("x", 0.01f, 128);
    b.node("MaxPool", {x}, {"p"}, {[] {
             ir::Attribute a;
             a.name = "kernel_shape";
             a.type = ir::AttrType::kInts;
             a.ints = {2, 2};
             return a;
           }()});
    b.output(b.qdq("p", equal ? 0.01f : 0.02f, 128));
    ir::Model m = b.m;
    quant::QOperatorStats st;
    quant::QOperatorOptions o;
    o.stats = &st;
    ASSERT_TRUE(quant::qdq_to_qoperator(m, o).ok());
    EXPECT_EQ(st.integer_data_movement, equal ? 1 : 0);
    EXPECT_EQ(count_op(m, "DequantizeLinear"), equal ? 1 : 2);  // the output's DQ stays
    std::mt19937 rng(23);
    auto [yf, yi] = run_both(b.m, random_image({1, 3, 6, 6}, rng));
    ASSERT_TRUE(yf.defined() && yi.defined());
    for (int64_t i = 0; i < yf.numel(); ++i) ASSERT_EQ(yf.data<float>()[i], yi.data<float>()[i]) << i;
  }
}

TEST(QOperatorRewrite, DequantizeThenQuantizeWithSameParametersIsRemoved) {
  QdqBuilder b;
  const std::string x = b.qdq("x", 0.01f, 128);
  // DQ → Q with the same values under other names.
  const std::string s = b.init("s", scalar(0.01f)), z = b.init("z", scalar<uint8_t>(128));
  b.node("QuantizeLinear", {x, s, z}, {"x2_q"});
  b.node("DequantizeLinear", {"x2_q", s, z}, {"y"});
  b.output("y");
  ir::Model m = b.m;
  quant::QOperatorStats st;
  quant::QOperatorOptions o;
  o.stats = &st;
  ASSERT_TRUE(quant::qdq_to_qoperator(m, o).ok());
  EXPECT_EQ(st.dq_q_pairs_removed, 1);
  EXPECT_EQ(count_op(m, "QuantizeLinear"), 1);
  EXPECT_EQ(count_op(m, "DequantizeLinear"), 1);
  std::mt19937 rng(24);
  auto [yf, yi] = run_both(b.m, random_image({4, 5}, rng));
  ASSERT_TRUE(yf.defined() && yi.defined());
  for (int64_t i = 0; i < yf.numel(); ++i) ASSERT_EQ(yf.data<float>()[i], yi.data<float>()[i]) << i;
}

// ---------------------------------------------------------------------------
// The bundled models

struct Quantized {
  ir::Model float_model;
  ir::Model qdq;
};

// Quantized once per process (W8 per channel, A8 uint8, 256 calibration images).
const Quantized& quantized(const std::string& name, ActivationMode mode = ActivationMode::kStatic) {
  static std::map<std::pair<std::string, int>, Quantized> cache;
  const auto key = std::make_pair(name, static_cast<int>(mode));
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  Quantized q;
  auto m = load_model(kModels + "/" + name + ".onnx");
  EXPECT_TRUE(m.ok()) << m.status().message();
  auto calib = data::load_dataset("fashion-mnist:train", 256);
  EXPECT_TRUE(calib.ok()) << calib.status().message();
  if (m.ok() && calib.ok()) {
    q.float_model = *m;
    QuantConfig cfg;
    cfg.activations = mode;
    auto r = quantize(*m, cfg, CalibrationData{{calib->images}});
    EXPECT_TRUE(r.ok()) << r.status().message();
    if (r.ok()) q.qdq = r->model;
  }
  return cache[key] = q;
}

std::vector<int64_t> top1(const Tensor& logits) {
  std::vector<int64_t> r;
  for (int64_t i = 0; i < logits.dim(0); ++i) {
    const float* row = logits.data<float>() + i * logits.dim(1);
    r.push_back(std::max_element(row, row + logits.dim(1)) - row);
  }
  return r;
}

struct Top1 {
  std::vector<int64_t> classes;
  double accuracy = 0;
};

Top1 evaluate(const ir::Model& m, const data::Dataset& d, bool integer) {
  SessionOptions o;
  o.threads = 2;
  o.integer = integer;
  auto s = Session::create(m, o);
  EXPECT_TRUE(s.ok()) << s.status().message();
  if (!s.ok()) return {};
  auto out = (*s)->run(std::vector<Tensor>{d.images});
  EXPECT_TRUE(out.ok()) << out.status().message();
  if (!out.ok()) return {};
  Top1 r;
  r.classes = top1((*out)[0]);
  int64_t right = 0;
  for (size_t i = 0; i < r.classes.size(); ++i) right += r.classes[i] == d.labels[i];
  r.accuracy = static_cast<double>(right) / d.labels.size();
  return r;
}

void check_rewrite_counts(const std::string& name) {
  const Quantized& q = quantized(name);
  ASSERT_FALSE(q.qdq.graph.nodes.empty());
  ir::Model m = q.qdq;
  quant::QOperatorStats st;
  quant::QOperatorOptions o;
  o.stats = &st;
  ASSERT_TRUE(quant::qdq_to_qoperator(m, o).ok());
  const ir::Model& f = q.float_model;
  // Every compute op of the float model now runs on integers.
  EXPECT_EQ(count_op(m, "QLinearConv"), count_op(f, "Conv"));
  EXPECT_EQ(st.qlinear_conv, count_op(f, "Conv"));
  EXPECT_EQ(count_op(m, "QGemm"), count_op(f, "Gemm"));
  EXPECT_EQ(count_op(m, "QLinearAdd"), count_op(f, "Add"));
  EXPECT_EQ(count_op(m, "QLinearGlobalAveragePool"), count_op(f, "GlobalAveragePool"));
  EXPECT_EQ(count_op(m, "MaxPool"), count_op(f, "MaxPool"));
  EXPECT_EQ(st.integer_data_movement, count_op(f, "MaxPool") + count_op(f, "Flatten"));
  for (const char* op : {"Conv", "Gemm", "Add", "GlobalAveragePool", "Relu", "DequantizeLinear"})
    EXPECT_EQ(count_op(m, op), 0) << op << " left in float";
  EXPECT_EQ(count_op(m, "QuantizeLinear"), 1);  // the float input
  EXPECT_EQ(st.activations_folded, count_op(f, "Relu"));
  EXPECT_EQ(st.integer_clips, 0);  // Relu ranges start at 0: zero point 0 for uint8
  EXPECT_GT(m.opset("com.microsoft"), 0);
  std::printf("%s: %d QLinearConv, %d QGemm, %d QLinearAdd, %d QLinearGlobalAveragePool, %d integer data movement\n",
              name.c_str(), st.qlinear_conv, st.qgemm, st.qlinear_add, st.qlinear_global_average_pool,
              st.integer_data_movement);
}

TEST(QOperatorModels, CnnRewriteLeavesNoFloatCompute) { check_rewrite_counts("cnn"); }
TEST(QOperatorModels, Resnet20RewriteLeavesNoFloatCompute) { check_rewrite_counts("resnet20"); }

// 500 images keep this under a minute on 2 cores with the scalar integer
// conv; the ORT test (tests/ort/) checks 2000.
constexpr int64_t kAgreementImages = 500;

void check_integer_agreement(const std::string& name) {
  const Quantized& q = quantized(name);
  ASSERT_FALSE(q.qdq.graph.nodes.empty());
  auto test = data::load_dataset("fashion-mnist:test", kAgreementImages);
  ASSERT_TRUE(test.ok()) << test.status().message();
  const Top1 fl = evaluate(q.float_model, *test, false);
  const Top1 sim = evaluate(q.qdq, *test, false);
  const Top1 in = evaluate(q.qdq, *test, true);
  ASSERT_EQ(sim.classes.size(), in.classes.size());
  ASSERT_EQ(in.classes.size(), test->labels.size());
  int64_t agree = 0;
  for (size_t i = 0; i < in.classes.size(); ++i) agree += sim.classes[i] == in.classes[i];
  const double rate = static_cast<double>(agree) / in.classes.size();
  std::printf("%s on %d test images: top-1 agreement integer vs QDQ simulated %.4f; accuracy float %.4f, "
              "QDQ simulated %.4f, integer %.4f\n",
              name.c_str(), static_cast<int>(kAgreementImages), rate, fl.accuracy, sim.accuracy, in.accuracy);
  EXPECT_GE(rate, 0.995);
  EXPECT_NEAR(in.accuracy, fl.accuracy, 0.01);
}

TEST(QOperatorModels, CnnIntegerSessionAgreesWithQdqSimulation) { check_integer_agreement("cnn"); }
TEST(QOperatorModels, Resnet20IntegerSessionAgreesWithQdqSimulation) { check_integer_agreement("resnet20"); }

// quantize() with ExportFormat::kQOperator writes the graph an integer session
// builds for itself: after a save / load round trip both give the same logits.
TEST(QOperatorModels, QOperatorExportMatchesIntegerSession) {
  auto m = load_model(kModels + "/cnn.onnx");
  auto calib = data::load_dataset("fashion-mnist:train", 256);
  auto test = data::load_dataset("fashion-mnist:test", 200);
  ASSERT_TRUE(m.ok() && calib.ok() && test.ok());
  QuantConfig cfg;
  cfg.format = ExportFormat::kQOperator;
  auto r = quantize(*m, cfg, CalibrationData{{calib->images}});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(count_op(r->model, "QLinearConv"), 2);
  EXPECT_EQ(count_op(r->model, "Conv"), 0);
  const std::string path = (std::filesystem::temp_directory_path() / "qtk_qoperator_cnn_test.onnx").string();
  ASSERT_TRUE(save_model(r->model, path).ok());
  auto loaded = load_model(path);
  std::filesystem::remove(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  EXPECT_EQ(count_op(*loaded, "QGemm"), 2);

  const Quantized& q = quantized("cnn");
  SessionOptions plain, integer;
  integer.integer = true;
  auto s_export = Session::create(*loaded, plain);
  auto s_integer = Session::create(q.qdq, integer);
  ASSERT_TRUE(s_export.ok()) << s_export.status().message();
  ASSERT_TRUE(s_integer.ok()) << s_integer.status().message();
  auto a = (*s_export)->run(std::vector<Tensor>{test->images});
  auto b = (*s_integer)->run(std::vector<Tensor>{test->images});
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ((*a)[0].shape(), (*b)[0].shape());
  for (int64_t i = 0; i < (*a)[0].numel(); ++i)
    ASSERT_EQ((*a)[0].data<float>()[i], (*b)[0].data<float>()[i]) << "logit " << i;
}

// Dynamic quantization: DynamicQuantizeLinear → ConvInteger / MatMulInteger →
// Cast → Mul by the scale product (→ Add bias), ONNX Runtime's
// quantize_dynamic form.
TEST(QOperatorModels, DynamicCnnUsesIntegerAccumulation) {
  const Quantized& q = quantized("cnn", ActivationMode::kDynamic);
  ASSERT_FALSE(q.qdq.graph.nodes.empty());
  ir::Model m = q.qdq;
  quant::QOperatorStats st;
  quant::QOperatorOptions o;
  o.stats = &st;
  ASSERT_TRUE(quant::qdq_to_qoperator(m, o).ok());
  EXPECT_EQ(count_op(m, "ConvInteger"), count_op(q.float_model, "Conv"));
  EXPECT_EQ(count_op(m, "MatMulInteger"), count_op(q.float_model, "Gemm"));
  EXPECT_EQ(st.integer_accumulate, count_op(q.float_model, "Conv") + count_op(q.float_model, "Gemm"));
  for (const char* op : {"Conv", "Gemm", "DequantizeLinear"}) EXPECT_EQ(count_op(m, op), 0) << op;

  auto test = data::load_dataset("fashion-mnist:test", 500);
  ASSERT_TRUE(test.ok());
  const Top1 sim = evaluate(q.qdq, *test, false);
  const Top1 in = evaluate(q.qdq, *test, true);
  ASSERT_EQ(sim.classes.size(), in.classes.size());
  int64_t agree = 0;
  for (size_t i = 0; i < in.classes.size(); ++i) agree += sim.classes[i] == in.classes[i];
  EXPECT_GE(static_cast<double>(agree) / in.classes.size(), 0.995);
}

// Without contrib ops only standard ONNX is written: Add, GlobalAveragePool
// and the quantized-output Gemms stay as DQ → float op → Q.
TEST(QOperatorModels, StandardOpsOnlyWithoutContribOps) {
  const Quantized& q = quantized("resnet20");
  ASSERT_FALSE(q.qdq.graph.nodes.empty());
  ir::Model m = q.qdq;
  quant::QOperatorOptions o;
  o.contrib_ops = false;
  ASSERT_TRUE(quant::qdq_to_qoperator(m, o).ok());
  for (const auto& n : m.graph.nodes) EXPECT_TRUE(ir::is_default_domain(n.domain)) << n.describe();
  EXPECT_EQ(m.opset("com.microsoft"), 0);
  EXPECT_EQ(count_op(m, "QLinearConv"), count_op(q.float_model, "Conv"));
  // The logits Gemm (float output) becomes MatMulInteger → Cast → Mul → Add(bias).
  EXPECT_EQ(count_op(m, "MatMulInteger"), 1);
  EXPECT_EQ(count_op(m, "Add"), count_op(q.float_model, "Add") + 1);
  EXPECT_EQ(count_op(m, "Gemm"), 0);
}

}  // namespace
}  // namespace qtk
