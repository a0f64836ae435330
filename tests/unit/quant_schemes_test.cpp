#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "quant/schemes/fixed_point.h"
#include "quant/schemes/linear.h"
#include "quant/schemes/packing.h"
#include "quant/schemes/param_layout.h"
#include "quant/schemes/qformat.h"

namespace qtk::quant {
namespace {

TEST(QFormat, TableIsConsistent) {
  for (const auto& t : kQFormats) {
    EXPECT_EQ(&traits(t.format), &t) << t.name;
    EXPECT_EQ(t.qmax - t.qmin + 1, 1 << t.bits) << t.name;
    EXPECT_EQ(qformat_from_name(t.name), t.format);
  }
  EXPECT_FALSE(qformat_from_name("int5").has_value());
}

// Every format, symmetric and asymmetric: values inside the range come back
// within half a step, and the range ends are not clipped by more than a step.
TEST(LinearScheme, RoundTripErrorIsHalfAStepForEveryFormat) {
  std::mt19937 rng(7);
  for (const auto& t : kQFormats) {
    for (bool symmetric : {true, false}) {
      if (symmetric && !t.is_signed && t.bits < 8) continue;
      const float lo = -1.7f, hi = 2.3f;
      QParams p = qparams_linear(lo, hi, t.format, symmetric);
      ASSERT_GT(p.scale, 0.f);
      std::uniform_real_distribution<float> d(lo, hi);
      for (int i = 0; i < 2000; ++i) {
        float x = d(rng);
        int32_t q = quantize_value_linear(x, p, t.format);
        ASSERT_GE(q, t.qmin);
        ASSERT_LE(q, t.qmax);
        float y = (q - p.zero_point) * p.scale;
        ASSERT_LE(std::fabs(x - y), p.scale * 0.5f * 1.0001f + 1e-6f)
            << t.name << (symmetric ? " sym" : " asym") << " x=" << x << " q=" << q;
      }
      // zero is exact
      int32_t qz = quantize_value_linear(0.f, p, t.format);
      EXPECT_EQ((qz - p.zero_point) * p.scale, 0.f) << t.name;
    }
  }
}

TEST(LinearScheme, TiesToEvenAndSaturation) {
  QParams p{1.f, 0};
  EXPECT_EQ(quantize_value_linear(0.5f, p, QFormat::kInt8), 0);
  EXPECT_EQ(quantize_value_linear(1.5f, p, QFormat::kInt8), 2);
  EXPECT_EQ(quantize_value_linear(2.5f, p, QFormat::kInt8), 2);
  EXPECT_EQ(quantize_value_linear(-2.5f, p, QFormat::kInt8), -2);
  EXPECT_EQ(quantize_value_linear(1000.f, p, QFormat::kInt8), 127);
  EXPECT_EQ(quantize_value_linear(-1000.f, p, QFormat::kInt4), -8);
  EXPECT_EQ(quantize_value_linear(1000.f, p, QFormat::kInt2), 1);
  EXPECT_EQ(quantize_value_linear(-3.f, QParams{1.f, 128}, QFormat::kUInt8), 125);
  EXPECT_EQ(quantize_value_linear(NAN, QParams{1.f, 3}, QFormat::kUInt8), 3);
}

TEST(LinearScheme, SymmetricRepresentsBothEnds) {
  for (QFormat f : {QFormat::kInt8, QFormat::kInt4, QFormat::kInt3, QFormat::kInt2}) {
    QParams p = qparams_linear(-0.3f, 0.6f, f, true);
    EXPECT_EQ(p.zero_point, 0);
    float top = quantize_value_linear(0.6f, p, f) * p.scale;
    float bottom = quantize_value_linear(-0.6f, p, f) * p.scale;
    EXPECT_NEAR(top, 0.6f, 1e-6f) << traits(f).name;
    EXPECT_NEAR(bottom, -0.6f, 1e-6f) << traits(f).name;
  }
}

TEST(Log2Scheme, LevelsArePowersOfTwoAndNearest) {
  const float s = 2.f;
  for (QFormat f : {QFormat::kInt8, QFormat::kInt4, QFormat::kInt3}) {
    const int32_t qmax = traits(f).qmax;
    for (int32_t q = -qmax; q <= qmax; ++q) {
      float v = dequantize_value_log2(q, s, f);
      EXPECT_EQ(quantize_value_log2(v, s, f), q) << traits(f).name << " q=" << q;
      if (q != 0) {
        int e;
        float m = std::frexp(std::fabs(v), &e);
        EXPECT_EQ(m, 0.5f);  // an exact power of two
      }
    }
    // Nearest level in the linear domain: 1.4 is nearer 1 than 2; 1.6 nearer 2.
    EXPECT_EQ(dequantize_value_log2(quantize_value_log2(1.4f, s, f), s, f), 1.f);
    EXPECT_EQ(dequantize_value_log2(quantize_value_log2(-1.6f, s, f), s, f), -2.f);
    EXPECT_EQ(quantize_value_log2(100.f, s, f), qmax);
    EXPECT_EQ(quantize_value_log2(0.f, s, f), 0);
  }
}

TEST(FixedPoint, MatchesRealMultiplicationWithinOne) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> mult(1e-6, 0.999);
  std::uniform_int_distribution<int32_t> acc(-(1 << 24), 1 << 24);
  for (int i = 0; i < 20000; ++i) {
    double real = mult(rng);
    FixedPointMultiplier m = quantize_multiplier(real);
    ASSERT_GE(m.multiplier, 1 << 30);
    int32_t a = acc(rng);
    int32_t got = requantize_fixed_point(a, m);
    double want = a * real;
    ASSERT_LE(std::fabs(got - want), 0.5 + 1e-6 * std::fabs(want) + 1e-3) << "real=" << real << " acc=" << a;
  }
  EXPECT_EQ(requantize_fixed_point(12345, quantize_multiplier(0.0)), 0);
  EXPECT_EQ(requantize_fixed_point(5, quantize_multiplier(0.5)), 3);    // 2.5 -> 3 (half up)
  EXPECT_EQ(requantize_fixed_point(-5, quantize_multiplier(0.5)), -2);  // -2.5 -> -2 (half up)
  EXPECT_EQ(requantize_to_code(1000, quantize_multiplier(1.0 / 8), 10, 0, 255), 135);
  EXPECT_EQ(requantize_to_code(100000, quantize_multiplier(0.25), 0, -128, 127), 127);
}

TEST(Packing, RoundTripsSignedAndUnsigned) {
  std::mt19937 rng(3);
  for (int64_t n : {1, 2, 3, 7, 64, 65}) {
    std::vector<int32_t> s4(n), u4(n), s2(n), back(n);
    for (int64_t i = 0; i < n; ++i) {
      s4[i] = static_cast<int32_t>(rng() % 16) - 8;
      u4[i] = static_cast<int32_t>(rng() % 16);
      s2[i] = static_cast<int32_t>(rng() % 4) - 2;
    }
    auto p = pack_4bit(s4.data(), n);
    ASSERT_EQ(static_cast<int64_t>(p.size()), (n + 1) / 2);
    unpack_4bit(p.data(), n, true, back.data());
    EXPECT_EQ(back, s4);
    p = pack_4bit(u4.data(), n);
    unpack_4bit(p.data(), n, false, back.data());
    EXPECT_EQ(back, u4);
    p = pack_2bit(s2.data(), n);
    ASSERT_EQ(static_cast<int64_t>(p.size()), (n + 3) / 4);
    unpack_2bit(p.data(), n, true, back.data());
    EXPECT_EQ(back, s2);
  }
  // Layout: first element in the low nibble.
  int32_t two[2] = {1, -1};
  EXPECT_EQ(pack_4bit(two, 2)[0], 0xF1);
}

}  // namespace
}  // namespace qtk::quant

namespace qtk::quant {
namespace {

// for_each_stretch: the stretches cover every element once, in order, and
// every element of one has the stretch's parameter; per-axis layouts give
// one stretch per inner block.
TEST(ParamLayoutStretches, CoverEveryElementWithItsParameter) {
  std::mt19937 rng(7);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int c = 0; c < 300; ++c) {
    Shape s;
    for (int d = pick(1, 4); d > 0; --d) s.push_back(pick(1, 7));
    const int axis = pick(0, static_cast<int>(s.size()) - 1);
    const int kind = pick(0, 2);
    const ParamLayout l = kind == 0 ? ParamLayout::per_tensor()
                          : kind == 1 ? ParamLayout::per_axis(s, axis)
                                      : ParamLayout::per_block(s, axis, pick(1, 4));
    const int64_t n = shape_numel(s);
    int64_t next = 0, stretches = 0;
    for_each_stretch(l, n, [&](int64_t p, int64_t begin, int64_t end) {
      ASSERT_EQ(begin, next);
      ASSERT_LT(begin, end);
      for (int64_t j = begin; j < end; ++j)
        ASSERT_EQ(l.index_of(j), p) << "case " << c << " shape " << shape_to_string(s) << " axis " << axis
                                    << " kind " << kind << " element " << j;
      next = end;
      ++stretches;
    });
    EXPECT_EQ(next, n);
    if (kind == 1 && l.count > 1) EXPECT_EQ(stretches, n / l.inner) << "per axis: one stretch per inner block";
  }
}

}  // namespace
}  // namespace qtk::quant
