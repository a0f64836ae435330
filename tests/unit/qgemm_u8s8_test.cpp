// The AVX2 tier's u8 x s8 GEMM path (qgemm_u8s8.h) against a plain int64
// loop: constant B whose k pairs fit vpmaddubsw (7-bit, 4-bit, pairs at the
// bound; int8 with zero point 0 or uint8 with 128) read as signed quads, and
// B that misses the bound by one pair, or has another zero point, falling
// back to the 8-bit panels. Random shapes (1 row, tile and panel edges, odd
// k), uint8 and int8 A with random zero points, B given row-major or
// transposed, int32 and code outputs with biases, one and two threads, every
// path the CPU has (kAvx2 runs the new kernel). Bit-exact throughout.
#include <gtest/gtest.h>

#include "core/cpu_features.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "quant/schemes/fixed_point.h"
#include "runtime/kernels/x86/qgemm.h"
#include "runtime/kernels/x86/qgemm_u8s8.h"
#include "runtime/thread_pool.h"

namespace qtk::rt::x86 {
namespace {

enum class Kind { k7Bit, k4Bit, kPairsAtTheBound, kOnePairOver, kOtherZeroPoint };

const char* name(Kind w) {
  switch (w) {
    case Kind::k7Bit: return "7-bit";
    case Kind::k4Bit: return "4-bit";
    case Kind::kPairsAtTheBound: return "pairs at the bound";
    case Kind::kOnePairOver: return "one pair over the bound";
    case Kind::kOtherZeroPoint: return "another zero point";
  }
  return "?";
}

bool u8s8_enabled() { return qgemm_avx2_supported() && !env_flag_set("QTK_QGEMM_NO_U8S8"); }

std::vector<QgemmPath> paths() {
  std::vector<QgemmPath> p{QgemmPath::kScalar};
  if (qgemm_avx2_supported()) p.push_back(QgemmPath::kAvx2);
  if (qgemm_avx512_vnni_supported()) p.push_back(QgemmPath::kAvx512Vnni);
  return p;
}

// B's signed values (code - shift) [k x n], row-major, of the given kind.
std::vector<int32_t> make_b(Kind kind, int64_t k, int64_t n, std::mt19937& rng) {
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::vector<int32_t> v(static_cast<size_t>(k * n), 0);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t kk = 0; kk < k; kk += 2) {
      int b0 = 0, b1 = 0;
      if (kind == Kind::k4Bit) {
        b0 = uniform(-8, 7), b1 = uniform(-8, 7);
      } else if (kind == Kind::kPairsAtTheBound || kind == Kind::kOnePairOver) {
        const int s = uniform(0, 128);
        b0 = uniform(0, 1) ? s : -s;
        b1 = uniform(0, 1) ? 128 - s : -(128 - s);
        if (b0 == 128) b0 = -128;
        if (b1 == 128) b1 = -128;
      } else {
        b0 = uniform(-64, 63), b1 = uniform(-64, 63);
      }
      v[static_cast<size_t>(kk * n + j)] = b0;
      if (kk + 1 < k) v[static_cast<size_t>((kk + 1) * n + j)] = b1;
    }
  if (kind == Kind::kOnePairOver && k >= 2) {
    const int64_t j = uniform(0, static_cast<int>(n - 1)), kk = 2 * uniform(0, static_cast<int>(k / 2 - 1));
    v[static_cast<size_t>(kk * n + j)] = uniform(0, 1) ? 65 : -65;
    v[static_cast<size_t>((kk + 1) * n + j)] = uniform(0, 1) ? 64 : -64;
  }
  return v;
}

void run_case(uint32_t seed, int iter, ThreadPool& pool2) {
  std::mt19937 rng(seed * 7919u + static_cast<uint32_t>(iter));
  auto pick = [&](std::vector<int64_t> v) { return v[rng() % v.size()]; };
  const Kind kind = static_cast<Kind>(rng() % 5);
  const int64_t m = pick({1, 2, 5, 6, 7, 13, 31, 64}), n = pick({1, 15, 16, 17, 33, 100}),
                k = pick({1, 2, 3, 4, 5, 7, 31, 64, 257});
  const bool a_signed = rng() % 2, b_signed = rng() % 2, transposed = rng() % 2, int32_out = rng() % 3 == 0;
  const bool y_signed = rng() % 2, extremes = rng() % 2;
  const int32_t shift = b_signed ? 0 : 128;
  const auto values = make_b(kind, k, n, rng);
  std::vector<uint8_t> b(values.size());  // codes, row-major or transposed
  for (int64_t kk = 0; kk < k; ++kk)
    for (int64_t j = 0; j < n; ++j)
      b[static_cast<size_t>(transposed ? j * k + kk : kk * n + j)] =
          static_cast<uint8_t>(values[static_cast<size_t>(kk * n + j)] + shift);
  std::vector<int32_t> b_zp(rng() % 2 ? static_cast<size_t>(n) : 1, shift);
  if (kind == Kind::kOtherZeroPoint) b_zp[rng() % b_zp.size()] = shift + (rng() % 2 ? 1 : -1);
  std::vector<uint8_t> a(static_cast<size_t>(m * k));
  for (auto& v : a) {
    const uint32_t r = rng();
    const int u = extremes && r % 4 ? (r % 8 < 4 ? 255 : 0) : static_cast<int>(r >> 8) & 255;
    v = static_cast<uint8_t>(a_signed ? u - 128 : u);
  }
  const int32_t a_zp = a_signed ? static_cast<int32_t>(rng() % 256) - 128 : static_cast<int32_t>(rng() % 256);
  QgemmPackedB packed;
  qgemm_pack_b({b.data(), b_signed, transposed ? 1 : n, transposed ? k : 1}, k, n, b_zp, packed);
  const bool fits = kind != Kind::kOtherZeroPoint && (kind != Kind::kOnePairOver || k < 2);
  SCOPED_TRACE("seed " + std::to_string(seed) + " iter " + std::to_string(iter) + " B " + name(kind) +
               (b_signed ? " int8" : " uint8") + (transposed ? " transposed" : "") + " M=" + std::to_string(m) +
               " N=" + std::to_string(n) + " K=" + std::to_string(k) + (a_signed ? " int8 A" : " uint8 A") +
               " a_zp " + std::to_string(a_zp) + (extremes ? " extreme A" : "") + (int32_out ? " int32 out" : ""));
  EXPECT_EQ(packed.u8s8, u8s8_enabled() && fits);  // (not fatal: the outputs are checked too)

  // Bias: none, small (saturating, folds into the column corrections),
  // anywhere in int32 wrapping (QGemm's C: folds too), or anywhere in int32
  // saturating (the int64 sum clamps: must not fold).
  enum BiasMode { kNoBias, kSmall, kWrapping, kSaturating };
  const auto bias_mode = static_cast<BiasMode>(rng() % 4);
  const int64_t padded_n = (n + kQgemmNR - 1) / kQgemmNR * kQgemmNR;
  std::vector<int32_t> bias(static_cast<size_t>(padded_n));
  // The large ones mostly near the ends of int32, where acc + bias leaves it.
  for (auto& x : bias)
    x = bias_mode == kSmall ? static_cast<int32_t>(rng() % 200001) - 100000
        : rng() % 4 == 0    ? static_cast<int32_t>(rng())
        : rng() % 2         ? INT32_MAX - static_cast<int32_t>(rng() % 2000000)
                            : INT32_MIN + static_cast<int32_t>(rng() % 2000000);
  std::vector<quant::FixedPointMultiplier> mult(static_cast<size_t>(n));
  for (auto& f : mult) f = quant::quantize_multiplier(std::exp2(std::uniform_real_distribution<double>(-20, 1)(rng)));
  const int32_t y_zp = y_signed ? static_cast<int32_t>(rng() % 256) - 128 : static_cast<int32_t>(rng() % 256);
  int32_t y_min = y_signed ? -128 : 0, y_max = y_signed ? 127 : 255;
  const bool narrow_range = rng() % 3 == 0;  // a fused Relu / Clip: the output stage clamps itself
  if (narrow_range) {
    y_min = std::max(y_min, y_zp - static_cast<int32_t>(rng() % 40));
    y_max = std::min(y_max, y_zp + 1 + static_cast<int32_t>(rng() % 60));
  }
  const QgemmRequant requant = qgemm_make_requant(mult, n, y_zp, y_min, y_max, QgemmRequantFor::kColumns);
  const char* bias_name[] = {"none", "small", "wrapping", "saturating"};
  SCOPED_TRACE(std::string("bias ") + bias_name[bias_mode] + " codes [" + std::to_string(y_min) + ", " +
               std::to_string(y_max) + "] zp " + std::to_string(y_zp));
  QgemmOutput out;
  out.kind = int32_out ? QgemmOutputKind::kInt32 : QgemmOutputKind::kCodes;
  out.bias = bias_mode == kNoBias ? nullptr : bias.data();
  out.bias_saturates = bias_mode != kWrapping;
  out.bias_cs = 1;
  out.requant = &requant;
  out.codes_signed = y_signed;
  out.ldo = n;

  std::vector<int32_t> want(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      int64_t acc = 0;
      const int32_t zb = b_zp[b_zp.size() > 1 ? static_cast<size_t>(j) : 0];
      for (int64_t kk = 0; kk < k; ++kk) {
        const int32_t av = a_signed ? static_cast<int8_t>(a[static_cast<size_t>(i * k + kk)]) : a[static_cast<size_t>(i * k + kk)];
        acc += static_cast<int64_t>(av - a_zp) * (values[static_cast<size_t>(kk * n + j)] + shift - zb);
      }
      const int64_t bj = bias_mode == kNoBias ? 0 : bias[static_cast<size_t>(j)];
      const int32_t v = bias_mode == kWrapping
                            ? static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(bj))
                            : static_cast<int32_t>(std::clamp<int64_t>(acc + bj, INT32_MIN, INT32_MAX));
      want[static_cast<size_t>(i * n + j)] =
          int32_out ? v : quant::requantize_to_code(v, mult[static_cast<size_t>(j)], y_zp, y_min, y_max);
    }
  for (QgemmPath p : paths())
    for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &pool2}) {
      std::vector<uint8_t> y(static_cast<size_t>(m * n) * (int32_out ? 4 : 1), 0xCD);
      out.out = y.data();
      qgemm(m, {a.data(), a_signed, k, 1}, a_zp, packed, out, pool, p);
      for (int64_t i = 0; i < m * n; ++i) {
        const int32_t got = int32_out ? reinterpret_cast<const int32_t*>(y.data())[i]
                                      : (y_signed ? static_cast<int8_t>(y[static_cast<size_t>(i)]) : y[static_cast<size_t>(i)]);
        ASSERT_EQ(got, want[static_cast<size_t>(i)])
            << "element " << i << " path " << qgemm_path_name(p) << (pool ? " 2 threads" : " 1 thread");
      }
    }
  // B's codes back from the layout the AVX2 tier holds.
  std::vector<uint8_t> back(b.size());
  qgemm_unpack_narrow_b(packed, transposed, back.data());
  EXPECT_EQ(back, b);
}

// Split by columns only (a tile or three of A against many panels), the
// threads take each other's last panels once their own are done: every
// panel exactly once, also over two A blocks (K of 16385) and on 2-4 threads.
TEST(QgemmU8s8, ColumnSplitsWithTakenPanelsMatchTheScalarPath) {
  if (!qgemm_avx2_supported()) GTEST_SKIP() << "no AVX2: no u8 x s8 path";
  ThreadPool pool2(2), pool3(3), pool4(4);
  struct Shape {
    int64_t m, n, k;
    std::vector<ThreadPool*> pools;
  };
  const Shape shapes[] = {{13, 160, 16385, {&pool2}}, {5, 400, 1100, {&pool2, &pool3, &pool4}}};
  std::mt19937 rng(5);
  for (const Shape& sh : shapes) {
    std::vector<uint8_t> a(static_cast<size_t>(sh.m * sh.k)), b(static_cast<size_t>(sh.k * sh.n));
    for (auto& v : a) v = static_cast<uint8_t>(rng());
    for (auto& v : b) v = static_cast<uint8_t>(static_cast<int8_t>(rng()) >> 1);  // 7-bit: the u8 x s8 path
    QgemmPackedB packed;
    qgemm_pack_b({b.data(), true, sh.n, 1}, sh.k, sh.n, {0}, packed);
    if (u8s8_enabled()) ASSERT_TRUE(packed.u8s8);
    QgemmOutput out;
    out.kind = QgemmOutputKind::kInt32;
    out.ldo = sh.n;
    std::vector<int32_t> want(static_cast<size_t>(sh.m * sh.n));
    out.out = want.data();
    qgemm(sh.m, {a.data(), false, sh.k, 1}, 3, packed, out, nullptr, QgemmPath::kScalar);
    for (ThreadPool* pool : sh.pools) {
      SCOPED_TRACE("M=" + std::to_string(sh.m) + " N=" + std::to_string(sh.n) + " K=" + std::to_string(sh.k) +
                   " threads " + std::to_string(pool->size()));
      const auto grid = detail::qgemm_choose_grid((sh.m + kQgemmMR - 1) / kQgemmMR, packed.panels, pool->size());
      ASSERT_EQ(grid.tm, 1);  // columns only: the panels are shared out
      ASSERT_EQ(grid.tn, pool->size());
      for (int rep = 0; rep < 5; ++rep) {  // which thread takes which panel varies run to run
        std::vector<int32_t> got(want.size(), 0x5A5A5A5A);
        out.out = got.data();
        qgemm(sh.m, {a.data(), false, sh.k, 1}, 3, packed, out, pool, QgemmPath::kAvx2);
        ASSERT_EQ(got, want) << "repetition " << rep;
      }
    }
  }
}

TEST(QgemmU8s8, RandomShapesMatchPlainLoop) {
  ThreadPool pool2(2);
  for (int iter = 0; iter < 300; ++iter) {
    run_case(99, iter, pool2);
    if (HasFatalFailure()) return;
  }
}

// A wrapping bias that puts acc + bias at the top of int32, a multiplier just
// below 1 and a high zero point: the rescaled value plus the zero point leaves
// int32, so the output stage must clamp before adding it (the packs alone
// would see a wrapped, negative sum).
TEST(QgemmU8s8, WrappingBiasAtTheTopOfInt32GivesTheTopCode) {
  const int64_t m = 7, n = 17, k = 8;
  std::vector<uint8_t> b(static_cast<size_t>(k * n));
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(static_cast<int8_t>(static_cast<int>(i % 64) - 32));
  QgemmPackedB packed;
  qgemm_pack_b({b.data(), true, n, 1}, k, n, {0}, packed);
  if (u8s8_enabled()) ASSERT_TRUE(packed.u8s8);
  const int32_t a_zp = 77;
  std::vector<uint8_t> a(static_cast<size_t>(m * k), static_cast<uint8_t>(a_zp));  // acc = 0
  std::vector<int32_t> bias(32, INT32_MAX - 3);
  const std::vector<quant::FixedPointMultiplier> mult(static_cast<size_t>(n), quant::quantize_multiplier(0.99999999));
  const int32_t y_zp = 250;
  const QgemmRequant requant = qgemm_make_requant(mult, n, y_zp, 0, 255, QgemmRequantFor::kColumns);
  const int32_t want = quant::requantize_to_code(INT32_MAX - 3, mult[0], y_zp, 0, 255);
  ASSERT_EQ(want, 255);
  QgemmOutput out;
  out.kind = QgemmOutputKind::kCodes;
  out.bias = bias.data();
  out.bias_cs = 1;
  out.bias_saturates = false;
  out.requant = &requant;
  out.ldo = n;
  for (QgemmPath p : paths()) {
    std::vector<uint8_t> y(static_cast<size_t>(m * n), 0);
    out.out = y.data();
    qgemm(m, {a.data(), false, k, 1}, a_zp, packed, out, nullptr, p);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y[i], want) << "element " << i << " path " << qgemm_path_name(p);
  }
}

// Large enough for two threads (9M multiply-adds), pairs at the bound and A at its extremes.
TEST(QgemmU8s8, PairsAtTheBoundWithExtremeActivations) {
  const int64_t m = 301, n = 90, k = 333;
  for (const bool a_signed : {false, true}) {
    SCOPED_TRACE(a_signed ? "int8 A" : "uint8 A");
    std::vector<uint8_t> b(static_cast<size_t>(k * n));
    for (int64_t kk = 0; kk < k; ++kk)
      for (int64_t j = 0; j < n; ++j) b[static_cast<size_t>(kk * n + j)] = static_cast<uint8_t>((kk + j) % 4 < 2 ? 64 : -64);
    std::vector<uint8_t> a(static_cast<size_t>(m * k));
    for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>((i / 7) % 2 ? 255 : 0) ^ (a_signed ? 0x80 : 0);
    const int32_t a_zp = a_signed ? -5 : 9;
    QgemmPackedB packed;
    qgemm_pack_b({b.data(), true, n, 1}, k, n, {0}, packed);
    if (u8s8_enabled()) ASSERT_TRUE(packed.u8s8);
    QgemmOutput out;
    out.ldo = n;
    std::vector<int32_t> want(static_cast<size_t>(m * n)), got(want.size());
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        int64_t acc = 0;
        for (int64_t kk = 0; kk < k; ++kk)
          acc += static_cast<int64_t>((a_signed ? static_cast<int8_t>(a[static_cast<size_t>(i * k + kk)])
                                                : a[static_cast<size_t>(i * k + kk)]) - a_zp) *
                 static_cast<int8_t>(b[static_cast<size_t>(kk * n + j)]);
        want[static_cast<size_t>(i * n + j)] = static_cast<int32_t>(acc);
      }
    ThreadPool pool2(2);
    for (QgemmPath p : paths()) {
      std::fill(got.begin(), got.end(), 0);
      out.out = got.data();
      qgemm(m, {a.data(), a_signed, k, 1}, a_zp, packed, out, &pool2, p);
      ASSERT_EQ(got, want) << qgemm_path_name(p);
    }
  }
}

}  // namespace
}  // namespace qtk::rt::x86
