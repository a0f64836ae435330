// Conv's padded, stride-phase-split image (ref/im2col.h): whatever the
// geometry, padded[k_off[p] + row_off[r] + ow] must be the input the window
// tap p of output (r, ow) reads, or 0 in the padding; and a refill with
// zeros_in_place (the zeros left by an earlier fill of the same layout) must
// give the same buffer as a fill from scratch.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "runtime/kernels/ref/im2col.h"

namespace qtk::rt::ref {
namespace {

struct Geometry {
  ConvGeometry g;
  int64_t channels;
};

Geometry random_geometry(std::mt19937& rng) {
  std::uniform_int_distribution<int> rank_d(1, 3), chan(1, 3), size(1, 16), kern(1, 3), stride(1, 3), dil(1, 2),
      pad(0, 2);
  const int rank = rank_d(rng);
  std::vector<int64_t> strides, dilations, pads(2 * rank);
  ConvGeometry g;
  for (int t = 0; t < rank; ++t) {
    g.kernel.push_back(kern(rng));
    g.in.push_back(size(rng) + 2 * g.kernel.back());  // windows always fit
    strides.push_back(stride(rng));
    dilations.push_back(dil(rng));
    pads[t] = pad(rng);
    pads[t + rank] = pad(rng);
  }
  if (rng() % 4 == 0) {  // a pointwise conv: its rows adjoin in the buffer as in the image
    g.kernel.assign(rank, 1);
    strides.assign(rank, 1);
    pads.assign(2 * rank, 0);
  }
  EXPECT_TRUE(resolve_window_geometry(AutoPad::kNotSet, strides, dilations, pads, false, g).ok());
  return {g, chan(rng)};
}

std::vector<float> random_image(const Geometry& geo, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> x(geo.channels * geo.g.in_size());
  for (auto& v : x) v = u(rng);
  return x;
}

// Checks every (channel, tap, output) read against the definition, for each
// of the layout's images (image i's input at x + i * image_stride).
void check_reads(const Geometry& geo, const PaddedImage& l, const std::vector<float>& buf, const std::vector<float>& x,
                 int64_t image_stride, const std::string& what) {
  const ConvGeometry& g = geo.g;
  const int rank = g.rank();
  const int64_t taps = g.kernel_size(), outs = g.out_size();
  ASSERT_EQ(static_cast<int64_t>(l.row_off.size()), outs / l.ow_n * l.images) << what;
  for (int64_t im = 0; im < l.images; ++im)
    for (int64_t c = 0; c < geo.channels; ++c)
      for (int64_t tap = 0; tap < taps; ++tap)
        for (int64_t o = 0; o < outs; ++o) {
          // Input index of this read (row-major over dims), or -1 in the padding.
          int64_t in_idx = 0;
          for (int64_t t = 0, ro = o, rk = tap, step_o = outs, step_k = taps; t < rank; ++t) {
            step_o /= g.out[t];
            step_k /= g.kernel[t];
            const int64_t ot = ro / step_o, kt = rk / step_k;
            ro %= step_o;
            rk %= step_k;
            const int64_t i = ot * g.strides[t] - g.pads_begin[t] + kt * g.dilations[t];
            if (in_idx >= 0) in_idx = (i < 0 || i >= g.in[t]) ? -1 : in_idx * g.in[t] + i;
          }
          const float want = in_idx < 0 ? 0.f : x[im * image_stride + c * g.in_size() + in_idx];
          const int64_t r = o / l.ow_n, ow = o % l.ow_n;
          const float got = buf[l.k_off[c * taps + tap] + l.row_off[r * l.images + im] + ow];
          ASSERT_EQ(got, want) << what << ": image " << im << " channel " << c << " tap " << tap << " output " << o;
        }
}

// Several images side by side (padded_image_layout's `images`): laid out only
// along a last dim of stride 1; the grid rows ascend.
TEST(PaddedImage, FillAndRefillInPlaceGiveEveryWindowRead) {
  std::mt19937 rng(21);
  const float garbage = std::numeric_limits<float>::quiet_NaN();
  int adjoining = 0;  // cases whose rows lie back to back (one copy per plane)
  for (int index = 0; index < 90; ++index) {
    const Geometry a = random_geometry(rng), b = random_geometry(rng);
    const int64_t images = 1 + index % 3;
    const PaddedImage la = padded_image_layout(a.g, a.channels, images), lb = padded_image_layout(b.g, b.channels);
    bool adjoin = la.images == 1 && la.last_pad == 0;
    for (size_t r = 0; r < la.in_row_off.size(); ++r)
      adjoin = adjoin && la.in_row_off[r] == static_cast<int64_t>(r) * la.in_row_len;
    adjoining += adjoin;
    const std::string what = "case " + std::to_string(index) + " in " + shape_to_string(a.g.in) + " kernel " +
                             shape_to_string(a.g.kernel) + " strides " + shape_to_string(a.g.strides) +
                             " dilations " + shape_to_string(a.g.dilations) + " pads_begin " +
                             shape_to_string(a.g.pads_begin) + " pads_end " + shape_to_string(a.g.pads_end) +
                             " images " + std::to_string(images);
    ASSERT_EQ(la.images, a.g.strides.back() == 1 ? images : 1) << what;
    for (size_t q = 1; q < la.row_off.size(); ++q)
      ASSERT_LE(la.row_off[q - 1] + la.ow_n, la.row_off[q]) << what << ": grid rows overlap or descend";
    // One buffer, as Conv's per-thread scratch: a, a again in place, then b
    // over it, then a from scratch again.
    std::vector<float> buf(std::max(la.floats(a.channels), lb.floats(b.channels)), garbage);
    // The images of a lie apart in memory (stride > one image), as in a batch.
    const int64_t stride = a.channels * a.g.in_size() + 5;
    auto images_of = [&](const Geometry& geo, int64_t n) {
      std::vector<float> x;
      for (int64_t i = 0; i < n; ++i) {
        std::vector<float> one = random_image(geo, rng);
        one.resize(stride, garbage);
        x.insert(x.end(), one.begin(), one.end());
      }
      return x;
    };
    const std::vector<float> x1 = images_of(a, la.images), x2 = images_of(a, la.images), x3 = random_image(b, rng);
    fill_padded_image(x1.data(), a.channels, a.g, la, buf.data(), false, stride);
    check_reads(a, la, buf, x1, stride, what + " (fresh)");
    for (int64_t i = 0; i < la.floats(a.channels); ++i)
      ASSERT_FALSE(std::isnan(buf[i])) << what << ": float " << i << " of the fill left unwritten";
    const std::vector<float> fresh_x1 = buf;
    fill_padded_image(x2.data(), a.channels, a.g, la, buf.data(), true, stride);
    check_reads(a, la, buf, x2, stride, what + " (in place)");
    std::vector<float> fresh(buf.size(), garbage);
    fill_padded_image(x2.data(), a.channels, a.g, la, fresh.data(), false, stride);
    for (int64_t i = 0; i < la.floats(a.channels); ++i)
      ASSERT_EQ(buf[i], fresh[i]) << what << ": the in-place refill differs from a fresh fill at float " << i;
    fill_padded_image(x3.data(), b.channels, b.g, lb, buf.data());
    fill_padded_image(x1.data(), a.channels, a.g, la, buf.data(), false, stride);
    for (int64_t i = 0; i < la.floats(a.channels); ++i)
      ASSERT_EQ(buf[i], fresh_x1[i]) << what << ": a fill after another layout differs at float " << i;
  }
  EXPECT_GE(adjoining, 5);
}

// Rows share their padding along a last dim of stride 1: a 7-wide row with
// pads 1 takes 8 floats, and four images side by side 32.
TEST(PaddedImage, RowsAndImagesShareTheirPadding) {
  ConvGeometry g;
  g.in = {7, 7};
  g.kernel = {3, 3};
  ASSERT_TRUE(resolve_window_geometry(AutoPad::kNotSet, {}, {}, {1, 1, 1, 1}, false, g).ok());
  const PaddedImage one = padded_image_layout(g, 2), four = padded_image_layout(g, 2, 4);
  EXPECT_EQ(one.row_off[1] - one.row_off[0], 8);
  EXPECT_EQ(one.grid_cols, 6 * 8 + 7);
  EXPECT_EQ(four.images, 4);
  EXPECT_EQ(four.row_off[4] - four.row_off[0], 32);  // row 1 of image 0
  EXPECT_EQ(four.row_off[1] - four.row_off[0], 8);   // row 0 of image 1
  EXPECT_EQ(four.grid_cols, 7 * 32 - 1);
}

}  // namespace
}  // namespace qtk::rt::ref
