// The packed im2col writers of the training Conv agree element for element
// with the plain im2col matrix (and its transpose), padding included.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "runtime/kernels/ref/sgemm.h"
#include "train/conv_geometry.h"

namespace qtk::train {
namespace {

Window2d window(int64_t ih, int64_t iw, int64_t k, int64_t s, int64_t d, int64_t pad) {
  Window2d w;
  w.ih = ih;
  w.iw = iw;
  w.kh = w.kw = k;
  w.sh = w.sw = s;
  w.dh = w.dw = d;
  w.pt = w.pl = w.pb = w.pr = pad;
  w.oh = (ih + 2 * pad - ((k - 1) * d + 1)) / s + 1;
  w.ow = (iw + 2 * pad - ((k - 1) * d + 1)) / s + 1;
  return w;
}

class PackedIm2col : public ::testing::TestWithParam<std::tuple<int, int, int, int>> {};

TEST_P(PackedIm2col, MatchesPlainIm2col) {
  const auto [k, s, d, pad] = GetParam();
  const int64_t ch = 3;
  const Window2d w = window(9, 7, k, s, d, pad);
  ASSERT_GT(w.oh, 0);
  ASSERT_GT(w.ow, 0);
  std::vector<float> img(static_cast<size_t>(ch * w.ih * w.iw));
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (auto& v : img) v = u(gen);
  const int64_t kk = ch * k * k, p = w.oh * w.ow;
  std::vector<float> col(static_cast<size_t>(kk * p));
  im2col_2d(img.data(), ch, w, col.data());
  for (int64_t nr : {16, 32}) {
    const int64_t pr = (p + nr - 1) / nr * nr, kr = (kk + nr - 1) / nr * nr;
    std::vector<float> packed(static_cast<size_t>(pr * kk), -7.f), packed_t(static_cast<size_t>(kr * p), -7.f);
    im2col_2d_packed(img.data(), ch, w, nr, packed.data());
    im2col_2d_packed_t(img.data(), ch, w, nr, packed_t.data());
    for (int64_t r = 0; r < kk; ++r)
      for (int64_t j = 0; j < pr; ++j) {
        const float want = j < p ? col[r * p + j] : 0.f;
        ASSERT_EQ(packed[(j / nr) * kk * nr + r * nr + j % nr], want) << "nr " << nr << " row " << r << " col " << j;
      }
    for (int64_t j = 0; j < p; ++j)
      for (int64_t r = 0; r < kr; ++r) {
        const float want = r < kk ? col[r * p + j] : 0.f;
        ASSERT_EQ(packed_t[(r / nr) * p * nr + j * nr + r % nr], want) << "nr " << nr << " pos " << j << " tap " << r;
      }
  }
}

INSTANTIATE_TEST_SUITE_P(Windows, PackedIm2col,
                         ::testing::Values(std::make_tuple(3, 1, 1, 1), std::make_tuple(3, 2, 1, 1),
                                           std::make_tuple(1, 2, 1, 0), std::make_tuple(3, 1, 2, 2),
                                           std::make_tuple(2, 3, 1, 0)));

// The packed layouts are the ones sgemm consumes: a product through them
// equals the plain one.
TEST(PackedIm2colSgemm, FeedsSgemm) {
  const Window2d w = window(8, 8, 3, 1, 1, 1);
  const int64_t ch = 5, m = 7, kk = ch * 9, p = w.oh * w.ow;
  std::vector<float> img(static_cast<size_t>(ch * 64)), wt(static_cast<size_t>(m * kk)), g(static_cast<size_t>(m * p));
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (auto* v : {&img, &wt, &g})
    for (auto& x : *v) x = u(gen);
  std::vector<float> col(static_cast<size_t>(kk * p));
  im2col_2d(img.data(), ch, w, col.data());
  const auto path = rt::ref::sgemm_resolve_path(rt::ref::SgemmPath::kAuto);
  const int64_t nr = rt::ref::sgemm_packed_b_width(path);
  rt::ref::AlignedFloats pb, pbt, pa;
  im2col_2d_packed(img.data(), ch, w, nr, pb.get(rt::ref::sgemm_packed_b_floats(kk, p, path)));
  im2col_2d_packed_t(img.data(), ch, w, nr, pbt.get(rt::ref::sgemm_packed_b_floats(p, kk, path)));
  rt::ref::sgemm_pack_a(false, m, kk, wt.data(), kk, pa.get(rt::ref::sgemm_packed_a_floats(m, kk, path)), path);
  std::vector<float> y0(static_cast<size_t>(m * p)), y1(y0.size()), dw0(wt.size()), dw1(wt.size());
  rt::ref::sgemm(false, false, m, p, kk, 1.f, wt.data(), kk, col.data(), p, 0.f, y0.data(), p);
  rt::ref::sgemm_packed(m, p, kk, 1.f, pa.get(0), pb.get(0), 0.f, y1.data(), p, nullptr, path);
  rt::ref::sgemm(false, true, m, kk, p, 1.f, g.data(), p, col.data(), p, 0.f, dw0.data(), kk);
  rt::ref::sgemm_prepacked_b(false, m, kk, p, 1.f, g.data(), p, pbt.get(0), 0.f, dw1.data(), kk, nullptr, path);
  for (size_t i = 0; i < y0.size(); ++i) EXPECT_NEAR(y0[i], y1[i], 1e-4f) << i;
  for (size_t i = 0; i < dw0.size(); ++i) EXPECT_NEAR(dw0[i], dw1[i], 1e-4f) << i;
}

}  // namespace
}  // namespace qtk::train
