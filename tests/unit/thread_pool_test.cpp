// The pool's loop contract: every index once, the same contiguous split
// whichever thread claims a chunk, nested and concurrent calls.
#include "runtime/thread_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <atomic>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace qtk::rt {
namespace {

using Range = std::pair<int64_t, int64_t>;

// The ranges one parallel_for handed out, sorted.
std::vector<Range> ranges_of(ThreadPool& pool, int64_t n, int64_t grain, std::vector<int>& hits) {
  std::mutex mu;
  std::vector<Range> ranges;
  hits.assign(static_cast<size_t>(n), 0);
  pool.parallel_for(
      n,
      [&](int64_t b, int64_t e) {
        std::lock_guard<std::mutex> lk(mu);
        ranges.emplace_back(b, e);
        for (int64_t i = b; i < e; ++i) ++hits[static_cast<size_t>(i)];
      },
      grain);
  std::sort(ranges.begin(), ranges.end());
  return ranges;
}

TEST(ThreadPool, EveryIndexOnceInTheFixedSplit) {
  for (int threads : {1, 2, 3, 4, 7}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 2, 3, 5, 8, 64, 1001}) {
      for (int64_t grain : {1, 3, 100}) {
        for (int rep = 0; rep < 20; ++rep) {
          std::vector<int> hits;
          const auto ranges = ranges_of(pool, n, grain, hits);
          SCOPED_TRACE(testing::Message() << "threads " << threads << " n " << n << " grain " << grain);
          ASSERT_TRUE(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }));
          const int64_t chunks = std::min<int64_t>(threads, (n + grain - 1) / grain);
          ASSERT_EQ(static_cast<int64_t>(ranges.size()), chunks);
          for (int64_t c = 0; c < chunks; ++c) ASSERT_EQ(ranges[c], Range(n * c / chunks, n * (c + 1) / chunks));
        }
      }
    }
  }
}

TEST(ThreadPool, NestedLoopsRunInlineOnTheirThread) {
  ThreadPool pool(3);
  std::atomic<int> inner_calls{0}, wrong_thread{0};
  std::vector<std::atomic<int>> hits(30 * 40);
  pool.parallel_for(30, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const auto outer = std::this_thread::get_id();
      pool.parallel_for(40, [&](int64_t ib, int64_t ie) {
        ++inner_calls;
        if (std::this_thread::get_id() != outer) ++wrong_thread;
        for (int64_t j = ib; j < ie; ++j) ++hits[static_cast<size_t>(i * 40 + j)];
      });
    }
  });
  EXPECT_EQ(inner_calls.load(), 30);  // one inline call per outer index
  EXPECT_EQ(wrong_thread.load(), 0);
  for (auto& h : hits) ASSERT_EQ(h.load(), 1);
}

TEST(ThreadPool, CallersOnSeveralThreadsShareOnePool) {
  ThreadPool pool(2);
  constexpr int kCallers = 3, kLoops = 300;
  std::vector<std::thread> callers;
  std::atomic<int> bad{0};
  for (int t = 0; t < kCallers; ++t)
    callers.emplace_back([&, t] {
      for (int loop = 0; loop < kLoops; ++loop) {
        const int64_t n = 1 + (t * 37 + loop * 11) % 97;
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        pool.parallel_for(n, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) ++hits[static_cast<size_t>(i)];
        });
        for (auto& h : hits)
          if (h.load() != 1) ++bad;
      }
    });
  for (auto& c : callers) c.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST(ThreadPool, LoopsAfterTheWorkersSleptStillComplete) {
  // Workers spin about 100 µs, then sleep on the condition variable: loops
  // spaced wider than that exercise the wake-up path.
  ThreadPool pool(4);
  for (int loop = 0; loop < 5; ++loop) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::vector<int> hits;
    const auto ranges = ranges_of(pool, 100, 1, hits);
    ASSERT_EQ(ranges.size(), 4u);
    ASSERT_TRUE(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }));
  }
}

TEST(ThreadPool, AThrowingChunkIsRethrownAfterEveryChunkEnded) {
  ThreadPool pool(3);
  for (int64_t bad : {0, 2}) {  // the caller's chunk, a worker's
    std::atomic<int> ended{0};
    bool caught = false;
    try {
      pool.parallel_for(3, [&](int64_t b, int64_t) {
        if (b == bad) throw std::runtime_error("chunk failed");
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        ++ended;
      });
    } catch (const std::runtime_error& e) {
      caught = std::string(e.what()) == "chunk failed";
    }
    EXPECT_TRUE(caught) << "chunk " << bad;
    EXPECT_EQ(ended.load(), 2) << "chunk " << bad;  // the others finished before the throw reached here
    std::vector<int> hits;  // and the pool still works
    EXPECT_EQ(ranges_of(pool, 9, 1, hits).size(), 3u);
  }
}

}  // namespace
}  // namespace qtk::rt
