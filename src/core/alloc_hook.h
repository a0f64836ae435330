// Lets the graph executor place the tensors that kernels allocate into memory
// it planned (one arena per run, offsets from the values' lifetimes), without
// every kernel taking an allocator: Tensor storage asks the calling thread's
// hook first and falls back to the usual allocator when the hook declines.
#pragma once

#include <cstddef>
#include <memory>

namespace qtk::core {

class AllocationHook {
 public:
  virtual ~AllocationHook() = default;
  // 64-byte aligned storage of exactly `bytes` (a multiple of 64), or null
  // to let the usual allocator serve the request.
  virtual std::shared_ptr<std::byte[]> allocate(size_t bytes) = 0;
};

// The hook Tensor storage on this thread asks first (null: none).
AllocationHook* current_allocation_hook();

// Installs `hook` (null: none) on this thread for the object's life, then
// restores the one before: nested executors (If/Loop bodies) stack theirs.
class ScopedAllocationHook {
 public:
  explicit ScopedAllocationHook(AllocationHook* hook);
  ~ScopedAllocationHook();
  ScopedAllocationHook(const ScopedAllocationHook&) = delete;
  ScopedAllocationHook& operator=(const ScopedAllocationHook&) = delete;

 private:
  AllocationHook* previous_;
};

// Hands free heap pages back to the OS (glibc malloc_trim; no-op elsewhere):
// after a run whose blocks bypassed the block pool.
void release_free_heap_pages();

// Lets the OS take back the whole pages inside [p, p + bytes) now; they read
// as zeros when next touched. For a block about to be freed or left idle
// (malloc would keep its pages resident until a trim), or the unused tail of
// a reused one. No-op off Linux.
void discard_pages(void* p, size_t bytes);

// Frees the tensor block at p if the block pool keeps it idle (its pages go
// back to the OS now, not to the next tensor of its size): for storage that
// was released for good, such as weights a session let go once packed.
void free_idle_block(const void* p);

}  // namespace qtk::core
