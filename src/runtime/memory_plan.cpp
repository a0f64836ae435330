#include "runtime/memory_plan.h"

#include <algorithm>
#include <cstdint>
#include <numeric>

namespace qtk::rt {

namespace {
size_t align64(size_t n) { return (n + 63) / 64 * 64; }
}  // namespace

size_t plan_block_offsets(const std::vector<LiveBlock>& blocks, std::vector<size_t>& offsets) {
  offsets.assign(blocks.size(), 0);
  std::vector<size_t> order(blocks.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return blocks[a].bytes > blocks[b].bytes; });
  std::vector<size_t> placed;
  size_t arena = 0;
  std::vector<std::pair<size_t, size_t>> busy;  // [begin, end) of placed blocks alive at the same time
  for (size_t i : order) {
    const LiveBlock& b = blocks[i];
    const size_t need = align64(b.bytes);
    busy.clear();
    for (size_t j : placed)
      if (blocks[j].first <= b.last && b.first <= blocks[j].last)
        busy.emplace_back(offsets[j], offsets[j] + align64(blocks[j].bytes));
    std::sort(busy.begin(), busy.end());
    size_t best = SIZE_MAX, best_gap = SIZE_MAX, cursor = 0;
    for (const auto& [begin, end] : busy) {
      if (begin > cursor && begin - cursor >= need && begin - cursor < best_gap) {
        best = cursor;
        best_gap = begin - cursor;
      }
      cursor = std::max(cursor, end);
    }
    offsets[i] = best != SIZE_MAX ? best : cursor;  // else on top of everything live with it
    arena = std::max(arena, offsets[i] + need);
    placed.push_back(i);
  }
  return arena;
}

size_t peak_live_block_bytes(const std::vector<LiveBlock>& blocks) {
  int steps = 0;
  for (const auto& b : blocks) steps = std::max(steps, b.last + 1);
  std::vector<size_t> live(static_cast<size_t>(steps) + 1, 0);
  for (const auto& b : blocks)
    for (int s = b.first; s <= b.last; ++s) live[static_cast<size_t>(s)] += align64(b.bytes);
  return live.empty() ? 0 : *std::max_element(live.begin(), live.end());
}

}  // namespace qtk::rt
