// The AVX2 and scalar tiers' 8-bit weight layouts (qgemm.h): conv weights
// held as 8-bit tiles (QgemmNarrowA) and widened to int16 pairs right before
// use, against qgemm_pack_a of the same codes; the 8-bit B panels
// (QgemmPackedB::narrow) read by the many-row micro-kernel with the B zero
// points taken out at the end, against the scalar int16 kernel and the
// scalar path; convs whose weights take several expanded chunks; and the
// kernels that let their weights go on these tiers, against the reference.
// Random shapes (odd K, every row count), int8/uint8, zero points per row
// or per tensor, zero or not. Bit-exact throughout.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "runtime/kernels/x86/qgemm.h"
#include "runtime/kernels/x86/qgemm_conv.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk::rt::x86 {
namespace {

std::vector<uint8_t> random_bytes(int64_t n, std::mt19937& rng) {
  std::vector<uint8_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<uint8_t>(rng() & 0xFF);
  return v;
}

int32_t random_code(bool is_signed, std::mt19937& rng) {
  return static_cast<int32_t>(rng() % 256) - (is_signed ? 128 : 0);
}

int32_t code_of(const std::vector<uint8_t>& v, int64_t i, bool is_signed) {
  return is_signed ? static_cast<int8_t>(v[static_cast<size_t>(i)]) : v[static_cast<size_t>(i)];
}

// Zero points: 0 = none (all 0), 1 = one for all rows, 2 = one per row.
std::vector<int32_t> random_zero_points(int mode, int64_t rows, bool is_signed, std::mt19937& rng) {
  if (mode == 0) return {0};
  if (mode == 1) return {random_code(is_signed, rng)};
  std::vector<int32_t> z(static_cast<size_t>(rows));
  for (auto& v : z) v = random_code(is_signed, rng);
  return z;
}

std::vector<QgemmPath> expand_paths() {
  std::vector<QgemmPath> p{QgemmPath::kScalar};
  if (qgemm_avx2_supported()) p.push_back(QgemmPath::kAvx2);
  return p;
}

TEST(QgemmNarrowA, ExpansionMatchesThePairLayout) {
  std::mt19937 rng(31337);
  const int64_t ks[] = {1, 2, 3, 5, 8, 9, 17, 24, 27, 31, 63, 64, 65, 200, 577};
  for (int iter = 0; iter < 300; ++iter) {
    const int64_t m = iter < 40 ? 1 + iter % 20 : 1 + static_cast<int64_t>(rng() % 50);
    const int64_t k = ks[rng() % std::size(ks)];
    const bool is_signed = rng() % 2;
    const int zp_mode = static_cast<int>(rng() % 3);
    SCOPED_TRACE("m " + std::to_string(m) + " k " + std::to_string(k) + (is_signed ? " int8" : " uint8") +
                 " zero points " + std::to_string(zp_mode));
    const auto codes = random_bytes(m * k, rng);
    const auto zp = random_zero_points(zp_mode, m, is_signed, rng);
    const QgemmCodes a{codes.data(), is_signed, k, 1};
    QgemmPackedA want;
    qgemm_pack_a(a, m, k, zp, want);
    QgemmNarrowA narrow;
    qgemm_pack_narrow_a(a, m, k, zp, narrow);
    ASSERT_EQ(narrow.tiles, want.tiles);
    ASSERT_EQ(narrow.kpairs, want.kpairs);
    // The codes come back as they were.
    std::vector<uint8_t> back(codes.size(), 0xEE);
    qgemm_unpack_narrow_a(narrow, back.data());
    ASSERT_EQ(back, codes);
    const int64_t tile_words = narrow.kpairs * kQgemmMR;
    for (QgemmPath p : expand_paths()) {
      SCOPED_TRACE(qgemm_path_name(p));
      // Every tile range: from each start, one tile, two, or to the end.
      for (int64_t t0 = 0; t0 < narrow.tiles; ++t0)
        for (int64_t t1 : {t0 + 1, std::min(narrow.tiles, t0 + 2), narrow.tiles}) {
          // Exactly the words plus the slack the expansion may write.
          std::vector<int32_t> got(static_cast<size_t>((t1 - t0) * tile_words + kQgemmExpandSlack / 2), 0x5A5A5A5A);
          detail::qgemm_expand_a(p)(narrow, t0, t1, got.data());
          for (int64_t w = 0; w < (t1 - t0) * tile_words; ++w)
            ASSERT_EQ(got[static_cast<size_t>(w)], want.tile(t0)[w])
                << "tiles [" << t0 << ", " << t1 << ") word " << w << " (k pair " << (w % tile_words) / kQgemmMR
                << ", row " << w % kQgemmMR << ")";
        }
    }
  }
}

// A zero point that is no code of the type cannot pad an odd K: refused.
TEST(QgemmNarrowADeathTest, AZeroPointOutsideTheTypeAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::vector<uint8_t> codes(6, 1);
  QgemmNarrowA narrow;
  EXPECT_DEATH(qgemm_pack_narrow_a({codes.data(), true, 3, 1}, 2, 3, {200}, narrow), "zero point 200 is no int8 code");
}

// The 8-bit B panels give back the codes (what QGemm's reference fallback
// runs on once it let B go), B given as [K, N] or transposed.
TEST(QgemmNarrowB, PanelsGiveBackTheCodes) {
  std::mt19937 rng(5);
  for (int iter = 0; iter < 60; ++iter) {
    const int64_t k = 1 + static_cast<int64_t>(rng() % 70), n = 1 + static_cast<int64_t>(rng() % 50);
    const bool transposed = rng() % 2, is_signed = rng() % 2;
    const auto b = random_bytes(k * n, rng);
    QgemmPackedB packed;
    qgemm_pack_b({b.data(), is_signed, transposed ? 1 : n, transposed ? k : 1}, k, n,
                 random_zero_points(2, n, is_signed, rng), packed);
    std::vector<uint8_t> back(b.size(), 0xEE);
    qgemm_unpack_narrow_b(packed, transposed, back.data());
    ASSERT_EQ(back, b) << "k " << k << " n " << n << (transposed ? " B^T" : "");
  }
}

// The many-row narrow micro-kernel (rows 1..MR, B as raw codes, the column
// zero points taken out with the row sums) against the scalar int16 kernel
// on B minus its zero points.
TEST(QgemmNarrowB, ManyRowKernelMatchesTheScalarKernel) {
  if (!qgemm_avx2_supported()) GTEST_SKIP() << "no AVX2";
  std::mt19937 rng(777);
  for (int iter = 0; iter < 400; ++iter) {
    const int rows = 1 + iter % kQgemmMR;
    const int64_t kpairs = 1 + static_cast<int64_t>(rng() % 70);
    const bool b_signed = rng() % 2, with_zp = iter % 3 != 0;
    SCOPED_TRACE("rows " + std::to_string(rows) + " kpairs " + std::to_string(kpairs) +
                 (b_signed ? " int8 B" : " uint8 B") + (with_zp ? " zero points" : ""));
    // A: a packed tile of int16 values in [-255, 255] (codes minus a zero point).
    std::vector<int32_t> a(static_cast<size_t>(kpairs * kQgemmMR));
    for (auto& w : a) {
      const int32_t lo = static_cast<int32_t>(rng() % 511) - 255, hi = static_cast<int32_t>(rng() % 511) - 255;
      w = static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint16_t>(lo)) |
                               (static_cast<uint32_t>(static_cast<uint16_t>(hi)) << 16));
    }
    if (iter % 7 == 0)  // the extremes: pair sums of 2 · 255 · 255
      for (auto& w : a) w = static_cast<int32_t>(0xFF01FF01u);  // (-255, -255)
    AlignedBuffer<uint8_t> narrow;
    AlignedBuffer<int16_t> pairs;
    uint8_t* nb = narrow.get(kpairs * 2 * kQgemmNR);
    int16_t* pb = pairs.get(kpairs * 2 * kQgemmNR);
    alignas(32) int32_t zp[kQgemmNR];
    for (int j = 0; j < kQgemmNR; ++j) zp[j] = with_zp ? random_code(b_signed, rng) : 0;
    for (int64_t i = 0; i < kpairs * 2 * kQgemmNR; ++i) {
      nb[i] = static_cast<uint8_t>(rng() & 0xFF);
      if (iter % 7 == 0) nb[i] = b_signed ? 0x80 : 0xFF;
      const int32_t code = b_signed ? static_cast<int8_t>(nb[i]) : nb[i];
      pb[i] = static_cast<int16_t>(code - zp[(i % (2 * kQgemmNR)) / 2]);
    }
    int32_t a_sum[kQgemmMR];
    detail::qgemm_tile_row_sums_avx2(kpairs, a.data(), a_sum);
    for (int i = 0; i < kQgemmMR; ++i) {
      int32_t s = 0;
      for (int64_t q = 0; q < kpairs; ++q) {
        const uint32_t w = static_cast<uint32_t>(a[static_cast<size_t>(q * kQgemmMR + i)]);
        s += static_cast<int16_t>(w & 0xffff) + static_cast<int16_t>(w >> 16);
      }
      ASSERT_EQ(a_sum[i], s) << "row sum " << i;
    }
    alignas(64) int32_t want[kQgemmMR * kQgemmNR], got[kQgemmMR * kQgemmNR];
    std::fill(std::begin(got), std::end(got), 0x12345678);
    detail::qgemm_ukernel_scalar(rows, kpairs, a.data(), pb, want);
    detail::qgemm_ukernel_narrow_avx2(rows, kpairs, a.data(), nb, b_signed, with_zp ? zp : nullptr,
                                      with_zp ? a_sum : nullptr, got);
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < kQgemmNR; ++j)
        ASSERT_EQ(got[i * kQgemmNR + j], want[i * kQgemmNR + j]) << "row " << i << " column " << j;
  }
}

// qgemm on the AVX2 tier (8-bit B for every M) against the scalar path
// (int16 pairs): M from 1 to 20 and beyond, odd K, per-column and single
// zero points, one and two threads.
TEST(QgemmNarrowB, EveryRowCountMatchesTheScalarPath) {
  if (!qgemm_avx2_supported()) GTEST_SKIP() << "no AVX2";
  ThreadPool pool2(2);
  std::mt19937 rng(4242);
  for (int iter = 0; iter < 160; ++iter) {
    const int64_t m = iter < 40 ? 1 + iter % 20 : 1 + static_cast<int64_t>(rng() % 100);
    const int64_t n = 1 + static_cast<int64_t>(rng() % 70);
    const int64_t k = iter % 2 ? 1 + 2 * static_cast<int64_t>(rng() % 150) : 1 + static_cast<int64_t>(rng() % 300);
    const bool a_signed = rng() % 2, b_signed = rng() % 2;
    const int zp_mode = static_cast<int>(rng() % 3);
    const bool transposed = rng() % 2;  // B given as [N, K]
    SCOPED_TRACE("m " + std::to_string(m) + " n " + std::to_string(n) + " k " + std::to_string(k) +
                 " zero points " + std::to_string(zp_mode) + (transposed ? " B^T" : ""));
    const auto a = random_bytes(m * k, rng), b = random_bytes(k * n, rng);
    const int32_t a_zp = random_code(a_signed, rng);
    const auto b_zp = random_zero_points(zp_mode, n, b_signed, rng);
    QgemmPackedB packed;
    qgemm_pack_b({b.data(), b_signed, transposed ? 1 : n, transposed ? k : 1}, k, n, b_zp, packed);
    QgemmOutput out;
    out.ldo = n;
    std::vector<int32_t> want(static_cast<size_t>(m * n), 1), got(static_cast<size_t>(m * n), 2);
    out.out = want.data();
    qgemm(m, {a.data(), a_signed, k, 1}, a_zp, packed, out, nullptr, QgemmPath::kScalar);
    // And the plain loop, for a few (the scalar path is checked against it in qgemm_x86_test.cpp).
    if (iter % 10 == 0)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          int64_t acc = 0;
          for (int64_t p = 0; p < k; ++p)
            acc += static_cast<int64_t>(code_of(a, i * k + p, a_signed) - a_zp) *
                   (code_of(b, transposed ? j * k + p : p * n + j, b_signed) - b_zp[b_zp.size() > 1 ? j : 0]);
          ASSERT_EQ(want[static_cast<size_t>(i * n + j)], static_cast<int32_t>(acc)) << i << "," << j;
        }
    for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &pool2}) {
      out.out = got.data();
      qgemm(m, {a.data(), a_signed, k, 1}, a_zp, packed, out, pool, QgemmPath::kAvx2);
      for (size_t e = 0; e < got.size(); ++e)
        ASSERT_EQ(got[e], want[e]) << "element " << e << (pool ? " two threads" : "");
    }
  }
  // Large enough to split over the threads (2^21 multiply-adds and more).
  const int64_t m = 301, n = 90, k = 333;
  const auto a = random_bytes(m * k, rng), b = random_bytes(k * n, rng);
  const auto b_zp = random_zero_points(2, n, true, rng);
  QgemmPackedB packed;
  qgemm_pack_b({b.data(), true, n, 1}, k, n, b_zp, packed);
  QgemmOutput out;
  out.ldo = n;
  std::vector<int32_t> want(static_cast<size_t>(m * n)), got(want.size());
  out.out = want.data();
  qgemm(m, {a.data(), false, k, 1}, 77, packed, out, nullptr, QgemmPath::kScalar);
  out.out = got.data();
  qgemm(m, {a.data(), false, k, 1}, 77, packed, out, &pool2, QgemmPath::kAvx2);
  EXPECT_EQ(got, want);
}

// Convs with many output channels and a long K, per-row and single zero
// points, both tiers, against a plain loop: groups held widened whole, and
// (the last case: over 2 MB widened) widened in chunks once per block.
TEST(QconvNarrow, WeightsInSeveralChunksMatchPlainLoop) {
  ThreadPool pool2(2);
  std::mt19937 rng(99);
  struct Case {
    int64_t batch, in_c, out_c, side, kernel, group;
  };
  for (const Case c : {Case{1, 64, 45, 6, 3, 1}, Case{2, 40, 70, 5, 3, 2}, Case{1, 130, 13, 4, 3, 1},
                       Case{3, 33, 97, 3, 1, 1}, Case{2, 520, 240, 5, 3, 1}}) {
    for (int zp_mode = 0; zp_mode < 3; ++zp_mode) {
      const bool x_signed = rng() % 2, w_signed = rng() % 2;
      QconvGeometry g;
      g.batch = c.batch;
      g.in_c = c.in_c;
      g.out_c = c.out_c;
      g.in_h = g.in_w = g.out_h = g.out_w = c.side;
      g.kernel_h = g.kernel_w = c.kernel;
      g.pad_top = g.pad_left = c.kernel / 2;
      g.group = c.group;
      const int64_t cg = c.in_c / c.group, ocg = c.out_c / c.group, k = cg * c.kernel * c.kernel;
      const int64_t plane = c.side * c.side;
      SCOPED_TRACE("in " + std::to_string(c.in_c) + " out " + std::to_string(c.out_c) + " k " + std::to_string(k) +
                   " group " + std::to_string(c.group) + " zero points " + std::to_string(zp_mode));
      const auto x = random_bytes(g.batch * g.in_c * plane, rng), w = random_bytes(g.out_c * k, rng);
      const int32_t x_zp = random_code(x_signed, rng);
      const auto w_zp = random_zero_points(zp_mode, g.out_c, w_signed, rng);
      QconvWeights packed;
      qconv_pack_weights({w.data(), w_signed, k, 1}, g.out_c, cg, c.kernel, c.kernel, c.group, w_zp, packed);
      std::vector<int32_t> want(static_cast<size_t>(g.batch * g.out_c * plane));
      for (int64_t b = 0; b < g.batch; ++b)
        for (int64_t oc = 0; oc < g.out_c; ++oc)
          for (int64_t oh = 0; oh < c.side; ++oh)
            for (int64_t ow = 0; ow < c.side; ++ow) {
              int64_t acc = 0;
              const int64_t grp = oc / ocg;
              for (int64_t ci = 0; ci < cg; ++ci)
                for (int64_t kh = 0; kh < c.kernel; ++kh)
                  for (int64_t kw = 0; kw < c.kernel; ++kw) {
                    const int64_t ih = oh - g.pad_top + kh, iw = ow - g.pad_left + kw;
                    if (ih < 0 || ih >= c.side || iw < 0 || iw >= c.side) continue;
                    acc += static_cast<int64_t>(
                               code_of(x, ((b * g.in_c + grp * cg + ci) * c.side + ih) * c.side + iw, x_signed) -
                               x_zp) *
                           (code_of(w, oc * k + (ci * c.kernel + kh) * c.kernel + kw, w_signed) -
                            w_zp[w_zp.size() > 1 ? static_cast<size_t>(oc) : 0]);
                  }
              want[static_cast<size_t>(((b * g.out_c + oc) * c.side + oh) * c.side + ow)] = static_cast<int32_t>(acc);
            }
      QgemmOutput out;
      out.channel_is_row = true;
      out.ldo = plane;
      for (QgemmPath p : expand_paths())
        for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &pool2}) {
          std::vector<int32_t> got(want.size(), 0x7F7F7F7F);
          out.out = got.data();
          qconv(g, x.data(), x_signed, x_zp, packed, out, pool, p);
          for (size_t e = 0; e < got.size(); ++e)
            ASSERT_EQ(got[e], want[e]) << "element " << e << " path " << qgemm_path_name(p)
                                       << (pool ? " two threads" : "");
        }
    }
  }
}

// ---------------------------------------------------------------------------
// The session kernels on the automatic tier: they let their weights go
// (QLinearConv on every tier, QGemm on the VNNI and AVX2 tiers), never read
// them again, and rebuild them for the reference kernel where it runs.

Tensor random_tensor(DType t, Shape shape, uint32_t seed) {
  Tensor r(t, std::move(shape));
  std::mt19937 g(seed);
  for (int64_t i = 0; i < r.numel(); ++i) static_cast<uint8_t*>(r.raw())[i] = static_cast<uint8_t>(g() & 0xFF);
  return r;
}

Tensor scalar_code(DType t, int v) {
  Tensor r(t, {});
  static_cast<uint8_t*>(r.raw())[0] = static_cast<uint8_t>(v);
  return r;
}

// Runs `node`'s kernel built with a release_constant that accepts (the
// weights, input w, replaced by garbage at run time when it released them)
// and the reference kernel on the real inputs: same outputs or same error.
void expect_matches_reference(const ir::Node& node, const std::vector<Tensor>& inputs, size_t w, bool must_release,
                              bool must_succeed, const std::string& what) {
  SCOPED_TRACE(what);
  bool released = false;
  uint64_t declared = 0;
  KernelInit init{node, 19, {}, [&](size_t i) -> const Tensor* {
                    return i < inputs.size() && i != 0 && inputs[i].defined() ? &inputs[i] : nullptr;
                  }};
  init.release_constant = [&](size_t i, uint64_t bytes) {
    EXPECT_EQ(i, w);
    released = true;
    declared = bytes;
    return true;
  };
  const KernelFactory* f = OpRegistry::global().find(node.domain, node.op_type, 19);
  ASSERT_NE(f, nullptr);
  auto k = (*f)(init);
  ASSERT_TRUE(k.ok()) << k.status().message();
  ASSERT_EQ(released, must_release);
  if (released) {  // what it holds instead: about the codes, never the int16 pairs (twice them)
    EXPECT_GE(declared, static_cast<uint64_t>(inputs[w].numel()));
    EXPECT_LT(declared, static_cast<uint64_t>(inputs[w].numel()) * 3 / 2 + 4096);
  }
  const KernelFactory* rf = OpRegistry::reference().find(node.domain, node.op_type, 19);
  ASSERT_NE(rf, nullptr);
  KernelInit rinit{node, 19, {}, [](size_t) -> const Tensor* { return nullptr; }};
  auto ref = (*rf)(rinit);
  ASSERT_TRUE(ref.ok());
  const Tensor garbage = random_tensor(inputs[w].dtype(), inputs[w].shape(), 99);
  ThreadPool pool(1);
  KernelContext a, b;
  for (const auto& t : inputs) b.inputs.push_back(t.defined() ? &t : nullptr);
  a.inputs = b.inputs;
  if (released) a.inputs[w] = &garbage;
  a.outputs.resize(1);
  b.outputs.resize(1);
  a.pool = b.pool = &pool;
  const Status sa = (*k)->run(a), sb = (*ref)->run(b);
  ASSERT_EQ(sa.ok(), sb.ok()) << "kernel: " << sa.message() << " / reference: " << sb.message();
  EXPECT_EQ(sb.ok(), must_succeed) << sb.message();
  if (!sa.ok()) {
    EXPECT_EQ(sa.message(), sb.message());
    return;
  }
  ASSERT_EQ(a.outputs[0].shape(), b.outputs[0].shape());
  EXPECT_EQ(std::memcmp(a.outputs[0].raw(), b.outputs[0].raw(), a.outputs[0].nbytes()), 0);
}

ir::Node node_of(const char* op, const char* domain, int inputs, std::vector<ir::Attribute> attrs) {
  ir::Node n;
  n.name = "n";
  n.op_type = op;
  n.domain = domain;
  for (int i = 0; i < inputs; ++i) n.inputs.push_back("in" + std::to_string(i));
  n.outputs = {"y"};
  n.attrs = std::move(attrs);
  return n;
}

TEST(QconvNarrow, TheConvKernelLetsItsWeightsGoOnEveryTier) {
  for (DType wt : {DType::kInt8, DType::kUInt8}) {
    // 13 channels of 7 x 3 x 3 (k odd, a last tile of one row), per-channel zero points.
    std::vector<Tensor> in = {random_tensor(DType::kUInt8, {2, 7, 9, 9}, 1), Tensor::scalar<float>(0.05f),
                              scalar_code(DType::kUInt8, 120), random_tensor(wt, {13, 7, 3, 3}, 2),
                              Tensor::scalar<float>(0.02f), random_tensor(wt, {13}, 3), Tensor::scalar<float>(0.3f),
                              scalar_code(DType::kUInt8, 100), Tensor(DType::kInt32, {13})};
    for (int64_t i = 0; i < 13; ++i) in[8].data<int32_t>()[i] = static_cast<int32_t>(i * 37 - 300);
    std::vector<Tensor> w_scales = in;
    w_scales[4] = Tensor(DType::kFloat32, {13});
    for (int64_t i = 0; i < 13; ++i) w_scales[4].data<float>()[i] = 0.01f + 0.001f * static_cast<float>(i);
    const std::string what = wt == DType::kInt8 ? "int8 W" : "uint8 W";
    const ir::Node conv = node_of("QLinearConv", "", 9, {ir::attr_ints("pads", {1, 1, 1, 1})});
    expect_matches_reference(conv, w_scales, 3, true, true, what + ", packed path");
    // A per-channel x zero point: the reference runs, on the rebuilt weights.
    std::vector<Tensor> per_channel = w_scales;
    per_channel[2] = random_tensor(DType::kUInt8, {7}, 5);
    expect_matches_reference(conv, per_channel, 3, true, true, what + ", reference path");
    // Negative pads: the reference's error.
    expect_matches_reference(node_of("QLinearConv", "", 9, {ir::attr_ints("pads", {-1, 0, 0, -1})}), w_scales, 3,
                             true, false, what + ", error path");
  }
}

TEST(QgemmNarrowB, TheQGemmKernelLetsItsWeightsGoExceptOnTheScalarTier) {
  const bool releases = qgemm_resolve_path(QgemmPath::kAuto) != QgemmPath::kScalar;
  for (bool trans_b : {false, true})
    for (DType bt : {DType::kInt8, DType::kUInt8}) {
      const int64_t m = 9, k = 37, n = 21;
      std::vector<Tensor> in = {random_tensor(DType::kUInt8, {m, k}, 1), Tensor::scalar<float>(0.05f),
                                scalar_code(DType::kUInt8, 120),
                                random_tensor(bt, trans_b ? Shape{n, k} : Shape{k, n}, 2),
                                Tensor::scalar<float>(0.02f), scalar_code(bt, bt == DType::kInt8 ? 3 : 130),
                                Tensor(DType::kInt32, {n}), Tensor::scalar<float>(0.3f),
                                scalar_code(DType::kUInt8, 100)};
      for (int64_t i = 0; i < n; ++i) in[6].data<int32_t>()[i] = static_cast<int32_t>(i * 51 - 400);
      const ir::Node node = node_of("QGemm", "com.microsoft", 9, {ir::attr_int("transB", trans_b ? 1 : 0)});
      const std::string what = std::string(trans_b ? "B^T " : "B ") + (bt == DType::kInt8 ? "int8" : "uint8");
      expect_matches_reference(node, in, 3, releases, true, what + ", packed path");
      // C that does not broadcast: the reference (on the rebuilt B) and its error.
      std::vector<Tensor> bad = in;
      bad[6] = Tensor(DType::kInt32, {2, n});
      expect_matches_reference(node, bad, 3, releases, false, what + ", error path");
    }
}


}  // namespace
}  // namespace qtk::rt::x86
