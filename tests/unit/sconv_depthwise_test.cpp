// The AVX-512 depthwise float conv plane equals the reference sum
// (ref/depthwise_plane.h) bit for bit on random geometries: kernel sizes,
// strides (3 goes to the reference), dilations, paddings, planes narrower
// and wider than a vector, wide dilated kernels whose taps reach far past a
// narrow plane, 1-D planes, signed zeros and an infinite weight. (Run it
// under AddressSanitizer: a read past the padded buffer shows there.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "runtime/kernels/x86/sconv_depthwise.h"

namespace qtk::rt {
namespace {

TEST(SconvDepthwise, Avx512PlaneEqualsReferenceBitForBit) {
  if (!x86::sconv_depthwise_avx512_supported()) GTEST_SKIP() << "no AVX-512F on this CPU";
  const uint32_t seed = 4242;
  std::mt19937 rng(seed);
  auto pick = [&](std::vector<int64_t> v) { return v[rng() % v.size()]; };
  std::normal_distribution<float> val(0.f, 1.f);
  int tested = 0;
  for (int iter = 0; iter < 1500; ++iter) {
    DepthwisePlane g;
    g.in_h = pick({1, 2, 5, 7, 14, 28});
    g.in_w = pick({1, 3, 7, 14, 16, 17, 28, 33});
    g.k_h = pick({1, 2, 3, 5});
    g.k_w = pick({1, 3, 5, 7, 11});
    g.s_h = pick({1, 2, 3});
    g.s_w = pick({1, 1, 2, 3});
    g.d_h = pick({1, 2});
    g.d_w = pick({1, 2, 4, 8});
    g.p_h = pick({0, 1, 2});
    g.p_w = pick({0, 1, 2, 20});
    if (rng() % 6 == 0) g.in_h = g.k_h = 1, g.s_h = g.d_h = 1, g.p_h = 0;  // a 1-D conv's plane
    const int64_t pad_bottom = g.in_h == 1 && g.k_h == 1 ? 0 : pick({0, 1, 2}), pad_right = pick({0, 1, 2, 20});
    const int64_t eh = (g.k_h - 1) * g.d_h + 1, ew = (g.k_w - 1) * g.d_w + 1;
    if (g.in_h + g.p_h + pad_bottom < eh || g.in_w + g.p_w + pad_right < ew) continue;
    g.out_h = (g.in_h + g.p_h + pad_bottom - eh) / g.s_h + 1;
    g.out_w = (g.in_w + g.p_w + pad_right - ew) / g.s_w + 1;
    std::vector<float> x(static_cast<size_t>(g.in_h * g.in_w)), w(static_cast<size_t>(g.k_h * g.k_w));
    for (auto& v : x) v = rng() % 8 == 0 ? -0.f : val(rng);
    for (auto& v : w) v = rng() % 8 == 0 ? -0.f : val(rng);
    if (rng() % 20 == 0) w[rng() % w.size()] = std::numeric_limits<float>::infinity();
    const float bias = rng() % 4 == 0 ? -0.f : val(rng);
    std::vector<float> want(static_cast<size_t>(g.out_h * g.out_w)), got(want.size(), 12345.f);
    for (int64_t oh = 0; oh < g.out_h; ++oh)
      for (int64_t ow = 0; ow < g.out_w; ++ow)
        want[static_cast<size_t>(oh * g.out_w + ow)] = depthwise_output(x.data(), w.data(), bias, g, oh, ow);
    x86::sconv_depthwise_plane_avx512(x.data(), w.data(), bias, g, got.data());
    ASSERT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0)
        << "seed " << seed << " iter " << iter << " in " << g.in_h << "x" << g.in_w << " k " << g.k_h << "x" << g.k_w
        << " s " << g.s_h << "," << g.s_w << " d " << g.d_h << "," << g.d_w << " pads " << g.p_h << "," << g.p_w;
    ++tested;
  }
  EXPECT_GE(tested, 700);
}

TEST(SconvDepthwise, PaddingZerosTimesAnInfiniteWeightGiveNaNAsInOnnx) {
  // 1x1 input, 3x3 kernel, pads 1: the single output reads eight padding zeros.
  DepthwisePlane g;
  g.in_h = g.in_w = 1;
  g.k_h = g.k_w = 3;
  g.p_h = g.p_w = 1;
  std::vector<float> w(9, 1.f);
  w[0] = std::numeric_limits<float>::infinity();  // multiplies a padding zero
  const float x = 2.f;
  EXPECT_TRUE(std::isnan(depthwise_output(&x, w.data(), 0.f, g, 0, 0)));
  w[0] = 1.f;
  EXPECT_EQ(depthwise_output(&x, w.data(), 0.5f, g, 0, 0), 2.5f);
}

// The channel-vector kernel (several planes of one image, 16 channels per
// vector) equals the reference sum on every plane, bit for bit: channel
// counts around multiples of 16, a block of channels starting inside the
// prepared set, small and wider planes, strides, dilations, pads, signed
// zeros, NaN and infinite values.
TEST(SconvDepthwise, ChannelVectorsEqualReferenceBitForBit) {
  if (!x86::sconv_depthwise_avx512_supported()) GTEST_SKIP() << "no AVX-512F on this CPU";
  const uint32_t seed = 777;
  std::mt19937 rng(seed);
  auto pick = [&](std::vector<int64_t> v) { return v[rng() % v.size()]; };
  std::normal_distribution<float> val(0.f, 1.f);
  int tested = 0;
  for (int iter = 0; iter < 300; ++iter) {
    DepthwisePlane g;
    g.in_h = pick({1, 2, 4, 7, 14});
    g.in_w = pick({1, 3, 4, 7, 14, 17});
    g.k_h = pick({1, 3, 5});
    g.k_w = pick({1, 3, 5});
    g.s_h = pick({1, 2});
    g.s_w = pick({1, 2, 3});
    g.d_h = pick({1, 2});
    g.d_w = pick({1, 2});
    g.p_h = pick({0, 1, 2});
    g.p_w = pick({0, 1, 2});
    const int64_t pad_bottom = pick({0, 1, 2}), pad_right = pick({0, 1, 2});
    const int64_t eh = (g.k_h - 1) * g.d_h + 1, ew = (g.k_w - 1) * g.d_w + 1;
    if (g.in_h + g.p_h + pad_bottom < eh || g.in_w + g.p_w + pad_right < ew) continue;
    g.out_h = (g.in_h + g.p_h + pad_bottom - eh) / g.s_h + 1;
    g.out_w = (g.in_w + g.p_w + pad_right - ew) / g.s_w + 1;
    const int64_t channels = pick({1, 5, 16, 17, 31, 40, 64}), taps = g.k_h * g.k_w;
    const int64_t c_begin = rng() % ((channels + 15) / 16) * 16, c_count = 1 + rng() % (channels - c_begin);
    const int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
    std::vector<float> x(static_cast<size_t>(c_count * in_plane)), w(static_cast<size_t>(channels * taps)),
        bias(static_cast<size_t>(channels));
    for (auto& v : x) v = rng() % 8 == 0 ? -0.f : val(rng);
    for (auto& v : w) v = rng() % 8 == 0 ? -0.f : val(rng);
    for (auto& v : bias) v = rng() % 4 == 0 ? -0.f : val(rng);
    if (rng() % 10 == 0) w[rng() % w.size()] = std::numeric_limits<float>::infinity();
    if (rng() % 10 == 0) x[rng() % x.size()] = std::numeric_limits<float>::quiet_NaN();
    const bool with_bias = rng() % 5 != 0;
    x86::SconvDepthwiseChannels prep;
    x86::sconv_depthwise_channels_prepare(w.data(), with_bias ? bias.data() : nullptr, channels, g, prep);
    std::vector<float> got(static_cast<size_t>(c_count * out_plane), 12345.f), want(got.size());
    for (int64_t c = 0; c < c_count; ++c)
      depthwise_plane_reference(x.data() + c * in_plane, w.data() + (c_begin + c) * taps,
                                with_bias ? bias[static_cast<size_t>(c_begin + c)] : 0.f, g, want.data() + c * out_plane);
    x86::sconv_depthwise_channels_avx512(prep, x.data(), c_begin, c_count, got.data());
    ASSERT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0)
        << "seed " << seed << " iter " << iter << " channels " << channels << " [" << c_begin << ", +" << c_count
        << ") in " << g.in_h << "x" << g.in_w << " k " << g.k_h << "x" << g.k_w << " s " << g.s_h << "," << g.s_w
        << " d " << g.d_h << "," << g.d_w << " pads " << g.p_h << "," << g.p_w;
    ++tested;
  }
  EXPECT_GE(tested, 150);
}

}  // namespace
}  // namespace qtk::rt
