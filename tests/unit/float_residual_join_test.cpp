// A float Conv that absorbed the Add after it (runtime/optimize.h) writes its
// output over the residual when nothing reads the residual later, and only
// then: the bytes are those of a session where every residual stays alive
// (made a graph output, so no kernel may write over it).
#include <gtest/gtest.h>

#include <cstring>

#include "ir/graph.h"
#include "qtk/model.h"
#include "qtk/session.h"
#include "test_models.h"

namespace qtk {
namespace {

std::unique_ptr<Session> session(const ir::Model& m, int threads) {
  SessionOptions o;
  o.threads = threads;
  o.profile = true;
  auto s = Session::create(m, o);
  EXPECT_TRUE(s.ok()) << s.status().message();
  return s.ok() ? std::move(*s) : nullptr;
}

std::vector<Tensor> run_ok(const Session& s, const Tensor& x) {
  auto out = s.run(std::vector<Tensor>{x});
  EXPECT_TRUE(out.ok()) << out.status().message();
  return out.ok() ? *out : std::vector<Tensor>{};
}

// The same model with every Add operand also a graph output: pinned, never
// written over. Its first outputs are the original ones.
ir::Model with_add_operands_pinned(const ir::Model& m) {
  ir::Model pinned = m;
  for (const auto& n : m.graph.nodes)
    if (n.op_type == "Add")
      for (const auto& in : n.inputs)
        if (!m.graph.initializers.count(in)) pinned.graph.outputs.push_back(testing::float_info(in));
  return pinned;
}

void expect_same_leading_outputs(const std::vector<Tensor>& got, const std::vector<Tensor>& want, size_t count,
                                 const std::string& what) {
  ASSERT_GE(got.size(), count) << what;
  ASSERT_GE(want.size(), count) << what;
  for (size_t i = 0; i < count; ++i) {
    ASSERT_EQ(got[i].shape(), want[i].shape()) << what;
    EXPECT_EQ(std::memcmp(got[i].raw(), want[i].raw(), got[i].nbytes()), 0) << what << ": output " << i << " differs";
  }
}

int count_op(const Session& s, const std::string& op) {
  int n = 0;
  for (const auto& t : s.profile()) n += t.op_type == op;
  return n;
}

TEST(FloatResidualJoin, WritesOverItsDeadResidual) {
  auto m = load_model(std::string(QTK_MODELS_DIR) + "/resnet20.onnx");
  ASSERT_TRUE(m.ok()) << m.status().message();
  const ir::Model pinned_model = with_add_operands_pinned(*m);
  for (int threads : {1, 2}) {
    auto fast = session(*m, threads);
    auto pinned = session(pinned_model, threads);
    ASSERT_TRUE(fast && pinned);
    const Tensor x = testing::uniform_tensor({4, 1, 28, 28}, 9, 0.f, 1.f);
    for (int r = 0; r < 3; ++r)  // the first run records the memory plan, the others follow it
      expect_same_leading_outputs(run_ok(*fast, x), run_ok(*pinned, x), m->graph.outputs.size(),
                                  "threads " + std::to_string(threads) + " run " + std::to_string(r));
    EXPECT_EQ(count_op(*fast, "Add"), 0) << "every residual Add fused into its Conv";
    // Three 16x28x28 activations alive at once would need 1.5x the pair.
    EXPECT_GT(fast->activation_arena_bytes(), 0u);
    EXPECT_LE(fast->activation_arena_bytes(), fast->largest_activation_pair_bytes() * 11 / 10);
  }
}

// r is read again by an Add after s (the conv that joins r) is written, and s
// is both the next joining conv's input and its residual: neither may be
// written over. (Checked: with the reusable test dropped from the kernel,
// the outputs differ.)
TEST(FloatResidualJoin, KeepsAResidualStillNeeded) {
  const ir::Model m = testing::residual_still_needed_model();
  const ir::Model pinned_model = with_add_operands_pinned(m);
  auto fast = session(m, 2);
  auto pinned = session(pinned_model, 2);
  ASSERT_TRUE(fast && pinned);
  const Tensor in = testing::uniform_tensor({3, 4, 6, 6}, 9, -1.f, 1.f);
  for (int r = 0; r < 3; ++r)
    expect_same_leading_outputs(run_ok(*fast, in), run_ok(*pinned, in), 2, "run " + std::to_string(r));
  EXPECT_EQ(count_op(*fast, "Add"), 1) << "both residual adds fused into their convs, r + s left";
}


// 128 input channels of 3x3 taps sum in two K blocks: the first block's
// partial sums would overwrite the addend before the last block adds it, so
// such a conv keeps its own output. (Checked: without the one-block test the
// outputs differ.)
TEST(FloatResidualJoin, KeepsTheAddendWhenKSpansBlocks) {
  ir::Model m;
  m.opsets = {{"", 17}};
  ir::Graph& g = m.graph;
  g.inputs.push_back(testing::float_info("x"));
  g.outputs.push_back(testing::float_info("y"));
  g.initializers["w"] = testing::uniform_tensor({128, 128, 3, 3}, 21, -0.05f, 0.05f);
  g.initializers["b"] = testing::uniform_tensor({128}, 22, -0.1f, 0.1f);
  ir::Node conv = testing::op_node("Conv", {"r", "w", "b"}, "c");
  conv.set_attr(ir::attr_ints("pads", {1, 1, 1, 1}));
  g.nodes = {testing::op_node("Relu", {"x"}, "r"), testing::op_node("Sigmoid", {"x"}, "s"), conv,
             testing::op_node("Add", {"c", "s"}, "y")};
  const ir::Model pinned_model = with_add_operands_pinned(m);
  auto fast = session(m, 1);
  auto pinned = session(pinned_model, 1);
  ASSERT_TRUE(fast && pinned);
  const Tensor in = testing::uniform_tensor({2, 128, 8, 8}, 9, -1.f, 1.f);
  for (int r = 0; r < 2; ++r)
    expect_same_leading_outputs(run_ok(*fast, in), run_ok(*pinned, in), 1, "run " + std::to_string(r));
  EXPECT_EQ(count_op(*fast, "Add"), 0) << "the Add fused into the Conv";
}

}  // namespace
}  // namespace qtk
