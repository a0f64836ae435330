// The u8 x s8 convolution path of the AVX2 tier (qgemm_conv_u8s8.h): the
// pair-bound check, the quad tiles, and the threaded loop over (image,
// group, panels), which mirrors qconv's int16 loop without the widening of
// the weights (the quad tiles are what the micro-kernel reads).
#include "runtime/kernels/x86/qgemm_conv_u8s8.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/cpu_features.h"
#include "runtime/thread_pool.h"

namespace qtk::rt::x86::detail {

bool qconv_u8s8_pairs_fit(const QgemmCodes& w, int64_t rows, int64_t k) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < k; j += 2) {
      const int32_t w0 = w.at(i, j), w1 = j + 1 < k ? w.at(i, j + 1) : 0;
      if (std::abs(w0) + std::abs(w1) > kQconvU8s8PairBound) return false;
    }
  return true;
}

bool qconv_u8s8_wanted(const QgemmCodes& w, int64_t rows, int64_t k, const std::vector<int32_t>& zero_points) {
  if (!qgemm_avx2_supported() || env_flag_set("QTK_QGEMM_NO_U8S8") || !w.is_signed) return false;
  for (int32_t z : zero_points)
    if (z != 0) return false;
  return qconv_u8s8_pairs_fit(w, rows, k);
}

void qconv_pack_u8s8_a(const QgemmCodes& w, int64_t rows, int64_t k, QgemmNarrowA& out) {
  out.m = rows;
  out.k = k;
  out.kpairs = qgemm_kpairs(k);
  out.kquads = qgemm_kquads(k);
  out.tiles = (rows + kQgemmMR - 1) / kQgemmMR;
  out.is_signed = true;
  out.quads = true;
  out.any_zero_point = false;
  out.zero_points.clear();  // all 0: the row sums take their place (the same bytes)
  out.row_sums.assign(static_cast<size_t>(out.tiles * kQgemmMR), 0);
  const int64_t len = out.tile_bytes(), bytes = out.tiles * len + kQgemmExpandSlack;
  uint8_t* dst = out.codes.get(bytes);
  std::memset(dst, 0, static_cast<size_t>(bytes));
  for (int64_t i = 0; i < rows; ++i) {
    uint8_t* row = dst + (i / kQgemmMR) * len + 4 * (i % kQgemmMR);
    int32_t sum = 0;
    for (int64_t j = 0; j < k; ++j) {
      const int32_t v = w.at(i, j);
      row[(j / 4) * 4 * kQgemmMR + j % 4] = static_cast<uint8_t>(v);
      sum += v;
    }
    out.row_sums[static_cast<size_t>(i)] = sum;
  }
}

void qconv_pack_panel_u8_scalar(const QconvPanelSource& s, uint8_t flip, uint8_t* panel) {
  const int64_t kquads = qgemm_kquads(s.k);
  std::memset(panel, 0, static_cast<size_t>(kquads * 4 * kQgemmNR));
  const auto* src = static_cast<const uint8_t*>(s.src);
  for (int64_t k = 0; k < s.k; ++k) {
    uint8_t* row = panel + (k / 4) * 4 * kQgemmNR + k % 4;
    for (int j = 0; j < s.lanes; ++j) row[4 * j] = src[s.tap_offset[k] + s.lane_offset[j]] ^ flip;
  }
}

namespace {
constexpr int64_t kPanelBlockBytes = 80 * 1024;  // panels per block, as qgemm_conv.cpp's (here: residual codes kept)
}  // namespace

void qconv_u8s8(const QconvGeometry& g, const void* x, bool x_signed, int32_t x_zero_point, const QconvWeights& w,
                const QgemmOutput& out, ThreadPool* pool) {
  const int64_t pixels = g.out_h * g.out_w, panels = (pixels + kQgemmNR - 1) / kQgemmNR;
  const int64_t units = g.batch * g.group * panels;
  if (units == 0 || g.out_c == 0) return;
  thread_local QconvLayout reused;  // (a reference below: the workers read this thread's)
  qconv_make_layout(g, /*tap_major=*/false, reused);  // (tap, c) weights read the quad image, not k rows
  const QconvLayout& layout = reused;
  const int64_t ocg = g.out_c / g.group, kquads = qgemm_kquads(w.k);
  const int64_t panel_bytes = kquads * 4 * kQgemmNR;
  const int64_t block_panels = std::clamp<int64_t>(kPanelBlockBytes / std::max<int64_t>(panel_bytes, 1), 1, 64);
  const size_t out_esize = out.kind == QgemmOutputKind::kCodes ? 1 : 4;
  const uint8_t* xb = static_cast<const uint8_t*>(x);
  const uint8_t flip = x_signed ? 0x80 : 0;
  // The zero point as a u8 code (an int8 one + 128), times each row's sum:
  // what the raw codes add over (x - zp). uint32: wrapping, as the int16 path.
  const uint32_t zp_u = static_cast<uint32_t>(x_zero_point + (x_signed ? 128 : 0));
  const int64_t tiles = (ocg + kQgemmMR - 1) / kQgemmMR;
  thread_local std::vector<int32_t> corr_reused;
  std::vector<int32_t>& corr = corr_reused;
  corr.assign(static_cast<size_t>(g.group * tiles * kQgemmMR), 0);
  for (int64_t gi = 0; gi < g.group; ++gi) {
    const QgemmNarrowA& wg = w.narrow(gi);
    for (int64_t i = 0; i < tiles * kQgemmMR; ++i)
      corr[static_cast<size_t>(gi * tiles * kQgemmMR + i)] =
          static_cast<int32_t>(zp_u * static_cast<uint32_t>(wg.row_sums[static_cast<size_t>(i)]));
  }
  // A per-row bias joins corr where it cannot saturate (qconv_acc_bound).
  const int64_t acc_bound = qconv_acc_bound(out, kquads * 4, g.out_c);
  const bool fold = out.bias && acc_bound <= INT32_MAX;
  for (int64_t gi = 0; fold && gi < g.group; ++gi)
    for (int64_t i = 0; i < ocg; ++i)
      corr[static_cast<size_t>(gi * tiles * kQgemmMR + i)] =
          static_cast<int32_t>(static_cast<uint32_t>(corr[static_cast<size_t>(gi * tiles * kQgemmMR + i)]) -
                               static_cast<uint32_t>(out.bias[(gi * ocg + i) * out.bias_rs]));
  QgemmOutput out_folded = out;
  if (fold) out_folded.bias = nullptr;
  out_folded.small_acc = acc_bound < (int64_t{1} << 30);
  const QgemmEpilogue epilogue = qgemm_epilogue_avx2_for(out_folded);

  // Weights in (tap, c) order read the quad image: its panels are copies.
  const bool quad_image = w.tap_major();
  auto work = [&](int64_t begin, int64_t end) {
    thread_local AlignedBuffer<uint8_t> image_buffer, quad_buffer;
    thread_local AlignedBuffer<uint8_t> panel_buffer;
    thread_local AlignedBuffer<uint8_t> residual_buffer;
    alignas(64) int32_t acc[kQgemmMR * kQgemmNR] = {};  // (a few-pixel panel writes only its lanes)
    uint8_t* panel = panel_buffer.get(panel_bytes);
    int64_t current = -1;
    QconvPanelSource src;
    src.is_signed = x_signed;
    src.zero_point = x_zero_point;
    src.tap_offset = layout.tap_offset.data();
    src.k = w.k;
    for (int64_t u = begin; u < end;) {
      const int64_t bg = u / panels, p_first = u % panels;
      const int64_t p_end = std::min({panels, p_first + block_panels, p_first + (end - u)});
      const int64_t b = bg / g.group, gi = bg % g.group;
      if (bg != current) {
        src.src = qconv_image(g, layout, xb, b, gi, x_signed, x_zero_point,
                              quad_image ? QconvImage::kQuads : QconvImage::kPhases, image_buffer, quad_buffer,
                              qconv_share_rows(g, layout, p_first, std::min(panels, p_first + (end - u))));
        current = bg;
      }
      QgemmOutput ob = out_folded;
      ob.out = static_cast<uint8_t*>(out.out) + static_cast<size_t>(b * g.out_c * pixels) * out_esize;
      ob.residual = nullptr;
      // A residual add joins per block, as in qconv's int16 loop (the output may be the residual's storage).
      QgemmResidualAdd rb;
      const int64_t n0 = p_first * kQgemmNR, n1 = std::min(p_end * kQgemmNR, pixels);
      uint8_t* kept = nullptr;
      if (out.residual) {
        rb = *out.residual;
        rb.codes = static_cast<const uint8_t*>(rb.codes) + b * g.out_c * pixels;
        kept = residual_buffer.get(ocg * (n1 - n0));
        qconv_keep_residual(rb, pixels, gi * ocg, (gi + 1) * ocg, n0, n1, kept);
      }
      const QgemmNarrowA& wg = w.narrow(gi);
      const int32_t* gcorr = corr.data() + gi * tiles * kQgemmMR;
      // One panel at a time, used by every tile while it is in L1 (the block
      // only bounds the residual codes kept aside).
      for (int64_t p = p_first; p < p_end; ++p) {
        const int nr = static_cast<int>(std::min<int64_t>(kQgemmNR, pixels - p * kQgemmNR));
        qconv_set_panel_lanes(g, layout, p, src);
        if (quad_image)
          qconv_pack_panel_copy_avx2(static_cast<const uint8_t*>(src.src), layout.quad_offset.data(), kquads, src, panel);
        else
          qconv_pack_panel_u8_avx2(src, flip, panel);
        for (int64_t t = 0; t < tiles; ++t) {
          const int rows = static_cast<int>(std::min<int64_t>(kQgemmMR, ocg - t * kQgemmMR));
          if (nr <= kQconvFewLanes)
            qconv_ukernel_u8s8_few_avx2(rows, nr, kquads, wg.tile(t), panel, gcorr + t * kQgemmMR, acc);
          else
            qconv_ukernel_u8s8_avx2(rows, kquads, wg.tile(t), panel, gcorr + t * kQgemmMR, acc);
          epilogue(acc, rows, nr, gi * ocg + t * kQgemmMR, p * kQgemmNR, ob);
        }
      }
      if (kept) qconv_join_residual(ob, rb, gi * ocg, (gi + 1) * ocg, n0, n1, kept);
      u += p_end - p_first;
    }
  };
  const int64_t macs = g.batch * g.out_c * w.k * pixels;
  if (pool == nullptr || !qconv_split_over_threads(pool->size(), g.batch, macs, /*int16_tier=*/true)) {
    work(0, units);
    return;
  }
  pool->parallel_for(units, work);
}

}  // namespace qtk::rt::x86::detail
