// The int8 GEMM (src/runtime/kernels/x86/qgemm.h, qgemm_vnni.h) against a plain int64 loop
// and quant::requantize_to_code: random shapes (1, odd, tile edges), uint8 and
// int8 operands, random zero points, per-tensor and per-channel multipliers,
// narrow clamps, saturating and wrapping biases, every output kind, the
// scalar, AVX2 and AVX-512 VNNI paths (those the CPU has), one and two
// threads. Bit-exact throughout.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "quant/schemes/fixed_point.h"
#include "runtime/kernels/x86/qgemm.h"
#include "runtime/kernels/x86/qgemm_conv.h"
#include "runtime/thread_pool.h"
#include "residual_join.h"

namespace qtk::rt::x86 {
namespace {

struct Case {
  int64_t m, n, k;
  bool a_signed, b_signed;
  QgemmOutputKind kind;
  bool channel_is_row;
  bool per_channel;
  int bias_mode;  // 0 none, 1 per channel, 2 full matrix
  bool bias_saturates;
  bool codes_signed;
  std::string describe() const {
    return "M=" + std::to_string(m) + " N=" + std::to_string(n) + " K=" + std::to_string(k) +
           " a_signed=" + std::to_string(a_signed) + " b_signed=" + std::to_string(b_signed) +
           " kind=" + std::to_string(static_cast<int>(kind)) + " by_row=" + std::to_string(channel_is_row) +
           " per_channel=" + std::to_string(per_channel) + " bias_mode=" + std::to_string(bias_mode) +
           " saturate=" + std::to_string(bias_saturates) + " codes_signed=" + std::to_string(codes_signed);
  }
};

std::vector<uint8_t> random_bytes(int64_t n, std::mt19937& rng) {
  std::vector<uint8_t> v(static_cast<size_t>(n));
  std::uniform_int_distribution<int> d(0, 255);
  for (auto& x : v) x = static_cast<uint8_t>(d(rng));
  return v;
}

int32_t code_of(const std::vector<uint8_t>& v, int64_t i, bool is_signed) {
  return is_signed ? static_cast<int8_t>(v[i]) : v[i];
}

int32_t random_zp(bool is_signed, std::mt19937& rng) {
  std::uniform_int_distribution<int> d(is_signed ? -128 : 0, is_signed ? 127 : 255);
  return d(rng);
}

// A real multiplier spread over many binades, so that shifts from 1 to 62
// occur; below_one: all under 1 (the output stage's 32-bit finish).
quant::FixedPointMultiplier random_multiplier(std::mt19937& rng, bool below_one) {
  std::uniform_real_distribution<double> e(-40.0, below_one ? -0.01 : 8.0);
  return quant::quantize_multiplier(std::exp2(e(rng)));
}

void run_case(const Case& c, uint32_t seed, QgemmPath path, ThreadPool* pool) {
  SCOPED_TRACE(c.describe() + " seed=" + std::to_string(seed) + " path=" + qgemm_path_name(path) +
               " threads=" + std::to_string(pool ? pool->size() : 1));
  std::mt19937 rng(seed);
  const auto a = random_bytes(c.m * c.k, rng), b = random_bytes(c.k * c.n, rng);
  const int32_t a_zp = random_zp(c.a_signed, rng);
  const int64_t channels = c.channel_is_row ? c.m : c.n;
  std::vector<int32_t> b_zp(c.channel_is_row ? 1 : static_cast<size_t>(c.n));
  for (auto& z : b_zp) z = random_zp(c.b_signed, rng);

  QgemmPackedB packed;
  qgemm_pack_b({b.data(), c.b_signed, c.n, 1}, c.k, c.n, b_zp, packed);

  // Bias: mostly small, a few near the int32 limits to exercise saturation.
  const int64_t padded_n = (c.n + kQgemmNR - 1) / kQgemmNR * kQgemmNR;
  std::vector<int32_t> bias;
  QgemmOutput out;
  out.kind = c.kind;
  out.channel_is_row = c.channel_is_row;
  out.bias_saturates = c.bias_saturates;
  std::uniform_int_distribution<int32_t> small(-100000, 100000);
  auto bias_value = [&] {
    std::uniform_int_distribution<int> pick(0, 9);
    const int p = pick(rng);
    return p == 0 ? std::numeric_limits<int32_t>::max() - std::abs(small(rng)) / 10
                  : p == 1 ? std::numeric_limits<int32_t>::min() + std::abs(small(rng)) : small(rng);
  };
  if (c.bias_mode == 1) {
    bias.resize(static_cast<size_t>(c.channel_is_row ? c.m : padded_n));
    for (auto& x : bias) x = bias_value();
    out.bias = bias.data();
    out.bias_rs = c.channel_is_row ? 1 : 0;
    out.bias_cs = c.channel_is_row ? 0 : 1;
  } else if (c.bias_mode == 2) {
    bias.resize(static_cast<size_t>(c.m * padded_n));
    for (auto& x : bias) x = bias_value();
    out.bias = bias.data();
    out.bias_rs = padded_n;
    out.bias_cs = 1;
  }

  std::vector<quant::FixedPointMultiplier> mult(c.per_channel ? static_cast<size_t>(channels) : 1);
  const bool below_one = rng() % 2;
  for (auto& f : mult) f = random_multiplier(rng, below_one);
  const int32_t lo = c.codes_signed ? -128 : 0, hi = c.codes_signed ? 127 : 255;
  std::uniform_int_distribution<int> clamp_pick(0, 2);
  int32_t qmin = lo, qmax = hi;
  if (clamp_pick(rng) == 0) {  // a fused Relu / Clip
    qmin = lo + 20;
    qmax = hi - 30;
  }
  const int32_t y_zp = random_zp(c.codes_signed, rng);
  // For the stage that reads it, as kernels make it: by row only the row tables.
  const QgemmRequantFor use = c.channel_is_row ? QgemmRequantFor::kRows : QgemmRequantFor::kColumns;
  const QgemmRequant requant = qgemm_make_requant(mult, channels, y_zp, qmin, qmax, use);
  std::vector<float> scale(static_cast<size_t>(std::max<int64_t>(channels, padded_n)));
  std::uniform_real_distribution<float> sd(1e-4f, 1.f);
  for (auto& s : scale) s = sd(rng);
  out.requant = &requant;
  out.codes_signed = c.codes_signed;
  out.scale = scale.data();
  const size_t esize = c.kind == QgemmOutputKind::kCodes ? 1 : 4;
  std::vector<uint8_t> y(static_cast<size_t>(c.m * c.n) * esize, 0xCD);
  out.out = y.data();
  out.ldo = c.n;

  qgemm(c.m, {a.data(), c.a_signed, c.k, 1}, a_zp, packed, out, pool, path);

  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = 0; j < c.n; ++j) {
      int64_t acc = 0;
      for (int64_t p = 0; p < c.k; ++p)
        acc += static_cast<int64_t>(code_of(a, i * c.k + p, c.a_signed) - a_zp) *
               (code_of(b, p * c.n + j, c.b_signed) - b_zp[c.channel_is_row ? 0 : j]);
      int32_t v = static_cast<int32_t>(acc);
      if (c.bias_mode) {
        const int32_t bv = bias[static_cast<size_t>(i * out.bias_rs + j * out.bias_cs)];
        v = c.bias_saturates
                ? static_cast<int32_t>(std::clamp<int64_t>(int64_t{v} + bv, std::numeric_limits<int32_t>::min(),
                                                           std::numeric_limits<int32_t>::max()))
                : static_cast<int32_t>(static_cast<uint32_t>(v) + static_cast<uint32_t>(bv));
      }
      const int64_t ch = c.channel_is_row ? i : j;
      const size_t o = static_cast<size_t>(i * c.n + j);
      if (c.kind == QgemmOutputKind::kInt32) {
        ASSERT_EQ(reinterpret_cast<const int32_t*>(y.data())[o], v) << "at " << i << "," << j;
      } else if (c.kind == QgemmOutputKind::kFloat) {
        const float want = static_cast<float>(v) * scale[static_cast<size_t>(ch)];
        ASSERT_EQ(reinterpret_cast<const float*>(y.data())[o], want) << "at " << i << "," << j;
      } else {
        const int32_t want =
            quant::requantize_to_code(v, mult[c.per_channel ? static_cast<size_t>(ch) : 0], y_zp, qmin, qmax);
        const int32_t got = c.codes_signed ? static_cast<int8_t>(y[o]) : y[o];
        ASSERT_EQ(got, want) << "at " << i << "," << j << " acc " << v;
      }
    }
}

std::vector<QgemmPath> paths() {
  std::vector<QgemmPath> p{QgemmPath::kScalar};
  if (qgemm_avx2_supported()) p.push_back(QgemmPath::kAvx2);
  if (qgemm_avx512_vnni_supported()) p.push_back(QgemmPath::kAvx512Vnni);
  return p;
}

TEST(Qgemm, RandomShapesMatchPlainLoop) {
  ThreadPool pool2(2);
  std::mt19937 rng(1234);
  const int64_t sizes[] = {1, 2, 3, 5, 6, 7, 13, 16, 17, 31, 33, 64};
  std::uniform_int_distribution<int> pick(0, static_cast<int>(std::size(sizes)) - 1), coin(0, 1), kind(0, 2),
      bias(0, 2);
  for (int iter = 0; iter < 120; ++iter) {
    Case c;
    c.m = sizes[pick(rng)];
    c.n = sizes[pick(rng)];
    c.k = sizes[pick(rng)];
    c.a_signed = coin(rng);
    c.b_signed = coin(rng);
    c.kind = static_cast<QgemmOutputKind>(kind(rng));
    c.channel_is_row = coin(rng);
    c.per_channel = coin(rng);
    c.bias_mode = bias(rng);
    c.bias_saturates = coin(rng);
    c.codes_signed = coin(rng);
    const uint32_t seed = static_cast<uint32_t>(rng());
    for (QgemmPath p : paths()) {
      run_case(c, seed, p, nullptr);
      if (iter % 4 == 0) run_case(c, seed, p, &pool2);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

// The per-channel constants of the vector output stages
// (qgemm_requant_channel): their arithmetic, done here in scalar, gives
// requantize_to_code's code for any accumulator; a requant made for rows
// holds them in its row tables (the clamps only at or above one), one made
// for columns in its lane tables, and neither carries the other's.
// A requant read by the other output stage would index its empty tables:
// qgemm and qconv stop first (a caller's bug, so an abort with a message).
TEST(QgemmDeathTest, ARequantMadeForTheOtherOutputStageAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::vector<quant::FixedPointMultiplier> mult{quant::quantize_multiplier(0.01)};
  const QgemmRequant cols = qgemm_make_requant(mult, 4, 0, 0, 255, QgemmRequantFor::kColumns);
  const QgemmRequant rows = qgemm_make_requant(mult, 4, 0, 0, 255, QgemmRequantFor::kRows);
  QgemmOutput out;
  out.kind = QgemmOutputKind::kCodes;
  out.requant = &cols;
  detail::check_requant_layout(out);  // columns for the column stage: fine
  out.channel_is_row = true;
  EXPECT_DEATH(detail::check_requant_layout(out), "made for columns read by the row output stage");
  out.requant = &rows;
  detail::check_requant_layout(out);
  out.channel_is_row = false;
  EXPECT_DEATH(detail::check_requant_layout(out), "made for rows read by the column output stage");
}

TEST(Qgemm, RequantTablesHoldTheChannelConstantsForTheirReaders) {
  std::mt19937 rng(99);
  const int32_t accs[] = {0, 1, -1, 2, -2, 1000, -1000, 1 << 20, -(1 << 20), INT32_MAX, INT32_MIN, INT32_MAX - 1,
                          INT32_MIN + 1};
  for (int iter = 0; iter < 200; ++iter) {
    const bool per_channel = iter % 3 != 0, is_signed = iter % 2;
    const int64_t channels = 1 + static_cast<int64_t>(rng() % 40);
    std::vector<quant::FixedPointMultiplier> mult(per_channel ? static_cast<size_t>(channels) : 1);
    const bool below_one = rng() % 2;
    for (auto& f : mult) f = random_multiplier(rng, below_one);
    // The edges: n = 62 (2^-32), a multiplier that rounds to 0, just below 1, n = 1 (clamped to 2^30).
    if (iter % 7 == 0) mult[0] = quant::quantize_multiplier(std::exp2(-32.0));
    if (iter % 9 == 0) mult[0] = quant::quantize_multiplier(std::exp2(-45.0));
    if (iter % 11 == 0) mult[0] = quant::quantize_multiplier(0.99999999);
    if (iter % 13 == 0) mult[0] = quant::quantize_multiplier(std::exp2(40.0));
    const int32_t lo = is_signed ? -128 : 0, hi = is_signed ? 127 : 255;
    const bool narrow = iter % 5 == 0;  // a fused Relu / Clip
    const int32_t zp = random_zp(is_signed, rng), qmin = narrow ? lo + 7 : lo, qmax = narrow ? hi - 9 : hi;
    const QgemmRequant rows = qgemm_make_requant(mult, channels, zp, qmin, qmax, QgemmRequantFor::kRows);
    const QgemmRequant cols = qgemm_make_requant(mult, channels, zp, qmin, qmax, QgemmRequantFor::kColumns);
    EXPECT_TRUE(rows.lanes.empty() && rows.round_offset.empty());
    EXPECT_TRUE(cols.rows.empty() && cols.row_clamps.empty());
    ASSERT_EQ(rows.below_one, cols.below_one);
    ASSERT_EQ(rows.rows.size(), static_cast<size_t>(channels));
    ASSERT_EQ(rows.row_clamps.size(), rows.below_one ? 0u : static_cast<size_t>(channels));
    std::uniform_int_distribution<int32_t> any(INT32_MIN, INT32_MAX);
    for (int64_t c = 0; c < channels; ++c) {
      const QgemmRequantChannel k = qgemm_requant_channel(rows, c);
      const QgemmRequantRow& row = rows.rows[static_cast<size_t>(c)];
      ASSERT_EQ(row.mult, k.mult);
      ASSERT_EQ(row.add, k.add);
      ASSERT_EQ(row.shift, k.shift);
      ASSERT_EQ(row.round_offset, k.round_offset);
      if (!rows.below_one) {
        const QgemmRequantRowClamp& cl = rows.row_clamps[static_cast<size_t>(c)];
        ASSERT_EQ(cl.lo, k.lo);
        ASSERT_EQ(cl.hi, k.hi);
        ASSERT_EQ(cl.off, k.off);
      }
      const int64_t* g = &cols.lanes[static_cast<size_t>((c / 8) * 48 + (c % 2) * 4 + (c % 8) / 2)];
      ASSERT_EQ(g[0], k.mult);
      ASSERT_EQ(g[8], k.add);
      ASSERT_EQ(g[16], k.shift);
      ASSERT_EQ(g[24], k.lo);
      ASSERT_EQ(g[32], k.hi);
      ASSERT_EQ(g[40], k.off);
      ASSERT_EQ(cols.round_offset[static_cast<size_t>(c)], k.round_offset);
      const quant::FixedPointMultiplier f = mult[per_channel ? static_cast<size_t>(c) : 0];
      for (int t = 0; t < 40; ++t) {
        const int32_t acc = t < static_cast<int>(std::size(accs)) ? accs[t] : any(rng);
        // The vector path: a 32x32-bit product plus add, shifted right as unsigned.
        // (the sum in unsigned: it passes INT64_MAX for n near 62 and acc near INT32_MAX)
        const uint64_t u =
            (static_cast<uint64_t>(int64_t{acc} * row.mult) + static_cast<uint64_t>(row.add)) >> row.shift;
        const int32_t want = quant::requantize_to_code(acc, f, zp, qmin, qmax);
        ASSERT_EQ(std::clamp(static_cast<int64_t>(u), k.lo, k.hi) + k.off, want)
            << "channel " << c << " acc " << acc << " shift " << f.shift;
        if (rows.below_one) {  // the 32-bit finish
          const int32_t r = static_cast<int32_t>(static_cast<uint32_t>(u) + static_cast<uint32_t>(row.round_offset));
          ASSERT_EQ(std::clamp(r, qmin - zp, qmax - zp) + zp, want) << "channel " << c << " acc " << acc;
        }
      }
    }
  }
}

// Large enough to be split over threads (more than 2^21 multiply-adds; along
// M and along N), with K odd and tiles cut at both edges.
TEST(Qgemm, ThreadedProductsMatch) {
  ThreadPool pool2(2), pool3(3);
  const Case cases[] = {
      {130, 45, 513, false, true, QgemmOutputKind::kCodes, false, true, 1, true, false},
      {1, 8000, 301, true, true, QgemmOutputKind::kCodes, false, true, 1, true, true},
      {67, 300, 130, false, false, QgemmOutputKind::kFloat, false, true, 2, false, false},
      {200, 17, 700, true, false, QgemmOutputKind::kInt32, true, true, 1, true, false},
      // Split by columns only, over two A blocks: threads take each other's last panels.
      {13, 160, 8193, false, true, QgemmOutputKind::kCodes, false, true, 1, true, false},
  };
  uint32_t seed = 77;
  for (const Case& c : cases)
    for (QgemmPath p : paths()) {
      run_case(c, seed++, p, &pool2);
      run_case(c, seed++, p, &pool3);
      if (::testing::Test::HasFatalFailure()) return;
    }
}

// Extreme codes: every operand at its range limit, so int16 pair sums and
// int32 accumulators take their largest values.
TEST(Qgemm, ExtremeCodesAreExact) {
  for (bool a_signed : {false, true})
    for (bool b_signed : {false, true}) {
      SCOPED_TRACE("a_signed=" + std::to_string(a_signed) + " b_signed=" + std::to_string(b_signed));
      const int64_t m = 7, n = 19, k = 1023;
      std::vector<uint8_t> a(static_cast<size_t>(m * k)), b(static_cast<size_t>(k * n));
      const uint8_t a_far = a_signed ? 0x80 : 255, b_far = b_signed ? 0x80 : 0;  // -128 / 255, -128 / 0
      std::fill(a.begin(), a.end(), a_far);
      std::fill(b.begin(), b.end(), b_far);
      const int32_t a_zp = a_signed ? 127 : 0, b_zp = b_signed ? 127 : 255;
      QgemmPackedB packed;
      qgemm_pack_b({b.data(), b_signed, n, 1}, k, n, {b_zp}, packed);
      std::vector<int32_t> y(static_cast<size_t>(m * n));
      QgemmOutput out;
      out.out = y.data();
      out.ldo = n;
      const int32_t da = (a_signed ? -128 : 255) - a_zp, db = (b_signed ? -128 : 0) - b_zp;
      for (QgemmPath p : paths()) {
        qgemm(m, {a.data(), a_signed, k, 1}, a_zp, packed, out, nullptr, p);
        for (int32_t v : y) ASSERT_EQ(v, static_cast<int32_t>(k * da * db)) << qgemm_path_name(p);
      }
    }
}

// The implicit-GEMM convolution on both paths against a plain loop: odd
// sizes, strides, dilations, pads, groups, 1x1 direct reads, int32 output.
// The threads' blocks: the largest as small as can be; on a tie, fewer
// threads, then rows split rather than columns (column blocks pack the same
// rows of A and write the same output lines).
TEST(Qgemm, GridSplitsRowsOnTies) {
  auto grid = [](int64_t tiles, int64_t panels, int threads) {
    const auto g = detail::qgemm_choose_grid(tiles, panels, threads);
    return std::pair<int64_t, int64_t>(g.tm, g.tn);
  };
  EXPECT_EQ(grid(200, 4, 2), std::make_pair(int64_t{2}, int64_t{1}));  // vit_fm's Linear layers: was (1, 2)
  EXPECT_EQ(grid(4, 8, 2), std::make_pair(int64_t{2}, int64_t{1}));
  EXPECT_EQ(grid(1, 8, 2), std::make_pair(int64_t{1}, int64_t{2}));    // one row tile: columns it is
  EXPECT_EQ(grid(3, 1, 4), std::make_pair(int64_t{3}, int64_t{1}));
  EXPECT_EQ(grid(5, 5, 4), std::make_pair(int64_t{2}, int64_t{2}));    // 3 x 3 beats 2 x 5 and 5 x 2
  EXPECT_EQ(grid(2, 2, 3), std::make_pair(int64_t{2}, int64_t{1}));    // 3 threads cannot beat 2 here
  EXPECT_EQ(grid(7, 3, 1), std::make_pair(int64_t{1}, int64_t{1}));
}

TEST(Qconv, BothPathsMatchPlainLoop) {
  ThreadPool pool2(2);
  const uint32_t seed = 4321;
  std::mt19937 rng(seed);
  auto pick = [&](std::vector<int64_t> v) { return v[rng() % v.size()]; };
  int tested = 0;
  for (int iter = 0; iter < 240; ++iter) {
    // The last third: one input channel per group, stride 1, no dilation,
    // symmetric weights (the VNNI tier's tap-quad path).
    const bool single_channel = iter >= 160;
    QconvGeometry g;
    g.group = pick({1, 1, 2, 3});
    const int64_t cg_pick = pick({1, 2, 3, 4, 7, 8, 16}), ocg = pick({1, 4, 6, 7, 13});  // 4, 8, 16: (tap, c) weights
    const int64_t cg = single_channel ? 1 : cg_pick;
    g.batch = pick({1, 2, 3, 5});  // 3, 5: a last group of images side by side left partly empty
    g.in_c = cg * g.group;
    g.out_c = ocg * g.group;
    g.kernel_h = pick({1, 2, 3, 5});
    g.kernel_w = rng() % 2 ? g.kernel_h : pick({1, 3});
    g.stride_h = pick({1, 2, 3});
    g.stride_w = pick({1, 2, 3});  // 3: the quad image's byte-by-byte fill
    g.dilation_h = pick({1, 2});
    g.dilation_w = pick({1, 2});
    g.pad_top = pick({0, 1, 2});
    g.pad_left = pick({0, 1, 3});
    const int64_t pad_bottom = pick({0, 1}), pad_right = pick({0, 2});
    if (rng() % 4 == 0) {  // the 1x1 direct case
      g.kernel_h = g.kernel_w = g.stride_h = g.stride_w = 1;
      g.pad_top = g.pad_left = 0;
    }
    if (single_channel) {
      g.kernel_w = pick({1, 2, 3, 4, 5, 7, 9});
      g.stride_h = g.stride_w = g.dilation_h = g.dilation_w = 1;
    }
    g.in_h = pick({1, 3, 6, 9, 17});
    g.in_w = pick({1, 2, 5, 8, 16, 21, 35});
    const int64_t eh = (g.kernel_h - 1) * g.dilation_h + 1, ew = (g.kernel_w - 1) * g.dilation_w + 1;
    const bool direct = g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_top == 0 &&
                        g.pad_left == 0;
    const int64_t hp = g.in_h + g.pad_top + (direct ? 0 : pad_bottom), wp = g.in_w + g.pad_left + (direct ? 0 : pad_right);
    if (hp < eh || wp < ew) continue;
    ++tested;
    g.out_h = (hp - eh) / g.stride_h + 1;
    g.out_w = (wp - ew) / g.stride_w + 1;
    const bool x_signed = rng() % 2, w_signed = rng() % 2, int32_out = rng() % 3 == 0;
    const bool y_signed = !int32_out && rng() % 2;  // int8 output codes (and residual codes)
    const int32_t y_min = y_signed ? -128 : 0, y_max = y_signed ? 127 : 255;
    const int64_t k = cg * g.kernel_h * g.kernel_w;
    const auto x = random_bytes(g.batch * g.in_c * g.in_h * g.in_w, rng);
    const auto w = random_bytes(g.out_c * k, rng);
    const int32_t x_zp = random_zp(x_signed, rng);
    std::vector<int32_t> w_zp(rng() % 2 ? static_cast<size_t>(g.out_c) : 1);
    // Symmetric weights half the time: the VNNI tier's direct path (no pixel sums).
    const bool symmetric = single_channel || rng() % 2;
    for (auto& z : w_zp) z = symmetric ? (w_signed ? 0 : 128) : random_zp(w_signed, rng);
    // Half the time the codes outlive the packing (as in a session): the
    // 8-bit tiles of the AVX2 and scalar tiers are then packed on first
    // use, on a VNNI CPU.
    QconvWeights packed;
    auto owned = std::make_shared<const std::vector<uint8_t>>(w);
    const bool deferred_pairs = rng() % 2;
    qconv_pack_weights({owned->data(), w_signed, k, 1}, g.out_c, cg, g.kernel_h, g.kernel_w, g.group, w_zp, packed,
                       deferred_pairs ? owned : nullptr);
    owned.reset();
    std::vector<quant::FixedPointMultiplier> mult(static_cast<size_t>(g.out_c));
    for (auto& f : mult) f = random_multiplier(rng, rng() % 2);
    const QgemmRequant requant =
        qgemm_make_requant(mult, g.out_c, random_zp(y_signed, rng), y_min, y_max, QgemmRequantFor::kRows);
    std::vector<int32_t> bias(static_cast<size_t>(g.out_c));
    // Now and then a bias near the int32 limits: acc + bias saturates.
    const bool extreme_bias = rng() % 6 == 0;
    for (auto& b : bias)
      b = extreme_bias ? (rng() % 2 ? INT32_MAX - static_cast<int32_t>(rng() % 1000)
                                    : INT32_MIN + static_cast<int32_t>(rng() % 1000))
                       : static_cast<int32_t>(rng() % 200001) - 100000;
    const int64_t plane = g.out_h * g.out_w, total = g.batch * g.out_c * plane;
    QgemmOutput out;
    out.kind = int32_out ? QgemmOutputKind::kInt32 : QgemmOutputKind::kCodes;
    out.channel_is_row = true;
    out.codes_signed = y_signed;
    out.bias = bias.data();
    out.bias_rs = 1;
    out.requant = &requant;
    out.ldo = plane;
    // A third of the code outputs get a fused residual join (QLinearAdd).
    const bool residual_add = !int32_out && rng() % 3 == 0;
    const auto residual_codes = random_bytes(total, rng);
    std::uniform_real_distribution<double> ratio(0.05, 3.0);
    const auto shared = quant::shared_shift_multipliers(ratio(rng), ratio(rng));
    ASSERT_TRUE(shared.has_value());
    const int32_t b_zp = random_zp(y_signed, rng), c_zp = random_zp(y_signed, rng);
    QgemmResidualAdd residual =
        residual_join(residual_codes.data(), requant.zero_point, b_zp, c_zp, y_min, y_max, *shared);
    if (residual_add) out.residual = &residual;
    SCOPED_TRACE("seed " + std::to_string(seed) + " iter " + std::to_string(iter) + " batch " +
                 std::to_string(g.batch) + " c " + std::to_string(g.in_c) + " " + std::to_string(g.in_h) + "x" +
                 std::to_string(g.in_w) + " oc " + std::to_string(g.out_c) + " k " + std::to_string(g.kernel_h) + "x" +
                 std::to_string(g.kernel_w) + " s " + std::to_string(g.stride_h) + "," + std::to_string(g.stride_w) +
                 " d " + std::to_string(g.dilation_h) + "," + std::to_string(g.dilation_w) + " pads " +
                 std::to_string(g.pad_top) + "," + std::to_string(g.pad_left) + " group " + std::to_string(g.group) +
                 (symmetric ? " symmetric" : "") + (extreme_bias ? " extreme bias" : "") + (residual_add ? " residual add" : ""));
    // The plain loop.
    std::vector<int32_t> want(static_cast<size_t>(total));
    const int64_t ocg_n = g.out_c / g.group;
    for (int64_t b = 0; b < g.batch; ++b)
      for (int64_t oc = 0; oc < g.out_c; ++oc)
        for (int64_t oh = 0; oh < g.out_h; ++oh)
          for (int64_t ow = 0; ow < g.out_w; ++ow) {
            int64_t acc = 0;
            const int64_t grp = oc / ocg_n;
            for (int64_t c = 0; c < cg; ++c)
              for (int64_t kh = 0; kh < g.kernel_h; ++kh)
                for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
                  const int64_t ih = oh * g.stride_h - g.pad_top + kh * g.dilation_h;
                  const int64_t iw = ow * g.stride_w - g.pad_left + kw * g.dilation_w;
                  if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) continue;
                  const int64_t xi = ((b * g.in_c + grp * cg + c) * g.in_h + ih) * g.in_w + iw;
                  const int64_t wi = oc * k + (c * g.kernel_h + kh) * g.kernel_w + kw;
                  acc += static_cast<int64_t>(code_of(x, xi, x_signed) - x_zp) *
                         (code_of(w, wi, w_signed) - w_zp[w_zp.size() > 1 ? static_cast<size_t>(oc) : 0]);
                }
            const int32_t v = static_cast<int32_t>(std::clamp<int64_t>(
                acc + bias[static_cast<size_t>(oc)], INT32_MIN, INT32_MAX));  // the runtime's saturating add
            const size_t o = static_cast<size_t>(((b * g.out_c + oc) * g.out_h + oh) * g.out_w + ow);
            want[o] = int32_out ? v
                                : quant::requantize_to_code(v, mult[static_cast<size_t>(oc)], requant.zero_point,
                                                            y_min, y_max);
            if (residual_add)
              want[o] = quant::add_to_code(want[o] - residual.a_zp,
                                           code_of(residual_codes, static_cast<int64_t>(o), y_signed) - residual.b_zp,
                                           *shared, residual.c_zp, y_min, y_max);
          }
    for (QgemmPath p : paths())
      for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &pool2})
        for (bool in_place : {false, true}) {
        // In place: the output written over the residual's own codes (a session does that when nothing reads the residual later).
        if (in_place && !residual_add) continue;
        std::vector<uint8_t> y(static_cast<size_t>(total) * (int32_out ? 4 : 1), 0xCD);
        if (in_place) y = residual_codes;
        residual.codes = in_place ? y.data() : residual_codes.data();
        out.out = y.data();
        SCOPED_TRACE(in_place ? "in place" : "separate output");
        qconv(g, x.data(), x_signed, x_zp, packed, out, pool, p);
        for (int64_t i = 0; i < total; ++i) {
          const int32_t got = int32_out ? reinterpret_cast<const int32_t*>(y.data())[i] : code_of(y, i, y_signed);
          ASSERT_EQ(got, want[static_cast<size_t>(i)]) << "element " << i << " path " << qgemm_path_name(p);
        }
      }
  }
  EXPECT_GE(tested, 120);  // most random geometries fit
}

// A 3x3 conv with pad 1 on side x side planes, channels in and out.
QconvGeometry square_conv3x3(int64_t batch, int64_t channels, int64_t side) {
  QconvGeometry g;
  g.batch = batch;
  g.in_c = g.out_c = channels;
  g.in_h = g.in_w = g.out_h = g.out_w = side;
  g.kernel_h = g.kernel_w = 3;
  g.pad_top = g.pad_left = 1;
  return g;
}

// The VNNI direct path with images side by side on a 7x7 plane (2 per row)
// at an odd batch: the last row group half empty, two threads splitting a
// row group, int8 codes, the residual join written over the residual. The
// scalar path (checked against a plain loop above) is the reference.
TEST(Qconv, ImagesSideBySideMatchTheScalarPath) {
  ThreadPool pool2(2);
  std::mt19937 rng(77);
  const QconvGeometry g = square_conv3x3(37, 16, 7);
  const int64_t k = g.in_c * 9, total = g.batch * g.out_c * 49;
  const auto x = random_bytes(g.batch * g.in_c * 49, rng), w = random_bytes(g.out_c * k, rng);
  QconvWeights packed;
  qconv_pack_weights({w.data(), true, k, 1}, g.out_c, g.in_c, 3, 3, 1, {0}, packed);  // symmetric: the direct path
  std::vector<quant::FixedPointMultiplier> mult(static_cast<size_t>(g.out_c));
  for (auto& f : mult) f = random_multiplier(rng, true);
  const QgemmRequant requant =
      qgemm_make_requant(mult, g.out_c, random_zp(true, rng), -128, 127, QgemmRequantFor::kRows);
  std::vector<int32_t> bias(static_cast<size_t>(g.out_c));
  for (auto& b : bias) b = static_cast<int32_t>(rng() % 20001) - 10000;
  const auto shared = quant::shared_shift_multipliers(0.7, 1.3);
  ASSERT_TRUE(shared.has_value());
  const auto residual_codes = random_bytes(total, rng);
  const int32_t b_zp = random_zp(true, rng), c_zp = random_zp(true, rng);
  QgemmResidualAdd residual = residual_join(nullptr, requant.zero_point, b_zp, c_zp, -128, 127, *shared);
  QgemmOutput out;
  out.kind = QgemmOutputKind::kCodes;
  out.channel_is_row = true;
  out.codes_signed = true;
  out.bias = bias.data();
  out.bias_rs = 1;
  out.requant = &requant;
  out.ldo = 49;
  out.residual = &residual;
  std::vector<uint8_t> want(static_cast<size_t>(total)), got = residual_codes;
  residual.codes = residual_codes.data();
  out.out = want.data();
  qconv(g, x.data(), true, 3, packed, out, nullptr, QgemmPath::kScalar);
  residual.codes = got.data();  // in place, as a session does with a dead residual
  out.out = got.data();
  qconv(g, x.data(), true, 3, packed, out, &pool2);
  for (int64_t i = 0; i < total; ++i)
    ASSERT_EQ(got[static_cast<size_t>(i)], want[static_cast<size_t>(i)]) << "element " << i << " image " << i / (16 * 49);
}

// The AVX2 tier's per-block residual join written over the residual, with
// two threads splitting the images, on both AVX2 paths: 7-bit weights (u8 x
// s8) and full-range ones (int16). The scalar path is the reference.
TEST(Qconv, Avx2ResidualJoinInPlaceOnTwoThreads) {
  if (!qgemm_avx2_supported()) GTEST_SKIP() << "no AVX2";
  ThreadPool pool2(2);
  std::mt19937 rng(91);
  const QconvGeometry g = square_conv3x3(5, 32, 14);  // 7.2M multiply-adds: split
  const int64_t k = g.in_c * 9, total = g.batch * g.out_c * 196;
  for (const bool seven_bit : {true, false}) {
    SCOPED_TRACE(seven_bit ? "7-bit weights" : "int8 weights");
    const auto x = random_bytes(g.batch * g.in_c * 196, rng);
    auto w = random_bytes(g.out_c * k, rng);
    if (seven_bit)
      for (auto& v : w) v = static_cast<uint8_t>(static_cast<int8_t>(v) / 2);
    QconvWeights packed;
    qconv_pack_weights({w.data(), true, k, 1}, g.out_c, g.in_c, 3, 3, 1, {0}, packed);
    std::vector<quant::FixedPointMultiplier> mult(static_cast<size_t>(g.out_c));
    for (auto& f : mult) f = random_multiplier(rng, true);
    const QgemmRequant requant = qgemm_make_requant(mult, g.out_c, random_zp(false, rng), 0, 255, QgemmRequantFor::kRows);
    std::vector<int32_t> bias(static_cast<size_t>(g.out_c));
    for (auto& b : bias) b = static_cast<int32_t>(rng() % 20001) - 10000;
    const auto shared = quant::shared_shift_multipliers(0.8, 1.1);
    ASSERT_TRUE(shared.has_value());
    const auto residual_codes = random_bytes(total, rng);
    QgemmResidualAdd residual =
        residual_join(nullptr, requant.zero_point, random_zp(false, rng), random_zp(false, rng), 0, 255, *shared);
    QgemmOutput out;
    out.kind = QgemmOutputKind::kCodes;
    out.channel_is_row = true;
    out.bias = bias.data();
    out.bias_rs = 1;
    out.requant = &requant;
    out.ldo = 196;
    out.residual = &residual;
    std::vector<uint8_t> want(static_cast<size_t>(total)), got = residual_codes;
    residual.codes = residual_codes.data();
    out.out = want.data();
    qconv(g, x.data(), false, 17, packed, out, nullptr, QgemmPath::kScalar);
    residual.codes = got.data();
    out.out = got.data();
    qconv(g, x.data(), false, 17, packed, out, &pool2, QgemmPath::kAvx2);
    for (int64_t i = 0; i < total; ++i)
      ASSERT_EQ(got[static_cast<size_t>(i)], want[static_cast<size_t>(i)]) << "element " << i;
  }
}

// The fused residual join on the VNNI tier takes 16-bit products when its
// multipliers split into int16 halves, its zero points are codes and
// 16 <= n <= 38, else 64-bit lanes: both at their limits, with the zero
// points at the ends of the type (and beyond), against the scalar conv
// followed by quant::add_to_code.
TEST(Qconv, ResidualJoinMatchesTheScalarPathAtItsLimits) {
  if (!qgemm_avx512_vnni_supported()) GTEST_SKIP() << "no AVX-512 VNNI: the join is not fused";
  struct Case {
    int64_t ma, mb;
    int n;
    const char* what;
  };
  constexpr int64_t kMaxSplit = 0x7FFF7FFF;  // the largest multiplier with an int16 high half
  const auto typical = quant::shared_shift_multipliers(0.7, 1.3);
  ASSERT_TRUE(typical.has_value());
  const Case cases[] = {
      {typical->ma, typical->mb, typical->n, "typical"},
      {kMaxSplit, kMaxSplit, 38, "largest halves, n 38"},
      {kMaxSplit, kMaxSplit, 39, "n 39: 64-bit"},
      {kMaxSplit + 1, int64_t{1} << 30, 31, "a high half of 32768: 64-bit"},
      {40000, 65535, 16, "n 16, negative low halves"},
      {40000, 65535, 15, "n 15: 64-bit"},
  };
  std::mt19937 rng(4242);
  const QconvGeometry g = square_conv3x3(3, 16, 9);
  const int64_t k = g.in_c * 9, plane = 81, total = g.batch * g.out_c * plane;
  const auto x = random_bytes(g.batch * g.in_c * plane, rng), w = random_bytes(g.out_c * k, rng);
  QconvWeights packed;
  qconv_pack_weights({w.data(), true, k, 1}, g.out_c, g.in_c, 3, 3, 1, {0}, packed);
  std::vector<int32_t> bias(static_cast<size_t>(g.out_c));
  for (auto& b : bias) b = static_cast<int32_t>(rng() % 20001) - 10000;
  for (const bool is_signed : {false, true}) {
    const int32_t qmin = is_signed ? -128 : 0, qmax = is_signed ? 127 : 255;
    for (const bool below_one : {true, false}) {  // the output stage's two requantizations
      std::vector<quant::FixedPointMultiplier> mult(static_cast<size_t>(g.out_c));
      for (auto& f : mult) f = below_one ? random_multiplier(rng, true) : quant::quantize_multiplier(1.5);
      for (const int32_t a_zp : {qmin, qmax}) {
        const QgemmRequant requant = qgemm_make_requant(mult, g.out_c, a_zp, qmin, qmax, QgemmRequantFor::kRows);
        for (const Case& c : cases)
          for (const int32_t b_zp : {qmin, qmax, 200000})  // no code (a corrupt fused node): 64-bit
            for (const int32_t c_zp : {qmin, qmax, 3000}) {
              SCOPED_TRACE(std::string(c.what) + (is_signed ? " int8" : " uint8") + (below_one ? "" : " multiplier 1.5") +
                           " zero points " + std::to_string(a_zp) + " " + std::to_string(b_zp) + " " +
                           std::to_string(c_zp));
              const auto residual_codes = random_bytes(total, rng);
              QgemmResidualAdd residual;
              residual.a_zp = a_zp, residual.b_zp = b_zp, residual.c_zp = c_zp;
              residual.qmin = qmin;
              residual.qmax = qmax;
              residual.ma = c.ma, residual.mb = c.mb, residual.n = c.n;
              QgemmOutput out;
              out.kind = QgemmOutputKind::kCodes;
              out.channel_is_row = true;
              out.codes_signed = is_signed;
              out.requant = &requant;
              out.bias = below_one ? nullptr : bias.data();  // the with-bias instances too
              out.bias_rs = 1;
              out.ldo = plane;
              out.residual = &residual;
              std::vector<uint8_t> want(static_cast<size_t>(total)), got(static_cast<size_t>(total));
              residual.codes = residual_codes.data();
              out.residual = nullptr;  // the plain conv's codes, then the join of fixed_point.h
              out.out = want.data();
              qconv(g, x.data(), true, 3, packed, out, nullptr, QgemmPath::kScalar);
              const quant::SharedShiftMultipliers m{c.ma, c.mb, c.n};
              const auto as_int = [&](uint8_t v) { return is_signed ? int32_t{static_cast<int8_t>(v)} : int32_t{v}; };
              for (int64_t i = 0; i < total; ++i) {
                const size_t e = static_cast<size_t>(i);
                want[e] = static_cast<uint8_t>(
                    quant::add_to_code(as_int(want[e]) - a_zp, as_int(residual_codes[e]) - b_zp, m, c_zp, qmin, qmax));
              }
              out.residual = &residual;
              out.out = got.data();
              qconv(g, x.data(), true, 3, packed, out, nullptr, QgemmPath::kAvx512Vnni);
              for (int64_t i = 0; i < total; ++i)
                ASSERT_EQ(got[static_cast<size_t>(i)], want[static_cast<size_t>(i)]) << "element " << i;
            }
      }
    }
  }
}

}  // namespace
}  // namespace qtk::rt::x86
