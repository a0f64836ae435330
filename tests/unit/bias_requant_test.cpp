// DequantizeLinear → Add(bias) → QuantizeLinear after a QLinearMatMul as one
// op (runtime/bias_requant_fusion.h): the row loops agree, the session gives
// the bits of the three ops, and only that pattern is taken.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/session.h"
#include "runtime/bias_requant_fusion.h"
#include "runtime/kernels/ref/bias_requant_op.h"
#include "runtime/kernels/x86/bias_requant_x86.h"
#include "core/cpu_features.h"

namespace qtk::rt {
namespace {

TEST(BiasRequant, Avx512RowsMatchScalar) {
  if (!cpu_has_avx512bw()) GTEST_SKIP() << "no AVX-512 BW/VL here";
  std::mt19937 rng(99);
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), 1e30f, -1e30f, 0.5f, -0.5f};
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t rows = std::uniform_int_distribution<int64_t>(1, 9)(rng);
    const int64_t n = std::uniform_int_distribution<int64_t>(1, 70)(rng);
    BiasRequantParams p;
    p.x_signed = trial % 2;
    p.y_signed = (trial / 2) % 2;
    p.x_scale = std::uniform_real_distribution<float>(1e-4f, 0.5f)(rng);
    p.y_scale = std::uniform_real_distribution<float>(1e-4f, 0.5f)(rng);
    p.x_zero_point = p.x_signed ? std::uniform_int_distribution<int>(-128, 127)(rng) : std::uniform_int_distribution<int>(0, 255)(rng);
    p.y_zero_point = p.y_signed ? std::uniform_int_distribution<int>(-128, 127)(rng) : std::uniform_int_distribution<int>(0, 255)(rng);
    p.qmin = p.y_signed ? -128 : 0;
    p.qmax = p.y_signed ? 127 : 255;
    std::vector<float> bias(static_cast<size_t>(n));
    for (auto& b : bias) b = std::uniform_real_distribution<float>(-3.f, 3.f)(rng);
    if (trial % 7 == 0) bias[static_cast<size_t>(trial % n)] = specials[(trial / 7) % 7];
    std::vector<uint8_t> x(static_cast<size_t>(rows * n)), want(x.size()), got(x.size());
    for (auto& v : x) v = static_cast<uint8_t>(rng());
    bias_requant_scalar(x.data(), rows, n, bias.data(), p, want.data());
    bias_requant_avx512(x.data(), rows, n, bias.data(), p, got.data());
    ASSERT_EQ(want, got) << "rows " << rows << " n " << n << " (seed 99, trial " << trial << ")";
  }
}

// x [2, 5, K] uint8 → QLinearMatMul(W [K, N] int8) → DQ → Add(bias) → Q → DQ → output.
ir::Model linear_model(int64_t k, int64_t n, Shape bias_shape, bool extra_reader = false) {
  std::mt19937 rng(5);
  ir::Model m;
  m.opsets = {{"", 17}};
  auto& g = m.graph;
  auto scalar = [&](const std::string& name, Tensor t) { g.set_initializer(name, std::move(t)); return name; };
  Tensor w(DType::kInt8, {k, n});
  for (int64_t i = 0; i < w.numel(); ++i) w.data<int8_t>()[i] = static_cast<int8_t>(rng());
  g.set_initializer("w", w);
  Tensor bias(DType::kFloat32, bias_shape);
  for (int64_t i = 0; i < bias.numel(); ++i) bias.data<float>()[i] = std::uniform_real_distribution<float>(-2.f, 2.f)(rng);
  g.set_initializer("bias", bias);
  auto node = [&](const std::string& op, std::vector<std::string> in, const std::string& out) {
    ir::Node nd;
    nd.name = op + "_" + out;
    nd.op_type = op;
    nd.inputs = std::move(in);
    nd.outputs = {out};
    g.nodes.push_back(nd);
  };
  node("QLinearMatMul",
       {"x", scalar("xs", Tensor::scalar<float>(0.02f)), scalar("xz", Tensor::scalar<uint8_t>(128)), "w",
        scalar("ws", Tensor::scalar<float>(0.01f)), scalar("wz", Tensor::scalar<int8_t>(0)),
        scalar("ms", Tensor::scalar<float>(0.05f)), scalar("mz", Tensor::scalar<uint8_t>(120))},
       "mm");
  node("DequantizeLinear", {"mm", "ms", "mz"}, "d");
  node("Add", {"bias", "d"}, "a");
  node("QuantizeLinear", {"a", scalar("ys", Tensor::scalar<float>(0.04f)), scalar("yz", Tensor::scalar<uint8_t>(110))},
       "y");
  node("DequantizeLinear", {"y", "ys", "yz"}, "out");
  ir::ValueInfo in;
  in.name = "x";
  in.dtype = DType::kUInt8;
  g.inputs.push_back(in);
  ir::ValueInfo out;
  out.name = "out";
  g.outputs.push_back(out);
  if (extra_reader) {
    ir::ValueInfo d;
    d.name = "d";
    g.outputs.push_back(d);
  }
  return m;
}

TEST(BiasRequant, SessionGivesTheBitsOfTheThreeOps) {
  const int64_t k = 24, n = 37;
  ir::Model m = linear_model(k, n, {n});
  ir::Model fused = m;
  auto count = fuse_bias_requantize(fused);
  ASSERT_TRUE(count.ok()) << count.status().message();
  EXPECT_EQ(*count, 1);
  std::mt19937 rng(8);
  Tensor x(DType::kUInt8, {2, 1000, k});  // rows in several chunks on two threads
  for (int64_t i = 0; i < x.numel(); ++i) x.data<uint8_t>()[i] = static_cast<uint8_t>(rng());
  std::vector<Tensor> outs;
  std::vector<std::string> ops;
  for (int variant = 0; variant < 3; ++variant) {
    SessionOptions o;
    o.integer = true;
    o.reference_kernels = variant == 0;
    o.code_tables = variant == 2;
    o.profile = true;
    o.threads = 2;
    auto s = Session::create(m, o);
    ASSERT_TRUE(s.ok()) << s.status().message();
    auto y = (*s)->run(std::vector<Tensor>{x});
    ASSERT_TRUE(y.ok()) << y.status().message();
    outs.push_back((*y)[0]);
    if (variant == 2)
      for (const auto& t : (*s)->profile()) ops.push_back(t.op_type);
  }
  for (int v = 1; v < 3; ++v)
    for (int64_t i = 0; i < outs[0].numel(); ++i)
      ASSERT_EQ(outs[0].data<float>()[i], outs[v].data<float>()[i]) << "variant " << v << " element " << i;
  EXPECT_EQ(ops, (std::vector<std::string>{"QLinearMatMul", "BiasRequantize", "DequantizeLinear"}));
}

TEST(BiasRequant, OnlyTheLinearBiasPatternIsTaken) {
  auto count = [](ir::Model m) {
    auto c = fuse_bias_requantize(m);
    EXPECT_TRUE(c.ok()) << c.status().message();
    return c.ok() ? *c : -1;
  };
  EXPECT_EQ(count(linear_model(8, 16, {16})), 1);
  EXPECT_EQ(count(linear_model(8, 16, {1, 16})), 0);       // rank 2: could broadcast the rows too
  EXPECT_EQ(count(linear_model(8, 16, {16, 16})), 0);      // the same, with a first dimension of N
  EXPECT_EQ(count(linear_model(8, 16, {8})), 0);           // not the matmul's N
  EXPECT_EQ(count(linear_model(8, 16, {16}, true)), 0);    // the dequantized value is also an output
  for (const char* op : {"DequantizeLinear", "QuantizeLinear"}) {  // blocked scales: the kernels check them
    ir::Model m = linear_model(8, 16, {16});
    for (auto& n : m.graph.nodes)
      if (n.op_type == op && n.outputs[0] != "out") n.attrs.push_back(ir::attr_int("block_size", 4));
    EXPECT_EQ(count(m), 0) << op;
  }
}

}  // namespace
}  // namespace qtk::rt
