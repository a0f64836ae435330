// Planned activation memory (runtime/memory_plan.h, GraphExecutor's arena):
// offsets never overlap for values alive together, and planned sessions give
// the same bytes as unplanned ones on the shared models, float and int8,
// across batches, threads, input-shape changes and concurrent runs.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <thread>

#include "ir/graph.h"
#include "qtk/model.h"
#include "qtk/quantize.h"
#include "qtk/session.h"
#include "runtime/memory_plan.h"
#include "test_models.h"

namespace qtk {
namespace {

using rt::LiveBlock;

size_t align64(size_t n) { return (n + 63) / 64 * 64; }

TEST(MemoryPlan, BlocksAliveTogetherNeverShareBytes) {
  std::mt19937 g(7);
  std::uniform_int_distribution<int> step(0, 40), len(0, 6);
  std::uniform_int_distribution<size_t> bytes(1, 100000);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<LiveBlock> blocks(30);
    for (auto& b : blocks) {
      b.first = step(g);
      b.last = b.first + len(g);
      b.bytes = bytes(g);
    }
    std::vector<size_t> off;
    const size_t arena = rt::plan_block_offsets(blocks, off);
    ASSERT_EQ(off.size(), blocks.size());
    EXPECT_GE(arena, rt::peak_live_block_bytes(blocks));
    for (size_t i = 0; i < blocks.size(); ++i) {
      EXPECT_EQ(off[i] % 64, 0u);
      EXPECT_LE(off[i] + blocks[i].bytes, arena);
      for (size_t j = 0; j < i; ++j) {
        const bool together = blocks[i].first <= blocks[j].last && blocks[j].first <= blocks[i].last;
        const bool overlap = off[i] < off[j] + blocks[j].bytes && off[j] < off[i] + blocks[i].bytes;
        EXPECT_FALSE(together && overlap) << "trial " << trial << " blocks " << i << " and " << j;
      }
    }
  }
}

TEST(MemoryPlan, ChainNeedsTwoBuffersAndBranchesThree) {
  // A chain a0 -> a1 -> ... reuses two buffers; the arena is exactly the live peak.
  std::vector<LiveBlock> chain;
  for (int s = 0; s < 10; ++s) chain.push_back({1000, s, s + 1});
  std::vector<size_t> off;
  EXPECT_EQ(rt::plan_block_offsets(chain, off), 2 * align64(1000));
  // Shrinking values (a network's later stages) fit in the gaps the large ones leave.
  std::vector<LiveBlock> shrinking = {{4096, 0, 1}, {4096, 1, 2}, {2048, 2, 3}, {2048, 3, 4}, {1024, 4, 5}};
  EXPECT_EQ(rt::plan_block_offsets(shrinking, off), 2 * 4096u);
  // A residual block keeps its input alive across two convs: three at once.
  std::vector<LiveBlock> residual = {{1000, 0, 3}, {1000, 1, 2}, {1000, 2, 3}, {1000, 3, 4}};
  EXPECT_EQ(rt::plan_block_offsets(residual, off), 3 * align64(1000));
  EXPECT_EQ(rt::peak_live_block_bytes(residual), 3 * align64(1000));
  EXPECT_EQ(rt::plan_block_offsets({}, off), 0u);
}

using testing::op_node;

ir::Model chain_model(std::vector<ir::Node> nodes, std::vector<std::string> outputs = {"y"}) {
  ir::Model m;
  m.opsets = {{"", 17}};
  m.graph.inputs.push_back(testing::float_info("x"));
  for (const auto& o : outputs) m.graph.outputs.push_back(testing::float_info(o));
  m.graph.nodes = std::move(nodes);
  return m;
}

std::unique_ptr<Session> session_for(const ir::Model& m, bool plan, int threads = 1, bool integer = false,
                                     bool optimize = true) {
  SessionOptions o;
  o.plan_memory = plan;
  o.threads = threads;
  o.integer = integer;
  o.optimize = optimize;
  auto s = Session::create(m, o);
  EXPECT_TRUE(s.ok()) << s.status().message();
  return s.ok() ? std::move(*s) : nullptr;
}

void expect_same_bytes(const std::vector<Tensor>& a, const std::vector<Tensor>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].dtype(), b[i].dtype()) << what;
    ASSERT_EQ(a[i].shape(), b[i].shape()) << what;
    EXPECT_EQ(std::memcmp(a[i].raw(), b[i].raw(), a[i].nbytes()), 0) << what << ": output " << i << " differs";
  }
}

std::vector<Tensor> run_ok(const Session& s, const std::vector<Tensor>& in) {
  auto out = s.run(in);
  EXPECT_TRUE(out.ok()) << out.status().message();
  return out.ok() ? *out : std::vector<Tensor>{};
}

TEST(MemoryPlan, ChainSessionUsesTwoPlannedBuffers) {
  // x -> a -> b -> y: a and b are planned (x is the caller's, y goes back to it).
  const int64_t n = 10000;  // 40000 bytes each, a multiple of 64
  auto m = chain_model({op_node("Relu", {"x"}, "a"), op_node("Neg", {"a"}, "b"), op_node("Relu", {"b"}, "y")});
  auto planned = session_for(m, true, 1, false, false);
  auto plain = session_for(m, false, 1, false, false);
  ASSERT_TRUE(planned && plain);
  Tensor x = testing::uniform_tensor({n}, 3, -1.f, 1.f);
  for (int r = 0; r < 3; ++r) expect_same_bytes(run_ok(*planned, {x}), run_ok(*plain, {x}), "run " + std::to_string(r));
  EXPECT_EQ(planned->activation_arena_bytes(), 2u * n * sizeof(float));
  EXPECT_EQ(plain->activation_arena_bytes(), 0u);
  EXPECT_EQ(planned->peak_activation_bytes(), 2u * n * sizeof(float));
  EXPECT_EQ(planned->largest_activation_pair_bytes(), 2u * n * sizeof(float));
}

TEST(MemoryPlan, LargestPairIsBelowThePeakWhenABranchKeepsAValue) {
  // x feeds two nodes: x, a and b are live together; the largest pair is two of them.
  const int64_t n = 1000;
  auto m = chain_model({op_node("Relu", {"x"}, "a"), op_node("Neg", {"x"}, "b"), op_node("Add", {"a", "b"}, "y")});
  auto s = session_for(m, true, 1, false, false);
  ASSERT_TRUE(s);
  run_ok(*s, {testing::uniform_tensor({n}, 1, -1.f, 1.f)});
  EXPECT_EQ(s->peak_activation_bytes(), 3u * n * sizeof(float));
  EXPECT_EQ(s->largest_activation_pair_bytes(), 2u * n * sizeof(float));
}

TEST(MemoryPlan, OutputThatIsAViewKeepsItsBytesAfterLaterRuns) {
  // y is a view (Reshape) of r, which would be planned if y did not escape
  // to the caller; z is planned. Outputs of an earlier run must survive later runs.
  ir::Model m = chain_model({op_node("Relu", {"x"}, "r"), op_node("Reshape", {"r", "shape"}, "y"), op_node("Neg", {"x"}, "t"),
                             op_node("Neg", {"t"}, "z")},
                            {"y", "z"});
  m.graph.initializers["shape"] = Tensor::from_vector<int64_t>({2}, {-1, 4});
  auto planned = session_for(m, true, 1, false, false);
  auto plain = session_for(m, false, 1, false, false);
  ASSERT_TRUE(planned && plain);
  Tensor x1 = testing::uniform_tensor({4096}, 1, -1.f, 1.f), x2 = testing::uniform_tensor({4096}, 2, -1.f, 1.f);
  std::vector<Tensor> first = run_ok(*planned, {x1});
  std::vector<Tensor> first_copy;
  for (const auto& t : first) first_copy.push_back(t.clone());
  for (int r = 0; r < 3; ++r) expect_same_bytes(run_ok(*planned, {x2}), run_ok(*plain, {x2}), "later run");
  expect_same_bytes(first, first_copy, "first run's outputs after later runs");
  expect_same_bytes(first, run_ok(*plain, {x1}), "first run");
  EXPECT_GT(planned->activation_arena_bytes(), 0u);  // t is planned
}

TEST(MemoryPlan, NewInputShapesGetTheirOwnPlan) {
  auto m = chain_model({op_node("Relu", {"x"}, "a"), op_node("Neg", {"a"}, "b"), op_node("Relu", {"b"}, "y")});
  m.graph.inputs[0].has_shape = false;
  auto planned = session_for(m, true, 1, false, false);
  auto plain = session_for(m, false, 1, false, false);
  ASSERT_TRUE(planned && plain);
  for (int64_t n : {5000, 20000, 5000, 1, 20000, 70000, 5000}) {
    Tensor x = testing::uniform_tensor({n}, static_cast<uint32_t>(n), -1.f, 1.f);
    expect_same_bytes(run_ok(*planned, {x}), run_ok(*plain, {x}), "n = " + std::to_string(n));
    expect_same_bytes(run_ok(*planned, {x}), run_ok(*plain, {x}), "again, n = " + std::to_string(n));
  }
  EXPECT_EQ(planned->activation_arena_bytes(), 2u * 70000 * sizeof(float));
}

TEST(MemoryPlan, IfBranchesPlanTheirOwnValuesAndReadPlannedOuterOnes) {
  // a (planned in the outer graph) is read inside both branches, whose own
  // intermediates are planned by the branch executors; the If's result feeds
  // more planned values.
  auto branch = [](const std::string& op, const std::string& tag) {
    ir::Graph g;
    g.nodes = {op_node(op, {"a"}, tag + "1"), op_node("Neg", {tag + "1"}, tag + "2"), op_node("Relu", {tag + "2"}, tag + "3")};
    g.outputs.push_back(testing::float_info(tag + "3"));
    return g;
  };
  ir::Node if_node = op_node("If", {"c"}, "r");
  if_node.attrs = {ir::attr_graph("then_branch", branch("Neg", "t")), ir::attr_graph("else_branch", branch("Relu", "e"))};
  ir::Model m = chain_model({op_node("Relu", {"x"}, "a"), if_node, op_node("Neg", {"r"}, "b"), op_node("Add", {"b", "a"}, "y")});
  ir::ValueInfo c;
  c.name = "c";
  c.dtype = DType::kBool;
  m.graph.inputs.push_back(c);
  auto planned = session_for(m, true, 1, false, false);
  auto plain = session_for(m, false, 1, false, false);
  ASSERT_TRUE(planned && plain);
  Tensor x = testing::uniform_tensor({8192}, 9, -1.f, 1.f);
  for (bool cond : {true, false, true, true, false, false})
    expect_same_bytes(run_ok(*planned, {x, Tensor::scalar<bool>(cond)}), run_ok(*plain, {x, Tensor::scalar<bool>(cond)}),
                      cond ? "then" : "else");
  EXPECT_GT(planned->activation_arena_bytes(), 0u);
}

struct ModelCase {
  const char* file;
  Shape input;  // batch dimension set per run
};

// Planned and unplanned sessions agree bit for bit on the shared models.
void check_model(const ir::Model& m, const ModelCase& c, bool integer) {
  for (int threads : {1, 2})
    for (int64_t batch : {1, 8}) {
      const std::string what = std::string(c.file) + (integer ? " int8" : " float") + " batch " +
                                std::to_string(batch) + " threads " + std::to_string(threads);
      auto planned = session_for(m, true, threads, integer);
      auto plain = session_for(m, false, threads, integer);
      ASSERT_TRUE(planned && plain) << what;
      Shape shape = c.input;
      shape[0] = batch;
      for (int r = 0; r < 3; ++r) {
        Tensor x = testing::uniform_tensor(shape, static_cast<uint32_t>(r + 10 * batch), 0.f, 1.f);
        expect_same_bytes(run_ok(*planned, {x}), run_ok(*plain, {x}), what + " run " + std::to_string(r));
      }
      // Batch 8 has activations to plan: the arena was used and the plan held to the end.
      if (batch == 8) {
        EXPECT_GT(planned->activation_arena_bytes(), 0u) << what;
      }
      EXPECT_EQ(planned->peak_activation_bytes(), plain->peak_activation_bytes()) << what;
      EXPECT_EQ(planned->largest_activation_pair_bytes(), plain->largest_activation_pair_bytes()) << what;
      EXPECT_LE(planned->largest_activation_pair_bytes(), planned->peak_activation_bytes()) << what;
    }
}

const ModelCase kModels[] = {
    {"mlp.onnx", {1, 1, 28, 28}},          {"cnn.onnx", {1, 1, 28, 28}},
    {"resnet20.onnx", {1, 1, 28, 28}},     {"mobilenetv2_fm.onnx", {1, 1, 28, 28}},
    {"vit_fm.onnx", {1, 1, 28, 28}},       {"fmnist_small.onnx", {1, 1, 28, 28}},
};

TEST(MemoryPlan, FloatModelsGiveTheSameBytesPlannedOrNot) {
  for (const auto& c : kModels) {
    auto m = load_model(std::string(QTK_MODELS_DIR) + "/" + c.file);
    ASSERT_TRUE(m.ok()) << c.file << ": " << m.status().message();
    check_model(*m, c, false);
  }
}

TEST(MemoryPlan, Int8ModelsGiveTheSameBytesPlannedOrNot) {
  for (const char* file : {"mlp.onnx", "cnn.onnx", "resnet20.onnx", "mobilenetv2_fm.onnx"}) {
    auto m = load_model(std::string(QTK_MODELS_DIR) + "/" + file);
    ASSERT_TRUE(m.ok()) << file << ": " << m.status().message();
    CalibrationData calib;
    calib.inputs.push_back(testing::uniform_tensor({8, 1, 28, 28}, 5, 0.f, 1.f));
    auto q = quantize(*m, QuantConfig{}, calib);
    ASSERT_TRUE(q.ok()) << file << ": " << q.status().message();
    check_model(q->model, {file, {1, 1, 28, 28}}, true);
  }
}

TEST(MemoryPlan, ConcurrentRunsOfOnePlannedSessionAgree) {
  auto m = load_model(std::string(QTK_MODELS_DIR) + "/resnet20.onnx");
  ASSERT_TRUE(m.ok()) << m.status().message();
  auto planned = session_for(*m, true, 1);
  auto plain = session_for(*m, false, 1);
  ASSERT_TRUE(planned && plain);
  std::vector<Tensor> inputs;
  std::vector<std::vector<Tensor>> want;
  for (int t = 0; t < 4; ++t) {
    inputs.push_back(testing::uniform_tensor({4, 1, 28, 28}, static_cast<uint32_t>(100 + t), 0.f, 1.f));
    want.push_back(run_ok(*plain, {inputs.back()}));
  }
  std::vector<std::vector<Tensor>> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int r = 0; r < 5; ++r) {
        auto out = planned->run(std::vector<Tensor>{inputs[t]});
        if (out.ok() && r == 4) got[t] = *out;
      }
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) expect_same_bytes(got[t], want[t], "thread " + std::to_string(t));
  EXPECT_GT(planned->activation_arena_bytes(), 0u);
}

}  // namespace
}  // namespace qtk

namespace qtk {
namespace {

// A QLinearConv that carries a residual add writes its output over the
// residual when nothing reads the residual later: resnet20's blocks then
// need two activations at once, not three, and the bytes stay the same as
// the reference kernels' (which never write in place).
TEST(MemoryPlan, Int8ResidualJoinWritesOverItsDeadResidual) {
  auto m = load_model(std::string(QTK_MODELS_DIR) + "/resnet20.onnx");
  ASSERT_TRUE(m.ok()) << m.status().message();
  CalibrationData calib;
  calib.inputs.push_back(testing::uniform_tensor({8, 1, 28, 28}, 5, 0.f, 1.f));
  auto q = quantize(*m, QuantConfig{}, calib);
  ASSERT_TRUE(q.ok()) << q.status().message();
  auto planned = session_for(q->model, true, 2, true);
  ASSERT_TRUE(planned);
  SessionOptions ref_options;
  ref_options.integer = true;
  ref_options.reference_kernels = true;
  auto reference = Session::create(q->model, ref_options);
  ASSERT_TRUE(reference.ok()) << reference.status().message();
  const Tensor x = testing::uniform_tensor({4, 1, 28, 28}, 9, 0.f, 1.f);
  for (int r = 0; r < 3; ++r)
    expect_same_bytes(run_ok(*planned, {x}), run_ok(**reference, {x}), "run " + std::to_string(r));
  // Three 16x28x28 blocks of codes alive at once would need 1.5x the pair.
  EXPECT_GT(planned->activation_arena_bytes(), 0u);
  EXPECT_LE(planned->activation_arena_bytes(), planned->largest_activation_pair_bytes() * 11 / 10);
}

}  // namespace
}  // namespace qtk

namespace qtk {
namespace {

// The in-place join must not write over a residual that is still needed:
// r's codes are read again by a QLinearAdd that needs s, the fused conv's
// output (so it runs after it), and s is both the next fused conv's input
// and its residual. Both joins are fused (one QLinearAdd left, r + s, which
// feeds a fourth conv), and the optimized session equals the reference
// kernels'. (Checked: with the release test removed from input_reusable,
// the outputs differ.)
TEST(MemoryPlan, Int8ResidualJoinKeepsAResidualStillNeeded) {
  const ir::Model m = testing::residual_still_needed_model();
  CalibrationData calib;
  calib.inputs.push_back(testing::uniform_tensor({8, 4, 6, 6}, 5, -1.f, 1.f));
  auto q = quantize(m, QuantConfig{}, calib);
  ASSERT_TRUE(q.ok()) << q.status().message();
  SessionOptions o;
  o.integer = true;
  o.threads = 2;
  o.profile = true;
  auto fast = Session::create(q->model, o);
  o.reference_kernels = true;
  auto reference = Session::create(q->model, o);
  ASSERT_TRUE(fast.ok() && reference.ok());
  const Tensor in = testing::uniform_tensor({3, 4, 6, 6}, 9, -1.f, 1.f);
  for (int r = 0; r < 3; ++r)  // the first run records the memory plan, the others follow it
    expect_same_bytes(run_ok(**fast, {in}), run_ok(**reference, {in}), "run " + std::to_string(r));
  int adds = 0, convs = 0;
  for (const auto& t : (*fast)->profile()) {
    adds += t.op_type == "QLinearAdd";
    convs += t.op_type == "QLinearConv";
  }
  EXPECT_EQ(convs, 3);  // the fourth, with a float output, runs as ConvInteger
  EXPECT_EQ(adds, 1) << "both residual adds fused into their convs, r + s left";
}

}  // namespace
}  // namespace qtk
