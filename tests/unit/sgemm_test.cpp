// sgemm against a naive double-precision triple loop, on every micro-kernel
// path this CPU has, serial and threaded.
#include "runtime/kernels/ref/sgemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "runtime/thread_pool.h"

namespace {

using qtk::rt::ThreadPool;
using qtk::rt::ref::sgemm;
using qtk::rt::ref::SgemmPath;

struct Case {
  int64_t m, n, k;
  bool ta, tb;
  float alpha, beta;
  int64_t pad = 0;  // extra leading-dimension slack, to test lda/ldb/ldc > width
};

std::string describe(const Case& c, SgemmPath p, bool threaded, uint32_t seed) {
  return "m=" + std::to_string(c.m) + " n=" + std::to_string(c.n) + " k=" + std::to_string(c.k) +
         " ta=" + std::to_string(c.ta) + " tb=" + std::to_string(c.tb) + " alpha=" + std::to_string(c.alpha) +
         " beta=" + std::to_string(c.beta) + " pad=" + std::to_string(c.pad) + " path=" +
         qtk::rt::ref::sgemm_path_name(p) + " threaded=" + std::to_string(threaded) + " seed=" + std::to_string(seed);
}

// Runs one case and compares every element with a double-precision reference,
// to 1e-4 of the magnitude sum that feeds it (a relative bound that holds for
// cancelling sums too).
// prepacked: hand A and B over through sgemm_pack_a / sgemm_pack_b.
void check_case(const Case& c, SgemmPath path, ThreadPool* pool, uint32_t seed, bool prepacked = false) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  const int64_t a_rows = c.ta ? c.k : c.m, a_cols = c.ta ? c.m : c.k;
  const int64_t b_rows = c.tb ? c.n : c.k, b_cols = c.tb ? c.k : c.n;
  const int64_t lda = a_cols + c.pad, ldb = b_cols + c.pad, ldc = c.n + c.pad;
  std::vector<float> a(a_rows * lda), b(b_rows * ldb), cmat(c.m * ldc);
  for (auto& v : a) v = dist(rng);
  for (auto& v : b) v = dist(rng);
  for (auto& v : cmat) v = dist(rng);
  if (c.beta == 0.f)  // BLAS convention: C is not read, so NaNs must not leak.
    for (auto& v : cmat) v = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> c0 = cmat;

  if (!prepacked) {
    sgemm(c.ta, c.tb, c.m, c.n, c.k, c.alpha, a.data(), lda, b.data(), ldb, c.beta, cmat.data(), ldc, pool, path);
  } else {
    qtk::rt::ref::AlignedFloats packed_b, packed_a;
    float* pb = packed_b.get(qtk::rt::ref::sgemm_packed_b_floats(c.k, c.n));
    float* pa = packed_a.get(qtk::rt::ref::sgemm_packed_a_floats(c.m, c.k));
    ASSERT_TRUE(pb != nullptr && pa != nullptr);
    qtk::rt::ref::sgemm_pack_b(c.tb, c.k, c.n, b.data(), ldb, pb);
    qtk::rt::ref::sgemm_pack_a(c.ta, c.m, c.k, a.data(), lda, pa);
    qtk::rt::ref::sgemm_packed(c.m, c.n, c.k, c.alpha, pa, pb, c.beta, cmat.data(), ldc, pool, path);
  }

  const std::string what = describe(c, path, pool != nullptr, seed) + (prepacked ? " prepacked" : "");
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = 0; j < c.n; ++j) {
      double sum = 0, mag = 0;
      for (int64_t p = 0; p < c.k; ++p) {
        const double av = c.ta ? a[p * lda + i] : a[i * lda + p];
        const double bv = c.tb ? b[j * ldb + p] : b[p * ldb + j];
        sum += av * bv;
        mag += std::fabs(av * bv);
      }
      double want = c.alpha * sum;
      mag = std::fabs(c.alpha) * mag;
      if (c.beta != 0.f) {
        want += c.beta * c0[i * ldc + j];
        mag += std::fabs(c.beta * c0[i * ldc + j]);
      }
      const double got = cmat[i * ldc + j];
      ASSERT_LE(std::fabs(got - want), 1e-4 * (mag + 1e-3))
          << what << " at (" << i << "," << j << "): got " << got << ", want " << want;
    }
  }
  // The slack past each row of C must be untouched.
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = c.n; j < ldc; ++j) {
      const float want = c0[i * ldc + j], got = cmat[i * ldc + j];
      ASSERT_TRUE(got == want || (std::isnan(got) && std::isnan(want))) << what << ": wrote past column n";
    }
}

std::vector<SgemmPath> paths() {
  std::vector<SgemmPath> p = {SgemmPath::kScalar};
  if (qtk::rt::ref::sgemm_avx2_supported()) p.push_back(SgemmPath::kAvx2);
  return p;
}

TEST(Sgemm, SmallAndOddShapesAllTransposes) {
  const int64_t sizes[] = {1, 2, 5, 6, 7, 13, 16, 17, 33};
  uint32_t seed = 1;
  for (SgemmPath path : paths())
    for (int64_t m : sizes)
      for (int64_t n : {1, 3, 16, 17, 31})
        for (int64_t k : {1, 4, 19})
          for (int t = 0; t < 4; ++t)
            check_case({m, n, k, (t & 1) != 0, (t & 2) != 0, 1.f, 0.f}, path, nullptr, seed++);
}

TEST(Sgemm, AlphaBetaAndLeadingDimensions) {
  const Case cases[] = {
      {7, 9, 5, false, false, 2.5f, 0.f, 3},   {7, 9, 5, false, true, -1.f, 1.f, 1},
      {12, 20, 33, true, false, 0.5f, -2.f, 4}, {1, 40, 7, true, true, 1.f, 0.25f, 2},
      {30, 1, 64, false, false, 1.f, 1.f, 5},   {6, 16, 0, false, false, 1.f, 0.5f, 0},
      {5, 5, 5, false, false, 0.f, 2.f, 1},     {5, 5, 5, false, false, 0.f, 0.f, 1},
  };
  uint32_t seed = 100;
  for (SgemmPath path : paths())
    for (const Case& c : cases) check_case(c, path, nullptr, seed++);
}

// Shapes past the cache block sizes (K > KC, M > MC, N > NC) so every
// blocking loop runs more than once, including the beta=1 accumulation.
TEST(Sgemm, CrossesCacheBlocks) {
  const Case cases[] = {
      {150, 40, 300, false, false, 1.f, 0.f},
      {151, 37, 513, true, true, 0.75f, 0.5f},
      {3, 4100, 20, false, true, 1.f, 1.f},
      {8, 4099, 260, true, false, -1.f, 0.f},
  };
  uint32_t seed = 200;
  for (SgemmPath path : paths())
    for (const Case& c : cases) check_case(c, path, nullptr, seed++);
}

// Big enough to be split across threads, along N (n >= m) and along M.
TEST(Sgemm, ThreadedMatchesReference) {
  ThreadPool pool(3);
  const Case cases[] = {
      {40, 301, 90, false, false, 1.f, 0.f, 1},
      {301, 40, 90, true, true, 1.f, 1.f, 2},
      {97, 129, 257, false, true, 2.f, -1.f, 0},
      {129, 97, 257, true, false, 1.f, 0.f, 0},
      // Few rows (a batch-1 fully connected layer): the unpacked streaming path.
      {1, 3000, 301, false, true, 1.f, 1.f, 3},
      {3, 2000, 200, true, false, -0.5f, 0.f, 1},
      {4, 1500, 333, false, false, 1.f, 2.f, 0},
  };
  uint32_t seed = 300;
  for (SgemmPath path : paths())
    for (const Case& c : cases) check_case(c, path, &pool, seed++);
}

// A and B handed over packed (Conv's route: weights packed once, images
// written straight into B's layout).
TEST(Sgemm, PrepackedOperandsMatchReference) {
  ThreadPool pool(2);
  const Case cases[] = {
      {1, 1, 1, false, false, 1.f, 0.f},         {7, 33, 5, true, true, 1.5f, 0.f, 2},
      {16, 784, 144, false, false, 1.f, 1.f},     {13, 50, 300, false, true, -1.f, 0.5f, 1},
      {200, 17, 40, true, false, 1.f, 0.f},       {6, 16, 0, false, false, 1.f, 0.5f},
      {301, 40, 290, false, false, 1.f, 0.f},     {151, 37, 513, true, true, 0.75f, 0.5f, 1},
  };
  uint32_t seed = 400;
  for (SgemmPath path : paths())
    for (const Case& c : cases)
      for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) check_case(c, path, p, seed++, true);
}

TEST(Sgemm, ScalarAndAvx2AgreeToRounding) {
  if (!qtk::rt::ref::sgemm_avx2_supported()) GTEST_SKIP() << "CPU has no AVX2+FMA";
  const int64_t m = 23, n = 45, k = 67;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> a(m * k), b(k * n), c1(m * n), c2(m * n);
  for (auto& v : a) v = dist(rng);
  for (auto& v : b) v = dist(rng);
  sgemm(false, false, m, n, k, 1.f, a.data(), k, b.data(), n, 0.f, c1.data(), n, nullptr, SgemmPath::kScalar);
  sgemm(false, false, m, n, k, 1.f, a.data(), k, b.data(), n, 0.f, c2.data(), n, nullptr, SgemmPath::kAvx2);
  for (int64_t i = 0; i < m * n; ++i) EXPECT_NEAR(c1[i], c2[i], 1e-4f * (1.f + std::fabs(c1[i]))) << i;
}

TEST(Sgemm, AutoPathNamesAConcretePath) {
  const SgemmPath p = qtk::rt::ref::sgemm_auto_path();
  EXPECT_NE(p, SgemmPath::kAuto);
  if (!qtk::rt::ref::sgemm_avx2_supported()) {
    EXPECT_EQ(p, SgemmPath::kScalar);
  }
}

}  // namespace
