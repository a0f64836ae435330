// MaxPool's 2x2 / stride-2 fast path (ref/pool_ops.cpp) against the generic
// fold's rule written out (best = lowest, then each tap row by row with
// v > best ? v : best, so NaN never wins): the same Y bit for bit, NaN,
// infinities and signed zeros included, for float32, int8 and uint8 and odd
// sizes (the last row/column unread). With NaN-free inputs also against the
// generic fold itself, which runs when the Indices output is requested (it
// lets a NaN in a window's first tap win, as ONNX Runtime does).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "one_node.h"

namespace qtk {
namespace {

template <class T>
Tensor random_input(DType dt, const Shape& shape, std::mt19937& rng) {
  Tensor t(dt, shape);
  std::uniform_int_distribution<int> pick(0, 19);
  std::uniform_real_distribution<float> u(-3.f, 3.f);
  for (int64_t i = 0; i < t.numel(); ++i) {
    if constexpr (std::is_floating_point_v<T>) {
      const int k = pick(rng);
      t.data<T>()[i] = k == 0 ? std::numeric_limits<T>::quiet_NaN()
                       : k == 1 ? -0.f
                       : k == 2 ? 0.f
                       : k == 3 ? -std::numeric_limits<T>::infinity()
                                : u(rng);
    } else {
      t.data<T>()[i] = static_cast<T>(rng());
    }
  }
  return t;
}

template <class T>
void check(DType dt, uint32_t seed) {
  std::mt19937 rng(seed);
  for (int iter = 0; iter < 30; ++iter) {
    const Shape shape = {1 + static_cast<int64_t>(rng() % 3), 1 + static_cast<int64_t>(rng() % 4),
                         2 + static_cast<int64_t>(rng() % 9), 2 + static_cast<int64_t>(rng() % 40)};
    const bool with_nan = iter % 2 == 0;
    Tensor x = random_input<T>(dt, shape, rng);
    if (!with_nan)
      for (int64_t i = 0; i < x.numel(); ++i)
        if (x.data<T>()[i] != x.data<T>()[i]) x.data<T>()[i] = T(1);
    const std::vector<ir::Attribute> attrs = {ir::attr_ints("kernel_shape", {2, 2}), ir::attr_ints("strides", {2, 2})};
    auto fast = testing::run_one_node("MaxPool", {"x"}, {x}, attrs, 1);
    ASSERT_TRUE(fast.ok()) << fast.status().message();
    const Tensor& a = (*fast)[0];
    const Shape out = {shape[0], shape[1], shape[2] / 2, shape[3] / 2};
    ASSERT_EQ(a.shape(), out);
    Tensor want(dt, out);
    const int64_t ih = shape[2], iw = shape[3], oh = out[2], ow = out[3];
    for (int64_t pl = 0; pl < shape[0] * shape[1]; ++pl)
      for (int64_t r = 0; r < oh; ++r)
        for (int64_t c = 0; c < ow; ++c) {
          T best = std::numeric_limits<T>::lowest();
          for (int64_t dr = 0; dr < 2; ++dr)
            for (int64_t dc = 0; dc < 2; ++dc) {
              const T v = x.data<T>()[(pl * ih + 2 * r + dr) * iw + 2 * c + dc];
              best = v > best ? v : best;
            }
          want.data<T>()[(pl * oh + r) * ow + c] = best;
        }
    const std::string where = "seed " + std::to_string(seed) + " iter " + std::to_string(iter) + " shape " +
                              shape_to_string(shape);
    EXPECT_EQ(std::memcmp(a.raw(), want.raw(), static_cast<size_t>(a.nbytes())), 0) << where;
    if (!with_nan) {
      auto generic = testing::run_one_node("MaxPool", {"x"}, {x}, attrs, 2);  // Indices: the generic fold
      ASSERT_TRUE(generic.ok()) << generic.status().message();
      EXPECT_EQ(std::memcmp(a.raw(), (*generic)[0].raw(), static_cast<size_t>(a.nbytes())), 0) << where;
    }
  }
}

TEST(MaxPoolFastPath, EqualsTheGenericFoldBitForBit) {
  check<float>(DType::kFloat32, 11);
  check<int8_t>(DType::kInt8, 12);
  check<uint8_t>(DType::kUInt8, 13);
}

}  // namespace
}  // namespace qtk
