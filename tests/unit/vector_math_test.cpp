// The vectorized exp/erf against their scalar reference (bit for bit) and
// against libm (accuracy), including the edges: NaN, infinities, the
// overflow and underflow bounds, the erf branch points, array tails.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "runtime/kernels/ref/approx_math.h"
#include "runtime/kernels/x86/vector_math.h"

namespace qtk::rt {
namespace {

namespace approx = ref::approx;

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

std::vector<float> probe_values() {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> v = {0.f,   -0.f,  1.f,   -1.f,  4.f,   -4.f, 0.99999994f, 1.0000001f, 3.9999998f,
                          88.3f, 88.4f, 88.7f, -87.3f, -87.4f, -103.f, 1e-30f, -1e-30f, 1e30f, -1e30f,
                          inf,   -inf,  std::numeric_limits<float>::quiet_NaN()};
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> wide(-100.f, 100.f), narrow(-5.f, 5.f);
  for (int i = 0; i < 4000; ++i) v.push_back(i % 2 ? wide(rng) : narrow(rng));
  return v;
}

void expect_same_bits(const std::vector<float>& x, void (*vec)(const float*, float*, int64_t), float (*ref)(float),
                      const char* name) {
  for (int64_t n : {int64_t{1}, int64_t{15}, int64_t{17}, static_cast<int64_t>(x.size())}) {  // tails too
    std::vector<float> y(static_cast<size_t>(n), -7.f);
    vec(x.data(), y.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const float want = ref(x[i]);
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(y[i])) << name << "(" << x[i] << ")";
      } else {
        EXPECT_EQ(bits(y[i]), bits(want)) << name << "(" << x[i] << ") = " << y[i] << ", reference " << want;
      }
    }
  }
}

TEST(VectorMath, ExpMatchesItsScalarReferenceBitForBit) {
  expect_same_bits(probe_values(), x86::exp_f32, approx::exp_f32, "exp");
}

TEST(VectorMath, ErfMatchesItsScalarReferenceBitForBit) {
  expect_same_bits(probe_values(), x86::erf_f32, approx::erf_f32, "erf");
}

// The vector erf packs the 1 <= |x| < 4 lanes of a block (1024 elements)
// and puts their results back: every length around the block edges, with
// none, some, and all lanes in that range, in place too, equal bit for bit.
TEST(VectorMath, ErfPackedLanesLandInPlaceBitForBit) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.f, 1.5f);
  std::uniform_real_distribution<float> mid(1.f, 4.f), tiny(-0.9f, 0.9f);
  for (int64_t n : {1, 16, 31, 1000, 1023, 1024, 1025, 2053, 5000})
    for (int mix = 0; mix < 4; ++mix) {
      std::vector<float> x(static_cast<size_t>(n));
      for (auto& v : x) {
        if (mix == 0) v = normal(rng);
        else if (mix == 1) v = (rng() % 2 ? 1.f : -1.f) * mid(rng);  // every lane packed
        else if (mix == 2) v = tiny(rng);                            // none packed
        else v = rng() % 9 == 0 ? mid(rng) : tiny(rng) * 0.5f;       // a few
      }
      if (mix == 0 && n > 10) x[3] = std::numeric_limits<float>::quiet_NaN(), x[n - 1] = -2.5f;
      std::vector<float> y(x.size(), -7.f), in_place = x;
      x86::erf_f32(x.data(), y.data(), n);
      x86::erf_f32(in_place.data(), in_place.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(bits(y[i]), bits(approx::erf_f32(x[i]))) << "n " << n << " mix " << mix << " i " << i;
        ASSERT_EQ(bits(in_place[i]), bits(y[i])) << "in place, n " << n << " mix " << mix << " i " << i;
      }
    }
}

TEST(VectorMath, ExpIsWithinTwoUlpOfLibm) {
  for (float x = -87.f; x < 88.f; x += 0.0137f) {
    const float got = approx::exp_f32(x), want = std::exp(x);
    EXPECT_LE(std::fabs(got - want), 2.5e-7f * want) << "exp(" << x << ")";
  }
  EXPECT_EQ(approx::exp_f32(89.f), std::numeric_limits<float>::infinity());
  EXPECT_EQ(approx::exp_f32(-88.f), 0.f);
  EXPECT_TRUE(std::isnan(approx::exp_f32(std::numeric_limits<float>::quiet_NaN())));
}

TEST(VectorMath, ErfIsWithinThreeTenMillionthsOfLibm) {
  double worst = 0;
  for (float x = -6.f; x < 6.f; x += 0.00071f)
    worst = std::max(worst, std::fabs(double(approx::erf_f32(x)) - std::erf(double(x))));
  EXPECT_LT(worst, 3e-7);
  EXPECT_EQ(approx::erf_f32(std::numeric_limits<float>::infinity()), 1.f);
  EXPECT_EQ(approx::erf_f32(-std::numeric_limits<float>::infinity()), -1.f);
  EXPECT_EQ(bits(approx::erf_f32(-0.f)), bits(-0.f));
  // Odd: erf(-x) = -erf(x) exactly.
  for (float x = 0.f; x < 5.f; x += 0.013f) EXPECT_EQ(approx::erf_f32(-x), -approx::erf_f32(x)) << x;
}

}  // namespace
}  // namespace qtk::rt
