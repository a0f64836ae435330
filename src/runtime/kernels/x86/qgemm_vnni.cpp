// The GEMM driver of the AVX-512 VNNI tier (qgemm_vnni.h): the same blocking
// and thread split as qgemm.cpp's, over 16-row tiles of unsigned activation
// words and the constant B's signed quads, with the zero-point terms added by
// the micro-kernel.
#include "runtime/kernels/x86/qgemm_vnni.h"

#include <algorithm>

#include "runtime/thread_pool.h"

namespace qtk::rt::x86::detail {

void qgemm_vnni(int64_t m, const QgemmCodes& a, int32_t a_zero_point, const QgemmPackedB& b, const QgemmOutput& out,
                ThreadPool* pool) {
  const QgemmQuadB& bq = b.quads();
  const int64_t kquads = bq.kquads, tile_len = kquads * kQgemmVnniMR;
  const int64_t tiles = (m + kQgemmVnniMR - 1) / kQgemmVnniMR;
  // Σ (a' - za')(b' - zb') = Σ a'b' + [K·za'·zb'[n] - za'·Σ_k b'[n]] - zb'[n]·Σ_k a'[m]
  const int32_t za = a_zero_point + (a.is_signed ? 128 : 0);
  std::vector<int32_t> col_const(bq.colsum.size());
  for (size_t j = 0; j < col_const.size(); ++j)
    col_const[j] = static_cast<int32_t>(static_cast<uint32_t>(b.k) * static_cast<uint32_t>(za) *
                                            static_cast<uint32_t>(bq.zero_point[j]) -
                                        static_cast<uint32_t>(za) * static_cast<uint32_t>(bq.colsum[j]));
  const bool row_sums = bq.any_zero_point;

  const QgemmGrid grid = qgemm_grid_for(m, b, tiles, pool);
  const int64_t block_tiles = std::max<int64_t>(1, kQgemmABlockBytes / std::max<int64_t>(tile_len * 4, 1));

  // A tiles [t0, t1) against the panels next() hands out (qgemm_run_grid).
  auto run_tiles = [&](int64_t t0, int64_t t1, const std::function<int64_t()>& next) {
    int64_t p = next();
    if (p < 0) return;
    thread_local AlignedBuffer<uint32_t> a_buffer;
    thread_local std::vector<int32_t> sums;
    alignas(64) int32_t acc[kQgemmVnniMR * kQgemmNR];
    uint32_t* packed = a_buffer.get((t1 - t0) * tile_len);
    sums.assign(static_cast<size_t>((t1 - t0) * kQgemmVnniMR), 0);
    for (int64_t t = t0; t < t1; ++t)
      qgemm_vnni_pack_a_tile(a, t * kQgemmVnniMR, static_cast<int>(std::min<int64_t>(kQgemmVnniMR, m - t * kQgemmVnniMR)),
                             b.k, packed + (t - t0) * tile_len, row_sums ? sums.data() + (t - t0) * kQgemmVnniMR : nullptr);
    for (; p >= 0; p = next()) {
      const uint8_t* panel = reinterpret_cast<const uint8_t*>(bq.panel(p));
      const int nr = static_cast<int>(std::min<int64_t>(kQgemmNR, b.n - p * kQgemmNR));
      VnniFix fix;
      fix.col_const = col_const.data() + p * kQgemmNR;
      if (row_sums) fix.col_vec = bq.zero_point.data() + p * kQgemmNR;
      for (int64_t t = t0; t < t1; ++t) {
        const int rows = static_cast<int>(std::min<int64_t>(kQgemmVnniMR, m - t * kQgemmVnniMR));
        if (row_sums) fix.row_scale = sums.data() + (t - t0) * kQgemmVnniMR;
        qgemm_vnni_ukernel(rows, kquads, packed + (t - t0) * tile_len, panel, false, fix, acc);
        qgemm_epilogue_avx512(acc, rows, nr, t * kQgemmVnniMR, p * kQgemmNR, out);
      }
    }
  };
  qgemm_run_grid(grid, pool, tiles, b.panels, block_tiles, qgemm_panel_group(out), run_tiles);
}

}  // namespace qtk::rt::x86::detail
