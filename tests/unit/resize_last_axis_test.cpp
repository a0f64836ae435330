// Reference Resize (runtime/kernels/ref/resize.h): its last-axis pass (one
// value per output position) gives the same bits as the general pass over an
// axis with values after it, for every interpolation option. The same
// 1-D resize runs once on x [B, W, 1] (the last-axis loop) and once on
// [B, W, 2] holding each value twice (the general loop).
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "runtime/kernels/ref/resize.h"
#include "runtime/thread_pool.h"

namespace qtk {
namespace {

using rt::ref::ResizeCoordMode;
using rt::ref::ResizeMode;
using rt::ref::ResizeParams;

TEST(ResizeLastAxis, SameBitsAsTheGeneralPass) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.f, 1.f);
  const std::vector<ResizeCoordMode> coords = {
      ResizeCoordMode::kHalfPixel, ResizeCoordMode::kHalfPixelSymmetric, ResizeCoordMode::kPytorchHalfPixel,
      ResizeCoordMode::kAlignCorners, ResizeCoordMode::kAsymmetric, ResizeCoordMode::kTfCropAndResize};
  int cases = 0;
  for (ResizeMode mode : {ResizeMode::kLinear, ResizeMode::kCubic})
    for (ResizeCoordMode coord : coords)
      for (int64_t w_in : {1, 5, 13})
        for (int64_t w_out : {1, 4, 13, 29}) {
          for (int variant = 0; variant < 2; ++variant) {  // variant 1: antialias and exclude_outside
            const int64_t b = 3;
            Tensor x1(DType::kFloat32, {b, w_in, 1}), x2(DType::kFloat32, {b, w_in, 2});
            for (int64_t i = 0; i < b * w_in; ++i) {
              const float v = normal(rng);
              x1.data<float>()[i] = v;
              x2.data<float>()[2 * i] = x2.data<float>()[2 * i + 1] = v;
            }
            ResizeParams p;
            p.mode = mode;
            p.coord = coord;
            p.antialias = variant == 1;
            p.exclude_outside = variant == 1;
            p.extrapolation_value = -7.5;
            const double scale = static_cast<double>(w_out) / static_cast<double>(w_in);
            if (coord == ResizeCoordMode::kTfCropAndResize) p.roi = {0, -0.2, 0, 1, 1.1, 1};  // some outside
            p.scales = {1.0, scale, 1.0};
            p.out_shape = {b, w_out, 1};
            auto y1 = rt::ref::resize_ref(x1, p, nullptr);
            p.out_shape = {b, w_out, 2};
            auto y2 = rt::ref::resize_ref(x2, p, nullptr);
            ASSERT_TRUE(y1.ok() && y2.ok()) << (y1.ok() ? y2.status().message() : y1.status().message());
            for (int64_t i = 0; i < b * w_out; ++i)
              for (int c = 0; c < 2; ++c) {
                const float a = y1->data<float>()[i], g = y2->data<float>()[2 * i + c];
                ASSERT_EQ(std::memcmp(&a, &g, sizeof a), 0)
                    << "mode " << static_cast<int>(mode) << " coord " << static_cast<int>(coord) << " " << w_in
                    << " -> " << w_out << " variant " << variant << " at " << i << ": " << a << " vs " << g;
              }
            ++cases;
          }
        }
  EXPECT_EQ(cases, 2 * 6 * 3 * 4 * 2);
}

// Split over threads, the last-axis pass starts and ends its ranges in the
// middle of rows: the same bytes as on one thread.
TEST(ResizeLastAxis, ThreadedRangesGiveTheSameBytes) {
  std::mt19937 rng(12);
  std::normal_distribution<float> normal(0.f, 1.f);
  Tensor x(DType::kFloat32, {4, 16, 9, 11});
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = normal(rng);
  for (ResizeMode mode : {ResizeMode::kLinear, ResizeMode::kCubic}) {
    ResizeParams p;
    p.mode = mode;
    p.scales = {1.0, 1.0, 23.0 / 9.0, 37.0 / 11.0};
    p.out_shape = {4, 16, 23, 37};  // 54,464 outputs in the last pass, ranges of >= 4096: most start mid-row
    rt::ThreadPool pool(3);
    auto one = rt::ref::resize_ref(x, p, nullptr);
    auto three = rt::ref::resize_ref(x, p, &pool);
    ASSERT_TRUE(one.ok() && three.ok());
    ASSERT_EQ(std::memcmp(one->raw(), three->raw(), one->nbytes()), 0) << "mode " << static_cast<int>(mode);
  }
}

}  // namespace
}  // namespace qtk
