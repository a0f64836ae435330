// The u8 x s8 GEMM path of the AVX2 tier (qgemm_u8s8.h): the pair-bound
// check of a constant B, A's u8 quad tiles, and the threaded driver (the
// blocking and thread split of qgemm.cpp's).
#include "runtime/kernels/x86/qgemm_u8s8.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/cpu_features.h"
#include "runtime/kernels/x86/qgemm_conv_u8s8.h"
#include "runtime/thread_pool.h"

namespace qtk::rt::x86::detail {

bool qgemm_u8s8_pairs_fit(const QgemmCodes& b, int64_t k, int64_t n) {
  const int32_t shift = b.is_signed ? 0 : 128;
  auto fits = [&](int64_t kk, int64_t j) {
    const int32_t b0 = b.at(kk, j) - shift, b1 = kk + 1 < k ? b.at(kk + 1, j) - shift : 0;
    return std::abs(b0) + std::abs(b1) <= kQconvU8s8PairBound;
  };
  // In the source's memory order.
  if (b.stride_j == 1) {
    for (int64_t kk = 0; kk < k; kk += 2)
      for (int64_t j = 0; j < n; ++j)
        if (!fits(kk, j)) return false;
  } else {
    for (int64_t j = 0; j < n; ++j)
      for (int64_t kk = 0; kk < k; kk += 2)
        if (!fits(kk, j)) return false;
  }
  return true;
}

bool qgemm_u8s8_wanted(const QgemmCodes& b, int64_t k, int64_t n, const std::vector<int32_t>& zero_points) {
  if (!qgemm_avx2_supported() || env_flag_set("QTK_QGEMM_NO_U8S8")) return false;
  const int32_t shift = b.is_signed ? 0 : 128;
  for (int64_t j = 0; j < n; ++j)
    if (zero_points[static_cast<size_t>(j)] != shift) return false;
  return qgemm_u8s8_pairs_fit(b, k, n);
}

void qgemm_u8s8_pack_a_tile(const QgemmCodes& a, int64_t m0, int rows, int64_t k, uint8_t flip, uint8_t* tile,
                            int64_t first_quad) {
  const int64_t kquads = qgemm_kquads(k), full = k / 4;
  const uint32_t flip4 = flip * 0x01010101u;
  for (int i = 0; i < kQgemmMR; ++i) {
    uint8_t* dst = tile + 4 * i;
    if (i >= rows) {
      for (int64_t q = first_quad; q < kquads; ++q) std::memset(dst + q * 4 * kQgemmMR, 0, 4);
      continue;
    }
    if (a.stride_j == 1) {  // 4 codes at a time
      const uint8_t* row = static_cast<const uint8_t*>(a.data) + (m0 + i) * a.stride_i;
      for (int64_t q = first_quad; q < full; ++q) {
        uint32_t w;
        std::memcpy(&w, row + 4 * q, 4);
        w ^= flip4;
        std::memcpy(dst + q * 4 * kQgemmMR, &w, 4);
      }
    } else {
      for (int64_t kk = 4 * first_quad; kk < 4 * full; ++kk)
        dst[(kk / 4) * 4 * kQgemmMR + kk % 4] = static_cast<uint8_t>(a.at(m0 + i, kk)) ^ flip;
    }
    for (int64_t kk = 4 * std::max(full, first_quad); kk < 4 * kquads; ++kk)  // the last quad: B is 0 past k
      dst[full * 4 * kQgemmMR + kk % 4] = kk < k ? static_cast<uint8_t>(static_cast<uint8_t>(a.at(m0 + i, kk)) ^ flip) : 0;
  }
}

void qgemm_u8s8(int64_t m, const QgemmCodes& a, int32_t a_zero_point, const QgemmPackedB& b, const QgemmOutput& out,
                ThreadPool* pool) {
  const QgemmQuadB& bq = b.quads();
  const int64_t kquads = bq.kquads, tile_len = kquads * 4 * kQgemmMR, panel_len = kquads * 4 * kQgemmNR;
  const int64_t tiles = (m + kQgemmMR - 1) / kQgemmMR;
  const uint8_t flip = a.is_signed ? 0x80 : 0;
  // A's zero point as a u8 code times each column's sum: what the raw codes
  // add over (a - a_zp). uint32: wrapping, as the int16 path.
  const uint32_t za = static_cast<uint32_t>(a_zero_point + (a.is_signed ? 128 : 0));
  std::vector<int32_t> corr(bq.colsum.size());
  for (size_t j = 0; j < corr.size(); ++j) corr[j] = static_cast<int32_t>(za * static_cast<uint32_t>(bq.colsum[j]));
  // A bias per column joins corr where the sum cannot saturate: always for a
  // wrapping one (QGemm's C: int32 adds commute mod 2^32), else where
  // |acc + bias| stays inside int32. Then the output stage has no bias to add.
  QgemmOutput out_folded = out;
  const int64_t acc_bound = kquads * 4 * 255 * 255;  // |a - za| <= 255, |b| <= 255: loose, as qconv_acc_bound
  int64_t bias_bound = 0;
  const bool column_bias = out.bias && out.bias_rs == 0 && out.bias_cs == 1;
  for (int64_t j = 0; column_bias && j < b.n; ++j)
    bias_bound = std::max<int64_t>(bias_bound, std::abs(int64_t{out.bias[j]}));
  if (column_bias && (!out.bias_saturates || acc_bound + bias_bound <= INT32_MAX)) {
    for (int64_t j = 0; j < b.n; ++j) {
      const uint32_t c = static_cast<uint32_t>(corr[static_cast<size_t>(j)]);
      corr[static_cast<size_t>(j)] = static_cast<int32_t>(c - static_cast<uint32_t>(out.bias[j]));
    }
    out_folded.bias = nullptr;
    out_folded.small_acc = acc_bound + bias_bound < (int64_t{1} << 30);
  } else {
    out_folded.small_acc = !out.bias && acc_bound < (int64_t{1} << 30);
  }
  const QgemmEpilogue epilogue = qgemm_epilogue_avx2_for(out_folded);

  const QgemmGrid grid = qgemm_grid_for(m, b, tiles, pool);
  const int64_t block_tiles = std::max<int64_t>(1, kQgemmABlockBytes / std::max<int64_t>(tile_len, 1));
  // A tiles [t0, t1) against the panels next() hands out (-1: done); packs
  // the tiles only if there is a panel.
  auto run_tiles = [&](int64_t t0, int64_t t1, const std::function<int64_t()>& next) {
    int64_t p = next();
    if (p < 0) return;
    thread_local AlignedBuffer<uint8_t> a_buffer;
    alignas(64) int32_t acc[kQgemmMR * kQgemmNR];
    uint8_t* packed = a_buffer.get((t1 - t0) * tile_len);
    for (int64_t t = t0; t < t1; ++t)
      qgemm_u8s8_pack_a_tile_avx2(a, t * kQgemmMR, static_cast<int>(std::min<int64_t>(kQgemmMR, m - t * kQgemmMR)), b.k,
                                  flip, packed + (t - t0) * tile_len);
    for (; p >= 0; p = next()) {
      const int nr = static_cast<int>(std::min<int64_t>(kQgemmNR, b.n - p * kQgemmNR));
      const int8_t* panel = bq.codes.data() + p * panel_len;
      for (int64_t t = t0; t < t1; ++t) {
        const int rows = static_cast<int>(std::min<int64_t>(kQgemmMR, m - t * kQgemmMR));
        qgemm_ukernel_u8s8_avx2(rows, kquads, packed + (t - t0) * tile_len, panel, corr.data() + p * kQgemmNR, acc);
        epilogue(acc, rows, nr, t * kQgemmMR, p * kQgemmNR, out_folded);
      }
    }
  };
  qgemm_run_grid(grid, pool, tiles, b.panels, block_tiles, qgemm_panel_group(out), run_tiles);
}

}  // namespace qtk::rt::x86::detail
