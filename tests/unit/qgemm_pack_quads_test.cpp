// The VNNI tier's B quads from rows of contiguous columns (an activation B,
// qgemm_pack_quads.h) against the column-at-a-time loop that packs every
// other layout: the same bytes, column sums and zero points.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "runtime/kernels/x86/qgemm.h"

namespace qtk::rt::x86 {
namespace {

TEST(QgemmPackQuads, RowsPackLikeTheColumnLoop) {
  if (qgemm_resolve_path(QgemmPath::kAuto) != QgemmPath::kAvx512Vnni) GTEST_SKIP() << "no AVX-512 VNNI tier here";
  std::mt19937 rng(2024);
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t k = std::uniform_int_distribution<int64_t>(1, 70)(rng);
    const int64_t n = std::uniform_int_distribution<int64_t>(1, 70)(rng);
    const int64_t ld = n + std::uniform_int_distribution<int64_t>(0, 5)(rng);
    const bool is_signed = trial % 2;
    std::vector<uint8_t> rows(static_cast<size_t>(k * ld)), cols(static_cast<size_t>(2 * k * n));
    for (auto& v : rows) v = static_cast<uint8_t>(rng());
    // The same matrix column by column, two bytes apart (so never the rows path).
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < n; ++j) cols[static_cast<size_t>(2 * (j * k + i))] = rows[static_cast<size_t>(i * ld + j)];
    std::vector<int32_t> zp;
    const bool per_column = trial % 3 == 0;
    for (int64_t j = 0; j < (per_column ? n : 1); ++j)
      zp.push_back(is_signed ? std::uniform_int_distribution<int>(-128, 127)(rng) : std::uniform_int_distribution<int>(0, 255)(rng));
    if (trial % 5 == 0) zp.assign(zp.size(), is_signed ? 0 : 128);  // no zero point
    QgemmPackedB fast, slow;
    qgemm_pack_b({rows.data(), is_signed, ld, 1}, k, n, zp, fast);
    qgemm_pack_b({cols.data(), is_signed, 2, 2 * k}, k, n, zp, slow);
    const QgemmQuadB &a = fast.quads(), &b = slow.quads();
    SCOPED_TRACE("k " + std::to_string(k) + " n " + std::to_string(n) + " ld " + std::to_string(ld) +
                 (is_signed ? " int8" : " uint8") + " (seed 2024, trial " + std::to_string(trial) + ")");
    ASSERT_EQ(a.kquads, b.kquads);
    const size_t bytes = static_cast<size_t>(fast.panels * a.kquads * 4 * kQgemmNR);
    ASSERT_EQ(std::memcmp(a.codes.data(), b.codes.data(), bytes), 0);
    ASSERT_EQ(a.colsum, b.colsum);
    ASSERT_EQ(a.zero_point, b.zero_point);
    ASSERT_EQ(a.any_zero_point, b.any_zero_point);
  }
}

}  // namespace
}  // namespace qtk::rt::x86
