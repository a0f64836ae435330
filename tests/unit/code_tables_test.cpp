// 8-bit elementwise regions as one table lookup (runtime/code_tables.h): the
// lookup loops agree, the pass takes exactly the regions that are functions
// of one code, and a session with tables gives the bits of one without.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "ir/graph.h"
#include "qtk/model.h"
#include "qtk/quantize.h"
#include "qtk/session.h"
#include "runtime/code_tables.h"
#include "runtime/kernels/ref/code_table_op.h"
#include "runtime/kernels/x86/code_table_x86.h"
#include "runtime/op_registry.h"

namespace qtk::rt {
namespace {

TEST(CodeTables, VbmiLookupMatchesScalar) {
  if (!code_table_vbmi_supported()) GTEST_SKIP() << "no AVX-512 VBMI on this CPU";
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t n = trial < 130 ? trial : std::uniform_int_distribution<int64_t>(130, 5000)(rng);
    const uint8_t flip = trial % 2 ? 0x80 : 0;
    std::vector<uint8_t> table(256), x(static_cast<size_t>(n) + 1), want(x.size(), 0xAB), got(x.size(), 0xAB);
    for (auto& v : table) v = static_cast<uint8_t>(byte(rng));
    for (auto& v : x) v = static_cast<uint8_t>(byte(rng));
    code_table_scalar(table.data(), x.data(), want.data(), n, flip);
    code_table_vbmi(table.data(), x.data(), got.data(), n, flip);
    ASSERT_EQ(want, got) << "n " << n << " flip " << int(flip) << " (seed 7, trial " << trial << ")";
  }
}

// ---- models built in code ----

struct Builder {
  ir::Model m;
  int next = 0;
  Builder() { m.opsets = {{"", 17}, {"com.microsoft", 1}}; }

  std::string scalar(float v) {
    const std::string name = "c" + std::to_string(next++);
    m.graph.set_initializer(name, Tensor::scalar<float>(v));
    return name;
  }
  std::string zero_point(DType t, int v) {
    const std::string name = "z" + std::to_string(next++);
    m.graph.set_initializer(name, t == DType::kInt8 ? Tensor::scalar<int8_t>(static_cast<int8_t>(v))
                                                    : Tensor::scalar<uint8_t>(static_cast<uint8_t>(v)));
    return name;
  }
  std::string node(const std::string& op, std::vector<std::string> in, const std::string& domain = "") {
    ir::Node n;
    n.name = op + "_" + std::to_string(next);
    n.op_type = op;
    n.domain = domain;
    n.inputs = std::move(in);
    n.outputs = {"v" + std::to_string(next++)};
    m.graph.nodes.push_back(n);
    return n.outputs[0];
  }
  std::string dq(const std::string& x, float s, DType t, int z) { return node("DequantizeLinear", {x, scalar(s), zero_point(t, z)}); }
  std::string q(const std::string& x, float s, DType t, int z) { return node("QuantizeLinear", {x, scalar(s), zero_point(t, z)}); }
  void input(const std::string& name, DType t) {
    ir::ValueInfo v;
    v.name = name;
    v.dtype = t;
    m.graph.inputs.push_back(v);
  }
  void output(const std::string& name) {
    ir::ValueInfo v;
    v.name = name;
    m.graph.outputs.push_back(v);
  }
};

// GELU as qtk's QDQ export writes it: x · (erf(x/√2) + 1) · 0.5 with the
// product as a QLinearMul of x and the erf branch, then one op past it.
ir::Model gelu_model(DType t) {
  Builder b;
  const int z = t == DType::kInt8 ? -3 : 125;
  b.input("x", t);
  const std::string e = b.q(b.node("Erf", {b.node("Div", {b.dq("x", 0.031f, t, z), b.scalar(1.4142135f)})}), 0.0079f, t,
                            t == DType::kInt8 ? 0 : 128);
  const std::string a = b.q(b.node("Add", {b.dq(e, 0.0079f, t, t == DType::kInt8 ? 0 : 128), b.scalar(1.f)}), 0.0079f,
                            t, t == DType::kInt8 ? -128 : 0);
  const std::string p = b.node("QLinearMul",
                               {"x", b.scalar(0.031f), b.zero_point(t, z), a, b.scalar(0.0079f),
                                b.zero_point(t, t == DType::kInt8 ? -128 : 0), b.scalar(0.03f), b.zero_point(t, z)},
                               "com.microsoft");
  const std::string y = b.q(b.node("Mul", {b.dq(p, 0.03f, t, z), b.scalar(0.5f)}), 0.016f, t, z);
  b.output(b.node("Sigmoid", {b.dq(y, 0.016f, t, z)}));  // float from here on: not part of the region
  return b.m;
}

Tensor random_codes(DType t, Shape shape, uint32_t seed) {
  std::mt19937 rng(seed);
  Tensor x(t, shape);
  for (int64_t i = 0; i < x.numel(); ++i) static_cast<uint8_t*>(x.raw())[i] = static_cast<uint8_t>(rng());
  return x;
}

// Outputs of an integer session: 0 reference kernels, 1 optimized without tables, 2 with.
std::vector<Tensor> run_variants(const ir::Model& m, const Tensor& x, std::vector<std::string>* ops2 = nullptr) {
  std::vector<Tensor> out;
  for (int variant = 0; variant < 3; ++variant) {
    SessionOptions o;
    o.integer = true;
    o.threads = 2;
    o.reference_kernels = variant == 0;
    o.code_tables = variant == 2;
    o.profile = true;
    auto s = Session::create(m, o);
    EXPECT_TRUE(s.ok()) << s.status().message();
    if (!s.ok()) return {};
    auto y = (*s)->run(std::vector<Tensor>{x});
    EXPECT_TRUE(y.ok()) << y.status().message();
    if (!y.ok()) return {};
    out.push_back((*y)[0]);
    if (variant == 2 && ops2)
      for (const auto& t : (*s)->profile()) ops2->push_back(t.op_type);
  }
  return out;
}

void expect_same_bytes(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.dtype(), b.dtype());
  ASSERT_EQ(a.shape(), b.shape());
  for (int64_t i = 0; i < static_cast<int64_t>(a.nbytes()); ++i)
    ASSERT_EQ(static_cast<const uint8_t*>(a.raw())[i], static_cast<const uint8_t*>(b.raw())[i]) << "byte " << i;
}

// The outputs of an integer session without and with tables, on `feeds`.
void expect_tables_change_nothing(const ir::Model& m, const std::vector<Tensor>& feeds, size_t inputs) {
  std::vector<Tensor> outs[2];
  for (int tables = 0; tables < 2; ++tables) {
    SessionOptions so;
    so.integer = true;
    so.code_tables = tables == 1;
    auto s = Session::create(m, so);
    ASSERT_TRUE(s.ok()) << s.status().message();
    ASSERT_EQ((*s)->inputs().size(), inputs);
    auto y = (*s)->run(feeds);
    ASSERT_TRUE(y.ok()) << y.status().message();
    outs[tables] = *y;
  }
  ASSERT_EQ(outs[0].size(), outs[1].size());
  for (size_t i = 0; i < outs[0].size(); ++i) expect_same_bytes(outs[0][i], outs[1][i]);
}

TEST(CodeTables, GeluRegionIsOneTableWithTheSameBits) {
  for (DType t : {DType::kUInt8, DType::kInt8}) {
    SCOPED_TRACE(dtype_name(t));
    ir::Model m = gelu_model(t);
    ir::Model fused = m;
    auto stats = fuse_code_tables(fused, OpRegistry::global());
    ASSERT_TRUE(stats.ok()) << stats.status().message();
    EXPECT_EQ(stats->regions, 1);
    EXPECT_EQ(stats->nodes_replaced, 11);  // DQ Div Erf Q, DQ Add Q, QLinearMul, DQ Mul Q
    for (Shape shape : {Shape{3, 7, 11}, Shape{70001}}) {  // the second in chunks on two threads
      std::vector<std::string> ops;
      auto out = run_variants(m, random_codes(t, shape, 11), &ops);
      ASSERT_EQ(out.size(), 3u);
      expect_same_bytes(out[0], out[1]);
      expect_same_bytes(out[0], out[2]);
      EXPECT_EQ(ops, (std::vector<std::string>{"CodeTable", "DequantizeLinear", "Sigmoid"}));
    }
  }
}

// SiLU as other exporters write it: one DequantizeLinear read by both the
// Sigmoid and the float Mul.
TEST(CodeTables, SharedDequantizeIsPartOfTheRegion) {
  const DType t = DType::kUInt8;
  Builder b;
  b.input("x", t);
  const std::string d = b.dq("x", 0.05f, t, 100);
  const std::string s = b.dq(b.q(b.node("Sigmoid", {d}), 1.f / 256, t, 0), 1.f / 256, t, 0);
  b.output(b.q(b.node("Mul", {d, s}), 0.04f, t, 20));
  ir::Model fused = b.m;
  auto stats = fuse_code_tables(fused, OpRegistry::global());
  ASSERT_TRUE(stats.ok()) << stats.status().message();
  EXPECT_EQ(stats->regions, 1);
  EXPECT_EQ(stats->nodes_replaced, 6);
  std::vector<std::string> ops;
  auto out = run_variants(b.m, random_codes(t, {2, 300}, 5), &ops);
  ASSERT_EQ(out.size(), 3u);
  expect_same_bytes(out[0], out[1]);
  expect_same_bytes(out[0], out[2]);
  EXPECT_EQ(ops, (std::vector<std::string>{"CodeTable"}));
}

TEST(CodeTables, OnlyFunctionsOfOneCodeBecomeTables) {
  const DType t = DType::kUInt8;
  auto regions = [](ir::Model m) {
    auto stats = fuse_code_tables(m, OpRegistry::global());
    EXPECT_TRUE(stats.ok()) << stats.status().message();
    return stats.ok() ? stats->regions : -1;
  };
  {  // a per-channel constant: the value depends on the position too
    Builder b;
    b.input("x", t);
    b.m.graph.set_initializer("bias", Tensor::from_vector<float>({3}, {1.f, 2.f, 3.f}));
    b.output(b.q(b.node("Add", {b.dq("x", 0.1f, t, 128), "bias"}), 0.1f, t, 128));
    EXPECT_EQ(regions(b.m), 0);
  }
  {  // a rank-1 scalar constant could broadcast a rank-0 input up
    Builder b;
    b.input("x", t);
    b.m.graph.set_initializer("one", Tensor::from_vector<float>({1}, {1.f}));
    b.output(b.q(b.node("Add", {b.dq("x", 0.1f, t, 128), "one"}), 0.1f, t, 128));
    EXPECT_EQ(regions(b.m), 0);
  }
  {  // an inner value read outside the region: only the part after it
    Builder b;
    b.input("x", t);
    const std::string d = b.dq("x", 0.1f, t, 128);
    const std::string e = b.node("Tanh", {d});
    b.output(e);
    b.output(b.q(e, 0.01f, t, 128));
    EXPECT_EQ(regions(b.m), 0);
  }
  {  // a second non-constant input (another tensor) is no function of x alone
    Builder b;
    b.input("x", t);
    b.input("w", DType::kFloat32);
    b.output(b.q(b.node("Add", {b.dq("x", 0.1f, t, 128), "w"}), 0.1f, t, 128));
    EXPECT_EQ(regions(b.m), 0);
  }
  {  // blocked scales: a layout the 256-code evaluation need not meet
    Builder b;
    b.input("x", t);
    b.output(b.q(b.dq("x", 0.1f, t, 128), 0.05f, t, 100));
    // One block of 512 along axis 0 covers the 256 codes the evaluation feeds.
    b.m.graph.set_initializer("block_scale", Tensor::from_vector<float>({1}, {0.1f}));
    b.m.graph.nodes[0].inputs[1] = "block_scale";
    b.m.graph.nodes[0].attrs = {ir::attr_int("axis", 0), ir::attr_int("block_size", 512)};
    EXPECT_EQ(regions(b.m), 0);
  }
  {  // Softmax mixes elements
    Builder b;
    b.input("x", t);
    b.output(b.q(b.node("Softmax", {b.dq("x", 0.1f, t, 128)}), 1.f / 256, t, 0));
    EXPECT_EQ(regions(b.m), 0);
  }
  {  // a lone requantization (DQ → Q with other parameters) is a region of two
    Builder b;
    b.input("x", t);
    b.output(b.q(b.dq("x", 0.1f, t, 128), 0.05f, t, 100));
    EXPECT_EQ(regions(b.m), 1);
  }
}

// An If body reads outer values without listing them as inputs: a value
// it reads is no region's inside, and a constant it reads stays.
TEST(CodeTables, SubgraphReadsAreSeen) {
  const DType t = DType::kUInt8;
  for (bool reads_inner_value : {true, false}) {
    SCOPED_TRACE(reads_inner_value ? "body reads the region's DequantizeLinear" : "body reads its scale");
    Builder b;
    b.input("x", t);
    b.input("cond", DType::kBool);
    const std::string scale = b.scalar(0.05f);
    const std::string d = b.node("DequantizeLinear", {"x", scale, b.zero_point(t, 100)});
    b.output(b.q(b.node("Tanh", {d}), 1.f / 128, t, 128));
    ir::Graph body;
    ir::Node id;
    id.name = "read_outer";
    id.op_type = "Identity";
    id.inputs = {reads_inner_value ? d : scale};
    id.outputs = {"o"};
    body.nodes.push_back(id);
    ir::ValueInfo o;
    o.name = "o";
    body.outputs.push_back(o);
    ir::Node cond;
    cond.name = "if";
    cond.op_type = "If";
    cond.inputs = {"cond"};
    cond.outputs = {"z"};
    cond.attrs = {ir::attr_graph("then_branch", body), ir::attr_graph("else_branch", body)};
    b.m.graph.nodes.push_back(cond);
    b.output("z");
    ir::Model fused = b.m;
    auto stats = fuse_code_tables(fused, OpRegistry::global());
    ASSERT_TRUE(stats.ok()) << stats.status().message();
    EXPECT_EQ(stats->regions, reads_inner_value ? 0 : 1);
    EXPECT_NE(fused.graph.find_initializer(scale), nullptr);
    Tensor c(DType::kBool, {});
    *static_cast<bool*>(c.raw()) = true;
    expect_tables_change_nothing(b.m, {random_codes(t, {5, 9}, 3), c}, 2);
  }
}

// The table's initializer takes a name nothing else in the graph uses (an
// input called like it stays the user's input), and many regions in one
// graph each become a table in one pass.
TEST(CodeTables, TableNamesAreFreshAndRegionsMany) {
  const DType t = DType::kUInt8;
  Builder b;
  b.input("x", t);
  std::vector<std::string> ys;
  for (int k = 0; k < 200; ++k) {
    // Softmax between blocks: each block is a region of its own.
    const std::string in = k == 0 ? "x" : b.q(b.node("Softmax", {b.dq(ys.back(), 0.02f, t, 128)}), 1.f / 256, t, 0);
    ys.push_back(b.q(b.node("Tanh", {b.dq(in, 0.03f, t, 120)}), 1.f / 128, t, 128));
  }
  b.output(ys.back());
  b.input(ys.back() + "_code_table", DType::kFloat32);  // the name a table of the last block would take
  b.output(b.node("Relu", {ys.back() + "_code_table"}));
  ir::Model fused = b.m;
  auto stats = fuse_code_tables(fused, OpRegistry::global());
  ASSERT_TRUE(stats.ok()) << stats.status().message();
  EXPECT_EQ(stats->regions, 200);
  EXPECT_EQ(fused.graph.find_initializer(ys.back() + "_code_table"), nullptr);
  expect_tables_change_nothing(b.m, {random_codes(t, {4, 33}, 9), Tensor::from_vector<float>({2}, {-1.f, 2.f})}, 2);
}

TEST(CodeTables, BadCodeTableNodesAreRejected) {
  auto session_of = [](Tensor table, int input_signed) {
    Builder b;
    b.m.opsets.push_back({kCodeTableDomain, 1});
    b.m.graph.set_initializer("table", std::move(table));
    b.input("x", DType::kUInt8);
    ir::Node n;
    n.name = "lut";
    n.op_type = kCodeTableOp;
    n.domain = kCodeTableDomain;
    n.inputs = {"x", "table"};
    n.outputs = {"y"};
    n.attrs = {ir::attr_int("input_signed", input_signed)};
    b.m.graph.nodes.push_back(n);
    b.output("y");
    return Session::create(b.m, SessionOptions{});
  };
  auto short_table = session_of(Tensor(DType::kUInt8, {255}), 0);
  ASSERT_FALSE(short_table.ok());
  EXPECT_NE(short_table.status().message().find("node 'lut' (qtk.CodeTable): the table must hold 256 uint8 or int8 codes, got uint8 [255]"), std::string::npos)
      << short_table.status().message();
  auto float_table = session_of(Tensor(DType::kFloat32, {256}), 0);
  ASSERT_FALSE(float_table.ok());
  EXPECT_NE(float_table.status().message().find("got float32 [256]"), std::string::npos) << float_table.status().message();
  auto wants_int8 = session_of(Tensor(DType::kUInt8, {256}), 1);
  ASSERT_TRUE(wants_int8.ok()) << wants_int8.status().message();
  auto y = (*wants_int8)->run(std::vector<Tensor>{Tensor(DType::kUInt8, {4})});
  ASSERT_FALSE(y.ok());
  EXPECT_NE(y.status().message().find("input must be int8, got uint8"), std::string::npos) << y.status().message();
}

// The unseen ViT-style model at int8 (GELU, attention scaling): tables in
// the integer session, the reference kernels' bits.
TEST(CodeTables, VitInt8GivesTheReferenceBits) {
  const std::string path = std::string(QTK_MODELS_DIR) + "/vit_fm.onnx";
  auto m = load_model(path);
  ASSERT_TRUE(m.ok()) << m.status().message();
  auto calib = data::load_dataset("fashion-mnist:train", 64);
  auto test = data::load_dataset("fashion-mnist:test", 16);
  ASSERT_TRUE(calib.ok() && test.ok());
  auto q = quantize(*m, QuantConfig{}, CalibrationData{{calib->images}});
  ASSERT_TRUE(q.ok()) << q.status().message();
  std::vector<std::string> ops;
  auto out = run_variants(q->model, test->images, &ops);
  ASSERT_EQ(out.size(), 3u);
  expect_same_bytes(out[0], out[1]);
  expect_same_bytes(out[0], out[2]);
  EXPECT_GE(std::count(ops.begin(), ops.end(), "CodeTable"), 2);
  EXPECT_EQ(std::count(ops.begin(), ops.end(), "Erf"), 0);
  EXPECT_GE(std::count(ops.begin(), ops.end(), "BiasRequantize"), 6);  // the Linear layers' bias adds
}

}  // namespace
}  // namespace qtk::rt
