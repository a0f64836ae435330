// Bad quantization parameters in a model are refused when the session is
// created, with the node and the problem named (quant/graph/param_check.h).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/session.h"
#include "one_node.h"

namespace qtk {
namespace {

Tensor floats(const Shape& shape, std::vector<float> v) {
  Tensor t(DType::kFloat32, shape);
  for (size_t i = 0; i < v.size(); ++i) t.data<float>()[i] = v[i];
  return t;
}

template <class T>
Tensor codes(DType dt, const Shape& shape, std::vector<T> v) {
  Tensor t(dt, shape);
  for (size_t i = 0; i < v.size(); ++i) t.data<T>()[i] = v[i];
  return t;
}

ir::Node node(const std::string& name, const std::string& op, std::vector<std::string> in, std::string out) {
  ir::Node n;
  n.name = name;
  n.op_type = op;
  n.inputs = std::move(in);
  n.outputs = {std::move(out)};
  return n;
}

// x [2, 3] -> Q -> DQ -> MatMul with DQ(W [3, 4], per-row scales) -> y.
ir::Model qdq_matmul() {
  ir::Model m;
  m.opsets = {{"", 17}};
  ir::Graph& g = m.graph;
  g.inputs.push_back(testing::value_info("x", DType::kFloat32));
  g.outputs.push_back(testing::value_info("y", DType::kFloat32));
  g.set_initializer("xs", floats({}, {0.05f}));
  g.set_initializer("xz", codes<uint8_t>(DType::kUInt8, {}, {128}));
  g.set_initializer("W", codes<int8_t>(DType::kInt8, {3, 4}, {1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12}));
  g.set_initializer("ws", floats({3}, {0.1f, 0.2f, 0.3f}));
  g.set_initializer("wz", codes<int8_t>(DType::kInt8, {3}, {0, 0, 0}));
  g.nodes.push_back(node("quant_x", "QuantizeLinear", {"x", "xs", "xz"}, "xq"));
  g.nodes.push_back(node("dequant_x", "DequantizeLinear", {"xq", "xs", "xz"}, "xd"));
  ir::Node dw = node("dequant_w", "DequantizeLinear", {"W", "ws", "wz"}, "wd");
  dw.set_attr(ir::attr_int("axis", 0));
  g.nodes.push_back(dw);
  g.nodes.push_back(node("matmul", "MatMul", {"xd", "wd"}, "y"));
  return m;
}

// x uint8 [1, 2, 3, 3] -> QLinearConv with w int8 [4, 2, 1, 1] -> y uint8.
ir::Model qlinear_conv() {
  ir::Model m;
  m.opsets = {{"", 17}};
  ir::Graph& g = m.graph;
  g.inputs.push_back(testing::value_info("x", DType::kUInt8));
  g.outputs.push_back(testing::value_info("y", DType::kUInt8));
  g.set_initializer("xs", floats({}, {0.05f}));
  g.set_initializer("xz", codes<uint8_t>(DType::kUInt8, {}, {128}));
  g.set_initializer("w", codes<int8_t>(DType::kInt8, {4, 2, 1, 1}, {1, 2, 3, 4, 5, 6, 7, 8}));
  g.set_initializer("ws", floats({4}, {0.1f, 0.1f, 0.2f, 0.2f}));
  g.set_initializer("wz", codes<int8_t>(DType::kInt8, {4}, {0, 0, 0, 0}));
  g.set_initializer("ys", floats({}, {0.1f}));
  g.set_initializer("yz", codes<uint8_t>(DType::kUInt8, {}, {0}));
  g.nodes.push_back(node("qconv", "QLinearConv", {"x", "xs", "xz", "w", "ws", "wz", "ys", "yz"}, "y"));
  return m;
}

void expect_refused(const ir::Model& m, const std::string& node_name, const std::string& problem) {
  for (bool integer : {false, true}) {
    SessionOptions o;
    o.integer = integer;
    auto s = Session::create(m, o);
    ASSERT_FALSE(s.ok()) << "integer " << integer << ": a session was created";
    const std::string msg = s.status().message();
    EXPECT_NE(msg.find("'" + node_name + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find(problem), std::string::npos) << msg;
  }
}

TEST(QuantParamCheck, GoodModelsLoadAndRun) {
  for (const ir::Model& m : {qdq_matmul(), qlinear_conv()}) {
    auto s = Session::create(m, {});
    ASSERT_TRUE(s.ok()) << s.status().message();
  }
  auto s = Session::create(qdq_matmul(), {});
  ASSERT_TRUE(s.ok());
  auto y = (*s)->run(std::vector<Tensor>{floats({2, 3}, {0.1f, 0.2f, 0.3f, -0.1f, -0.2f, -0.3f})});
  ASSERT_TRUE(y.ok()) << y.status().message();
  EXPECT_EQ((*y)[0].shape(), (Shape{2, 4}));
}

TEST(QuantParamCheck, ZeroNegativeAndNanScalesAreRefused) {
  const float nan = std::nanf("");
  for (float bad : {0.f, -0.2f, nan, INFINITY}) {
    ir::Model m = qdq_matmul();
    m.graph.set_initializer("ws", floats({3}, {0.1f, bad, 0.3f}));
    expect_refused(m, "dequant_w", "x_scale[1]");
  }
  ir::Model m = qdq_matmul();
  m.graph.set_initializer("xs", floats({}, {0.f}));
  expect_refused(m, "quant_x", "scales must be positive and finite");
  ir::Model c = qlinear_conv();
  c.graph.set_initializer("ys", floats({}, {-1.f}));
  expect_refused(c, "qconv", "y_scale[0]");
}

TEST(QuantParamCheck, ScalesOfTheWrongLengthAreRefused) {
  ir::Model m = qdq_matmul();
  m.graph.set_initializer("ws", floats({2}, {0.1f, 0.2f}));
  m.graph.set_initializer("wz", codes<int8_t>(DType::kInt8, {2}, {0, 0}));
  expect_refused(m, "dequant_w", "x_scale has 2 values, expected 1 or 3");
  ir::Model c = qlinear_conv();
  c.graph.set_initializer("ws", floats({3}, {0.1f, 0.1f, 0.2f}));
  c.graph.set_initializer("wz", codes<int8_t>(DType::kInt8, {3}, {0, 0, 0}));
  expect_refused(c, "qconv", "w_scale has 3 values, expected 1 or 4");
}

TEST(QuantParamCheck, BadZeroPointsAreRefused) {
  ir::Model m = qdq_matmul();
  m.graph.set_initializer("wz", codes<int8_t>(DType::kInt8, {2}, {0, 0}));
  expect_refused(m, "dequant_w", "x_zero_point has 2 values but x_scale has 3");
  ir::Model t = qdq_matmul();
  t.graph.set_initializer("wz", codes<uint8_t>(DType::kUInt8, {3}, {0, 0, 0}));
  expect_refused(t, "dequant_w", "x_zero_point is uint8 but x is int8");
  ir::Model f = qlinear_conv();
  f.graph.set_initializer("xz", floats({}, {128.f}));
  expect_refused(f, "qconv", "x_zero_point must be a 4-, 8-, 16- or 32-bit integer, got float32");
}

}  // namespace
}  // namespace qtk
