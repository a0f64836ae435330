// SessionOptions::profile: per-node times summed over runs, in execution
// order, resettable; nothing recorded when it is off.
#include <gtest/gtest.h>

#include "ir/graph.h"
#include "qtk/session.h"
#include "test_models.h"

namespace qtk {
namespace {

using testing::op_node;

ir::Model three_nodes() {
  ir::Model m;
  m.opsets = {{"", 17}};
  m.graph.inputs.push_back(testing::float_info("x"));
  m.graph.outputs.push_back(testing::float_info("y"));
  m.graph.nodes = {op_node("Relu", {"x"}, "a"), op_node("Exp", {"a"}, "b"), op_node("Neg", {"b"}, "y")};
  m.graph.nodes[0].name.clear();
  m.graph.nodes[1].name = "exp_node";
  return m;
}

TEST(SessionProfile, TimesEveryNodeOfEveryRun) {
  SessionOptions o;
  o.optimize = false;
  o.profile = true;
  auto s = Session::create(three_nodes(), o);
  ASSERT_TRUE(s.ok()) << s.status().message();
  const Tensor x = testing::uniform_tensor({200000}, 1, -1.f, 1.f);
  for (int r = 0; r < 3; ++r) ASSERT_TRUE((*s)->run(std::vector<Tensor>{x}).ok());
  EXPECT_EQ((*s)->profiled_runs(), 3u);
  const auto p = (*s)->profile();
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0].op_type, "Relu");
  EXPECT_EQ(p[1].op_type, "Exp");
  EXPECT_EQ(p[2].op_type, "Neg");
  EXPECT_EQ(p[1].node, "exp_node");
  EXPECT_EQ(p[0].node, "#0");  // unnamed: its position
  for (const auto& t : p) EXPECT_GT(t.nanoseconds, 0u) << t.op_type;  // 200k elements take well over 1 ns
  (*s)->reset_profile();
  EXPECT_EQ((*s)->profiled_runs(), 0u);
  ASSERT_TRUE((*s)->run(std::vector<Tensor>{x}).ok());
  EXPECT_EQ((*s)->profiled_runs(), 1u);
}

TEST(SessionProfile, OffRecordsNothing) {
  SessionOptions o;
  o.optimize = false;
  auto s = Session::create(three_nodes(), o);
  ASSERT_TRUE(s.ok()) << s.status().message();
  ASSERT_TRUE((*s)->run(std::vector<Tensor>{testing::uniform_tensor({10}, 1, -1.f, 1.f)}).ok());
  EXPECT_TRUE((*s)->profile().empty());
  EXPECT_EQ((*s)->profiled_runs(), 0u);
}

}  // namespace
}  // namespace qtk
