// com.microsoft QLinearConcat: equal, byte for byte, to the QDQ graph it
// replaces (DequantizeLinear each input → Concat → QuantizeLinear), for
// both 8-bit types, any axis, inputs quantized like the output (a copy) or
// not (a table); bad inputs are errors that say what is wrong.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "ir/graph.h"
#include "qtk/model.h"
#include "qtk/quantize.h"
#include "qtk/session.h"
#include "quant/graph/qoperator_writer.h"
#include "test_models.h"

namespace qtk {
namespace {

struct Params {
  float scale;
  int32_t zp;
};

ir::ValueInfo info(const std::string& name, DType t) {
  ir::ValueInfo v;
  v.name = name;
  v.dtype = t;
  return v;
}

ir::Node node(const std::string& op, std::vector<std::string> in, std::string out, const std::string& domain = "") {
  ir::Node n;
  n.op_type = op;
  n.domain = domain;
  n.name = op + "_" + out;
  n.inputs = std::move(in);
  n.outputs = {std::move(out)};
  return n;
}

Tensor zero_point_tensor(DType t, int32_t v) {
  Tensor z(t, {});
  if (t == DType::kUInt8) z.data<uint8_t>()[0] = static_cast<uint8_t>(v);
  else z.data<int8_t>()[0] = static_cast<int8_t>(v);
  return z;
}

// QLinearConcat (fused) or DQ → Concat → Q (qdq) of inputs x0..xn-1 with `xp`, output `yp`.
ir::Model concat_model(bool fused, DType t, const std::vector<Params>& xp, Params yp, int64_t axis) {
  ir::Model m;
  m.opsets = {{"", 17}, {"com.microsoft", 1}};
  ir::Graph& g = m.graph;
  g.initializers["ys"] = Tensor::scalar<float>(yp.scale);
  g.initializers["yz"] = zero_point_tensor(t, yp.zp);
  std::vector<std::string> fused_in = {"ys", "yz"}, deq;
  for (size_t k = 0; k < xp.size(); ++k) {
    const std::string x = "x" + std::to_string(k), s = x + "_s", z = x + "_z";
    g.inputs.push_back(info(x, t));
    g.initializers[s] = Tensor::scalar<float>(xp[k].scale);
    g.initializers[z] = zero_point_tensor(t, xp[k].zp);
    fused_in.insert(fused_in.end(), {x, s, z});
    g.nodes.push_back(node("DequantizeLinear", {x, s, z}, x + "_f"));
    deq.push_back(x + "_f");
  }
  g.outputs.push_back(info("y", t));
  if (fused) {
    g.nodes = {node("QLinearConcat", fused_in, "y", "com.microsoft")};
    g.nodes[0].set_attr(ir::attr_int("axis", axis));
  } else {
    g.nodes.push_back(node("Concat", deq, "cat"));
    g.nodes.back().set_attr(ir::attr_int("axis", axis));
    g.nodes.push_back(node("QuantizeLinear", {"cat", "ys", "yz"}, "y"));
  }
  return m;
}

Expected<std::vector<Tensor>> run(const ir::Model& m, const std::vector<Tensor>& feeds) {
  SessionOptions o;
  o.optimize = false;  // keep the QDQ graph as written
  QTK_ASSIGN_OR_RETURN(auto s, Session::create(m, o));
  return s->run(feeds);
}

Tensor random_codes(DType t, const Shape& shape, std::mt19937& rng) {
  Tensor x(t, shape);
  auto* p = static_cast<uint8_t*>(x.raw());
  for (int64_t i = 0; i < x.numel(); ++i) p[i] = static_cast<uint8_t>(rng());
  return x;
}

TEST(QLinearConcat, EqualsDequantizeConcatQuantize) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> scale(0.002f, 0.2f);
  int cases = 0;
  for (DType t : {DType::kUInt8, DType::kInt8})
    for (int64_t axis : {0, 1, 2, -1})
      for (bool same : {false, true}) {
        const int32_t lo = t == DType::kUInt8 ? 0 : -128;
        auto zp = [&] { return lo + static_cast<int32_t>(rng() % 256); };
        const Params yp{scale(rng), zp()};
        const int count = 2 + static_cast<int>(rng() % 2);
        std::vector<Params> xp;
        std::vector<Tensor> feeds;
        for (int k = 0; k < count; ++k) {
          // The last input shares the output's parameters (a copy) when `same`.
          xp.push_back(same && k == count - 1 ? yp : Params{scale(rng), zp()});
          Shape shape = {2, 3, 5};
          shape[static_cast<size_t>(axis < 0 ? axis + 3 : axis)] = 1 + static_cast<int64_t>(rng() % 4);
          feeds.push_back(random_codes(t, shape, rng));
        }
        SCOPED_TRACE(std::string(dtype_name(t)) + " axis " + std::to_string(axis) + (same ? " with a copied input" : ""));
        auto want = run(concat_model(false, t, xp, yp, axis), feeds);
        auto got = run(concat_model(true, t, xp, yp, axis), feeds);
        ASSERT_TRUE(want.ok()) << want.status().message();
        ASSERT_TRUE(got.ok()) << got.status().message();
        ASSERT_EQ((*got)[0].shape(), (*want)[0].shape());
        ASSERT_EQ((*got)[0].dtype(), t);
        EXPECT_EQ(std::memcmp((*got)[0].raw(), (*want)[0].raw(), (*want)[0].nbytes()), 0);
        ++cases;
      }
  EXPECT_EQ(cases, 16);
}

TEST(QLinearConcat, BadInputsAreErrorsThatSayWhat) {
  std::mt19937 rng(3);
  const DType t = DType::kUInt8;
  const std::vector<Params> xp = {{0.1f, 3}, {0.05f, 128}};
  const Tensor a = random_codes(t, {2, 3}, rng), b = random_codes(t, {2, 4}, rng), c = random_codes(t, {3, 4}, rng);
  auto shape_mismatch = run(concat_model(true, t, xp, {0.1f, 0}, 1), {a, c});
  ASSERT_FALSE(shape_mismatch.ok());
  EXPECT_NE(shape_mismatch.status().message().find("does not match X_0"), std::string::npos)
      << shape_mismatch.status().message();
  auto bad_axis = run(concat_model(true, t, xp, {0.1f, 0}, 2), {a, b});
  ASSERT_FALSE(bad_axis.ok());
  EXPECT_NE(bad_axis.status().message().find("out of range"), std::string::npos) << bad_axis.status().message();
  auto zero_scale = run(concat_model(true, t, {{0.f, 3}, {0.05f, 128}}, {0.1f, 0}, 1), {a, b});
  ASSERT_FALSE(zero_scale.ok());
  EXPECT_NE(zero_scale.status().message().find("X_0_scale must be positive"), std::string::npos)
      << zero_scale.status().message();
  auto wrong_type = run(concat_model(true, t, xp, {0.1f, 0}, 1), {a, random_codes(DType::kInt8, {2, 4}, rng)});
  ASSERT_FALSE(wrong_type.ok());
  // A dangling triple: Y_scale, Y_zero_point and four more inputs.
  ir::Model m = concat_model(true, t, xp, {0.1f, 0}, 1);
  m.graph.nodes[0].inputs.pop_back();
  auto short_triple = run(m, {a, b});
  ASSERT_FALSE(short_triple.ok());
  EXPECT_NE(short_triple.status().message().find("triples"), std::string::npos) << short_triple.status().message();
}

// The QOperator rewrite turns vit_fm's class-token Concat (DQ inputs, Q
// output) into QLinearConcat, and the integer session still gives the
// float QDQ session's outputs up to requantization rounding.
TEST(QLinearConcat, QOperatorRewriteUsesItOnVit) {
  auto m = load_model(std::string(QTK_MODELS_DIR) + "/vit_fm.onnx");
  ASSERT_TRUE(m.ok()) << m.status().message();
  CalibrationData calib;
  calib.inputs.push_back(testing::uniform_tensor({16, 1, 28, 28}, 5, 0.f, 1.f));
  auto q = quantize(*m, QuantConfig{}, calib);
  ASSERT_TRUE(q.ok()) << q.status().message();
  ir::Model qop = q->model;
  quant::QOperatorStats st;
  quant::QOperatorOptions o;
  o.stats = &st;
  ASSERT_TRUE(quant::qdq_to_qoperator(qop, o).ok());
  EXPECT_EQ(st.qlinear_concat, 1);
  int fused = 0;
  for (const auto& n : qop.graph.nodes) fused += n.op_type == "QLinearConcat";
  EXPECT_EQ(fused, 1);
  SessionOptions integer;
  integer.integer = true;
  auto a = Session::create(q->model, integer);
  auto b = Session::create(q->model, SessionOptions{});
  ASSERT_TRUE(a.ok() && b.ok());
  const Tensor x = testing::uniform_tensor({4, 1, 28, 28}, 11, 0.f, 1.f);
  auto ya = (*a)->run(std::vector<Tensor>{x});
  auto yb = (*b)->run(std::vector<Tensor>{x});
  ASSERT_TRUE(ya.ok() && yb.ok());
  const Tensor& la = (*ya)[0];
  const Tensor& lb = (*yb)[0];
  ASSERT_EQ(la.shape(), lb.shape());
  for (int64_t i = 0; i < la.numel(); ++i) EXPECT_NEAR(la.data<float>()[i], lb.data<float>()[i], 0.5f) << i;
}

}  // namespace
}  // namespace qtk
