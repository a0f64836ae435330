#include "runtime/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace qtk::rt {

namespace {
// Set while this thread runs a parallel_for body: a nested call then runs
// inline (re-locking run_mu_ from the same thread would be undefined).
thread_local bool t_in_parallel_for = false;

// Spins until done() or about kSpinMicros have passed; true when done().
constexpr int64_t kSpinMicros = 100;
template <class Done>
bool spin_until(Done done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
#if defined(__x86_64__) || defined(__i386__)
      _mm_pause();
#endif
    }
    if (std::chrono::steady_clock::now() >= deadline) return done();
  }
}

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
    stop_.store(true);
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    spin_until([&] { return stop_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen; });
    std::pair<int64_t, int64_t> range;
    const std::function<void(int64_t, int64_t)>* job;
    {
      std::unique_lock<std::mutex> lk(mu_);
      start_cv_.wait(lk, [&] { return stop_.load() || generation_.load() != seen; });
      if (stop_.load()) return;
      seen = generation_.load();
      job = job_;
      range = static_cast<size_t>(index) < ranges_.size() ? ranges_[index] : std::make_pair<int64_t, int64_t>(0, 0);
    }
    if (range.first < range.second) {
      InParallelFor guard;
      (*job)(range.first, range.second);
    }
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lk(mu_);  // the caller may be about to wait
      done_cv_.notify_one();
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
    pending_.store(threads_ - 1, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  start_cv_.notify_all();
  {
    InParallelFor guard;
    fn(ranges_[0].first, ranges_[0].second);
  }
  if (spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; })) return;
  std::unique_lock<std::mutex> lk(mu_);
  done_cv_.wait(lk, [&] { return pending_.load() == 0; });
}

}  // namespace qtk::rt
