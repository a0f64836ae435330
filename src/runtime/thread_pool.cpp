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

// claim_'s fields.
constexpr uint64_t kChunkBits = 16, kChunkMask = (uint64_t{1} << kChunkBits) - 1;
constexpr int kMaxThreads = 1 << 15;

ThreadPool::ThreadPool(int threads) : threads_(std::clamp(threads, 1, kMaxThreads)) {
  for (int i = 1; i < threads_; ++i) workers_.emplace_back([this] { worker(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_.store(true);
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks() {
  uint64_t v = claim_.load(std::memory_order_acquire);
  for (;;) {
    const uint64_t chunks = (v >> kChunkBits) & kChunkMask, c = v & kChunkMask;
    if (c >= chunks) return;
    // Acquire: job_ and n_ of the loop v belongs to are visible once this succeeds.
    if (!claim_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    run_chunk(static_cast<int64_t>(c), static_cast<int64_t>(chunks));
    v = claim_.load(std::memory_order_acquire);
  }
}

void ThreadPool::run_chunk(int64_t i, int64_t chunks) {
  try {
    InParallelFor guard;
    (*job_)(n_ * i / chunks, n_ * (i + 1) / chunks);
  } catch (...) {  // counted done all the same; parallel_for rethrows it once every chunk has ended
    std::lock_guard<std::mutex> lk(mu_);
    if (!error_) error_ = std::current_exception();
  }
  if (completed_.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) {
    std::lock_guard<std::mutex> lk(mu_);  // the caller may be about to wait
    done_cv_.notify_one();
  }
}

void ThreadPool::worker() {
  uint64_t seen = 0;
  for (;;) {
    if (!spin_until([&] { return stop_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen; })) {
      std::unique_lock<std::mutex> lk(mu_);
      start_cv_.wait(lk, [&] { return stop_.load() || generation_.load() != seen; });
    }
    if (stop_.load()) return;
    seen = generation_.load(std::memory_order_acquire);
    run_chunks();
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  const int64_t chunks = std::min<int64_t>(threads_, (n + std::max<int64_t>(grain, 1) - 1) / std::max<int64_t>(grain, 1));
  if (chunks <= 1 || t_in_parallel_for) {
    fn(0, n);
    return;
  }
  std::unique_lock<std::mutex> run_lock(run_mu_, std::try_to_lock);
  if (!run_lock.owns_lock()) {  // another thread's loop holds the pool
    fn(0, n);
    return;
  }
  // The previous loop's chunks have all finished: nobody reads these now.
  job_ = &fn;
  n_ = n;
  completed_.store(0, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lk(mu_);
    const uint64_t generation = generation_.load(std::memory_order_relaxed) + 1;
    // Chunk 0 is the caller's, as before claiming existed: the values an op
    // writes there stay in the cache of the thread whose chunk 0 reads them next.
    claim_.store((generation << 32) | (static_cast<uint64_t>(chunks) << kChunkBits) | 1, std::memory_order_release);
    generation_.store(generation, std::memory_order_release);
  }
  start_cv_.notify_all();
  run_chunk(0, chunks);
  run_chunks();
  if (!spin_until([&] { return completed_.load(std::memory_order_acquire) == chunks; })) {
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return completed_.load() == chunks; });
  }
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lk(mu_);
    std::swap(error, error_);
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace qtk::rt
