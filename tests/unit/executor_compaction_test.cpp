// What a built executor lets go (runtime/graph_executor.h): the graph's
// attributes, value names and initializer map once the kernels hold what
// they parsed. What run() still reads stays: node names in errors and
// profiles, value names in errors, outer values a subgraph looks up. And
// the session registry holds the optimized kernels only, finding the
// reference ones in OpRegistry::reference().
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <set>

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

OpsetMap opset17() {
  OpsetMap o;
  o.versions[""] = 17;
  return o;
}

// y = Relu(x * s + b) with small constants s, b [4].
ir::Graph affine_relu(const Tensor& s, const Tensor& b) {
  ir::Graph g;
  g.inputs.push_back(float_info("x"));
  g.outputs.push_back(float_info("y"));
  g.nodes.push_back(op_node("Mul", {"x", "s"}, "m"));
  g.nodes.push_back(op_node("Add", {"m", "b"}, "a"));
  g.nodes.push_back(op_node("Relu", {"a"}, "y"));
  g.initializers["s"] = s;
  g.initializers["b"] = b;
  return g;
}

std::vector<Tensor> run(const GraphExecutor& ex, const std::vector<Tensor>& feeds) {
  ThreadPool pool(1);
  auto out = ex.run(feeds, pool);
  EXPECT_TRUE(out.ok()) << out.status().message();
  return out.ok() ? *out : std::vector<Tensor>{};
}

TEST(ExecutorCompaction, TheGraphsAttributesGoOnceTheKernelsAreBuilt) {
  // A tensor only an attribute holds (no kernel reads it): the executor's
  // copy of the graph let go of it, so the test's handle is its sole owner.
  const Tensor note = uniform_tensor({256}, 1, 0.f, 1.f);
  ir::Graph g = affine_relu(uniform_tensor({4}, 2, 0.5f, 1.5f), uniform_tensor({4}, 3, -0.5f, 0.5f));
  g.nodes[2].attrs.push_back(ir::attr_tensor("note", note));
  ASSERT_FALSE(note.sole_owner());
  auto ex = GraphExecutor::create(g, opset17());  // a copy: `g` keeps its own reference
  ASSERT_TRUE(ex.ok()) << ex.status().message();
  g = ir::Graph();
  EXPECT_TRUE(note.sole_owner());
  // It still runs, and its steps keep their names for errors and profiles.
  const Tensor x = uniform_tensor({2, 4}, 4, -1.f, 1.f);
  EXPECT_EQ(run(**ex, {x}).size(), 1u);
  const auto nodes = (*ex)->step_nodes();
  ASSERT_EQ(nodes.size(), 3u);
  EXPECT_EQ(nodes[0]->name, "Mul_m");
  EXPECT_EQ(nodes[2]->op_type, "Relu");
}

TEST(ExecutorCompaction, OutputsAreTheSameAsWithTheReferenceRegistry) {
  // The constants stay readable after the graph goes: relu(x * s + b), on
  // the recording run and the planned one, from both registries.
  const Tensor s = uniform_tensor({4}, 2, 0.5f, 1.5f), b = uniform_tensor({4}, 3, -0.5f, 0.5f);
  const Tensor x = uniform_tensor({3, 4}, 4, -1.f, 1.f);
  ir::Graph own = affine_relu(s.clone(), b.clone());
  auto ex = GraphExecutor::create(std::move(own), opset17());
  ASSERT_TRUE(ex.ok()) << ex.status().message();
  auto ref = GraphExecutor::create(affine_relu(s, b), opset17(), {}, &OpRegistry::reference());
  ASSERT_TRUE(ref.ok()) << ref.status().message();
  EXPECT_EQ((*ex)->constant_bytes(), s.nbytes() + b.nbytes());
  for (int i = 0; i < 2; ++i) {
    const auto a = run(**ex, {x}), c = run(**ref, {x});
    ASSERT_EQ(a.size(), 1u);
    ASSERT_EQ(c.size(), 1u);
    ASSERT_EQ(a[0].shape(), c[0].shape());
    EXPECT_EQ(std::memcmp(a[0].raw(), c[0].raw(), a[0].nbytes()), 0);
    for (int64_t j = 0; j < x.numel(); ++j) {
      const float want = std::max(0.f, x.data<float>()[j] * s.data<float>()[j % 4] + b.data<float>()[j % 4]);
      EXPECT_EQ(a[0].data<float>()[j], want) << j;
    }
  }
}

TEST(ExecutorCompaction, RunTimeErrorsStillNameTheNodeAndTheMissingValue) {
  // Reshape to a shape of the wrong size fails at run time, naming the node.
  ir::Graph g;
  g.inputs.push_back(float_info("x"));
  g.outputs.push_back(float_info("y"));
  ir::Node r = op_node("Reshape", {"x", "shape"}, "y");
  r.name = "the_reshape";
  g.nodes.push_back(r);
  Tensor shape(DType::kInt64, {1});
  shape.data<int64_t>()[0] = 5;
  g.initializers["shape"] = shape;
  auto ex = GraphExecutor::create(std::move(g), opset17());
  ASSERT_TRUE(ex.ok()) << ex.status().message();
  ThreadPool pool(1);
  auto out = (*ex)->run({uniform_tensor({2, 3}, 1, 0.f, 1.f)}, pool);
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("the_reshape"), std::string::npos) << out.status().message();
  EXPECT_NE(out.status().message().find("Reshape"), std::string::npos) << out.status().message();
  // An absent feed: the error names the value (from the packed slot names).
  auto missing = (*ex)->run({Tensor()}, pool);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("input 'x' has no value"), std::string::npos)
      << missing.status().message();
}

TEST(ExecutorCompaction, ASubgraphStillReadsOuterValuesByName) {
  // If(c) then: y = Add(x, k) from the outer graph; else: y = x. The outer
  // executor keeps its name map, the branches find x and k through it.
  auto branch = [](bool add) {
    ir::Graph b;
    b.name = add ? "then" : "else";
    b.outputs.push_back(float_info("out"));
    if (add) b.nodes.push_back(op_node("Add", {"x", "k"}, "out"));
    else b.nodes.push_back(op_node("Identity", {"x"}, "out"));
    return b;
  };
  ir::Graph g;
  g.inputs.push_back(float_info("x"));
  ir::ValueInfo c;
  c.name = "c";
  c.dtype = DType::kBool;
  g.inputs.push_back(c);
  g.outputs.push_back(float_info("y"));
  ir::Node n = op_node("If", {"c"}, "y");
  n.attrs.push_back(ir::attr_graph("then_branch", branch(true)));
  n.attrs.push_back(ir::attr_graph("else_branch", branch(false)));
  g.nodes.push_back(n);
  g.initializers["k"] = uniform_tensor({4}, 7, 1.f, 2.f);
  const Tensor k = g.initializers["k"].clone();
  auto ex = GraphExecutor::create(std::move(g), opset17());
  ASSERT_TRUE(ex.ok()) << ex.status().message();
  const Tensor x = uniform_tensor({4}, 8, -1.f, 1.f);
  Tensor yes(DType::kBool, {});
  yes.data<uint8_t>()[0] = 1;
  const auto y = run(**ex, {x, yes});
  ASSERT_EQ(y.size(), 1u);
  for (int j = 0; j < 4; ++j) EXPECT_EQ(y[0].data<float>()[j], x.data<float>()[j] + k.data<float>()[j]);
}

TEST(OpRegistryLayers, TheSessionRegistryFindsReferenceKernelsInTheReferenceTable) {
  const OpRegistry& global = OpRegistry::global();
  const OpRegistry& reference = OpRegistry::reference();
  // An op without an optimized kernel: the very factory of the reference table.
  const KernelFactory* relu = global.find("", "Relu", 17);
  ASSERT_NE(relu, nullptr);
  EXPECT_EQ(relu, reference.find("", "Relu", 17));
  EXPECT_EQ(global.find("ai.onnx", "Relu", 17), relu);
  // An overridden one: the optimized factory, not the reference's.
  const KernelFactory* qconv = global.find("", "QLinearConv", 17);
  ASSERT_NE(qconv, nullptr);
  EXPECT_NE(qconv, reference.find("", "QLinearConv", 17));
  EXPECT_EQ(global.find("", "NoSuchOp", 17), nullptr);
  EXPECT_TRUE(global.supports("", "Relu"));
  EXPECT_TRUE(global.supports("com.microsoft", "QGemm"));
  EXPECT_FALSE(global.supports("", "NoSuchOp"));
  // op_types: every reference op once, sorted.
  const auto ops = global.op_types("");
  EXPECT_TRUE(std::is_sorted(ops.begin(), ops.end()));
  EXPECT_EQ(std::set<std::string>(ops.begin(), ops.end()).size(), ops.size());
  for (const auto& op : reference.op_types("")) EXPECT_TRUE(std::binary_search(ops.begin(), ops.end(), op)) << op;
}

TEST(OpRegistryLayers, AnAddOfTheSameVersionReplacesAndTheNewestVersionWins) {
  OpRegistry r;
  int which = 0;
  r.add("Op", [&which](const KernelInit&) -> Expected<std::unique_ptr<Kernel>> {
    which = 1;
    return std::unique_ptr<Kernel>();
  }, "", 1);
  r.add("Op", [&which](const KernelInit&) -> Expected<std::unique_ptr<Kernel>> {
    which = 13;
    return std::unique_ptr<Kernel>();
  }, "", 13);
  r.add("Op", [&which](const KernelInit&) -> Expected<std::unique_ptr<Kernel>> {
    which = 2;
    return std::unique_ptr<Kernel>();
  }, "", 1);  // replaces the first
  ir::Node n = op_node("Op", {}, "y");
  const KernelInit init{n, 0, nullptr, nullptr, nullptr, nullptr};
  auto call = [&](int64_t opset) {
    which = 0;
    const KernelFactory* f = r.find("", "Op", opset);
    if (f) (void)(*f)(init);
    return which;
  };
  EXPECT_EQ(call(12), 2);
  EXPECT_EQ(call(13), 13);
  EXPECT_EQ(call(0), 13);  // no opset: the newest
  EXPECT_NE(r.find("", "Op", -1), nullptr);
}

}  // namespace
}  // namespace qtk::rt
