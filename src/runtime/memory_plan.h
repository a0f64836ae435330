// Offsets of activation buffers in one arena, from their lifetimes: two
// buffers share bytes only when no step needs both.
#pragma once

#include <cstddef>
#include <vector>

namespace qtk::rt {

// A buffer live from step `first` to step `last`, both included (a step's
// inputs and outputs are live together, so they never share bytes).
struct LiveBlock {
  size_t bytes = 0;
  int first = 0;
  int last = 0;
};

// Fills offsets (64-byte aligned, one per block) and returns the arena size.
// Greedy by size, largest first, each into the smallest gap left between
// the blocks already placed whose lifetimes overlap its own.
size_t plan_block_offsets(const std::vector<LiveBlock>& blocks, std::vector<size_t>& offsets);

// The most bytes live at any one step: the least any arena can be.
size_t peak_live_block_bytes(const std::vector<LiveBlock>& blocks);

}  // namespace qtk::rt
