// com.microsoft MatMulNBits: the kernel against a plain dequantize-then-
// multiply, and the weight-only rewrite (quant/graph/matmul_nbits_writer.h)
// against the QDQ graph it replaces.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "data/dataset.h"
#include "ir/graph.h"
#include "qtk/model.h"
#include "qtk/quantize.h"
#include "qtk/session.h"
#include "quant/graph/qoperator_writer.h"

namespace qtk {
namespace {

ir::ValueInfo value(const std::string& name, DType dt) {
  ir::ValueInfo v;
  v.name = name;
  v.dtype = dt;
  return v;
}

struct NBitsCase {
  int64_t m, k, n, block;
  bool zero_points, bias, constant;
};

// W[k, n] = (code - zp) * scale, codes packed [N, blocks, block/2], low nibble first.
TEST(MatMulNBits, MatchesDequantizeThenMultiply) {
  std::mt19937 rng(7);
  for (const NBitsCase& c : {NBitsCase{3, 40, 5, 16, true, true, true}, NBitsCase{1, 64, 7, 32, false, false, true},
                             NBitsCase{4, 33, 6, 16, true, false, false}, NBitsCase{2, 16, 3, 16, false, true, false}}) {
    SCOPED_TRACE("m=" + std::to_string(c.m) + " k=" + std::to_string(c.k) + " n=" + std::to_string(c.n) +
                 " block=" + std::to_string(c.block) + " zp=" + std::to_string(c.zero_points) +
                 " bias=" + std::to_string(c.bias) + " constant=" + std::to_string(c.constant));
    const int64_t blocks = (c.k + c.block - 1) / c.block, zbytes = (blocks + 1) / 2;
    std::uniform_int_distribution<int> code(0, 15);
    std::uniform_real_distribution<float> real(-1.f, 1.f);
    Tensor a(DType::kFloat32, {c.m, c.k}), b(DType::kUInt8, {c.n, blocks, c.block / 2}),
        s(DType::kFloat32, {c.n * blocks}), z(DType::kUInt8, {c.n * zbytes}), bias(DType::kFloat32, {c.n});
    for (int64_t i = 0; i < a.numel(); ++i) a.data<float>()[i] = real(rng);
    for (int64_t i = 0; i < b.numel(); ++i) b.data<uint8_t>()[i] = static_cast<uint8_t>(code(rng) | code(rng) << 4);
    for (int64_t i = 0; i < s.numel(); ++i) s.data<float>()[i] = 0.01f + 0.1f * std::fabs(real(rng));
    for (int64_t i = 0; i < z.numel(); ++i) z.data<uint8_t>()[i] = static_cast<uint8_t>(code(rng) | code(rng) << 4);
    for (int64_t i = 0; i < c.n; ++i) bias.data<float>()[i] = real(rng);

    std::vector<double> want(static_cast<size_t>(c.m * c.n));
    for (int64_t r = 0; r < c.m; ++r)
      for (int64_t col = 0; col < c.n; ++col) {
        double acc = c.bias ? bias.data<float>()[col] : 0.0;
        for (int64_t kk = 0; kk < c.k; ++kk) {
          const int64_t kb = kk / c.block, j = kk % c.block;
          const int q = (b.data<uint8_t>()[(col * blocks + kb) * (c.block / 2) + j / 2] >> (4 * (j % 2))) & 15;
          const int zp = c.zero_points ? (z.data<uint8_t>()[col * zbytes + kb / 2] >> (4 * (kb % 2))) & 15 : 8;
          acc += a.data<float>()[r * c.k + kk] * static_cast<double>((q - zp) * s.data<float>()[col * blocks + kb]);
        }
        want[r * c.n + col] = acc;
      }

    ir::Model m;
    m.opsets = {{"", 17}, {"com.microsoft", 1}};
    ir::Node node;
    node.name = "nbits";
    node.op_type = "MatMulNBits";
    node.domain = "com.microsoft";
    node.inputs = {"a", "b", "s", c.zero_points ? "z" : "", "", c.bias ? "bias" : ""};
    while (node.inputs.back().empty()) node.inputs.pop_back();
    node.outputs = {"y"};
    node.attrs = {ir::attr_int("K", c.k), ir::attr_int("N", c.n), ir::attr_int("bits", 4),
                  ir::attr_int("block_size", c.block)};
    m.graph.nodes.push_back(node);
    m.graph.inputs.push_back(value("a", DType::kFloat32));
    m.graph.outputs.push_back(value("y", DType::kFloat32));
    std::vector<Tensor> feeds = {a};
    const std::vector<std::pair<std::string, Tensor>> rest = {{"b", b}, {"s", s}, {"z", z}, {"bias", bias}};
    for (const auto& [name, t] : rest) {
      if ((name == "z" && !c.zero_points) || (name == "bias" && !c.bias)) continue;
      if (c.constant) {
        m.graph.set_initializer(name, t);
      } else {
        m.graph.inputs.push_back(value(name, t.dtype()));
        feeds.push_back(t);
      }
    }
    auto session = Session::create(m);
    ASSERT_TRUE(session.ok()) << session.status().message();
    auto out = (*session)->run(feeds);
    ASSERT_TRUE(out.ok()) << out.status().message();
    ASSERT_EQ((*out)[0].shape(), (Shape{c.m, c.n}));
    for (int64_t i = 0; i < c.m * c.n; ++i) EXPECT_NEAR((*out)[0].data<float>()[i], want[i], 1e-4) << i;

    // Wrong K in A is an error that says what K must be.
    if (!c.constant) continue;
    auto bad = (*session)->run(std::vector<Tensor>{Tensor(DType::kFloat32, {1, c.k + 1})});
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.status().message().find("K ="), std::string::npos) << bad.status().message();
  }
}

// Weight-only int4 per group on mlp (Gemm with transB, K = 784: a partial
// last block of 16 with group 32): the rewritten model computes what the QDQ
// graph computes, symmetric (no zero-point input) and asymmetric (packed).
TEST(MatMulNBits, WeightOnlyRewriteMatchesQdqGraph) {
  auto model = load_model(std::string(QTK_MODELS_DIR) + "/mlp.onnx");
  ASSERT_TRUE(model.ok());
  auto calib = data::load_dataset("fashion-mnist:train", 64);
  ASSERT_TRUE(calib.ok());
  for (bool symmetric : {true, false}) {
    SCOPED_TRACE(symmetric ? "symmetric" : "asymmetric");
    QuantConfig c;
    c.weight_format = quant::QFormat::kInt4;
    c.method = WeightMethod::kRtn;  // the rewrite under test, not rounding methods
    c.weight_symmetric = symmetric;
    c.granularity = Granularity::kPerGroup;
    c.group_size = 32;
    c.activations = ActivationMode::kWeightOnly;
    auto q = quantize(*model, c, CalibrationData{{calib->images}});
    ASSERT_TRUE(q.ok()) << q.status().message();
    ir::Model nbits = q->model;
    quant::QOperatorStats stats;
    ASSERT_TRUE(quant::qdq_to_qoperator(nbits, {.contrib_ops = true, .stats = &stats}).ok());
    EXPECT_EQ(stats.matmul_nbits, 3);
    bool has_zero_points = false;
    for (const auto& n : nbits.graph.nodes) {
      EXPECT_NE(n.op_type, "DequantizeLinear");
      if (n.op_type == "MatMulNBits") has_zero_points |= n.has_input(3);
    }
    EXPECT_EQ(has_zero_points, !symmetric);
    auto s1 = Session::create(q->model);
    auto s2 = Session::create(nbits);
    ASSERT_TRUE(s1.ok() && s2.ok());
    auto o1 = (*s1)->run(std::vector<Tensor>{calib->images});
    auto o2 = (*s2)->run(std::vector<Tensor>{calib->images});
    ASSERT_TRUE(o1.ok() && o2.ok());
    double worst = 0;
    for (int64_t i = 0; i < (*o1)[0].numel(); ++i)
      worst = std::max(worst, static_cast<double>(std::fabs((*o1)[0].data<float>()[i] - (*o2)[0].data<float>()[i])));
    EXPECT_LT(worst, 1e-3);
  }
}

}  // namespace
}  // namespace qtk
