// A small fixed-size pool for data-parallel loops. parallel_for splits
// [0, n) into at most size() contiguous chunks, the same split whoever runs
// them: the caller runs chunk 0, then it and the workers each claim the next
// unclaimed chunk, so a worker the OS has not scheduled yet (another process
// on its core) never holds a loop up. Workers and the caller spin
// briefly before sleeping: a run calls parallel_for once per op, and waking a
// sleeping thread (futex + IPI, far dearer in a VM) cost more than the small
// ops it was meant to split.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
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
  // If a chunk throws, the others still run, and the first exception is
  // rethrown here once all have ended.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

 private:
  void worker();
  // Claims and runs chunks of the current loop until none is left unclaimed.
  void run_chunks();
  void run_chunk(int64_t i, int64_t chunks);  // then counts it completed

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;  // guards sleeping on start_cv_ / done_cv_
  std::condition_variable start_cv_, done_cv_;
  // The current loop: written before claim_ publishes it, read only by a
  // thread that claimed one of its chunks (the loop cannot end before that
  // chunk does, so they stay put meanwhile).
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t n_ = 0;
  // (generation << 32) | (chunks << 16) | next unclaimed chunk: one word, so
  // a claim is one compare-and-swap that fails for a loop already replaced.
  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> completed_{0};    // chunks of the current loop finished
  std::atomic<uint64_t> generation_{0};  // written under mu_, read spinning without it
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;  // the first chunk's exception of the current loop (under mu_)
  std::mutex run_mu_;  // one parallel_for at a time (nested calls run inline)
};

}  // namespace qtk::rt
