// Softmax's and LayerNormalization's row reductions (x86/row_stats.h): the
// AVX-512 forms equal the scalar order bit for bit, on every length 0..70
// (chains and tails), with signed zeros, NaN, infinities and large spreads.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/cpu_features.h"
#include "runtime/kernels/x86/row_stats.h"

namespace qtk::rt {
namespace {

template <class T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

std::vector<float> row(std::mt19937& rng, int64_t n, int kind) {
  std::normal_distribution<float> v(0.f, 3.f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& e : x) e = kind == 3 ? v(rng) * 1e30f : v(rng);
  if (n > 0 && kind == 1) x[rng() % n] = std::numeric_limits<float>::quiet_NaN();
  if (n > 0 && kind == 2) {
    x[rng() % n] = -0.f;
    x[rng() % n] = std::numeric_limits<float>::infinity();
  }
  if (kind == 4) std::fill(x.begin(), x.end(), -0.f);
  return x;
}

TEST(RowStats, VectorFormsEqualTheScalarOrderBitForBit) {
  if (!cpu_has_avx512f() || env_flag_set("QTK_VMATH_SCALAR")) GTEST_SKIP() << "no AVX-512F: only the scalar forms run";
  std::mt19937 rng(31);
  for (int64_t n = 0; n <= 70; ++n)
    for (int kind = 0; kind < 5; ++kind) {
      const std::vector<float> x = row(rng, n, kind);
      const std::string what = "n " + std::to_string(n) + " kind " + std::to_string(kind);
      if (n > 0) EXPECT_TRUE(same_bits(x86::row_max_f32(x.data(), n), x86::scalar_rows::row_max_f32(x.data(), n))) << what;
      EXPECT_TRUE(same_bits(x86::row_sum_f32(x.data(), n), x86::scalar_rows::row_sum_f32(x.data(), n))) << what;
      double m1, s1, m2, s2;
      x86::row_moments_f32(x.data(), n, 1e-5, m1, s1);
      x86::scalar_rows::row_moments_f32(x.data(), n, 1e-5, m2, s2);
      EXPECT_TRUE(same_bits(m1, m2) && same_bits(s1, s2)) << what;
      std::vector<double> scale(static_cast<size_t>(n)), bias(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) scale[i] = 0.5 + 0.01 * static_cast<double>(i), bias[i] = -0.1 * static_cast<double>(i % 5);
      for (bool with_bias : {false, true}) {
        std::vector<float> y1(static_cast<size_t>(n), 9.f), y2(static_cast<size_t>(n), 7.f);
        x86::layer_norm_row_f32(x.data(), n, m1, s1, scale.data(), with_bias ? bias.data() : nullptr, y1.data());
        x86::scalar_rows::layer_norm_row_f32(x.data(), n, m2, s2, scale.data(), with_bias ? bias.data() : nullptr,
                                             y2.data());
        if (n > 0)  // memcmp of an empty vector's null data is undefined
          EXPECT_EQ(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)), 0) << what << " bias " << with_bias;
      }
    }
}

// The scalar order itself: element i goes to chain i % 8, chains joined
// pairwise. In one chain 1e17 + 1 + ... + 1 - 1e17 loses the ones (double's
// step at 1e17 is 16) and gives 0; in eight chains 1e17 and -1e17 meet in
// chain 0 and the seven ones survive.
TEST(RowStats, ScalarOrderIsEightChains) {
  std::vector<float> x(20);
  for (int i = 0; i < 20; ++i) x[i] = static_cast<float>((i * 7) % 20);
  EXPECT_EQ(x86::scalar_rows::row_max_f32(x.data(), 20), 19.f);
  EXPECT_EQ(x86::scalar_rows::row_max_f32(x.data(), 3), 14.f);
  std::vector<float> big = {1e17f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f, -1e17f};
  EXPECT_EQ(x86::scalar_rows::row_sum_f32(big.data(), 9), 7.0);
  EXPECT_EQ(x86::row_sum_f32(big.data(), 9), 7.0);
}

}  // namespace
}  // namespace qtk::rt
