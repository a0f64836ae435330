// float32 Softmax over many rows (x86/softmax_rows.h): the block form (exp
// run once over many rows) equals one row at a time and the scalar reference
// (scalar row max, approx::exp_f32, scalar double sum) bit for bit, on short
// and long rows, row counts across the block size, NaN, infinities, -0.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "runtime/kernels/ref/approx_math.h"
#include "runtime/kernels/x86/row_stats.h"
#include "runtime/kernels/x86/softmax_rows.h"

namespace qtk::rt {
namespace {

std::vector<float> rows_of(std::mt19937& rng, int64_t count, int kind) {
  std::normal_distribution<float> v(0.f, 4.f);
  std::vector<float> x(static_cast<size_t>(count));
  for (auto& e : x) e = v(rng);
  if (count > 0 && kind == 1) x[rng() % count] = std::numeric_limits<float>::quiet_NaN();
  if (count > 0 && kind == 2) {
    x[rng() % count] = -0.f;
    x[rng() % count] = std::numeric_limits<float>::infinity();
    x[rng() % count] = -std::numeric_limits<float>::infinity();
  }
  if (kind == 3)
    for (auto& e : x) e *= 40.f;  // exp underflows to 0 in places
  return x;
}

void scalar_softmax(const float* x, float* y, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    const float mx = x86::scalar_rows::row_max_f32(xr, n);
    for (int64_t j = 0; j < n; ++j) yr[j] = ref::approx::exp_f32(xr[j] - mx);
    const float inv = static_cast<float>(1.0 / x86::scalar_rows::row_sum_f32(yr, n));
    for (int64_t j = 0; j < n; ++j) yr[j] *= inv;
  }
}

TEST(SoftmaxRows, BlockFormEqualsRowByRowAndTheScalarReferenceBitForBit) {
  std::mt19937 rng(5);
  for (int64_t n : {1, 2, 7, 8, 16, 17, 31, 33, 100, 4095, 4097})
    for (int64_t rows : {1, 3, 17, 241, 1000})
      for (int kind = 0; kind < 4; ++kind) {
        if (n * rows > 600000) continue;
        const int64_t count = n * rows;
        const std::vector<float> x = rows_of(rng, count, kind);
        std::vector<float> block(static_cast<size_t>(count), 9.f), by_row(block.size(), 7.f),
            scalar(block.size(), 5.f);
        x86::softmax_rows_f32(x.data(), block.data(), rows, n);
        x86::softmax_row_by_row_f32(x.data(), by_row.data(), rows, n);
        scalar_softmax(x.data(), scalar.data(), rows, n);
        const std::string what = "n " + std::to_string(n) + " rows " + std::to_string(rows) + " kind " +
                                 std::to_string(kind);
        EXPECT_EQ(std::memcmp(block.data(), by_row.data(), block.size() * sizeof(float)), 0) << what;
        EXPECT_EQ(std::memcmp(block.data(), scalar.data(), block.size() * sizeof(float)), 0) << what;
        // In place, as the executor may run it.
        std::vector<float> in_place = x;
        x86::softmax_rows_f32(in_place.data(), in_place.data(), rows, n);
        EXPECT_EQ(std::memcmp(block.data(), in_place.data(), block.size() * sizeof(float)), 0) << what;
      }
}

}  // namespace
}  // namespace qtk::rt
