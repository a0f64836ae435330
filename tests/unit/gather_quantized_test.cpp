// Gather before DequantizeLinear (runtime/gather_quantized.h): an integer
// session gathers a quantized table's codes and dequantizes only the rows it
// picked, with the bits (and the index errors) of the graph as written.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/session.h"
#include "runtime/gather_quantized.h"

namespace qtk::rt {
namespace {

struct TableSpec {
  DType codes = DType::kInt8;
  Shape shape = {10, 6};
  int64_t dq_axis = 1;      // written only when per_axis
  bool per_axis = false;    // else one scale
  bool zero_point = true;
  int64_t gather_axis = 0;
  int64_t block_size = 0;   // a blocked DQ (not taken)
  bool codes_are_input = false;  // runtime codes (not taken)
  bool table_is_output = false;  // the dequantized table is read elsewhere too
  int gathers = 1;               // Gathers reading the one DQ
  bool requantize = false;       // Gather → Q → DQ with the table's parameters (ONNX Runtime's pattern)
  bool add_quantized = false;    // Gather → Add(·, DQ(x)) → Q → DQ: a float Add in the graph as written
};

int64_t axis_len(const TableSpec& t, int64_t axis) {
  const int64_t r = static_cast<int64_t>(t.shape.size());
  return t.shape[static_cast<size_t>(axis < 0 ? axis + r : axis)];
}

// DQ(w) → Gather(·, idx_k) → y_k for each k; idx_k are runtime int64 inputs.
ir::Model table_model(const TableSpec& t) {
  std::mt19937 rng(11);
  ir::Model m;
  m.opsets = {{"", 21}};
  auto& g = m.graph;
  const int64_t n_params = t.per_axis ? axis_len(t, t.dq_axis) : 1;
  Tensor w(t.codes, t.shape);
  for (int64_t i = 0; i < w.numel(); ++i) {
    auto* b = static_cast<uint8_t*>(w.raw());
    switch (t.codes) {
      case DType::kInt4: reinterpret_cast<int8_t*>(b)[i] = static_cast<int8_t>(static_cast<int>(rng() % 16) - 8); break;
      case DType::kUInt4: b[i] = static_cast<uint8_t>(rng() % 16); break;
      case DType::kInt32: w.data<int32_t>()[i] = static_cast<int32_t>(rng() % 100000) - 50000; break;
      default: b[i] = static_cast<uint8_t>(rng()); break;
    }
  }
  Tensor s(DType::kFloat32, t.per_axis ? Shape{n_params} : Shape{});
  for (int64_t i = 0; i < s.numel(); ++i) s.data<float>()[i] = std::uniform_real_distribution<float>(1e-3f, 0.3f)(rng);
  Tensor z(t.codes, s.shape());
  for (int64_t i = 0; i < z.numel(); ++i) {
    if (t.codes == DType::kInt32) z.data<int32_t>()[i] = 0;  // int32 zero points must be 0
    else if (t.codes == DType::kInt8 || t.codes == DType::kInt4)
      z.data<int8_t>()[i] = static_cast<int8_t>(static_cast<int>(rng() % 8) - 4);
    else z.data<uint8_t>()[i] = static_cast<uint8_t>(rng() % 8 + 4);
  }
  if (t.codes_are_input) {
    ir::ValueInfo v;
    v.name = "w";
    v.dtype = t.codes;
    g.inputs.push_back(v);
  } else {
    g.set_initializer("w", w);
  }
  g.set_initializer("s", s);
  if (t.zero_point) g.set_initializer("z", z);
  auto add = [&](const std::string& name, const std::string& op, std::vector<std::string> in, std::string out,
                 std::vector<ir::Attribute> attrs = {}) {
    ir::Node n;
    n.name = name;
    n.op_type = op;
    n.inputs = std::move(in);
    n.outputs = {std::move(out)};
    n.attrs = std::move(attrs);
    g.nodes.push_back(std::move(n));
  };
  std::vector<ir::Attribute> dq_attrs;
  if (t.per_axis) dq_attrs.push_back(ir::attr_int("axis", t.dq_axis));
  if (t.block_size) dq_attrs.push_back(ir::attr_int("block_size", t.block_size));
  std::vector<std::string> params = {"s"};
  if (t.zero_point) params.push_back("z");
  auto with = [&](std::string first) {
    std::vector<std::string> v = {std::move(first)};
    v.insert(v.end(), params.begin(), params.end());
    return v;
  };
  add("table_dq", "DequantizeLinear", with("w"), "table", dq_attrs);
  for (int k = 0; k < t.gathers; ++k) {
    const std::string idx = "idx" + std::to_string(k), y = "y" + std::to_string(k);
    ir::ValueInfo in;
    in.name = idx;
    in.dtype = DType::kInt64;
    g.inputs.push_back(in);
    const std::string gathered = t.requantize || t.add_quantized ? "rows" + std::to_string(k) : y;
    add("gather" + std::to_string(k), "Gather", {"table", idx}, gathered, {ir::attr_int("axis", t.gather_axis)});
    if (t.requantize) {
      add("q" + std::to_string(k), "QuantizeLinear", with(gathered), gathered + "_q");
      add("dq" + std::to_string(k), "DequantizeLinear", with(gathered + "_q"), y);
    }
    if (t.add_quantized) {
      g.set_initializer("xs", Tensor::scalar<float>(0.05f));
      g.set_initializer("xz", Tensor::scalar<uint8_t>(100));
      g.set_initializer("as", Tensor::scalar<float>(0.07f));
      g.set_initializer("az", Tensor::scalar<uint8_t>(120));
      ir::ValueInfo x;
      x.name = "x";
      x.dtype = DType::kUInt8;
      g.inputs.push_back(x);
      add("x_dq", "DequantizeLinear", {"x", "xs", "xz"}, "xf");
      add("add", "Add", {gathered, "xf"}, "sum");
      add("sum_q", "QuantizeLinear", {"sum", "as", "az"}, "sum_q");
      add("sum_dq", "DequantizeLinear", {"sum_q", "as", "az"}, y);
    }
    ir::ValueInfo out;
    out.name = y;
    g.outputs.push_back(out);
  }
  if (t.table_is_output) {
    add("table_sum", "ReduceSum", {"table"}, "table_sum", {ir::attr_int("keepdims", 0)});
    ir::ValueInfo out;
    out.name = "table_sum";
    g.outputs.push_back(out);
  }
  return m;
}

Tensor indices(Shape shape, int64_t len, uint32_t seed, bool negative = true) {
  std::mt19937 rng(seed);
  Tensor t(DType::kInt64, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) {
    const int64_t v = static_cast<int64_t>(rng() % static_cast<uint32_t>(len));
    t.data<int64_t>()[i] = negative && i % 3 == 1 ? v - len : v;  // negative indices count from the end
  }
  return t;
}

struct Outcome {
  std::vector<Tensor> outputs;
  std::string error;
  std::vector<std::string> ops;
};

// integer: the session with the rewrite; else a float session, which runs
// the graph as written with the same kernels.
Outcome run(const ir::Model& m, const std::vector<Tensor>& feeds, bool integer, bool reference = false) {
  SessionOptions o;
  o.integer = integer;
  o.reference_kernels = reference;
  o.profile = true;
  Outcome r;
  auto s = Session::create(m, o);
  if (!s.ok()) {
    r.error = "create: " + s.status().message();
    return r;
  }
  auto y = (*s)->run(feeds);
  if (!y.ok()) r.error = y.status().message();
  else r.outputs = std::move(*y);
  for (const auto& t : (*s)->profile()) r.ops.push_back(t.op_type);
  return r;
}

void expect_same_bits(const Outcome& want, const Outcome& got, const std::string& what) {
  ASSERT_EQ(want.error, got.error) << what;
  ASSERT_EQ(want.outputs.size(), got.outputs.size()) << what;
  for (size_t k = 0; k < want.outputs.size(); ++k) {
    const Tensor &a = want.outputs[k], &b = got.outputs[k];
    ASSERT_EQ(a.dtype(), b.dtype()) << what << " output " << k;
    ASSERT_EQ(a.shape(), b.shape()) << what << " output " << k;
    EXPECT_EQ(0, std::memcmp(a.raw(), b.raw(), a.nbytes())) << what << " output " << k;
  }
}

int count_op(const std::vector<std::string>& ops, const std::string& op) {
  return static_cast<int>(std::count(ops.begin(), ops.end(), op));
}

// Runs the rewritten session against the graph as written (float session
// and integer reference session) and checks the rewrite took place: the
// session's only DQs are the ones after the Gathers (and the table's own,
// when it has another reader).
void check(const TableSpec& t, const std::vector<Tensor>& feeds, const std::string& what) {
  SCOPED_TRACE(what);
  const ir::Model m = table_model(t);
  const Outcome got = run(m, feeds, true);
  ASSERT_TRUE(got.error.empty()) << got.error;
  expect_same_bits(run(m, feeds, false), got, "vs float session");
  expect_same_bits(run(m, feeds, true, true), got, "vs integer reference session");
  // Per-row parameters are gathered with the rows: two or three Gathers each.
  const int64_t r = static_cast<int64_t>(t.shape.size());
  const bool per_row = t.per_axis && axis_len(t, t.dq_axis) > 1 && (t.dq_axis + r) % r == (t.gather_axis + r) % r;
  EXPECT_EQ(count_op(got.ops, "Gather"), t.gathers * (per_row ? 2 + t.zero_point : 1)) << ::testing::PrintToString(got.ops);
  EXPECT_EQ(count_op(got.ops, "QuantizeLinear"), 0) << ::testing::PrintToString(got.ops);
  ASSERT_FALSE(got.ops.empty());
  if (!t.table_is_output) {
    EXPECT_EQ(got.ops.front(), "Gather") << "the table is still dequantized first";
  }
  EXPECT_EQ(count_op(got.ops, "DequantizeLinear"), t.gathers + (t.table_is_output ? 1 : 0))
      << ::testing::PrintToString(got.ops);
}

TEST(GatherQuantized, PerTensorTables) {
  TableSpec t;
  for (DType dt : {DType::kInt8, DType::kUInt8, DType::kInt4, DType::kUInt4, DType::kInt32}) {
    t.codes = dt;
    check(t, {indices({2, 3}, 10, 1)}, std::string("axis 0 ") + dtype_name(dt));
  }
  t = TableSpec{};
  t.shape = {4, 5, 3};
  for (int64_t a : {1, -1, 2, -3}) {
    t.gather_axis = a;
    check(t, {indices({2, 2}, axis_len(t, a), 2)}, "3-D, gather axis " + std::to_string(a));
  }
  t.zero_point = false;
  check(t, {indices({7}, axis_len(t, t.gather_axis), 3)}, "no zero point");
  t.gather_axis = 0;
  check(t, {Tensor::scalar<int64_t>(-2)}, "scalar index");
}

TEST(GatherQuantized, PerAxisOnAnotherAxis) {
  TableSpec t;
  t.shape = {4, 5, 3};
  t.per_axis = true;
  for (int64_t dq : {0, 1, 2, -1, -3})
    for (int64_t ga : {0, 1, 2, -1}) {
      const int64_t r = 3;
      if ((dq + r) % r == (ga + r) % r) continue;
      t.dq_axis = dq;
      t.gather_axis = ga;
      const std::string what = "dq axis " + std::to_string(dq) + ", gather axis " + std::to_string(ga);
      check(t, {indices({2, 3}, axis_len(t, ga), 4)}, what + ", 2-D indices");
      check(t, {Tensor::scalar<int64_t>(1)}, what + ", scalar index");
    }
}

TEST(GatherQuantized, PerRowParametersAreGatheredToo) {
  TableSpec t;
  t.shape = {10, 6};
  t.per_axis = true;
  for (bool zp : {true, false})
    for (auto [dq, ga] : {std::pair<int64_t, int64_t>{0, 0}, {0, -2}, {1, 1}, {-1, 1}}) {
      t.zero_point = zp;
      t.dq_axis = dq;
      t.gather_axis = ga;
      const int64_t len = axis_len(t, ga);
      const std::string what = "axis " + std::to_string(dq) + (zp ? "" : ", no zero point");
      check(t, {indices({2, 3}, len, 5)}, what + ", 2-D indices");
      check(t, {indices({4}, len, 6)}, what + ", 1-D indices");
      check(t, {Tensor::scalar<int64_t>(-1)}, what + ", scalar index");
    }
}

TEST(GatherQuantized, OtherReadersKeepTheTableDequantized) {
  TableSpec t;
  t.table_is_output = true;
  check(t, {indices({3, 2}, 10, 7)}, "table also summed");
  t = TableSpec{};
  t.gathers = 2;
  check(t, {indices({3}, 10, 8), indices({2, 2}, 10, 9)}, "two Gathers");
}

TEST(GatherQuantized, RequantizationWithTheSameParametersCancels) {
  TableSpec t;
  t.codes = DType::kUInt8;
  t.requantize = true;  // the integer session then gathers codes only
  check(t, {indices({2, 8}, 10, 10)}, "Gather → Q → DQ");
  t.zero_point = false;  // Q writes uint8 then, as the codes are
  check(t, {indices({2, 8}, 10, 10)}, "Gather → Q → DQ, no zero points");
}

TEST(GatherQuantized, OnlyAnExactRoundTripCancels) {
  auto cancelled = [](const ir::Model& m0) {
    ir::Model m = m0;
    auto c = gather_before_dequantize(m);
    EXPECT_TRUE(c.ok() && *c == 1);
    int q = 0;
    for (const auto& n : m.graph.nodes) q += n.op_type == "QuantizeLinear";
    return q == 0;
  };
  TableSpec t;
  t.codes = DType::kUInt8;
  t.requantize = true;
  EXPECT_TRUE(cancelled(table_model(t)));
  ir::Model m = table_model(t);
  m.graph.set_initializer("s2", Tensor::scalar<float>(m.graph.find_initializer("s")->data<float>()[0] * 2));
  for (auto& n : m.graph.nodes)
    if (n.op_type == "QuantizeLinear") n.inputs[1] = "s2";
  EXPECT_FALSE(cancelled(m)) << "another scale";
  m = table_model(t);
  m.graph.set_initializer("s", Tensor::scalar<float>(1e-39f));  // subnormal: (c - zp) * s / s loses codes
  EXPECT_FALSE(cancelled(m)) << "subnormal scale";
  m = table_model(t);
  m.graph.set_initializer("z2", Tensor::scalar<int8_t>(static_cast<int8_t>(m.graph.find_initializer("z")->get_as_int64(0))));
  for (auto& n : m.graph.nodes)
    if (n.op_type == "QuantizeLinear") n.inputs[2] = "z2";
  EXPECT_FALSE(cancelled(m)) << "Q writes int8, the codes are uint8";
  m = table_model(t);
  m.graph.outputs.push_back(m.graph.outputs[0]);
  m.graph.outputs.back().name = "rows0";
  EXPECT_FALSE(cancelled(m)) << "the dequantized rows are read elsewhere too";
  t.codes = DType::kInt4;  // Q to a 4-bit type is not the codes' container
  EXPECT_FALSE(cancelled(table_model(t))) << "4-bit";
}

TEST(GatherQuantized, FloatIslandsStayFloat) {
  // The DQ after the Gather would make Add → Q a QLinearAdd, rounding
  // differently from the graph as written, where the Add runs in float.
  TableSpec t;
  t.codes = DType::kUInt8;
  t.add_quantized = true;
  const ir::Model m = table_model(t);
  Tensor x(DType::kUInt8, {6});
  for (int64_t i = 0; i < 6; ++i) x.data<uint8_t>()[i] = static_cast<uint8_t>(37 * i + 5);
  const std::vector<Tensor> feeds = {indices({3, 4}, 10, 13), x};
  const Outcome got = run(m, feeds, true);
  ASSERT_TRUE(got.error.empty()) << got.error;
  expect_same_bits(run(m, feeds, false), got, "vs float session");
  expect_same_bits(run(m, feeds, true, true), got, "vs integer reference session");
  ASSERT_FALSE(got.ops.empty());
  EXPECT_EQ(got.ops.front(), "Gather") << ::testing::PrintToString(got.ops);
  EXPECT_EQ(count_op(got.ops, "Add"), 1) << ::testing::PrintToString(got.ops);
  EXPECT_EQ(count_op(got.ops, "QLinearAdd"), 0) << ::testing::PrintToString(got.ops);
}

TEST(GatherQuantized, BadIndicesFailAsBefore) {
  TableSpec t;
  for (int mode : {0, 1, 2}) {  // per tensor, per axis elsewhere, per row (parameters gathered too)
    t.per_axis = mode > 0;
    t.dq_axis = mode == 1 ? 1 : 0;
    for (int64_t bad : {10, -11}) {
      Tensor idx = indices({2, 3}, 10, 12);
      idx.data<int64_t>()[4] = bad;
      const Outcome want = run(table_model(t), {idx}, false), got = run(table_model(t), {idx}, true);
      EXPECT_NE(got.error.find("node 'gather0' (Gather)"), std::string::npos) << got.error;
      EXPECT_NE(got.error.find("index " + std::to_string(bad) + " is out of range"), std::string::npos) << got.error;
      EXPECT_EQ(want.error, got.error);
    }
  }
}

TEST(GatherQuantized, OnlyExactLayoutsAreTaken) {
  auto count = [](const TableSpec& t) {
    ir::Model m = table_model(t);
    auto c = gather_before_dequantize(m);
    EXPECT_TRUE(c.ok()) << c.status().message();
    return c.ok() ? *c : -1;
  };
  TableSpec t;
  EXPECT_EQ(count(t), 1);
  t.gathers = 3;
  EXPECT_EQ(count(t), 3);
  {
    // The table's DQ goes with its last reader; the Gathers now read the codes.
    ir::Model m = table_model(t);
    ASSERT_TRUE(gather_before_dequantize(m).ok());
    int gathers = 0, dqs = 0;
    for (const auto& n : m.graph.nodes) {
      if (n.op_type == "Gather") {
        ++gathers;
        EXPECT_EQ(n.inputs[0], "w");
      }
      dqs += n.op_type == "DequantizeLinear";
      EXPECT_NE(n.outputs[0], "table");
    }
    EXPECT_EQ(gathers, 3);
    EXPECT_EQ(dqs, 3);
  }
  t = TableSpec{};
  t.codes_are_input = true;  // runtime codes
  EXPECT_EQ(count(t), 0);
  t = TableSpec{};
  t.per_axis = true;
  t.dq_axis = 1;
  t.block_size = 2;  // blocked
  EXPECT_EQ(count(t), 0);
  t = TableSpec{};
  t.shape = {4, 5, 3};
  t.per_axis = true;
  t.dq_axis = 1;
  t.gather_axis = 1;  // per axis on the gather axis of a 3-D table
  EXPECT_EQ(count(t), 0);
  t.gather_axis = 3;  // out of range: the kernel's error, as before
  EXPECT_EQ(count(t), 0);
  t = TableSpec{};
  t.per_axis = true;
  t.dq_axis = 1;
  t.zero_point = false;
  ir::Model m = table_model(t);
  m.graph.set_initializer("s", Tensor(DType::kFloat32, {5}));  // 5 scales for 6 columns: the kernel's error
  auto c = gather_before_dequantize(m);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, 0);
}

}  // namespace
}  // namespace qtk::rt
