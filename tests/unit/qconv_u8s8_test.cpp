// The AVX2 tier's u8 x s8 conv path (qgemm_conv_u8s8.h) against a plain
// int64 loop: weights whose k pairs fit vpmaddubsw (7-bit, 4-bit, pairs at
// the bound) held as k quads, and weights that miss it by one pair falling
// back to the int16 pair tiles. Random shapes (odd channels, every padding,
// strides 1-3, dilations, groups), uint8 and int8 activations with random
// zero points, int32 and code outputs, the residual join, one and two
// threads, on every path the CPU has (kAvx2 runs the new kernel; kScalar
// expands the quads). Bit-exact throughout.
#include <gtest/gtest.h>

#include "core/cpu_features.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "quant/schemes/fixed_point.h"
#include "residual_join.h"
#include "runtime/kernels/x86/qgemm.h"
#include "runtime/kernels/x86/qgemm_conv.h"
#include "runtime/kernels/x86/qgemm_conv_u8s8.h"
#include "runtime/thread_pool.h"

namespace qtk::rt::x86 {
namespace {

enum class Weights { k7Bit, k4Bit, kPairsAtTheBound, kOnePairOver, kFullRange };

const char* name(Weights w) {
  switch (w) {
    case Weights::k7Bit: return "7-bit";
    case Weights::k4Bit: return "4-bit";
    case Weights::kPairsAtTheBound: return "pairs at the bound";
    case Weights::kOnePairOver: return "one pair over the bound";
    case Weights::kFullRange: return "full range";
  }
  return "?";
}

// rows x k int8 codes of the given kind; k = channels x taps, (c, tap) order.
std::vector<uint8_t> make_weights(Weights kind, int64_t rows, int64_t k, std::mt19937& rng, int64_t taps = 1) {
  std::vector<uint8_t> w(static_cast<size_t>(rows * k));
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < k; j += 2) {
      int w0 = 0, w1 = 0;
      switch (kind) {
        case Weights::k7Bit: w0 = uniform(-64, 63), w1 = uniform(-64, 63); break;
        case Weights::k4Bit: w0 = uniform(-8, 7), w1 = uniform(-8, 7); break;
        case Weights::kPairsAtTheBound:
        case Weights::kOnePairOver: {
          // |w0| + |w1| == 128 mostly (-128 with 0, 127 with ±1, 64 with ±64, ...).
          const int a = uniform(0, 128);
          w0 = uniform(0, 1) ? a : -a;
          w1 = uniform(0, 1) ? 128 - a : -(128 - a);
          if (w0 == 128) w0 = -128;
          if (w1 == 128) w1 = -128;
          if (uniform(0, 3) == 0) w1 /= 2;
          break;
        }
        case Weights::kFullRange: w0 = uniform(-128, 127), w1 = uniform(-128, 127); break;
      }
      w[static_cast<size_t>(i * k + j)] = static_cast<uint8_t>(w0);
      if (j + 1 < k) w[static_cast<size_t>(i * k + j + 1)] = static_cast<uint8_t>(w1);
      else if (w1 != 0 && kind == Weights::kPairsAtTheBound)  // the pad is 0: the lone code may be -128
        w[static_cast<size_t>(i * k + j)] = static_cast<uint8_t>(-128);
    }
  if (kind == Weights::kOnePairOver && k >= 2) {
    // A -128 at tap 0 of an even channel c, beside a ±1 in either packing
    // order's pair: (c, tap 1) in (c, tap) order, (c + 1, tap 0) in (tap, c).
    const int64_t channels = k / taps, i = uniform(0, static_cast<int>(rows - 1));
    // (c + 1 exists, or one channel of several taps: k >= 2 either way.)
    const int64_t c = channels >= 2 ? 2 * uniform(0, static_cast<int>((channels - 2) / 2)) : 0;
    w[static_cast<size_t>(i * k + c * taps)] = static_cast<uint8_t>(-128);
    if (taps > 1) w[static_cast<size_t>(i * k + c * taps + 1)] = 1;
    if (c + 1 < channels) w[static_cast<size_t>(i * k + (c + 1) * taps)] = static_cast<uint8_t>(-1);
  }
  return w;
}

int32_t code(const std::vector<uint8_t>& v, int64_t i, bool is_signed) {
  return is_signed ? static_cast<int8_t>(v[static_cast<size_t>(i)]) : v[static_cast<size_t>(i)];
}

std::vector<QgemmPath> paths() {
  std::vector<QgemmPath> p{QgemmPath::kScalar};
  if (qgemm_avx2_supported()) p.push_back(QgemmPath::kAvx2);
  if (qgemm_avx512_vnni_supported()) p.push_back(QgemmPath::kAvx512Vnni);
  return p;
}

bool u8s8_enabled() { return qgemm_avx2_supported() && !env_flag_set("QTK_QGEMM_NO_U8S8"); }

TEST(QconvU8s8, PairBoundIsCheckedOverThePairsAsPacked) {
  auto fits = [](std::vector<int8_t> row) {
    return detail::qconv_u8s8_pairs_fit({row.data(), true, static_cast<int64_t>(row.size()), 1}, 1,
                                        static_cast<int64_t>(row.size()));
  };
  EXPECT_TRUE(fits({64, 64, -64, -64}));
  EXPECT_TRUE(fits({127, 1, -1, 127}));
  EXPECT_TRUE(fits({-128, 0, 0, -128}));
  EXPECT_TRUE(fits({5, 5, -128}));  // an odd k's last code pairs with a 0
  EXPECT_FALSE(fits({64, 65}));
  EXPECT_FALSE(fits({0, 0, -65, -64}));
  EXPECT_FALSE(fits({-128, 1}));
  // k = 1, 2 straddle pairs: (w1, w2) is no pair, (w0, w1) and (w2, w3) are.
  EXPECT_TRUE(fits({0, 100, 100, 0}));
  EXPECT_FALSE(fits({100, 100, 0, 0}));
}

TEST(QconvU8s8, LayoutFollowsTheWeights) {
  if (!u8s8_enabled()) GTEST_SKIP() << "no AVX2 (or QTK_QGEMM_NO_U8S8): the quads are never packed";
  std::mt19937 rng(7);
  const int64_t oc = 13;
  struct Want {
    Weights kind;
    bool is_signed;
    std::vector<int32_t> zp;
    bool quads;
    int64_t c = 5;
    bool tap_major = false;  // channels in fours: quads of 4 channels of a tap, or int16 pair tiles in that order
  };
  const std::vector<Want> cases = {
      {Weights::k7Bit, true, {0}, true},
      {Weights::k4Bit, true, std::vector<int32_t>(oc, 0), true},
      {Weights::kPairsAtTheBound, true, {0}, true},
      {Weights::kOnePairOver, true, {0}, false},
      {Weights::k7Bit, true, {1}, false},   // a zero point: the int16 path
      {Weights::k7Bit, false, {0}, false},  // uint8 codes: the int16 path
      {Weights::k7Bit, true, {0}, true, 8, true},
      {Weights::k4Bit, true, {0}, true, 12, true},
      {Weights::kOnePairOver, true, {0}, false, 8, true},  // pair tiles (tap, c)
      {Weights::k7Bit, true, {1}, false, 8, true},
      {Weights::k7Bit, false, {0}, false, 8, true},
      {Weights::kPairsAtTheBound, true, {0}, true, 8, false},  // pairs fit as (c, tap) only
  };
  for (const Want& want : cases) {
    SCOPED_TRACE(std::string(name(want.kind)) + (want.is_signed ? " int8" : " uint8") + " zp " +
                 std::to_string(want.zp[0]) + " channels " + std::to_string(want.c));
    const int64_t c = want.c, k = c * 9;
    const auto w = make_weights(want.kind, oc, k, rng, 9);
    QconvWeights packed;
    qconv_pack_weights({w.data(), want.is_signed, k, 1}, oc, c, 3, 3, 1, want.zp, packed);
    ASSERT_EQ(packed.narrow(0).quads, want.quads);
    EXPECT_EQ(packed.tap_major(), want.tap_major);
    // The codes come back from either layout, in no more bytes than the pair
    // tiles plus an odd k pair's pad (2 bytes a row).
    std::vector<uint8_t> back(w.size());
    qconv_unpack_narrow_weights(packed, back.data());
    EXPECT_EQ(back, w);
    QgemmNarrowA pairs;
    qgemm_pack_narrow_a({w.data(), want.is_signed, k, 1}, oc, k, want.zp, pairs);
    EXPECT_LE(qconv_narrow_bytes(packed), pairs.bytes() + 2 * static_cast<uint64_t>(pairs.tiles * kQgemmMR));
  }
}

// One random conv (seed, iter) against the plain loop on every path.
void run_random_case(uint32_t seed, int iter, ThreadPool& pool2, int& tested) {
  std::mt19937 rng(seed * 1000003u + static_cast<uint32_t>(iter));
  auto pick = [&](std::vector<int64_t> v) { return v[rng() % v.size()]; };
  const Weights kind = static_cast<Weights>(rng() % 4);  // never full range: that is qgemm_x86_test's
  QconvGeometry g;
  g.group = pick({1, 1, 2, 3});
  const int64_t cg = pick({1, 2, 3, 4, 5, 7, 8, 16, 33}), ocg = pick({1, 5, 6, 7, 13, 19});
  g.batch = pick({1, 2, 3});
  g.in_c = cg * g.group;
  g.out_c = ocg * g.group;
  g.kernel_h = pick({1, 2, 3, 5});
  g.kernel_w = rng() % 2 ? g.kernel_h : pick({1, 3});
  g.stride_h = pick({1, 2, 3});
  g.stride_w = pick({1, 2});
  g.dilation_h = pick({1, 2});
  g.dilation_w = pick({1, 2});
  g.pad_top = pick({0, 1, 2});
  g.pad_left = pick({0, 1, 3});
  int64_t pad_bottom = pick({0, 1, 2}), pad_right = pick({0, 1, 3});
  if (rng() % 4 == 0) {  // the 1x1 direct case (reads the input itself)
    g.kernel_h = g.kernel_w = g.stride_h = g.stride_w = 1;
    g.pad_top = g.pad_left = pad_bottom = pad_right = 0;
  }
  g.in_h = pick({1, 3, 6, 9, 17});
  g.in_w = pick({1, 2, 5, 8, 16, 21, 35});
  const int64_t eh = (g.kernel_h - 1) * g.dilation_h + 1, ew = (g.kernel_w - 1) * g.dilation_w + 1;
  const int64_t hp = g.in_h + g.pad_top + pad_bottom, wp = g.in_w + g.pad_left + pad_right;
  if (hp < eh || wp < ew) return;
  ++tested;
  g.out_h = (hp - eh) / g.stride_h + 1;
  g.out_w = (wp - ew) / g.stride_w + 1;
  const bool x_signed = rng() % 2, int32_out = rng() % 3 == 0, y_signed = !int32_out && rng() % 2;
  const int32_t y_min = y_signed ? -128 : 0, y_max = y_signed ? 127 : 255;
  const int64_t k = cg * g.kernel_h * g.kernel_w;
  // Activations: uniform, or mostly the extremes (the largest pair sums).
  const bool extremes = rng() % 2;
  std::vector<uint8_t> x(static_cast<size_t>(g.batch * g.in_c * g.in_h * g.in_w));
  for (auto& v : x) {
    const uint32_t r = rng();
    const int u = extremes && r % 4 ? (r % 8 < 4 ? 255 : 0) : static_cast<int>(r >> 8) & 255;
    v = static_cast<uint8_t>(x_signed ? u - 128 : u);  // the u8 extremes of either type
  }
  const int32_t x_zp = x_signed ? static_cast<int32_t>(rng() % 256) - 128 : static_cast<int32_t>(rng() % 256);
  const auto w = make_weights(kind, g.out_c, k, rng, g.kernel_h * g.kernel_w);
  QconvWeights packed;
  auto owned = std::make_shared<const std::vector<uint8_t>>(w);
  const bool deferred = rng() % 2;  // on a VNNI CPU: the 8-bit tiles packed on first use
  qconv_pack_weights({owned->data(), true, k, 1}, g.out_c, cg, g.kernel_h, g.kernel_w, g.group, {0}, packed,
                     deferred ? owned : nullptr);
  owned.reset();
  std::vector<quant::FixedPointMultiplier> mult(static_cast<size_t>(g.out_c));
  for (auto& f : mult) f = quant::quantize_multiplier(std::exp2(std::uniform_real_distribution<double>(-20, 1)(rng)));
  const int32_t y_zp = y_signed ? static_cast<int32_t>(rng() % 256) - 128 : static_cast<int32_t>(rng() % 256);
  // A third of the cases clamp inside the type (a fused ReLU or Clip): the
  // AVX2 output stage leaves the clamp to its packs only for the whole range.
  int32_t q_lo = y_min, q_hi = y_max;
  if (rng() % 3 == 0) {
    q_lo = std::max(y_min, y_zp);
    q_hi = std::max(q_lo, y_max - static_cast<int32_t>(rng() % 20));
  }
  const QgemmRequant requant = qgemm_make_requant(mult, g.out_c, y_zp, q_lo, q_hi, QgemmRequantFor::kRows);
  std::vector<int32_t> bias(static_cast<size_t>(g.out_c));
  for (auto& b : bias) b = static_cast<int32_t>(rng() % 200001) - 100000;
  const int64_t plane = g.out_h * g.out_w, total = g.batch * g.out_c * plane;
  QgemmOutput out;
  out.kind = int32_out ? QgemmOutputKind::kInt32 : QgemmOutputKind::kCodes;
  out.channel_is_row = true;
  out.codes_signed = y_signed;
  out.bias = bias.data();
  out.bias_rs = 1;
  out.requant = &requant;
  out.ldo = plane;
  const bool residual_add = !int32_out && rng() % 3 == 0;
  std::vector<uint8_t> residual_codes(static_cast<size_t>(total));
  for (auto& v : residual_codes) v = static_cast<uint8_t>(rng());
  const auto shared = quant::shared_shift_multipliers(0.7, 1.3);
  ASSERT_TRUE(shared.has_value());
  QgemmResidualAdd residual = residual_join(residual_codes.data(), y_zp, y_signed ? -3 : 120,
                                            y_signed ? 5 : 131, y_min, y_max, *shared);
  if (residual_add) out.residual = &residual;
  SCOPED_TRACE("seed " + std::to_string(seed) + " iter " + std::to_string(iter) + " weights " + name(kind) +
               " batch " + std::to_string(g.batch) + " c " + std::to_string(g.in_c) + " " + std::to_string(g.in_h) +
               "x" + std::to_string(g.in_w) + " oc " + std::to_string(g.out_c) + " k " + std::to_string(g.kernel_h) +
               "x" + std::to_string(g.kernel_w) + " s " + std::to_string(g.stride_h) + "," +
               std::to_string(g.stride_w) + " d " + std::to_string(g.dilation_h) + "," + std::to_string(g.dilation_w) +
               " pads " + std::to_string(g.pad_top) + "," + std::to_string(g.pad_left) + "," +
               std::to_string(pad_bottom) + "," + std::to_string(pad_right) + " group " + std::to_string(g.group) +
               (x_signed ? " int8 x" : " uint8 x") + " x_zp " + std::to_string(x_zp) +
               (extremes ? " extreme x" : "") + (int32_out ? " int32 out" : "") +
               (residual_add ? " residual add" : "") + " codes in [" + std::to_string(q_lo) + ", " +
               std::to_string(q_hi) + "]");
  const bool want_quads = u8s8_enabled() && (kind != Weights::kOnePairOver || k < 2);
  EXPECT_EQ(packed.narrow(0).quads, want_quads);  // (not fatal: the outputs are checked too)
  // 7- and 4-bit pairs fit in any order: channels in fours take the quad
  // image (or, with QTK_QGEMM_NO_U8S8, the pair image).
  if (kind == Weights::k7Bit || kind == Weights::k4Bit)
    EXPECT_EQ(packed.tap_major(), qgemm_avx2_supported() && cg % 4 == 0 && g.kernel_h * g.kernel_w > 1);

  std::vector<int32_t> want(static_cast<size_t>(total));
  for (int64_t b = 0; b < g.batch; ++b)
    for (int64_t oc = 0; oc < g.out_c; ++oc)
      for (int64_t oh = 0; oh < g.out_h; ++oh)
        for (int64_t ow = 0; ow < g.out_w; ++ow) {
          int64_t acc = 0;
          const int64_t grp = oc / ocg;
          for (int64_t c = 0; c < cg; ++c)
            for (int64_t kh = 0; kh < g.kernel_h; ++kh)
              for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
                const int64_t ih = oh * g.stride_h - g.pad_top + kh * g.dilation_h;
                const int64_t iw = ow * g.stride_w - g.pad_left + kw * g.dilation_w;
                if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) continue;
                acc += static_cast<int64_t>(code(x, ((b * g.in_c + grp * cg + c) * g.in_h + ih) * g.in_w + iw,
                                                 x_signed) - x_zp) *
                       code(w, oc * k + (c * g.kernel_h + kh) * g.kernel_w + kw, true);
              }
          const int32_t v = static_cast<int32_t>(acc + bias[static_cast<size_t>(oc)]);  // no saturation here
          const size_t o = static_cast<size_t>(((b * g.out_c + oc) * g.out_h + oh) * g.out_w + ow);
          want[o] = int32_out ? v
                              : quant::requantize_to_code(v, mult[static_cast<size_t>(oc)], y_zp, q_lo, q_hi);
          if (residual_add)
            want[o] = quant::add_to_code(want[o] - residual.a_zp,
                                         code(residual_codes, static_cast<int64_t>(o), y_signed) - residual.b_zp,
                                         *shared, residual.c_zp, y_min, y_max);
        }
  for (QgemmPath p : paths())
    for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &pool2})
      for (bool in_place : {false, true}) {
        if (in_place && !residual_add) continue;
        std::vector<uint8_t> y(static_cast<size_t>(total) * (int32_out ? 4 : 1), 0xCD);
        if (in_place) y = residual_codes;
        residual.codes = in_place ? y.data() : residual_codes.data();
        out.out = y.data();
        qconv(g, x.data(), x_signed, x_zp, packed, out, pool, p);
        for (int64_t i = 0; i < total; ++i) {
          const int32_t got = int32_out ? reinterpret_cast<const int32_t*>(y.data())[i] : code(y, i, y_signed);
          ASSERT_EQ(got, want[static_cast<size_t>(i)])
              << "element " << i << " path " << qgemm_path_name(p) << (pool ? " 2 threads" : " 1 thread")
              << (in_place ? " in place" : "");
        }
      }
}

TEST(QconvU8s8, RandomShapesMatchPlainLoop) {
  ThreadPool pool2(2);
  const uint32_t seed = 2024;
  int tested = 0;
  for (int iter = 0; iter < 200; ++iter) {
    run_random_case(seed, iter, pool2, tested);
    if (HasFatalFailure()) return;
  }
  EXPECT_GE(tested, 120);  // most random geometries fit
}

// Large enough to split over two threads, the largest activations and pairs
// at the bound everywhere (every vpmaddubsw sum at its largest).
TEST(QconvU8s8, PairsAtTheBoundWithExtremeActivations) {
  for (const bool x_signed : {false, true}) {
    SCOPED_TRACE(x_signed ? "int8 x" : "uint8 x");
    QconvGeometry g;
    g.batch = 2;
    g.in_c = 24, g.out_c = 20;
    g.in_h = g.in_w = g.out_h = g.out_w = 20;
    g.kernel_h = g.kernel_w = 3;
    g.pad_top = g.pad_left = 1;
    const int64_t k = g.in_c * 9;
    std::vector<uint8_t> w(static_cast<size_t>(g.out_c * k));
    for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<uint8_t>(i % 4 < 2 ? 64 : -64);  // quads (64 64 -64 -64)
    std::vector<uint8_t> x(static_cast<size_t>(g.batch * g.in_c * g.in_h * g.in_w));
    // Channels 255 or 0 two by two: both pairs of either packing order (two
    // taps of a channel, two channels of a tap) see 255 twice.
    for (size_t i = 0; i < x.size(); ++i)
      x[i] = static_cast<uint8_t>((i / 400 / 2) % 2 ? 255 : 0) ^ (x_signed ? 0x80 : 0);
    const int32_t x_zp = x_signed ? 17 : 3;
    QconvWeights packed;
    qconv_pack_weights({w.data(), true, k, 1}, g.out_c, g.in_c, 3, 3, 1, {0}, packed);
    if (u8s8_enabled()) ASSERT_TRUE(packed.narrow(0).quads);
    if (u8s8_enabled()) EXPECT_TRUE(packed.tap_major());  // 24 channels: the quad image
    const int64_t total = g.batch * g.out_c * g.out_h * g.out_w;
    QgemmOutput out;
    out.channel_is_row = true;
    out.ldo = g.out_h * g.out_w;
    std::vector<int32_t> want(static_cast<size_t>(total)), got(static_cast<size_t>(total));
    out.out = want.data();
    qconv(g, x.data(), x_signed, x_zp, packed, out, nullptr, QgemmPath::kScalar);
    ThreadPool pool2(2);
    for (QgemmPath p : paths()) {
      std::fill(got.begin(), got.end(), 0);
      out.out = got.data();
      qconv(g, x.data(), x_signed, x_zp, packed, out, &pool2, p);
      ASSERT_EQ(got, want) << qgemm_path_name(p);
    }
  }
}

// The quad image made straight from the input (stride 1, channels in
// fours): rows narrower and wider than 16 pixels, int8 and uint8 input,
// dilations; against the scalar path (checked against the plain loop above).
TEST(QconvU8s8, QuadImageFromTheInputMatchesScalar) {
  if (!u8s8_enabled()) GTEST_SKIP() << "no AVX2 (or QTK_QGEMM_NO_U8S8): no quad image";
  std::mt19937 rng(11);
  for (const int64_t in_w : {3, 5, 15, 16, 17, 21})
    for (const bool x_signed : {false, true})
      for (const int64_t dilation : {1, 2}) {
        SCOPED_TRACE("width " + std::to_string(in_w) + (x_signed ? " int8 x" : " uint8 x") + " dilation " +
                     std::to_string(dilation));
        QconvGeometry g;
        g.batch = 2;
        g.in_c = 8, g.out_c = 7, g.in_h = 6, g.in_w = in_w;
        g.kernel_h = g.kernel_w = 3;
        g.dilation_h = g.dilation_w = dilation;
        g.pad_top = g.pad_left = dilation;
        g.out_h = g.in_h, g.out_w = g.in_w;
        const int64_t k = g.in_c * 9;
        const auto w = make_weights(Weights::k7Bit, g.out_c, k, rng, 9);
        QconvWeights packed;
        qconv_pack_weights({w.data(), true, k, 1}, g.out_c, g.in_c, 3, 3, 1, {0}, packed);
        ASSERT_TRUE(packed.tap_major());
        std::vector<uint8_t> x(static_cast<size_t>(g.batch * g.in_c * g.in_h * g.in_w));
        for (auto& v : x) v = static_cast<uint8_t>(rng());
        const int32_t x_zp = static_cast<int32_t>(rng() % 256) - (x_signed ? 128 : 0);
        QgemmOutput out;
        out.channel_is_row = true;
        out.ldo = g.out_h * g.out_w;
        std::vector<int32_t> want(static_cast<size_t>(g.batch * g.out_c * out.ldo)), got(want.size());
        out.out = want.data();
        qconv(g, x.data(), x_signed, x_zp, packed, out, nullptr, QgemmPath::kScalar);
        ASSERT_NE(std::count(want.begin(), want.end(), 0), static_cast<std::ptrdiff_t>(want.size()));
        out.out = got.data();
        qconv(g, x.data(), x_signed, x_zp, packed, out, nullptr, QgemmPath::kAvx2);
        ASSERT_EQ(got, want);
      }
}

// Threads that split one image each make only the rows of the quad image
// (u8 x s8 path) or pair image (int16 path, u8s8 off when packing) that their
// pixels read: shares that start or end inside a row, images split between
// threads (batch 3 over 2), tall kernels and dilation all match the scalar path.
TEST(QconvU8s8, ImageRowsOfAThreadsShareMatchScalar) {
  if (!qgemm_avx2_supported()) GTEST_SKIP() << "no AVX2: no quad or pair image";
  std::mt19937 rng(23);
  ThreadPool pool2(2), pool3(3), pool4(4);
  const char* saved = std::getenv("QTK_QGEMM_NO_U8S8");
  const std::string saved_value = saved ? saved : "";
  for (const bool pairs : {false, true})
    for (const int64_t in_w : {21, 28, 33})
      for (const int64_t kernel_h : {3, 5})
        for (const int64_t dilation : {1, 2})
          for (const int64_t batch : {1, 3}) {
            QconvGeometry g;
            g.batch = batch;
            g.in_c = 16, g.out_c = 16, g.in_h = 29, g.in_w = in_w;
            g.kernel_h = kernel_h, g.kernel_w = 3;
            g.dilation_h = g.dilation_w = dilation;
            g.pad_top = (kernel_h - 1) / 2 * dilation, g.pad_left = dilation;
            g.out_h = g.in_h, g.out_w = g.in_w;
            const int64_t k = g.in_c * g.kernel_h * g.kernel_w;
            const auto w = make_weights(Weights::k7Bit, g.out_c, k, rng, g.kernel_h * g.kernel_w);
            QconvWeights packed;
            if (pairs) ::setenv("QTK_QGEMM_NO_U8S8", "1", 1);  // read when packing
            qconv_pack_weights({w.data(), true, k, 1}, g.out_c, g.in_c, g.kernel_h, g.kernel_w, 1, {0}, packed);
            if (saved) ::setenv("QTK_QGEMM_NO_U8S8", saved_value.c_str(), 1);
            else ::unsetenv("QTK_QGEMM_NO_U8S8");
            ASSERT_TRUE(packed.tap_major());
            ASSERT_EQ(packed.narrow(0).quads, !pairs && u8s8_enabled());
            std::vector<uint8_t> x(static_cast<size_t>(g.batch * g.in_c * g.in_h * g.in_w));
            for (auto& v : x) v = static_cast<uint8_t>(rng());
            const int32_t x_zp = static_cast<int32_t>(rng() % 256);
            QgemmOutput out;
            out.channel_is_row = true;
            out.ldo = g.out_h * g.out_w;
            std::vector<int32_t> want(static_cast<size_t>(g.batch * g.out_c * out.ldo));
            out.out = want.data();
            qconv(g, x.data(), false, x_zp, packed, out, nullptr, QgemmPath::kScalar);
            for (ThreadPool* pool : {&pool2, &pool3, &pool4}) {
              SCOPED_TRACE(std::string(pairs ? "pair" : "quad") + " image, width " + std::to_string(in_w) +
                           " kernel " + std::to_string(kernel_h) + "x3 dilation " + std::to_string(dilation) +
                           " batch " + std::to_string(batch) + " threads " + std::to_string(pool->size()));
              std::vector<int32_t> got(want.size(), 0x5A5A5A5A);
              out.out = got.data();
              qconv(g, x.data(), false, x_zp, packed, out, pool, QgemmPath::kAvx2);
              ASSERT_EQ(got, want);
            }
          }
}

// A thread keeps its conv layout while the next conv has the same geometry;
// weights packed (tap, c) and (c, tap) need their k rows in different
// orders, so two such convs of one geometry, alternating on one thread (the
// scalar path reads k rows for both), each match a plain loop.
TEST(QconvU8s8, KeptLayoutFollowsTheWeightOrder) {
  if (!u8s8_enabled()) GTEST_SKIP() << "no AVX2 (or QTK_QGEMM_NO_U8S8): weights stay (c, tap)";
  std::mt19937 rng(23);
  QconvGeometry g;
  g.batch = 1;
  g.in_c = 8, g.out_c = 6, g.in_h = g.in_w = g.out_h = g.out_w = 7;
  g.kernel_h = g.kernel_w = 3;
  g.pad_top = g.pad_left = 1;
  const int64_t k = g.in_c * 9, hw = g.out_h * g.out_w;
  std::vector<uint8_t> x(static_cast<size_t>(g.in_c * hw));
  for (auto& v : x) v = static_cast<uint8_t>(rng());
  const int32_t x_zp = 9;
  struct Conv {
    std::vector<uint8_t> w;
    QconvWeights packed;
    std::vector<int32_t> want;
  };
  Conv convs[2];
  convs[0].w = make_weights(Weights::k7Bit, g.out_c, k, rng, 9);             // fits as (tap, c)
  convs[1].w = make_weights(Weights::kPairsAtTheBound, g.out_c, k, rng, 9);  // fits as (c, tap) only
  for (Conv& c : convs) {
    qconv_pack_weights({c.w.data(), true, k, 1}, g.out_c, g.in_c, 3, 3, 1, {0}, c.packed);
    c.want.assign(static_cast<size_t>(g.out_c * hw), 0);
    for (int64_t o = 0; o < g.out_c; ++o)
      for (int64_t oy = 0; oy < g.out_h; ++oy)
        for (int64_t ox = 0; ox < g.out_w; ++ox) {
          int32_t acc = 0;
          for (int64_t ci = 0; ci < g.in_c; ++ci)
            for (int64_t t = 0; t < 9; ++t) {
              const int64_t iy = oy + t / 3 - 1, ix = ox + t % 3 - 1;
              if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w) continue;
              acc += (x[static_cast<size_t>((ci * g.in_h + iy) * g.in_w + ix)] - x_zp) *
                     static_cast<int8_t>(c.w[static_cast<size_t>(o * k + ci * 9 + t)]);
            }
          c.want[static_cast<size_t>(o * hw + oy * g.out_w + ox)] = acc;
        }
  }
  ASSERT_TRUE(convs[0].packed.tap_major());
  ASSERT_FALSE(convs[1].packed.tap_major());
  QgemmOutput out;
  out.channel_is_row = true;
  out.ldo = hw;
  for (int round = 0; round < 4; ++round) {
    Conv& c = convs[round % 2];
    std::vector<int32_t> got(c.want.size());
    out.out = got.data();
    qconv(g, x.data(), false, x_zp, c.packed, out, nullptr, QgemmPath::kScalar);
    ASSERT_EQ(got, c.want) << "round " << round;
  }
}

}  // namespace
}  // namespace qtk::rt::x86
