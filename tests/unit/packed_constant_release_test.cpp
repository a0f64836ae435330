// KernelInit::release_constant: a kernel that packed a constant and never
// reads it again lets it go, and the executor frees the initializer when no
// other reader, graph output or subgraph needs it (stand-ins keep dtype and
// shape). Outputs must not change; shared constants must stay.
#include <gtest/gtest.h>

#include <cstring>

#include "ir/graph.h"
#include "qtk/session.h"
#include "runtime/graph_executor.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"
#include "test_models.h"

namespace qtk::rt {
namespace {

using testing::float_info;
using testing::op_node;
using testing::uniform_tensor;

// x [N, 8, 10, 10] -> Conv(w: 16x8x3x3, b) -> Relu -> y. With extra nodes
// appended by the caller.
ir::Graph conv_graph(const Tensor& w) {
  ir::Graph g;
  g.inputs.push_back(float_info("x"));
  g.outputs.push_back(float_info("y"));
  ir::Node conv = op_node("Conv", {"x", "w", "b"}, "c");
  conv.attrs.push_back(ir::attr_ints("pads", {1, 1, 1, 1}));
  g.nodes.push_back(conv);
  g.nodes.push_back(op_node("Relu", {"c"}, "y"));
  g.initializers["w"] = w;
  g.initializers["b"] = uniform_tensor({16}, 2, -0.5f, 0.5f);
  return g;
}

OpsetMap opset17() {
  OpsetMap o;
  o.versions[""] = 17;
  return o;
}

std::vector<Tensor> run(const GraphExecutor& ex, const std::vector<Tensor>& feeds) {
  ThreadPool pool(1);
  auto out = ex.run(feeds, pool);
  EXPECT_TRUE(out.ok()) << out.status().message();
  return out.ok() ? *out : std::vector<Tensor>{};
}

void expect_bit_identical(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].shape(), b[i].shape());
    ASSERT_EQ(a[i].nbytes(), b[i].nbytes());
    EXPECT_EQ(std::memcmp(a[i].raw(), b[i].raw(), a[i].nbytes()), 0) << "output " << i;
  }
}

TEST(PackedConstantRelease, ConvWeightIsFreedAndOutputsStayBitIdentical) {
  const Tensor w = uniform_tensor({16, 8, 3, 3}, 1, -1.f, 1.f);  // 4,608 bytes
  const Tensor x = uniform_tensor({2, 8, 10, 10}, 3, -1.f, 1.f);
  auto released = GraphExecutor::create(conv_graph(w.clone()), opset17());
  ASSERT_TRUE(released.ok()) << released.status().message();
  auto kept = GraphExecutor::create(conv_graph(w.clone()), opset17(), {}, nullptr, true, /*release_constants=*/false);
  ASSERT_TRUE(kept.ok()) << kept.status().message();

  EXPECT_EQ((*released)->released_constant_bytes(), w.nbytes());
  EXPECT_EQ((*kept)->released_constant_bytes(), 0u);
  // Held: the bias and the packed W (at least W's floats); not W itself.
  const uint64_t bias_bytes = 16 * sizeof(float);
  EXPECT_EQ((*kept)->constant_bytes(), w.nbytes() + bias_bytes);
  EXPECT_GE((*released)->constant_bytes(), w.nbytes() + bias_bytes);
  // Runs after the release, twice (the second follows the memory plan).
  expect_bit_identical(run(**released, {x}), run(**kept, {x}));
  expect_bit_identical(run(**released, {x}), run(**kept, {x}));
}

TEST(PackedConstantRelease, NothingElseHoldsTheFreedStorage) {
  // The graph shares w's storage with this test: once the executor and the
  // kernel let it go, this copy is its only owner again.
  const Tensor w = uniform_tensor({16, 8, 3, 3}, 1, -1.f, 1.f);
  ASSERT_TRUE(w.sole_owner());
  auto ex = GraphExecutor::create(conv_graph(w), opset17());
  ASSERT_TRUE(ex.ok()) << ex.status().message();
  EXPECT_TRUE(w.sole_owner());
  auto kept = GraphExecutor::create(conv_graph(w), opset17(), {}, nullptr, true, /*release_constants=*/false);
  ASSERT_TRUE(kept.ok()) << kept.status().message();
  EXPECT_FALSE(w.sole_owner());
}

TEST(PackedConstantRelease, ASecondReaderThatReadsTheDataKeepsIt) {
  // w also feeds a ReduceSum (no packing): it must stay, and its sum be right.
  const Tensor w = uniform_tensor({16, 8, 3, 3}, 1, -1.f, 1.f);
  ir::Graph g = conv_graph(w);
  g.outputs.push_back(float_info("s"));
  ir::Node sum = op_node("ReduceSum", {"w"}, "s");
  sum.attrs.push_back(ir::attr_int("keepdims", 0));
  g.nodes.push_back(sum);
  auto ex = GraphExecutor::create(g, opset17());
  ASSERT_TRUE(ex.ok()) << ex.status().message();
  EXPECT_EQ((*ex)->released_constant_bytes(), 0u);
  const auto out = run(**ex, {uniform_tensor({1, 8, 10, 10}, 3, -1.f, 1.f)});
  ASSERT_EQ(out.size(), 2u);
  double want = 0;
  for (int64_t i = 0; i < w.numel(); ++i) want += w.data<float>()[i];
  EXPECT_NEAR(out[1].data<float>()[0], want, 1e-3);
}

TEST(PackedConstantRelease, AGraphOutputOrAFeedOfTheSameNameKeepsIt) {
  const Tensor w = uniform_tensor({16, 8, 3, 3}, 1, -1.f, 1.f);
  const Tensor x = uniform_tensor({1, 8, 10, 10}, 3, -1.f, 1.f);
  {
    ir::Graph g = conv_graph(w);
    g.outputs.push_back(float_info("w"));  // the weights are an output too
    auto ex = GraphExecutor::create(g, opset17());
    ASSERT_TRUE(ex.ok()) << ex.status().message();
    EXPECT_EQ((*ex)->released_constant_bytes(), 0u);
    const auto out = run(**ex, {x});
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(std::memcmp(out[1].raw(), w.raw(), w.nbytes()), 0);
  }
  {
    // w is an initializer and a graph input: a feed may replace it, so it
    // is no constant, and a fed W must be the one used.
    ir::Graph g = conv_graph(w);
    g.inputs.push_back(float_info("w"));
    auto ex = GraphExecutor::create(g, opset17());
    ASSERT_TRUE(ex.ok()) << ex.status().message();
    EXPECT_EQ((*ex)->released_constant_bytes(), 0u);
    const Tensor other = uniform_tensor({16, 8, 3, 3}, 9, -1.f, 1.f);
    ir::Graph h = conv_graph(other);
    auto with_other = GraphExecutor::create(h, opset17());
    ASSERT_TRUE(with_other.ok());
    expect_bit_identical(run(**ex, {x, other}), run(**with_other, {x}));
  }
}

TEST(PackedConstantRelease, AConstantASubgraphReadsStays) {
  // If's then-branch reads w (Identity): the outer Conv's release must not free it.
  const Tensor w = uniform_tensor({16, 8, 3, 3}, 1, -1.f, 1.f);
  ir::Graph g = conv_graph(w);
  g.inputs.push_back(ir::ValueInfo{});
  g.inputs.back().name = "cond";
  g.inputs.back().dtype = DType::kBool;
  g.outputs.push_back(float_info("z"));
  auto branch = [](const std::string& in) {
    auto b = std::make_shared<ir::Graph>();
    b->outputs.push_back(float_info("r"));
    b->nodes.push_back(op_node("Identity", {in}, "r"));
    return b;
  };
  ir::Node if_node = op_node("If", {"cond"}, "z");
  ir::Attribute then_branch, else_branch;
  then_branch.name = "then_branch";
  then_branch.type = ir::AttrType::kGraph;
  then_branch.g = branch("w");
  else_branch = then_branch;
  else_branch.name = "else_branch";
  else_branch.g = branch("w");
  if_node.attrs = {then_branch, else_branch};
  g.nodes.push_back(if_node);
  auto ex = GraphExecutor::create(g, opset17());
  ASSERT_TRUE(ex.ok()) << ex.status().message();
  EXPECT_EQ((*ex)->released_constant_bytes(), 0u);
  const auto out = run(**ex, {uniform_tensor({1, 8, 10, 10}, 3, -1.f, 1.f), Tensor::scalar<bool>(true)});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(std::memcmp(out[1].raw(), w.raw(), w.nbytes()), 0);
}

TEST(PackedConstantRelease, GemmAndMatMulAgreeWithTheReferenceAtFewAndManyRows) {
  // Gemm / MatMul pack B when built; a session that keeps B (the caller's
  // graph shares it here) reads it in place at few rows. Either way as the
  // reference.
  for (const char* op : {"Gemm", "MatMul"}) {
    ir::Graph g;
    g.inputs.push_back(float_info("x"));
    g.outputs.push_back(float_info("y"));
    g.nodes.push_back(op_node(op, {"x", "w"}, "y"));
    g.initializers["w"] = uniform_tensor({64, 48}, 5, -1.f, 1.f);
    auto a = GraphExecutor::create(g, opset17());
    auto b = GraphExecutor::create(g, opset17(), {}, &OpRegistry::reference());
    ASSERT_TRUE(a.ok() && b.ok()) << op;
    for (int64_t rows : {1, 4, 5, 33, 1}) {
      const Tensor x = uniform_tensor({rows, 64}, static_cast<uint32_t>(rows), -1.f, 1.f);
      const auto ya = run(**a, {x}), yb = run(**b, {x});
      ASSERT_EQ(ya.size(), 1u);
      ASSERT_EQ(ya[0].shape(), (Shape{rows, 48}));
      for (int64_t i = 0; i < ya[0].numel(); ++i)
        ASSERT_NEAR(ya[0].data<float>()[i], yb[0].data<float>()[i], 1e-4) << op << " rows " << rows << " at " << i;
    }
  }
}

// A Gemm whose transposed weights nobody else needs packs them sliver by
// sliver, letting each packed row's pages go (KernelInit::
// consumable_constant): the packed copy is the one a session that keeps the
// weights (here: also a graph output) packs whole, so results at many rows
// are bit for bit the same, and at few rows (read in place there) close.
TEST(PackedConstantRelease, AGemmConsumesItsTransposedWeightsWhilePacking) {
  const Tensor w = uniform_tensor({48, 3000}, 8, -1.f, 1.f);  // transB: [N, K], 576 KB
  auto graph = [&](bool pin) {
    ir::Graph g;
    g.inputs.push_back(float_info("x"));
    g.outputs.push_back(float_info("y"));
    ir::Node gemm = op_node("Gemm", {"x", "w"}, "y");
    gemm.attrs.push_back(ir::attr_int("transB", 1));
    g.nodes.push_back(gemm);
    g.initializers["w"] = w.clone();
    if (pin) g.outputs.push_back(float_info("w"));
    return g;
  };
  auto consumed = GraphExecutor::create(graph(false), opset17());
  auto kept = GraphExecutor::create(graph(true), opset17());
  ASSERT_TRUE(consumed.ok() && kept.ok());
  EXPECT_EQ((*consumed)->released_constant_bytes(), w.nbytes());
  EXPECT_EQ((*kept)->released_constant_bytes(), 0u);
  for (int64_t rows : {33, 1, 5}) {
    const Tensor x = uniform_tensor({rows, 3000}, static_cast<uint32_t>(rows), -1.f, 1.f);
    const auto a = run(**consumed, {x}), b = run(**kept, {x});
    ASSERT_EQ(a.size(), 1u);
    ASSERT_EQ(b.size(), 2u);
    ASSERT_EQ(a[0].shape(), (Shape{rows, 48}));
    if (rows > 4) {
      EXPECT_EQ(std::memcmp(a[0].raw(), b[0].raw(), a[0].nbytes()), 0) << "rows " << rows;
    } else {
      for (int64_t i = 0; i < a[0].numel(); ++i)
        ASSERT_NEAR(a[0].data<float>()[i], b[0].data<float>()[i], 1e-3) << "rows " << rows << " at " << i;
    }
  }
}

// A kernel that lets its constant input 1 go and then reads it anyway: the
// stand-in's data is an inaccessible mapping, so the read faults.
TEST(PackedConstantReleaseDeathTest, ReadingALetGoConstantFaults) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  OpRegistry registry;
  registry.add("Sum", [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    EXPECT_TRUE(init.release_constant(1, 0));
    return make_fn_kernel([](KernelContext& ctx) {
      Tensor y(DType::kFloat32, {1});
      y.data<float>()[0] = ctx.input(1).data<float>()[ctx.input(1).numel() - 1];  // the bug
      ctx.outputs[0] = y;
      return Status::Ok();
    });
  });
  ir::Graph g;
  g.inputs.push_back(float_info("x"));
  g.outputs.push_back(float_info("y"));
  g.nodes.push_back(op_node("Sum", {"x", "w"}, "y"));
  g.initializers["w"] = uniform_tensor({4096}, 1, 0.f, 1.f);
  auto ex = GraphExecutor::create(g, opset17(), {}, &registry);
  ASSERT_TRUE(ex.ok()) << ex.status().message();
  EXPECT_EQ((*ex)->released_constant_bytes(), 4096u * sizeof(float));
  EXPECT_DEATH(run(**ex, {uniform_tensor({1}, 2, 0.f, 1.f)}), "");
}

TEST(PackedConstantRelease, SessionWeightBytesCountThePackedCopy) {
  // A session that takes the model frees W; one over a copy keeps the
  // caller's storage alive but counts the same weights.
  ir::Model m;
  m.opsets = {{"", 17}};
  m.graph = conv_graph(uniform_tensor({16, 8, 3, 3}, 1, -1.f, 1.f));
  m.graph.inputs[0].has_shape = false;
  auto shared = Session::create(m, {.optimize = false});
  ASSERT_TRUE(shared.ok()) << shared.status().message();
  auto owned = Session::create(ir::Model(m), {.optimize = false});
  ASSERT_TRUE(owned.ok()) << owned.status().message();
  EXPECT_EQ((*shared)->weight_bytes(), (*owned)->weight_bytes());
  EXPECT_GE((*owned)->weight_bytes(), 16u * 8 * 9 * sizeof(float) + 16 * sizeof(float));
  const Tensor x = uniform_tensor({1, 8, 10, 10}, 3, -1.f, 1.f);
  auto a = (*shared)->run(std::vector<Tensor>{x});
  auto b = (*owned)->run(std::vector<Tensor>{x});
  ASSERT_TRUE(a.ok() && b.ok());
  expect_bit_identical(*a, *b);
}

}  // namespace
}  // namespace qtk::rt
