// sgemm (plain and with pre-packed operands) and Conv's implicit GEMM against
// a naive double-precision triple loop, on every micro-kernel path this CPU
// has, serial and threaded.
#include "runtime/kernels/ref/sgemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "runtime/kernels/x86/sconv_implicit_gemm.h"
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
// How the operands are handed over.
enum class Packing {
  kNone,  // sgemm on plain A and B
  kBoth,  // sgemm_packed: A and B through sgemm_pack_a / sgemm_pack_b
  kB,     // sgemm_prepacked_b: plain A, B through sgemm_pack_b (constant weights)
};

const char* packing_name(Packing p) {
  switch (p) {
    case Packing::kNone: return "";
    case Packing::kBoth: return " prepacked";
    case Packing::kB: return " prepacked_b";
  }
  return "?";
}

void check_case(const Case& c, SgemmPath path, ThreadPool* pool, uint32_t seed, Packing packing = Packing::kNone) {
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

  if (packing == Packing::kNone) {
    sgemm(c.ta, c.tb, c.m, c.n, c.k, c.alpha, a.data(), lda, b.data(), ldb, c.beta, cmat.data(), ldc, pool, path);
  } else {
    // Packed layouts depend on the path: pack for the one that runs.
    qtk::rt::ref::AlignedFloats packed_b, packed_a;
    float* pb = packed_b.get(qtk::rt::ref::sgemm_packed_b_floats(c.k, c.n, path));
    ASSERT_TRUE(pb != nullptr);
    qtk::rt::ref::sgemm_pack_b(c.tb, c.k, c.n, b.data(), ldb, pb, path);
    if (packing == Packing::kB) {
      qtk::rt::ref::sgemm_prepacked_b(c.ta, c.m, c.n, c.k, c.alpha, a.data(), lda, pb, c.beta, cmat.data(), ldc,
                                      pool, path);
    } else {
      float* pa = packed_a.get(qtk::rt::ref::sgemm_packed_a_floats(c.m, c.k, path));
      ASSERT_TRUE(pa != nullptr);
      qtk::rt::ref::sgemm_pack_a(c.ta, c.m, c.k, a.data(), lda, pa, path);
      qtk::rt::ref::sgemm_packed(c.m, c.n, c.k, c.alpha, pa, pb, c.beta, cmat.data(), ldc, pool, path);
    }
  }

  const std::string what = describe(c, path, pool != nullptr, seed) + packing_name(packing);
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

// Every path this CPU runs (a path it lacks would only repeat a lower one).
std::vector<SgemmPath> paths() {
  std::vector<SgemmPath> p = {SgemmPath::kScalar};
  if (qtk::rt::ref::sgemm_avx2_supported()) p.push_back(SgemmPath::kAvx2);
  if (qtk::rt::ref::sgemm_avx512_supported()) p.push_back(SgemmPath::kAvx512);
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
      for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool})
        check_case(c, path, p, seed++, Packing::kBoth);
}

// Plain A with B packed once (Gemm / MatMul weights), on odd shapes around
// both tile shapes (6x16 and 8x32), across K blocks, serial and threaded.
TEST(Sgemm, PrepackedBMatchesReference) {
  ThreadPool pool(2);
  std::mt19937 shapes(500);
  std::vector<Case> cases = {
      {64, 256, 784, false, true, 1.f, 1.f},   // the MLP's first layer at batch 64, bias as C
      {5, 10, 128, false, true, 1.f, 0.f},     {9, 33, 1, true, false, 2.f, 0.f, 3},
      {200, 17, 300, true, true, -0.5f, 0.25f, 1},
      // A few rows (batch 1): the packed slivers read row by row, threaded when large.
      {1, 128, 3136, false, true, 1.f, 1.f},   {1, 300, 2000, false, false, 1.f, 0.f},
      {3, 70, 50, true, false, 0.5f, 0.5f, 2}, {4, 33, 200, false, true, -1.f, 0.f, 1},
  };
  for (int i = 0; i < 8; ++i) {  // random odd shapes
    std::uniform_int_distribution<int64_t> mn(1, 70), kd(1, 300);
    cases.push_back({mn(shapes), mn(shapes), kd(shapes), (i & 1) != 0, (i & 2) != 0, 1.f, i % 3 == 0 ? 0.5f : 0.f,
                     i % 2});
  }
  uint32_t seed = 600;
  for (SgemmPath path : paths())
    for (const Case& c : cases)
      for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) check_case(c, path, p, seed++, Packing::kB);
}

TEST(Sgemm, EveryPathAgreesWithScalarToRounding) {
  const int64_t m = 23, n = 45, k = 67;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> a(m * k), b(k * n), c1(m * n), c2(m * n);
  for (auto& v : a) v = dist(rng);
  for (auto& v : b) v = dist(rng);
  sgemm(false, false, m, n, k, 1.f, a.data(), k, b.data(), n, 0.f, c1.data(), n, nullptr, SgemmPath::kScalar);
  for (SgemmPath path : paths()) {
    sgemm(false, false, m, n, k, 1.f, a.data(), k, b.data(), n, 0.f, c2.data(), n, nullptr, path);
    for (int64_t i = 0; i < m * n; ++i)
      EXPECT_NEAR(c1[i], c2[i], 1e-4f * (1.f + std::fabs(c1[i]))) << qtk::rt::ref::sgemm_path_name(path) << " " << i;
  }
}

TEST(Sgemm, AutoPathNamesAConcretePath) {
  const SgemmPath p = qtk::rt::ref::sgemm_auto_path();
  EXPECT_NE(p, SgemmPath::kAuto);
  if (!qtk::rt::ref::sgemm_avx2_supported()) {
    EXPECT_EQ(p, SgemmPath::kScalar);
  }
  EXPECT_EQ(qtk::rt::ref::sgemm_resolve_path(SgemmPath::kAuto), p);
  // A path the CPU lacks steps down to one it has.
  const SgemmPath r = qtk::rt::ref::sgemm_resolve_path(SgemmPath::kAvx512);
  EXPECT_EQ(r == SgemmPath::kAvx512, qtk::rt::ref::sgemm_avx512_supported());
  if (r == SgemmPath::kAvx2) EXPECT_TRUE(qtk::rt::ref::sgemm_avx2_supported());
  EXPECT_EQ(qtk::rt::ref::sgemm_packed_b_width(r), r == SgemmPath::kAvx512 ? 32 : 16);
}

// ---------------------------------------------------------------------------
// Conv's implicit GEMM (x86/sconv_implicit_gemm.h): out = W * B + bias with
// B(p, j) read at base[(j / NR) * tile_stride + k_off[p] + j % NR].

struct SconvCase {
  int64_t m, n, k;
  bool bias;
  bool packed;       // B in sgemm's packed layout (the im2col route) instead of shifted rows
  int64_t gap = 0;   // > 0: the n columns are a grid of rows of `row` outputs, `gap` dropped positions
  int64_t row = 0;   // between them (Conv's stride-1 grid, stored through runs)
};

void check_sconv(const SconvCase& c, SgemmPath path, ThreadPool* pool, uint32_t seed) {
  namespace x86 = qtk::rt::x86;
  const int64_t nr = x86::sconv_tile(path).nr;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> w(c.m * c.k), bias(c.m);
  for (auto& v : w) v = dist(rng);
  for (auto& v : bias) v = dist(rng);
  // B as a logical K x N matrix, then laid out the way the case reads it.
  std::vector<float> bmat(c.k * c.n);
  for (auto& v : bmat) v = dist(rng);
  std::vector<int64_t> k_off(c.k);
  std::vector<float> base;
  int64_t tile_stride = 0;
  if (c.packed) {
    base.assign(qtk::rt::ref::sgemm_packed_b_floats(c.k, c.n, path), 0.f);
    for (int64_t p = 0; p < c.k; ++p) k_off[p] = p * nr;
    tile_stride = c.k * nr;
    for (int64_t p = 0; p < c.k; ++p)
      for (int64_t j = 0; j < c.n; ++j) base[(j / nr) * tile_stride + k_off[p] + j % nr] = bmat[p * c.n + j];
  } else {
    // Shifted rows: row p starts at a random, unaligned, possibly overlapping offset.
    const int64_t span = c.n + 7;
    std::uniform_int_distribution<int64_t> off(0, c.k * span);
    for (auto& o : k_off) o = off(rng);
    base.assign(c.k * span + c.n + nr, 0.f);  // + slack: reads run up to NR - 1 past a row
    tile_stride = nr;
    // Overlapping rows share floats, so define B by the buffer instead.
    for (auto& v : base) v = dist(rng);
    for (int64_t p = 0; p < c.k; ++p)
      for (int64_t j = 0; j < c.n; ++j) bmat[p * c.n + j] = base[k_off[p] + j];
  }
  std::vector<float> packed_w(x86::sconv_packed_weights_floats(c.m, c.k, path));
  x86::sconv_pack_weights(c.m, c.k, w.data(), packed_w.data(), path);
  // Output column of each product column (-1: dropped), and the runs that say so.
  std::vector<int64_t> out_col(c.n);
  std::vector<x86::SconvRun> runs;
  std::vector<int64_t> tile_runs;
  int64_t out_cols = c.n;
  if (c.gap > 0) {
    std::vector<int64_t> row_off;
    for (int64_t q = 0; q + c.row <= c.n; q += c.row + c.gap) row_off.push_back(q);
    out_cols = static_cast<int64_t>(row_off.size()) * c.row;
    std::fill(out_col.begin(), out_col.end(), -1);
    for (size_t r = 0; r < row_off.size(); ++r)
      for (int64_t i = 0; i < c.row; ++i) out_col[row_off[r] + i] = static_cast<int64_t>(r) * c.row + i;
    x86::sconv_grid_runs(row_off, c.row, c.n, nr, runs, tile_runs);
  } else {
    for (int64_t j = 0; j < c.n; ++j) out_col[j] = j;
  }
  const int64_t ldo = out_cols + 3;
  std::vector<float> out(c.m * ldo, std::numeric_limits<float>::quiet_NaN());
  x86::SconvOut dst{out.data(), ldo};
  if (c.gap > 0) dst = {out.data(), ldo, runs.data(), tile_runs.data()};
  x86::sconv_implicit_gemm(c.m, c.n, c.k, packed_w.data(), {base.data(), k_off.data(), tile_stride},
                           c.bias ? bias.data() : nullptr, dst, pool, path);
  const std::string what = "sconv m=" + std::to_string(c.m) + " n=" + std::to_string(c.n) + " k=" +
                           std::to_string(c.k) + " bias=" + std::to_string(c.bias) + " packed=" +
                           std::to_string(c.packed) + " row=" + std::to_string(c.row) + " gap=" +
                           std::to_string(c.gap) + " path=" + qtk::rt::ref::sgemm_path_name(path) +
                           " threaded=" + std::to_string(pool != nullptr) + " seed=" + std::to_string(seed);
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = 0; j < c.n; ++j) {
      if (out_col[j] < 0) continue;
      double want = c.bias ? bias[i] : 0.0, mag = std::fabs(want);
      for (int64_t p = 0; p < c.k; ++p) {
        want += double(w[i * c.k + p]) * bmat[p * c.n + j];
        mag += std::fabs(double(w[i * c.k + p]) * bmat[p * c.n + j]);
      }
      const double got = out[i * ldo + out_col[j]];
      ASSERT_LE(std::fabs(got - want), 1e-4 * (mag + 1e-3))
          << what << " at (" << i << "," << j << "): got " << got << ", want " << want;
    }
    for (int64_t j = out_cols; j < ldo; ++j)
      ASSERT_TRUE(std::isnan(out[i * ldo + j])) << what << ": wrote past the last output column";
  }
}

TEST(SconvImplicitGemm, MatchesReferenceOnOddShapesEveryPath) {
  ThreadPool pool(2);
  std::vector<SconvCase> cases = {
      {16, 838, 144, true, false, 2, 28},  // ResNet-20 stage 1 on its padded grid (rows of 28, 2 dropped)
      {64, 61, 576, true, false, 2, 7},    // stage 3: K split in blocks, rows shorter than a tile
      {16, 838, 144, true, false},         // the same product stored plain
      {32, 49, 288, false, true},   // a strided layer through im2col
      {1, 1, 1, false, false},      {7, 33, 9, true, true},
      {0, 5, 3, true, false},       {3, 5, 0, true, false},  // empty M; no taps (the bias alone)
  };
  std::mt19937 shapes(700);
  for (int i = 0; i < 10; ++i) {
    std::uniform_int_distribution<int64_t> m(1, 40), n(1, 100), k(1, 600);
    cases.push_back({m(shapes), n(shapes), k(shapes), i % 2 == 0, i % 3 == 0});
    if (i % 2 == 1) {  // through runs: rows of 1..40 outputs, 1..3 dropped between
      cases.back().row = std::uniform_int_distribution<int64_t>(1, 40)(shapes);
      cases.back().gap = std::uniform_int_distribution<int64_t>(1, 3)(shapes);
      cases.back().n = std::max(cases.back().n, cases.back().row);
    }
  }
  uint32_t seed = 800;
  for (SgemmPath path : paths())
    for (const SconvCase& c : cases)
      for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) check_sconv(c, path, p, seed++);
}

}  // namespace
