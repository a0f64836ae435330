// Elementwise, activation and generator kernels, run as one-node models
// through the public Session API. Expected values come from independent naive
// loops or from the math itself, never from the kernels under test.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/session.h"

namespace qtk {
namespace {

ir::Attribute attr_int(const std::string& name, int64_t v) { return ir::attr_int(name, v); }
ir::Attribute attr_float(const std::string& name, float v) { return ir::attr_float(name, v); }
ir::Attribute attr_string(const std::string& name, const std::string& v) { return ir::attr_string(name, v); }
ir::Attribute attr_tensor(const std::string& name, Tensor t) { return ir::attr_tensor(name, std::move(t)); }

struct OneNode {
  std::string op;
  std::vector<std::string> inputs;  // "" marks an absent optional input
  size_t num_outputs = 1;
  std::vector<ir::Attribute> attrs;
  int64_t opset = 17;
  std::string domain;
};

// A model with one node; every non-empty input is a graph input typed like
// its feed, with no declared shape (so the kernel checks shapes).
ir::Model make_model(const OneNode& spec, const std::vector<Tensor>& feeds) {
  ir::Model m;
  m.opsets = {{"", spec.opset}};
  if (!spec.domain.empty()) m.opsets.push_back({spec.domain, 1});
  ir::Node n;
  n.name = "node0";
  n.op_type = spec.op;
  n.domain = spec.domain;
  n.inputs = spec.inputs;
  n.attrs = spec.attrs;
  size_t fed = 0;
  for (const auto& in : spec.inputs) {
    if (in.empty()) continue;
    ir::ValueInfo v;
    v.name = in;
    if (fed < feeds.size()) v.dtype = feeds[fed++].dtype();
    m.graph.inputs.push_back(v);
  }
  for (size_t i = 0; i < spec.num_outputs; ++i) {
    n.outputs.push_back("out" + std::to_string(i));
    ir::ValueInfo v;
    v.name = n.outputs.back();
    m.graph.outputs.push_back(v);
  }
  m.graph.nodes.push_back(n);
  return m;
}

Expected<std::vector<Tensor>> run_node(const OneNode& spec, const std::vector<Tensor>& feeds, int threads = 1) {
  SessionOptions opt;
  opt.threads = threads;
  QTK_ASSIGN_OR_RETURN(auto session, Session::create(make_model(spec, feeds), opt));
  return session->run(feeds);
}

// Runs a node that must succeed and returns its first output.
Tensor run_ok(const OneNode& spec, const std::vector<Tensor>& feeds, int threads = 1) {
  auto r = run_node(spec, feeds, threads);
  EXPECT_TRUE(r.ok()) << spec.op << ": " << r.status().message();
  if (!r.ok() || r->empty()) return Tensor();
  return (*r)[0];
}

Tensor random_float(const Shape& shape, std::mt19937& rng, float lo = -2.f, float hi = 2.f) {
  std::uniform_real_distribution<float> d(lo, hi);
  Tensor t(DType::kFloat32, shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(rng);
  return t;
}

// Independent numpy broadcasting: output shape and, for an output flat index,
// the flat index into an input.
Shape naive_broadcast(const Shape& a, const Shape& b) {
  const size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    const int64_t da = i + a.size() >= r ? a[i + a.size() - r] : 1;
    const int64_t db = i + b.size() >= r ? b[i + b.size() - r] : 1;
    out[i] = std::max(da, db);
  }
  return out;
}

int64_t naive_source_index(const Shape& out, int64_t flat, const Shape& in) {
  std::vector<int64_t> idx(out.size());
  for (size_t d = out.size(); d-- > 0;) {
    idx[d] = flat % out[d];
    flat /= out[d];
  }
  int64_t src = 0;
  for (size_t k = 0; k < in.size(); ++k) {
    const int64_t i = idx[k + out.size() - in.size()];
    src = src * in[k] + (in[k] == 1 ? 0 : i);
  }
  return src;
}

std::string str(const Shape& s) { return shape_to_string(s); }

// ---------------------------------------------------------------------------
// Broadcasting

TEST(ElementwiseOps, AddBroadcasts3DAgainst2D) {
  std::mt19937 rng(1);
  Tensor a = random_float({2, 3, 4}, rng), b = random_float({3, 1}, rng);
  Tensor y = run_ok({"Add", {"a", "b"}}, {a, b});
  ASSERT_EQ(y.shape(), (Shape{2, 3, 4}));
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k)
        EXPECT_FLOAT_EQ(y.data<float>()[(i * 3 + j) * 4 + k], a.data<float>()[(i * 3 + j) * 4 + k] + b.data<float>()[j]);
}

// Random shapes cover same-shape, scalar, trailing and middle broadcasts on
// both sides; large cases run on 3 threads so chunks split rows.
TEST(ElementwiseOps, FloatBinaryOpsMatchNaiveLoopOnRandomShapes) {
  const uint32_t seed = 20240607;
  std::mt19937 rng(seed);
  const char* ops[] = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"};
  for (int iter = 0; iter < 120; ++iter) {
    const bool large = iter % 10 == 0;
    const int rank = std::uniform_int_distribution<int>(0, 4)(rng);
    Shape full(rank);
    for (auto& d : full) d = std::uniform_int_distribution<int64_t>(1, large ? 24 : 5)(rng);
    if (large && rank > 0) full[0] = 300;
    // Each operand: a suffix of `full` with some dims set to 1.
    auto operand = [&](void) {
      const int r = std::uniform_int_distribution<int>(0, rank)(rng);
      Shape s(full.end() - r, full.end());
      for (auto& d : s)
        if (std::uniform_int_distribution<int>(0, 3)(rng) == 0) d = 1;
      return s;
    };
    Shape sa = operand(), sb = operand();
    if (iter % 3 == 0) sb = sa;  // the same-shape fast path
    const char* op = ops[iter % 7];
    SCOPED_TRACE(std::string(op) + " seed " + std::to_string(seed) + " iter " + std::to_string(iter) + " " + str(sa) +
                 " with " + str(sb));
    Tensor a = random_float(sa, rng, 0.5f, 2.f), b = random_float(sb, rng, 0.5f, 2.f);
    Tensor y = run_ok({op, {"a", "b"}}, {a, b}, large ? 3 : 1);
    const Shape out = naive_broadcast(sa, sb);
    ASSERT_EQ(y.shape(), out);
    for (int64_t i = 0; i < y.numel(); ++i) {
      const float x = a.data<float>()[naive_source_index(out, i, sa)];
      const float z = b.data<float>()[naive_source_index(out, i, sb)];
      float want = 0;
      switch (iter % 7) {
        case 0: want = x + z; break;
        case 1: want = x - z; break;
        case 2: want = x * z; break;
        case 3: want = x / z; break;
        case 4: want = std::max(x, z); break;
        case 5: want = std::min(x, z); break;
        case 6: want = std::pow(x, z); break;
      }
      ASSERT_FLOAT_EQ(y.data<float>()[i], want) << "element " << i;
    }
  }
}

TEST(ElementwiseOps, ResNetSizedAddIsCorrectWithThreads) {
  std::mt19937 rng(7);
  Tensor a = random_float({64, 64, 8, 8}, rng), b = random_float({64, 64, 8, 8}, rng);
  Tensor bias = random_float({64, 1, 1}, rng);
  Tensor y = run_ok({"Add", {"a", "b"}}, {a, b}, 4);
  ASSERT_EQ(y.numel(), a.numel());
  for (int64_t i = 0; i < y.numel(); ++i) ASSERT_EQ(y.data<float>()[i], a.data<float>()[i] + b.data<float>()[i]);
  Tensor z = run_ok({"Add", {"a", "bias"}}, {a, bias}, 4);
  for (int64_t i = 0; i < z.numel(); ++i)
    ASSERT_EQ(z.data<float>()[i], a.data<float>()[i] + bias.data<float>()[(i / 64) % 64]);
}

// Opset < 7: broadcast=1 with axis=1 lines B up with A's dimension 1, which
// numpy's right-aligned rule would not do for [2,3,4] and [3].
TEST(ElementwiseOps, LegacyAxisBroadcastBeforeOpset7) {
  std::mt19937 rng(5);
  Tensor a = random_float({2, 3, 4}, rng), b = random_float({3}, rng);
  Tensor y = run_ok({"Mul", {"a", "b"}, 1, {attr_int("broadcast", 1), attr_int("axis", 1)}, 6}, {a, b});
  ASSERT_EQ(y.shape(), (Shape{2, 3, 4}));
  for (int64_t i = 0; i < y.numel(); ++i)
    ASSERT_FLOAT_EQ(y.data<float>()[i], a.data<float>()[i] * b.data<float>()[(i / 4) % 3]);
}

TEST(ElementwiseOps, Float16ComputesInFloat32AndRoundsBack) {
  const std::vector<float> xs = {0.5f, -1.25f, 1000.f}, ys = {0.25f, 3.f, 24.f};
  Tensor a(DType::kFloat16, {3}), b(DType::kFloat16, {3});
  for (int i = 0; i < 3; ++i) {
    a.data<uint16_t>()[i] = float_to_half(xs[i]);
    b.data<uint16_t>()[i] = float_to_half(ys[i]);
  }
  Tensor y = run_ok({"Add", {"a", "b"}}, {a, b});
  ASSERT_EQ(y.dtype(), DType::kFloat16);
  // 1024 is exact in half; 0.75 and 1.75 too.
  EXPECT_EQ(y.to_float_vector(), (std::vector<float>{0.75f, 1.75f, 1024.f}));
  Tensor c = run_ok({"Less", {"a", "b"}}, {a, b});
  EXPECT_EQ(c.to_int64_vector(), (std::vector<int64_t>{0, 1, 0}));
}

TEST(ElementwiseOps, NonBroadcastableShapesAreAnError) {
  Tensor a(DType::kFloat32, {2, 3}), b(DType::kFloat32, {4});
  for (const char* op : {"Add", "Mul", "Equal", "Max"}) {
    auto r = run_node({op, {"a", "b"}}, {a, b});
    ASSERT_FALSE(r.ok()) << op;
    EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument) << op;
    EXPECT_NE(r.status().message().find("broadcast"), std::string::npos) << r.status().message();
  }
  Tensor c(DType::kBool, {3});
  auto w = run_node({"Where", {"c", "a", "b"}}, {c, a, b});
  EXPECT_FALSE(w.ok());
}

TEST(ElementwiseOps, DtypeMismatchIsAnError) {
  Tensor a = Tensor::from_vector<float>({2}, {1.f, 2.f});
  Tensor b = Tensor::from_vector<int64_t>({2}, {1, 2});
  for (const char* op : {"Add", "Sub", "Div", "Less", "Equal", "Sum"}) {
    auto r = run_node({op, {"a", "b"}}, {a, b});
    ASSERT_FALSE(r.ok()) << op;
    EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument) << op;
    EXPECT_NE(r.status().message().find("dtype"), std::string::npos) << r.status().message();
  }
  auto r = run_node({"Sqrt", {"a"}}, {b});
  EXPECT_FALSE(r.ok());
  auto l = run_node({"And", {"a", "b"}}, {a, b});
  EXPECT_FALSE(l.ok());
}

// ---------------------------------------------------------------------------
// Integer semantics

TEST(ElementwiseOps, IntegerDivTruncatesTowardZeroAndRejectsZero) {
  Tensor a = Tensor::from_vector<int32_t>({4}, {7, -7, 7, -7});
  Tensor b = Tensor::from_vector<int32_t>({4}, {2, 2, -2, -2});
  Tensor y = run_ok({"Div", {"a", "b"}}, {a, b});
  EXPECT_EQ(y.to_int64_vector(), (std::vector<int64_t>{3, -3, -3, 3}));

  Tensor zero = Tensor::from_vector<int32_t>({4}, {1, 0, 1, 1});
  auto r = run_node({"Div", {"a", "b"}}, {a, zero});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("zero"), std::string::npos);

  // INT_MIN / -1 overflows; it must not trap.
  Tensor m = Tensor::from_vector<int64_t>({1}, {std::numeric_limits<int64_t>::min()});
  Tensor n1 = Tensor::from_vector<int64_t>({1}, {-1});
  EXPECT_TRUE(run_node({"Div", {"a", "b"}}, {m, n1}).ok());
  EXPECT_TRUE(run_node({"Mod", {"a", "b"}}, {m, n1}).ok());
}

TEST(ElementwiseOps, ModFollowsDivisorSignUnlessFmod) {
  Tensor a = Tensor::from_vector<int64_t>({4}, {-7, 7, -7, 7});
  Tensor b = Tensor::from_vector<int64_t>({4}, {3, -3, -3, 3});
  // Python: -7 % 3 == 2, 7 % -3 == -2, -7 % -3 == -1, 7 % 3 == 1.
  EXPECT_EQ(run_ok({"Mod", {"a", "b"}}, {a, b}).to_int64_vector(), (std::vector<int64_t>{2, -2, -1, 1}));
  // C fmod: the dividend's sign.
  EXPECT_EQ(run_ok({"Mod", {"a", "b"}, 1, {attr_int("fmod", 1)}}, {a, b}).to_int64_vector(),
            (std::vector<int64_t>{-1, 1, -1, 1}));
}

TEST(ElementwiseOps, IntegerAddWrapsAndUint8Works) {
  Tensor a = Tensor::from_vector<uint8_t>({2}, {250, 3}), b = Tensor::from_vector<uint8_t>({2}, {10, 4});
  EXPECT_EQ(run_ok({"Add", {"a", "b"}}, {a, b}).to_int64_vector(), (std::vector<int64_t>{4, 7}));
  Tensor c = Tensor::from_vector<int32_t>({1}, {std::numeric_limits<int32_t>::max()});
  Tensor one = Tensor::from_vector<int32_t>({1}, {1});
  EXPECT_EQ(run_ok({"Add", {"a", "b"}}, {c, one}).to_int64_vector()[0], std::numeric_limits<int32_t>::min());
}

TEST(ElementwiseOps, PowWithMixedTypes) {
  Tensor base = Tensor::from_vector<int32_t>({3}, {2, 3, -2});
  Tensor e = Tensor::from_vector<float>({3}, {3.f, 2.f, 3.f});
  Tensor y = run_ok({"Pow", {"a", "b"}}, {base, e});
  EXPECT_EQ(y.dtype(), DType::kInt32);
  EXPECT_EQ(y.to_int64_vector(), (std::vector<int64_t>{8, 9, -8}));
  Tensor fb = Tensor::from_vector<float>({2}, {2.f, 0.5f});
  Tensor ie = Tensor::from_vector<int64_t>({1}, {-2});
  Tensor z = run_ok({"Pow", {"a", "b"}}, {fb, ie});
  EXPECT_EQ(z.dtype(), DType::kFloat32);
  EXPECT_FLOAT_EQ(z.data<float>()[0], 0.25f);
  EXPECT_FLOAT_EQ(z.data<float>()[1], 4.f);
}

// ---------------------------------------------------------------------------
// Comparisons, logic, Where, variadic

TEST(ElementwiseOps, ComparisonsGiveBool) {
  Tensor a = Tensor::from_vector<float>({3}, {1.f, 2.f, 3.f});
  Tensor b = Tensor::scalar<float>(2.f);
  auto check = [&](const char* op, std::vector<int64_t> want) {
    Tensor y = run_ok({op, {"a", "b"}}, {a, b});
    EXPECT_EQ(y.dtype(), DType::kBool) << op;
    EXPECT_EQ(y.to_int64_vector(), want) << op;
  };
  check("Equal", {0, 1, 0});
  check("Less", {1, 0, 0});
  check("Greater", {0, 0, 1});
  check("LessOrEqual", {1, 1, 0});
  check("GreaterOrEqual", {0, 1, 1});
}

TEST(ElementwiseOps, WhereBroadcastsAllThreeInputs) {
  Tensor c(DType::kBool, {2, 1});
  c.data<uint8_t>()[0] = 1;
  Tensor x = Tensor::from_vector<int64_t>({3}, {1, 2, 3});
  Tensor y = Tensor::scalar<int64_t>(-1);
  Tensor out = run_ok({"Where", {"c", "x", "y"}}, {c, x, y});
  ASSERT_EQ(out.shape(), (Shape{2, 3}));
  EXPECT_EQ(out.to_int64_vector(), (std::vector<int64_t>{1, 2, 3, -1, -1, -1}));
}

TEST(ElementwiseOps, VariadicMaxSumMeanBroadcastAndPropagateNaN) {
  Tensor a = Tensor::from_vector<float>({2, 1}, {1.f, NAN});
  Tensor b = Tensor::from_vector<float>({3}, {0.f, 5.f, 2.f});
  Tensor c = Tensor::scalar<float>(1.5f);
  Tensor mx = run_ok({"Max", {"a", "b", "c"}}, {a, b, c});
  ASSERT_EQ(mx.shape(), (Shape{2, 3}));
  EXPECT_FLOAT_EQ(mx.data<float>()[0], 1.5f);
  EXPECT_FLOAT_EQ(mx.data<float>()[1], 5.f);
  for (int i = 3; i < 6; ++i) EXPECT_TRUE(std::isnan(mx.data<float>()[i]));
  Tensor sum = run_ok({"Sum", {"a", "b", "c"}}, {a, b, c});
  EXPECT_FLOAT_EQ(sum.data<float>()[2], 1.f + 2.f + 1.5f);
  Tensor mean = run_ok({"Mean", {"a", "b", "c"}}, {a, b, c});
  EXPECT_FLOAT_EQ(mean.data<float>()[1], (1.f + 5.f + 1.5f) / 3.f);
}

// ---------------------------------------------------------------------------
// Cast

TEST(ElementwiseOps, CastBetweenDtypes) {
  Tensor f = Tensor::from_vector<float>({5}, {-2.7f, -0.5f, 0.f, 2.7f, NAN});
  Tensor i = run_ok({"Cast", {"x"}, 1, {attr_int("to", static_cast<int>(DType::kInt32))}}, {f});
  EXPECT_EQ(i.dtype(), DType::kInt32);
  EXPECT_EQ(i.data<int32_t>()[0], -2);
  EXPECT_EQ(i.data<int32_t>()[3], 2);
  Tensor b = run_ok({"Cast", {"x"}, 1, {attr_int("to", static_cast<int>(DType::kBool))}}, {f});
  EXPECT_EQ(b.to_int64_vector(), (std::vector<int64_t>{1, 1, 0, 1, 1}));

  Tensor h = run_ok({"Cast", {"x"}, 1, {attr_int("to", static_cast<int>(DType::kFloat16))}}, {f});
  ASSERT_EQ(h.dtype(), DType::kFloat16);
  EXPECT_EQ(h.data<uint16_t>()[2], 0);  // +0 in IEEE half
  Tensor back = run_ok({"Cast", {"x"}, 1, {attr_int("to", static_cast<int>(DType::kFloat32))}}, {h});
  EXPECT_NEAR(back.data<float>()[0], -2.7f, 2e-3f);
  EXPECT_TRUE(std::isnan(back.data<float>()[4]));

  Tensor big = Tensor::from_vector<int64_t>({1}, {(int64_t{1} << 40) + 7});
  Tensor d = run_ok({"Cast", {"x"}, 1, {attr_int("to", static_cast<int>(DType::kFloat64))}}, {big});
  EXPECT_EQ(d.data<double>()[0], static_cast<double>((int64_t{1} << 40) + 7));

  auto s = run_node({"Cast", {"x"}, 1, {attr_int("to", static_cast<int>(DType::kString))}}, {f});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), ErrorCode::kUnsupported);
}

TEST(ElementwiseOps, CastToBFloat16TruncatesBeforeOpset19AndRoundsAfter) {
  // 1 + 3 * 2^-9: halfway past bfloat16's last bit, so truncation and
  // round-to-nearest-even give different results.
  const float v = 1.f + 3.f / 512.f;
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  Tensor f = Tensor::from_vector<float>({1}, {v});
  const auto to = attr_int("to", static_cast<int>(DType::kBFloat16));
  Tensor t13 = run_ok({"Cast", {"x"}, 1, {to}, 13}, {f});
  Tensor t19 = run_ok({"Cast", {"x"}, 1, {to}, 19}, {f});
  EXPECT_EQ(t13.data<uint16_t>()[0], bits >> 16);
  EXPECT_EQ(t19.data<uint16_t>()[0], (bits >> 16) + 1);
}

// ---------------------------------------------------------------------------
// Activations

TEST(ActivationOps, SoftmaxRowsSumToOne) {
  std::mt19937 rng(3);
  Tensor x = random_float({4, 5, 6}, rng, -30.f, 30.f);
  struct Case { int64_t opset; int64_t axis; int64_t n, inner; };
  // Opset 17: along axis (inner > 1 for axis 1). Opset 11: coerced to 2-D.
  for (Case c : {Case{17, -1, 6, 1}, Case{17, 1, 5, 6}, Case{17, 0, 4, 30}, Case{11, 1, 30, 1}}) {
    SCOPED_TRACE("opset " + std::to_string(c.opset) + " axis " + std::to_string(c.axis));
    Tensor y = run_ok({"Softmax", {"x"}, 1, {attr_int("axis", c.axis)}, c.opset}, {x});
    ASSERT_EQ(y.shape(), x.shape());
    const int64_t outer = x.numel() / (c.n * c.inner);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < c.inner; ++i) {
        double sum = 0;
        for (int64_t j = 0; j < c.n; ++j) {
          const float v = y.data<float>()[(o * c.n + j) * c.inner + i];
          ASSERT_GE(v, 0.f);
          sum += v;
        }
        ASSERT_NEAR(sum, 1.0, 1e-5);
      }
    // LogSoftmax is its log.
    Tensor l = run_ok({"LogSoftmax", {"x"}, 1, {attr_int("axis", c.axis)}, c.opset}, {x});
    for (int64_t k = 0; k < x.numel(); k += 7)
      if (y.data<float>()[k] > 1e-30f) ASSERT_NEAR(std::exp(l.data<float>()[k]), y.data<float>()[k], 1e-5);
  }
}

TEST(ActivationOps, HardmaxPicksTheFirstMaximum) {
  Tensor x = Tensor::from_vector<float>({2, 3}, {1.f, 3.f, 3.f, -1.f, -2.f, -3.f});
  Tensor y = run_ok({"Hardmax", {"x"}}, {x});
  EXPECT_EQ(y.to_int64_vector(), (std::vector<int64_t>{0, 1, 0, 1, 0, 0}));
}

TEST(ActivationOps, PointwiseFunctionsMatchTheirFormulas) {
  Tensor x = Tensor::from_vector<float>({6}, {-50.f, -2.f, -0.5f, 0.f, 0.7f, 50.f});
  auto each = [&](const OneNode& spec, auto f) {
    Tensor y = run_ok(spec, {x});
    for (int i = 0; i < 6; ++i) {
      const double v = x.data<float>()[i];
      EXPECT_NEAR(y.data<float>()[i], f(v), 1e-5 * (1 + std::fabs(f(v)))) << spec.op << " at " << v;
    }
  };
  each({"Relu", {"x"}}, [](double v) { return v > 0 ? v : 0; });
  each({"LeakyRelu", {"x"}, 1, {attr_float("alpha", 0.1f)}}, [](double v) { return v > 0 ? v : 0.1f * v; });
  each({"Sigmoid", {"x"}}, [](double v) { return 1 / (1 + std::exp(-v)); });
  each({"Tanh", {"x"}}, [](double v) { return std::tanh(v); });
  each({"Elu", {"x"}}, [](double v) { return v > 0 ? v : std::exp(v) - 1; });
  each({"Softplus", {"x"}}, [](double v) { return v > 30 ? v : std::log(1 + std::exp(v)); });
  each({"Softsign", {"x"}}, [](double v) { return v / (1 + std::fabs(v)); });
  each({"HardSigmoid", {"x"}}, [](double v) { return std::clamp(0.2 * v + 0.5, 0.0, 1.0); });
  each({"HardSwish", {"x"}}, [](double v) { return v * std::clamp(v / 6 + 0.5, 0.0, 1.0); });
  each({"Erf", {"x"}}, [](double v) { return std::erf(v); });
  each({"Gelu", {"x"}, 1, {}, 20}, [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); });
  each({"Gelu", {"x"}, 1, {attr_string("approximate", "tanh")}, 20}, [](double v) {
    return 0.5 * v * (1 + std::tanh(std::sqrt(2 / 3.14159265358979323846) * (v + 0.044715 * v * v * v)));
  });
  each({"Gelu", {"x"}, 1, {}, 17, "com.microsoft"},
       [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); });
}

TEST(ActivationOps, ClipWithOptionalInputsAndIntegers) {
  Tensor x = Tensor::from_vector<int32_t>({4}, {-5, 0, 5, 10});
  Tensor lo = Tensor::scalar<int32_t>(-1), hi = Tensor::scalar<int32_t>(6);
  EXPECT_EQ(run_ok({"Clip", {"x", "lo", "hi"}}, {x, lo, hi}).to_int64_vector(), (std::vector<int64_t>{-1, 0, 5, 6}));
  // min absent (empty name): only max applies.
  EXPECT_EQ(run_ok({"Clip", {"x", "", "hi"}}, {x, hi}).to_int64_vector(), (std::vector<int64_t>{-5, 0, 5, 6}));
  // Opset 6: attributes.
  Tensor f = Tensor::from_vector<float>({3}, {-3.f, 0.f, 3.f});
  Tensor y = run_ok({"Clip", {"x"}, 1, {attr_float("min", -1.f), attr_float("max", 2.f)}, 6}, {f});
  EXPECT_EQ(y.to_float_vector(), (std::vector<float>{-1.f, 0.f, 2.f}));
}

TEST(ActivationOps, PReluBroadcastsSlopeOntoX) {
  Tensor x = Tensor::from_vector<float>({2, 2}, {-1.f, 2.f, -3.f, 4.f});
  Tensor s = Tensor::from_vector<float>({2}, {0.5f, 0.25f});
  EXPECT_EQ(run_ok({"PRelu", {"x", "s"}}, {x, s}).to_float_vector(), (std::vector<float>{-0.5f, 2.f, -1.5f, 4.f}));
  // A slope that would grow the output is rejected.
  Tensor bad = Tensor::from_vector<float>({3, 1, 1}, {1.f, 1.f, 1.f});
  EXPECT_FALSE(run_node({"PRelu", {"x", "s"}}, {x, bad}).ok());
}

// ---------------------------------------------------------------------------
// Generators

TEST(GeneratorOps, ConstantOfShapeRangeEyeLike) {
  Tensor shape = Tensor::from_vector<int64_t>({2}, {2, 3});
  Tensor c = run_ok({"ConstantOfShape", {"s"}, 1, {attr_tensor("value", Tensor::from_vector<int32_t>({1}, {7}))}},
                    {shape});
  EXPECT_EQ(c.dtype(), DType::kInt32);
  EXPECT_EQ(c.to_int64_vector(), std::vector<int64_t>(6, 7));
  Tensor neg = Tensor::from_vector<int64_t>({1}, {-1});
  EXPECT_FALSE(run_node({"ConstantOfShape", {"s"}}, {neg}).ok());

  Tensor r = run_ok({"Range", {"a", "b", "c"}},
                    {Tensor::scalar<int64_t>(10), Tensor::scalar<int64_t>(1), Tensor::scalar<int64_t>(-4)});
  EXPECT_EQ(r.to_int64_vector(), (std::vector<int64_t>{10, 6, 2}));
  EXPECT_FALSE(run_node({"Range", {"a", "b", "c"}},
                        {Tensor::scalar<float>(0.f), Tensor::scalar<float>(1.f), Tensor::scalar<float>(0.f)})
                   .ok());

  Tensor e = run_ok({"EyeLike", {"x"}, 1, {attr_int("k", 1), attr_int("dtype", static_cast<int>(DType::kFloat32))}},
                    {Tensor(DType::kInt64, {3, 3})});
  EXPECT_EQ(e.to_float_vector(), (std::vector<float>{0, 1, 0, 0, 0, 1, 0, 0, 0}));
}

TEST(GeneratorOps, DropoutIsIdentityWithTrueMask) {
  Tensor x = Tensor::from_vector<float>({3}, {1.f, -2.f, 3.f});
  auto r = run_node({"Dropout", {"x"}, 2, {}}, {x});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ((*r)[0].to_float_vector(), x.to_float_vector());
  EXPECT_EQ((*r)[1].dtype(), DType::kBool);
  EXPECT_EQ((*r)[1].to_int64_vector(), (std::vector<int64_t>{1, 1, 1}));
  Tensor train(DType::kBool, {});
  train.data<uint8_t>()[0] = 1;
  auto t = run_node({"Dropout", {"x", "ratio", "train"}}, {x, Tensor::scalar<float>(0.5f), train});
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), ErrorCode::kUnsupported);
}

}  // namespace
}  // namespace qtk
