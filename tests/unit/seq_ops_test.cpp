// Normalisation, reduction, recurrent and control-flow reference kernels,
// each run as a one-node model through qtk::Session and checked against
// properties or hand-written loops.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "ir/graph.h"
#include "qtk/session.h"
#include "one_node.h"

namespace qtk {
namespace {

ir::Attribute attr_i(const std::string& n, int64_t v) { return ir::attr_int(n, v); }
ir::Attribute attr_f(const std::string& n, float v) { return ir::attr_float(n, v); }
ir::Attribute attr_s(const std::string& n, const std::string& v) { return ir::attr_string(n, v); }
ir::Attribute attr_ints(const std::string& n, std::vector<int64_t> v) { return ir::attr_ints(n, std::move(v)); }
ir::Attribute attr_g(const std::string& n, ir::Graph g) { return ir::attr_graph(n, std::move(g)); }

ir::ValueInfo value(const std::string& name, DType dt) {
  ir::ValueInfo v;
  v.name = name;
  v.dtype = dt;
  return v;  // no declared shape: the kernel sees whatever is fed
}

// Runs one node whose inputs are fed in order; an empty input name marks an
// absent optional input. Outputs are named y0, y1, ...
Expected<std::vector<Tensor>> run_node(const std::string& op, const std::vector<std::string>& input_names,
                                       const std::vector<Tensor>& inputs, std::vector<ir::Attribute> attrs,
                                       size_t num_outputs, int64_t opset = 17) {
  return testing::run_one_node(op, input_names, inputs, std::move(attrs), num_outputs, {.opset = opset});
}

Tensor random_tensor(Shape shape, std::mt19937& rng, float lo = -1.f, float hi = 1.f) {
  Tensor t(DType::kFloat32, std::move(shape));
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

// Rows [begin, end) of dim 0 as a new tensor.
Tensor slice0(const Tensor& t, int64_t begin, int64_t end) {
  Shape s = t.shape();
  const int64_t row = t.numel() / s[0];
  s[0] = end - begin;
  Tensor out(t.dtype(), s);
  std::memcpy(out.raw(), static_cast<const std::byte*>(t.raw()) + begin * row * dtype_size(t.dtype()),
              out.nbytes());
  return out;
}

TEST(SeqOps, LayerNormalizationGivesZeroMeanUnitVariance) {
  std::mt19937 rng(7);
  const int64_t rows = 6, width = 32;
  Tensor x = random_tensor({2, 3, width}, rng, -5.f, 9.f);
  Tensor scale = Tensor::from_vector<float>({width}, std::vector<float>(width, 1.f));
  auto out = run_node("LayerNormalization", {"x", "scale"}, {x, scale}, {attr_f("epsilon", 1e-9f)}, 3);
  ASSERT_TRUE(out.ok()) << out.status().message();
  const Tensor& y = (*out)[0];
  ASSERT_EQ(y.shape(), x.shape());
  ASSERT_EQ((*out)[1].shape(), (Shape{2, 3, 1}));
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0, xmean = 0;
    for (int64_t i = 0; i < width; ++i) {
      mean += y.data<float>()[r * width + i];
      xmean += x.data<float>()[r * width + i];
    }
    mean /= width;
    xmean /= width;
    for (int64_t i = 0; i < width; ++i) var += std::pow(y.data<float>()[r * width + i] - mean, 2);
    var /= width;
    EXPECT_NEAR(mean, 0.0, 1e-5) << "row " << r;
    EXPECT_NEAR(var, 1.0, 1e-4) << "row " << r;
    EXPECT_NEAR((*out)[1].data<float>()[r], xmean, 1e-4) << "Mean output, row " << r;
  }
}

TEST(SeqOps, ReduceMeanOverTwoAxesMatchesHandLoop) {
  std::mt19937 rng(11);
  const int64_t A = 3, B = 4, C = 5, D = 6;
  Tensor x = random_tensor({A, B, C, D}, rng);
  auto check = [&](const Tensor& y) {
    ASSERT_EQ(y.shape(), (Shape{A, D}));
    for (int64_t a = 0; a < A; ++a)
      for (int64_t d = 0; d < D; ++d) {
        double s = 0;
        for (int64_t b = 0; b < B; ++b)
          for (int64_t c = 0; c < C; ++c) s += x.data<float>()[((a * B + b) * C + c) * D + d];
        EXPECT_NEAR(y.data<float>()[a * D + d], s / (B * C), 1e-6) << a << "," << d;
      }
  };
  // Opset 17: axes is an attribute.
  auto out = run_node("ReduceMean", {"x"}, {x}, {attr_ints("axes", {1, 2}), attr_i("keepdims", 0)}, 1);
  ASSERT_TRUE(out.ok()) << out.status().message();
  check((*out)[0]);
  // Opset 18: axes is an input (negative axes allowed).
  Tensor axes = Tensor::from_vector<int64_t>({2}, {1, -2});
  auto out18 = run_node("ReduceMean", {"x", "axes"}, {x, axes}, {attr_i("keepdims", 0)}, 1, 18);
  ASSERT_TRUE(out18.ok()) << out18.status().message();
  check((*out18)[0]);
}

TEST(SeqOps, ReductionsOverAnEmptySetGiveTheIdentity) {
  Tensor x(DType::kFloat32, {2, 0, 3});
  Tensor axes = Tensor::from_vector<int64_t>({1}, {1});
  auto sum = run_node("ReduceSum", {"x", "axes"}, {x, axes}, {}, 1, 18);
  ASSERT_TRUE(sum.ok()) << sum.status().message();
  ASSERT_EQ((*sum)[0].shape(), (Shape{2, 1, 3}));
  EXPECT_EQ((*sum)[0].data<float>()[0], 0.f);
  auto mx = run_node("ReduceMax", {"x", "axes"}, {x, axes}, {attr_i("keepdims", 0)}, 1, 18);
  ASSERT_TRUE(mx.ok()) << mx.status().message();
  ASSERT_EQ((*mx)[0].shape(), (Shape{2, 3}));
  EXPECT_EQ((*mx)[0].data<float>()[5], -std::numeric_limits<float>::infinity());
  auto prod = run_node("ReduceProd", {"x", "axes"}, {x, axes}, {}, 1, 18);
  ASSERT_TRUE(prod.ok());
  EXPECT_EQ((*prod)[0].data<float>()[0], 1.f);
}

TEST(SeqOps, ArgMaxSelectLastIndex) {
  Tensor x = Tensor::from_vector<float>({2, 3}, {1, 5, 5, 7, 2, 7});
  auto first = run_node("ArgMax", {"x"}, {x}, {attr_i("axis", 1)}, 1);
  auto last = run_node("ArgMax", {"x"}, {x}, {attr_i("axis", 1), attr_i("select_last_index", 1)}, 1);
  ASSERT_TRUE(first.ok() && last.ok());
  EXPECT_EQ((*first)[0].to_int64_vector(), (std::vector<int64_t>{1, 0}));
  EXPECT_EQ((*last)[0].to_int64_vector(), (std::vector<int64_t>{2, 2}));
}

TEST(SeqOps, BidirectionalLstmEqualsForwardPlusReverse) {
  std::mt19937 rng(3);
  const int64_t S = 5, N = 3, I = 4, H = 6;
  Tensor x = random_tensor({S, N, I}, rng);
  Tensor w = random_tensor({2, 4 * H, I}, rng);
  Tensor r = random_tensor({2, 4 * H, H}, rng);
  Tensor b = random_tensor({2, 8 * H}, rng);
  Tensor lens = Tensor::from_vector<int32_t>({N}, {5, 3, 1});  // uneven sequences
  Tensor h0 = random_tensor({2, N, H}, rng);
  Tensor c0 = random_tensor({2, N, H}, rng);
  Tensor p = random_tensor({2, 3 * H}, rng);
  const std::vector<std::string> names = {"x", "w", "r", "b", "lens", "h0", "c0", "p"};
  auto bi = run_node("LSTM", names, {x, w, r, b, lens, h0, c0, p},
                     {attr_s("direction", "bidirectional"), attr_i("hidden_size", H)}, 3);
  ASSERT_TRUE(bi.ok()) << bi.status().message();
  const Tensor& y = (*bi)[0];
  ASSERT_EQ(y.shape(), (Shape{S, 2, N, H}));

  for (int64_t dir = 0; dir < 2; ++dir) {
    auto one = run_node("LSTM", names,
                        {x, slice0(w, dir, dir + 1), slice0(r, dir, dir + 1), slice0(b, dir, dir + 1), lens,
                         slice0(h0, dir, dir + 1), slice0(c0, dir, dir + 1), slice0(p, dir, dir + 1)},
                        {attr_s("direction", dir == 0 ? "forward" : "reverse"), attr_i("hidden_size", H)}, 3);
    ASSERT_TRUE(one.ok()) << one.status().message();
    const Tensor& y1 = (*one)[0];
    ASSERT_EQ(y1.shape(), (Shape{S, 1, N, H}));
    for (int64_t t = 0; t < S; ++t)
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < H; ++k)
          EXPECT_FLOAT_EQ(y.data<float>()[((t * 2 + dir) * N + n) * H + k], y1.data<float>()[(t * N + n) * H + k]);
    for (int o = 1; o < 3; ++o)
      for (int64_t i = 0; i < N * H; ++i)
        EXPECT_FLOAT_EQ((*bi)[o].data<float>()[dir * N * H + i], (*one)[o].data<float>()[i]);
  }
  // Past a sequence's end Y is zero, and Y_h is the state at its last step.
  EXPECT_EQ(y.data<float>()[((4 * 2 + 0) * N + 2) * H], 0.f);
  EXPECT_FLOAT_EQ((*bi)[1].data<float>()[2 * H], y.data<float>()[((0 * 2 + 0) * N + 2) * H]);
}

// Swaps dims 0 and 1 of a tensor of rank >= 2.
Tensor swap01(const Tensor& t) {
  Shape s = t.shape();
  std::swap(s[0], s[1]);
  const int64_t a = t.dim(0), b = t.dim(1), inner = t.numel() / std::max<int64_t>(1, a * b);
  Tensor out(t.dtype(), s);
  for (int64_t i = 0; i < a; ++i)
    for (int64_t j = 0; j < b; ++j)
      std::memcpy(out.data<float>() + (j * a + i) * inner, t.data<float>() + (i * b + j) * inner,
                  inner * sizeof(float));
  return out;
}

// layout=1 (batch first, opset 14) must be the layout=0 computation with X,
// the initial states and every output transposed; checked for LSTM and GRU,
// bidirectional, with initial states and uneven sequence lengths.
TEST(SeqOps, BatchFirstLayoutMatchesSeqFirst) {
  std::mt19937 rng(21);
  const int64_t S = 4, N = 3, I = 2, H = 5;
  Tensor lens = Tensor::from_vector<int32_t>({N}, {4, 1, 3});
  for (const std::string op : {"LSTM", "GRU", "RNN"}) {
    const int64_t G = op == "LSTM" ? 4 : op == "GRU" ? 3 : 1;
    Tensor x = random_tensor({S, N, I}, rng), w = random_tensor({2, G * H, I}, rng),
           r = random_tensor({2, G * H, H}, rng), b = random_tensor({2, 2 * G * H}, rng),
           h0 = random_tensor({2, N, H}, rng), c0 = random_tensor({2, N, H}, rng);
    std::vector<std::string> names = {"x", "w", "r", "b", "lens", "h0"};
    std::vector<Tensor> seq_first = {x, w, r, b, lens, h0};
    std::vector<Tensor> batch_first = {swap01(x), w, r, b, lens, swap01(h0)};
    if (op == "LSTM") {
      names.push_back("c0");
      seq_first.push_back(c0);
      batch_first.push_back(swap01(c0));
    }
    const size_t n_out = op == "LSTM" ? 3 : 2;
    auto attrs = [&](int layout) {
      return std::vector<ir::Attribute>{attr_s("direction", "bidirectional"), attr_i("hidden_size", H),
                                        attr_i("layout", layout)};
    };
    auto a = run_node(op, names, seq_first, attrs(0), n_out, 14);
    auto bf = run_node(op, names, batch_first, attrs(1), n_out, 14);
    ASSERT_TRUE(a.ok()) << a.status().message();
    ASSERT_TRUE(bf.ok()) << bf.status().message();
    // Y: [S, 2, N, H] vs [N, S, 2, H].
    const Tensor& y0 = (*a)[0];
    const Tensor& y1 = (*bf)[0];
    ASSERT_EQ(y1.shape(), (Shape{N, S, 2, H})) << op;
    for (int64_t t = 0; t < S; ++t)
      for (int64_t d = 0; d < 2; ++d)
        for (int64_t n = 0; n < N; ++n)
          for (int64_t k = 0; k < H; ++k)
            ASSERT_EQ(y0.data<float>()[((t * 2 + d) * N + n) * H + k], y1.data<float>()[((n * S + t) * 2 + d) * H + k])
                << op << " t=" << t << " d=" << d << " n=" << n;
    for (size_t o = 1; o < n_out; ++o) {
      Tensor want = swap01((*a)[o]);
      ASSERT_EQ((*bf)[o].shape(), want.shape()) << op;
      for (int64_t i = 0; i < want.numel(); ++i) ASSERT_EQ((*bf)[o].data<float>()[i], want.data<float>()[i]) << op;
    }
  }
}

TEST(SeqOps, GruSingleStepMatchesEquations) {
  // One step, batch 1, hidden 1, input 1: check z/r/h against a hand formula.
  const float x = 0.5f, wz = 0.3f, wr = -0.2f, wh = 0.7f, rz = 0.1f, rr = 0.4f, rh = -0.6f, h0 = 0.25f;
  auto sig = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
  for (int lbr = 0; lbr < 2; ++lbr) {
    auto out = run_node("GRU", {"x", "w", "r", "", "", "h0"},
                        {Tensor::from_vector<float>({1, 1, 1}, {x}), Tensor::from_vector<float>({1, 3, 1}, {wz, wr, wh}),
                         Tensor::from_vector<float>({1, 3, 1}, {rz, rr, rh}), Tensor(), Tensor(),
                         Tensor::from_vector<float>({1, 1, 1}, {h0})},
                        {attr_i("hidden_size", 1), attr_i("linear_before_reset", lbr)}, 2);
    ASSERT_TRUE(out.ok()) << out.status().message();
    const double z = sig(x * wz + h0 * rz), r = sig(x * wr + h0 * rr);
    const double h = std::tanh(x * wh + r * h0 * rh);  // same either way without biases
    EXPECT_NEAR((*out)[1].data<float>()[0], (1 - z) * h + z * h0, 1e-6);
  }
}

TEST(SeqOps, LstmRejectsWrongRank) {
  std::mt19937 rng(5);
  auto out = run_node("LSTM", {"x", "w", "r"},
                      {random_tensor({3, 4}, rng), random_tensor({1, 8, 4}, rng), random_tensor({1, 8, 2}, rng)},
                      {attr_i("hidden_size", 2)}, 1);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find("rank 3"), std::string::npos) << out.status().message();
  // W of the wrong size is also an error, not a crash.
  auto bad_w = run_node("LSTM", {"x", "w", "r"},
                        {random_tensor({3, 1, 4}, rng), random_tensor({1, 7, 4}, rng), random_tensor({1, 8, 2}, rng)},
                        {attr_i("hidden_size", 2)}, 1);
  EXPECT_FALSE(bad_w.ok());
  // A sequence length past the sequence is rejected.
  auto bad_len = run_node("GRU", {"x", "w", "r", "", "lens"},
                          {random_tensor({3, 1, 4}, rng), random_tensor({1, 6, 4}, rng), random_tensor({1, 6, 2}, rng),
                           Tensor(), Tensor::from_vector<int32_t>({1}, {4})},
                          {attr_i("hidden_size", 2)}, 1);
  ASSERT_FALSE(bad_len.ok());
  EXPECT_NE(bad_len.status().message().find("sequence_lens"), std::string::npos) << bad_len.status().message();
}

// If whose branches reduce the outer-scope value `x` two different ways.
TEST(SeqOps, IfPicksBranchAndReadsOuterScope) {
  auto branch = [](const std::string& op, const std::string& out) {
    ir::Graph g;
    g.name = op + "_branch";
    ir::Node n;
    n.op_type = op;
    n.inputs = {"x"};
    n.outputs = {out};
    n.attrs = {attr_i("keepdims", 0)};
    g.nodes.push_back(n);
    g.outputs.push_back(value(out, DType::kFloat32));
    return g;
  };
  ir::Model m;
  m.opsets = {{"", 17}};
  m.graph.inputs = {value("cond", DType::kBool), value("x", DType::kFloat32)};
  ir::Node n;
  n.name = "if";
  n.op_type = "If";
  n.inputs = {"cond"};
  n.outputs = {"y"};
  n.attrs = {attr_g("then_branch", branch("ReduceMax", "t")), attr_g("else_branch", branch("ReduceMin", "e"))};
  m.graph.nodes.push_back(n);
  m.graph.outputs.push_back(value("y", DType::kFloat32));
  auto s = Session::create(m);
  ASSERT_TRUE(s.ok()) << s.status().message();
  Tensor x = Tensor::from_vector<float>({4}, {3, -2, 8, 1});
  for (int c = 0; c < 2; ++c) {
    Tensor cond(DType::kBool, {});
    cond.data<uint8_t>()[0] = static_cast<uint8_t>(c);
    auto out = (*s)->run(std::vector<Tensor>{cond, x});
    ASSERT_TRUE(out.ok()) << out.status().message();
    EXPECT_EQ((*out)[0].data<float>()[0], c ? 8.f : -2.f) << "cond " << c;
  }
}

// Loop with M = 4 and no cond: the carried value becomes its ReduceMax, the
// scan output is ReduceMin of an outer-scope value, and the body passes its
// condition straight through.
TEST(SeqOps, LoopRunsTripCountAndStacksScanOutputs) {
  ir::Graph body;
  body.name = "body";
  body.inputs = {value("i", DType::kInt64), value("c_in", DType::kBool), value("v_in", DType::kFloat32)};
  ir::Node mx;
  mx.op_type = "ReduceMax";
  mx.inputs = {"v_in"};
  mx.outputs = {"v_out"};
  mx.attrs = {attr_i("keepdims", 1), attr_ints("axes", {0})};
  ir::Node mn;
  mn.op_type = "ReduceMin";
  mn.inputs = {"outer"};
  mn.outputs = {"scan"};
  mn.attrs = {attr_i("keepdims", 0)};
  body.nodes = {mx, mn};
  body.outputs = {value("c_in", DType::kBool), value("v_out", DType::kFloat32), value("scan", DType::kFloat32)};

  ir::Model m;
  m.opsets = {{"", 17}};
  m.graph.inputs = {value("M", DType::kInt64), value("v0", DType::kFloat32), value("outer", DType::kFloat32)};
  ir::Node loop;
  loop.name = "loop";
  loop.op_type = "Loop";
  loop.inputs = {"M", "", "v0"};
  loop.outputs = {"v_final", "scans"};
  loop.attrs = {attr_g("body", body)};
  m.graph.nodes.push_back(loop);
  m.graph.outputs = {value("v_final", DType::kFloat32), value("scans", DType::kFloat32)};
  auto s = Session::create(m);
  ASSERT_TRUE(s.ok()) << s.status().message();
  auto out = (*s)->run(std::vector<Tensor>{Tensor::scalar<int64_t>(4), Tensor::from_vector<float>({3}, {1, 9, 4}),
                                           Tensor::from_vector<float>({2}, {6, -3})});
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_EQ((*out)[0].shape(), (Shape{1}));
  EXPECT_EQ((*out)[0].data<float>()[0], 9.f);
  ASSERT_EQ((*out)[1].shape(), (Shape{4}));
  for (int i = 0; i < 4; ++i) EXPECT_EQ((*out)[1].data<float>()[i], -3.f);
}

TEST(SeqOps, BatchNormalizationInference) {
  Tensor x = Tensor::from_vector<float>({1, 2, 2}, {1, 3, 10, 20});
  auto vec = [](std::vector<float> v) { return Tensor::from_vector<float>({2}, v); };
  auto out = run_node("BatchNormalization", {"x", "s", "b", "m", "v"},
                      {x, vec({2, 1}), vec({0.5f, -1}), vec({2, 15}), vec({4, 25})}, {attr_f("epsilon", 0.f)}, 1, 15);
  ASSERT_TRUE(out.ok()) << out.status().message();
  const std::vector<float> want = {(1 - 2) / 2.f * 2 + 0.5f, (3 - 2) / 2.f * 2 + 0.5f, (10 - 15) / 5.f - 1,
                                   (20 - 15) / 5.f - 1};
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ((*out)[0].data<float>()[i], want[i]);
  auto training = run_node("BatchNormalization", {"x", "s", "b", "m", "v"},
                           {x, vec({2, 1}), vec({0.5f, -1}), vec({2, 15}), vec({4, 25})},
                           {attr_i("training_mode", 1)}, 1, 15);
  ASSERT_FALSE(training.ok());
  EXPECT_EQ(training.status().code(), ErrorCode::kUnsupported);

  // Opset 7 with spatial=0: one set of statistics per (channel, position).
  auto per = [](std::vector<float> v) { return Tensor::from_vector<float>({2, 2}, v); };
  auto spatial0 = run_node("BatchNormalization", {"x", "s", "b", "m", "v"},
                           {x, per({1, 2, 3, 4}), per({0, 0, 0, 1}), per({1, 1, 10, 10}), per({1, 4, 9, 16})},
                           {attr_f("epsilon", 0.f), attr_i("spatial", 0)}, 1, 7);
  ASSERT_TRUE(spatial0.ok()) << spatial0.status().message();
  const std::vector<float> want0 = {0.f, (3 - 1) / 2.f * 2, 0.f, (20 - 10) / 4.f * 4 + 1};
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ((*spatial0)[0].data<float>()[i], want0[i]) << i;
}

}  // namespace
}  // namespace qtk
