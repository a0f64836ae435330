// A small fixed-size pool for data-parallel loops. parallel_for splits
// [0, n) into at most size() contiguous chunks; chunk 0 runs on the caller.
// Workers and the caller spin briefly before sleeping: a run calls
// parallel_for once per op, and waking a sleeping thread (futex + IPI, far
// dearer in a VM) cost more than the small ops it was meant to split.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace qtk::rt {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return threads_; }
  // fn(begin, end) over contiguous ranges; grain: smallest range worth a task.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

 private:
  void worker(int index);

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  std::vector<std::pair<int64_t, int64_t>> ranges_;
  std::atomic<uint64_t> generation_{0};  // written under mu_, read spinning without it
  std::atomic<int> pending_{0};          // workers yet to finish the current loop
  std::atomic<bool> stop_{false};
  std::mutex run_mu_;  // one parallel_for at a time (nested calls run inline)
};

}  // namespace qtk::rt
