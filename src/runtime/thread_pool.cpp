#include "runtime/thread_pool.h"

#include <algorithm>

namespace qtk::rt {

namespace {
// Set while this thread runs a parallel_for body: a nested call then runs
// inline (re-locking run_mu_ from the same thread would be undefined).
thread_local bool t_in_parallel_for = false;

struct InParallelFor {
  bool saved = t_in_parallel_for;
  InParallelFor() { t_in_parallel_for = true; }
  ~InParallelFor() { t_in_parallel_for = saved; }
};
}  // namespace

ThreadPool::ThreadPool(int threads) : threads_(std::max(1, threads)) {
  for (int i = 1; i < threads_; ++i) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    std::pair<int64_t, int64_t> range;
    const std::function<void(int64_t, int64_t)>* job;
    {
      std::unique_lock<std::mutex> lk(mu_);
      start_cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      job = job_;
      range = static_cast<size_t>(index) < ranges_.size() ? ranges_[index] : std::make_pair<int64_t, int64_t>(0, 0);
    }
    if (range.first < range.second) {
      InParallelFor guard;
      (*job)(range.first, range.second);
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  int64_t chunks = std::min<int64_t>(threads_, (n + std::max<int64_t>(grain, 1) - 1) / std::max<int64_t>(grain, 1));
  if (chunks <= 1 || t_in_parallel_for) {
    fn(0, n);
    return;
  }
  std::unique_lock<std::mutex> run_lock(run_mu_, std::try_to_lock);
  if (!run_lock.owns_lock()) {  // another thread's loop holds the pool
    fn(0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    ranges_.assign(threads_, {0, 0});
    for (int64_t c = 0; c < chunks; ++c) ranges_[c] = {n * c / chunks, n * (c + 1) / chunks};
    job_ = &fn;
    pending_ = threads_ - 1;
    ++generation_;
  }
  start_cv_.notify_all();
  {
    InParallelFor guard;
    fn(ranges_[0].first, ranges_[0].second);
  }
  std::unique_lock<std::mutex> lk(mu_);
  done_cv_.wait(lk, [&] { return pending_ == 0; });
}

}  // namespace qtk::rt
