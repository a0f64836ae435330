// The VNNI direct conv without pad lanes (qgemm_conv_vnni_dense.cpp) against
// the scalar conv path (itself checked against a plain loop in
// qgemm_x86_test.cpp): random convs with stride 1 or 2 per axis and input
// planes stride times the output's (stride 1: "same" convs), odd output
// planes (7x7, 5x5: blocks of 16 images; 6x6: 4; planes below a kernel's
// extent, single rows), kernels 1 to 5 with asymmetric pads (5x5: more
// classes than one vpermd takes, not taken), channel counts off the quads
// and row passes, batches that leave the last block partial, uint8/int8 codes, zero points, folded, kept and
// saturating biases, the fused residual join (also written over the
// residual), one and two threads. Bit-exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "quant/schemes/fixed_point.h"
#include "runtime/kernels/x86/qgemm.h"
#include "runtime/kernels/x86/qgemm_conv.h"
#include "runtime/kernels/x86/qgemm_vnni.h"
#include "runtime/thread_pool.h"
#include "residual_join.h"

namespace qtk::rt::x86 {
namespace {

std::vector<uint8_t> bytes_of(int64_t n, std::mt19937& rng) {
  std::vector<uint8_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<uint8_t>(rng() & 0xFF);
  return v;
}

int32_t zero_point(bool is_signed, std::mt19937& rng) {
  return static_cast<int32_t>(rng() % 256) - (is_signed ? 128 : 0);
}

TEST(QconvDense, MatchesTheScalarPath) {
  if (!qgemm_avx512_vnni_supported()) GTEST_SKIP() << "no AVX-512 VNNI: the dense path is not taken";
  ThreadPool pool2(2);
  const uint32_t seed = 2026;
  std::mt19937 rng(seed);
  auto pick = [&](std::vector<int64_t> v) { return v[rng() % v.size()]; };
  const uint64_t taken_before = detail::qconv_vnni_dense_taken();
  for (int iter = 0; iter < 240; ++iter) {
    QconvGeometry g;
    g.batch = pick({1, 2, 3, 5, 16, 17});
    g.in_c = pick({2, 3, 5, 16, 21});
    g.out_c = pick({1, 7, 8, 13, 16, 24, 33});
    g.kernel_h = pick({1, 2, 3, 3, 5});
    g.kernel_w = rng() % 2 ? g.kernel_h : pick({1, 3});
    g.pad_top = static_cast<int64_t>(rng() % static_cast<uint32_t>(g.kernel_h));  // the bottom pad: the rest
    g.pad_left = static_cast<int64_t>(rng() % static_cast<uint32_t>(g.kernel_w));
    g.stride_h = pick({1, 1, 2});
    g.stride_w = pick({1, 1, 2});
    g.out_h = pick({1, 2, 5, 6, 7, 14});
    g.out_w = pick({1, 3, 5, 6, 7, 14, 28});
    g.in_h = g.stride_h * g.out_h;  // the end pads: kernel - 1 - pad (stride 1), that or one less (stride 2)
    g.in_w = g.stride_w * g.out_w;
    const bool x_signed = rng() % 2, w_signed = rng() % 2, y_signed = rng() % 2;
    const int32_t y_min = y_signed ? -128 : 0, y_max = y_signed ? 127 : 255;
    const int64_t k = g.in_c * g.kernel_h * g.kernel_w, plane = g.out_h * g.out_w;
    const int64_t total = g.batch * g.out_c * plane;
    const auto x = bytes_of(g.batch * g.in_c * g.in_h * g.in_w, rng);
    const auto w = bytes_of(g.out_c * k, rng);
    const int32_t x_zp = zero_point(x_signed, rng);
    QconvWeights packed;  // symmetric weights: the direct path (no pixel sums)
    qconv_pack_weights({w.data(), w_signed, k, 1}, g.out_c, g.in_c, g.kernel_h, g.kernel_w, 1,
                       {w_signed ? 0 : 128}, packed);
    std::vector<quant::FixedPointMultiplier> mult(static_cast<size_t>(g.out_c));
    std::uniform_real_distribution<double> e(-14.0, 2.0);
    for (auto& f : mult) f = quant::quantize_multiplier(std::exp2(e(rng)));
    const QgemmRequant requant =
        qgemm_make_requant(mult, g.out_c, zero_point(y_signed, rng), y_min, y_max, QgemmRequantFor::kRows);
    // Bias: none, small (folded into the row constants), or at the int32
    // limits (kept for the output stage's saturating add).
    const int bias_mode = static_cast<int>(rng() % 3);
    std::vector<int32_t> bias(static_cast<size_t>(g.out_c));
    for (auto& b : bias)
      b = bias_mode == 2 ? (rng() % 2 ? INT32_MAX - static_cast<int32_t>(rng() % 1000)
                                      : INT32_MIN + static_cast<int32_t>(rng() % 1000))
                         : static_cast<int32_t>(rng() % 200001) - 100000;
    QgemmOutput out;
    out.kind = QgemmOutputKind::kCodes;
    out.channel_is_row = true;
    out.codes_signed = y_signed;
    out.bias = bias_mode == 0 ? nullptr : bias.data();
    out.bias_rs = 1;
    out.requant = &requant;
    out.ldo = plane;
    const bool residual_add = rng() % 3 == 0;
    const auto residual_codes = bytes_of(total, rng);
    const auto shared = quant::shared_shift_multipliers(0.6, 1.7);
    ASSERT_TRUE(shared.has_value());
    const int32_t b_zp = zero_point(y_signed, rng), c_zp = zero_point(y_signed, rng);
    QgemmResidualAdd residual = residual_join(nullptr, requant.zero_point, b_zp, c_zp, y_min, y_max, *shared);
    if (residual_add) out.residual = &residual;
    SCOPED_TRACE("seed " + std::to_string(seed) + " iter " + std::to_string(iter) + " batch " +
                 std::to_string(g.batch) + " c " + std::to_string(g.in_c) + " " + std::to_string(g.in_h) + "x" +
                 std::to_string(g.in_w) + " oc " + std::to_string(g.out_c) + " k " + std::to_string(g.kernel_h) +
                 "x" + std::to_string(g.kernel_w) + " s " + std::to_string(g.stride_h) + "," +
                 std::to_string(g.stride_w) + " pads " + std::to_string(g.pad_top) + "," +
                 std::to_string(g.pad_left) + " bias " + std::to_string(bias_mode) +
                 (residual_add ? " residual add" : ""));
    std::vector<uint8_t> want(static_cast<size_t>(total));
    residual.codes = residual_codes.data();
    out.out = want.data();
    qconv(g, x.data(), x_signed, x_zp, packed, out, nullptr, QgemmPath::kScalar);
    for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &pool2})
      for (bool in_place : {false, true}) {
        if (in_place && !residual_add) continue;
        std::vector<uint8_t> got(static_cast<size_t>(total), 0xCD);
        if (in_place) got = residual_codes;  // as a session does with a dead residual
        residual.codes = in_place ? got.data() : residual_codes.data();
        out.out = got.data();
        qconv(g, x.data(), x_signed, x_zp, packed, out, pool, QgemmPath::kAvx512Vnni);
        for (int64_t i = 0; i < total; ++i)
          ASSERT_EQ(got[static_cast<size_t>(i)], want[static_cast<size_t>(i)])
              << "element " << i << (pool ? " 2 threads" : " 1 thread") << (in_place ? " in place" : "");
      }
  }
  // The comparisons above were with the dense path, not only its fallbacks.
  EXPECT_GE(detail::qconv_vnni_dense_taken() - taken_before, 200u);
}

}  // namespace
}  // namespace qtk::rt::x86
