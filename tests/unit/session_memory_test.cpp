// Session::peak_activation_bytes: the live-set peak the executor tracks while
// it frees each value after its last reader.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdint>
#include <vector>

#include "core/alloc_hook.h"
#include "ir/graph.h"
#include "qtk/session.h"
#include "test_models.h"

namespace qtk {
namespace {

using testing::op_node;

uint64_t peak_after_run(const ir::Model& m, int64_t n) {
  auto s = Session::create(m, {.optimize = false});
  EXPECT_TRUE(s.ok()) << s.status().message();
  Tensor x(DType::kFloat32, {n});
  for (int64_t i = 0; i < n; ++i) x.data<float>()[i] = static_cast<float>(i % 7) - 3.f;
  auto out = (*s)->run(std::vector<Tensor>{x});
  EXPECT_TRUE(out.ok()) << out.status().message();
  return (*s)->peak_activation_bytes();
}

ir::Model model_with(std::vector<ir::Node> nodes) {
  ir::Model m;
  m.opsets = {{"", 17}};
  ir::ValueInfo x;
  x.name = "x";
  x.dtype = DType::kFloat32;
  m.graph.inputs.push_back(x);
  ir::ValueInfo y;
  y.name = "y";
  y.dtype = DType::kFloat32;
  m.graph.outputs.push_back(y);
  m.graph.nodes = std::move(nodes);
  return m;
}

// discard_pages lets go of the whole pages inside the range and nothing
// else: the bytes before the first page boundary and after the last stay.
TEST(SessionMemory, DiscardPagesZeroesOnlyWholePagesInside) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> buf(6 * page, 0xAB);
  unsigned char* begin = buf.data() + 10;
  const size_t bytes = 4 * page + 50;
  core::discard_pages(begin, bytes);
  const auto at = reinterpret_cast<uintptr_t>(begin);
  const uintptr_t first = (at + page - 1) / page * page, last = (at + bytes) / page * page;
  ASSERT_GT(last, first);
  for (size_t i = 0; i < buf.size(); ++i) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(buf.data() + i);
    const bool inside = a >= first && a < last;
#if defined(__linux__)
    ASSERT_EQ(buf[i], inside ? 0 : 0xAB) << "byte " << i;
#else
    ASSERT_EQ(buf[i], 0xAB) << "byte " << i;
#endif
  }
}

TEST(SessionMemory, ChainHoldsTwoValuesAtOnce) {
  // x -> a -> b -> y: each value dies after its reader, so never more than two live.
  const int64_t n = 1000;
  auto m = model_with({op_node("Relu", {"x"}, "a"), op_node("Neg", {"a"}, "b"), op_node("Relu", {"b"}, "y")});
  EXPECT_EQ(peak_after_run(m, n), 2u * n * sizeof(float));
}

TEST(SessionMemory, BranchKeepsTheSharedInputAlive) {
  // x feeds two nodes: x, a and b are live together, then a, b and y.
  const int64_t n = 1000;
  auto m = model_with({op_node("Relu", {"x"}, "a"), op_node("Neg", {"x"}, "b"), op_node("Add", {"a", "b"}, "y")});
  EXPECT_EQ(peak_after_run(m, n), 3u * n * sizeof(float));
}

}  // namespace
}  // namespace qtk
