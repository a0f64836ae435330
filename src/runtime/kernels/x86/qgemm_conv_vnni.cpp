// The convolution on the AVX-512 VNNI tier (qgemm_conv.h, qgemm_vnni.h):
// weights as signed quads with k = (kh, kw, c padded to 4), each image's
// group copied once into a channel-quad interleaved, zero-point-padded,
// phase-split image, and 16-pixel panels read from it with one masked load
// per run of consecutive pixels. The zero points come out exactly:
//   Σ (x' - zx')(w' - zw') = Σ x'w' + [K'·zx'·zw' - zx'·Σ w'] - zw'·Σ x'
// over the padded K' (pads hold zx', so they add nothing).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "runtime/kernels/x86/qgemm_conv.h"
#include "runtime/kernels/x86/qgemm_vnni.h"
#include "runtime/thread_pool.h"

namespace qtk::rt::x86::detail {

namespace {

// Weights minus their zero points as signed quads: byte `slot(c, kh, kw)` of
// row i's words (quad = slot / 4), zero elsewhere.
template <class Slot>
void pack_quads(const QgemmCodes& w, int64_t rows, int64_t in_c, int64_t kernel_h, int64_t kernel_w,
                const std::vector<int32_t>& zero_points, int64_t kquads, Slot slot, QgemmQuadA& out) {
  out.m = rows;
  out.k = kquads * 4;
  out.kquads = kquads;
  out.tiles = (rows + kQgemmVnniMR - 1) / kQgemmVnniMR;
  const int64_t words = std::max<int64_t>(out.tiles * out.kquads * kQgemmVnniMR, 1);
  uint32_t* dst = out.words.get(words);
  std::memset(dst, 0, static_cast<size_t>(words) * sizeof(uint32_t));
  out.rowsum.assign(static_cast<size_t>(rows), 0);
  out.zero_point.assign(static_cast<size_t>(rows), 0);
  out.any_zero_point = false;
  const int shift = w.is_signed ? 0 : 128;  // u8 - 128: signed bytes
  for (int64_t i = 0; i < rows; ++i) {
    const int32_t zp = zero_points[zero_points.size() > 1 ? i : 0];
    out.zero_point[static_cast<size_t>(i)] = zp - shift;
    out.any_zero_point = out.any_zero_point || zp != shift;
    uint8_t* bytes = reinterpret_cast<uint8_t*>(dst + (i / kQgemmVnniMR) * out.kquads * kQgemmVnniMR + i % kQgemmVnniMR);
    int32_t sum = 0;
    for (int64_t c = 0; c < in_c; ++c)
      for (int64_t kh = 0; kh < kernel_h; ++kh)
        for (int64_t kw = 0; kw < kernel_w; ++kw) {
          const int32_t v = w.at(i, (c * kernel_h + kh) * kernel_w + kw) - shift;
          const int64_t b = slot(c, kh, kw);
          bytes[(b / 4) * kQgemmVnniMR * 4 + b % 4] = static_cast<uint8_t>(static_cast<int8_t>(v));
          sum += v;
        }
    out.rowsum[static_cast<size_t>(i)] = sum;
  }
}

}  // namespace

void qconv_pack_quad_weights(const QgemmCodes& w, int64_t rows, int64_t in_c, int64_t kernel_h, int64_t kernel_w,
                             const std::vector<int32_t>& zero_points, QgemmQuadA& out) {
  const int64_t c4 = (in_c + 3) / 4;  // quad: 4 channels of one tap
  pack_quads(w, rows, in_c, kernel_h, kernel_w, zero_points, kernel_h * kernel_w * c4,
             [&](int64_t c, int64_t kh, int64_t kw) { return ((kh * kernel_w + kw) * c4 + c / 4) * 4 + c % 4; }, out);
}

void qconv_pack_tap_quad_weights(const QgemmCodes& w, int64_t rows, int64_t kernel_h, int64_t kernel_w,
                                 const std::vector<int32_t>& zero_points, QgemmQuadA& out) {
  const int64_t w4 = (kernel_w + 3) / 4;  // quad: 4 taps of one kernel row
  pack_quads(w, rows, 1, kernel_h, kernel_w, zero_points, kernel_h * w4,
             [&](int64_t, int64_t kh, int64_t kw) { return (kh * w4 + kw / 4) * 4 + kw % 4; }, out);
}

namespace {
constexpr int64_t kPanelBlockBytes = 80 * 1024;  // packed panels a thread keeps per block

// out's residual moved to the image whose output starts `offset` codes in.
const QgemmResidualAdd* image_residual(const QgemmOutput& out, int64_t offset, QgemmResidualAdd& local) {
  if (!out.residual) return nullptr;
  local = *out.residual;
  local.codes = static_cast<const uint8_t*>(local.codes) + offset;
  return &local;
}

// A per-row bias joins the row constants when acc + bias cannot leave int32
// (qconv_acc_bound): then the epilogue's saturating add changes nothing.
bool fold_bias(const QgemmOutput& out, int64_t k_padded, int64_t rows, std::vector<int32_t>& row_const) {
  if (!out.bias || out.bias_cs != 0 || qconv_acc_bound(out, k_padded, rows) > INT32_MAX) return false;
  for (int64_t i = 0; i < rows; ++i)  // row_const is a wrapping sum term
    row_const[static_cast<size_t>(i)] = static_cast<int32_t>(static_cast<uint32_t>(row_const[static_cast<size_t>(i)]) +
                                                              static_cast<uint32_t>(out.bias[i * out.bias_rs]));
  return true;
}

// Without weight zero points (no per-pixel sums needed) the micro-kernel
// reads the quad image itself: 16 virtual pixels o = oh * wph + ow at a time,
// the columns ow >= out_w dropped (compressed away) before the epilogue. The
// kept lanes are consecutive output pixels, since the dropped ones sit
// between rows. Convs whose input is stride (1 or 2) times the output first
// try qconv_vnni_dense (no pad lanes at all), small planes then
// qconv_vnni_images (several images per copy, lanes stored in runs instead
// of compressed).
void qconv_vnni_direct(const QconvGeometry& g, const QconvQuadImage& l, const std::vector<int64_t>& tap,
                       const uint8_t* xb, int64_t cg, bool x_signed, uint8_t zx,
                       const std::vector<QgemmQuadA>& groups, bool tap_quads, std::vector<int32_t> row_const,
                       QgemmOutput out, size_t out_esize, ThreadPool* pool) {
  const int64_t pixels = g.out_h * g.out_w, ocg = g.out_c / g.group;
  if (fold_bias(out, groups[0].k, g.out_c, row_const)) out.bias = nullptr;
  if (!tap_quads && qconv_vnni_dense(g, xb, x_signed, zx, groups, row_const, out, pool)) return;
  if (!tap_quads && qconv_vnni_images(g, l, xb, x_signed, zx, groups, row_const, out, pool)) return;
  const int64_t vpanels = (g.out_h * l.wph + kQgemmNR - 1) / kQgemmNR;
  const int64_t units = g.batch * g.group * vpanels, kquads = static_cast<int64_t>(tap.size());
  // Which of each panel's 16 virtual pixels are real, and the first one's index.
  struct VirtualPanel {
    uint16_t keep = 0;
    int nr = 0;
    int64_t first = 0;
  };
  std::vector<VirtualPanel> lanes(static_cast<size_t>(vpanels));
  for (int64_t p = 0, oh = 0, ow = 0; p < vpanels; ++p) {  // (oh, ow): the panel's first virtual pixel
    uint32_t keep = 0;
    int nr = 0;
    int64_t first = 0;
    for (int j = 0; j < kQgemmNR; ++j) {
      if (oh < g.out_h && ow < g.out_w) {
        if (nr++ == 0) first = oh * g.out_w + ow;
        keep |= 1u << j;
      }
      if (++ow == l.wph) ow = 0, ++oh;
    }
    lanes[static_cast<size_t>(p)] = {static_cast<uint16_t>(keep), nr, first};
  }
  auto work = [&](int64_t begin, int64_t end) {
    thread_local AlignedBuffer<uint8_t> image_buffer, plane_buffer;
    alignas(64) int32_t acc[kQgemmVnniMR * kQgemmNR];
    alignas(64) int32_t acc_more[kQconvMaxPanels][kQconvPanelRows * kQgemmNR];
    int64_t current = -1;
    const uint8_t* image = nullptr;
    QgemmOutput ob = out;
    QgemmResidualAdd residual;
    for (int64_t u = begin; u < end; ++u) {
      const int64_t bg = u / vpanels, p = u % vpanels;
      const int64_t b = bg / g.group, gi = bg % g.group;
      if (bg != current) {
        ob.out = static_cast<uint8_t*>(out.out) + static_cast<size_t>(b * g.out_c * pixels) * out_esize;
        ob.residual = image_residual(out, b * g.out_c * pixels, residual);
        uint8_t* buf = image_buffer.get(l.bytes);
        const uint8_t* src = xb + (b * g.in_c + gi * cg) * g.in_h * g.in_w;
        if (tap_quads)
          qconv_fill_tap_quad_image(g, l, src, x_signed, zx, plane_buffer.get(l.bytes / 4 + 64), buf);
        else
          qconv_fill_quad_image(g, l, src, cg, x_signed, zx, buf);
        image = buf;
        current = bg;
      }
      const VirtualPanel& vp = lanes[static_cast<size_t>(p)];
      if (vp.keep == 0) continue;
      const QgemmQuadA& wq = groups[static_cast<size_t>(gi)];
      const uint8_t* base = image + p * kQgemmNR * 4;
      int run = 1;  // this panel and the next ones of the image, up to kQconvMaxPanels
      while (run < kQconvMaxPanels && u + run < end && p + run < vpanels &&
             lanes[static_cast<size_t>(p + run)].keep != 0)
        ++run;
      if (run > 1) {
        // Together, 8 rows at a time: each weight word loaded once for all
        // of them (the one-panel micro-kernel was bound by loads).
        VnniFix fix[kQconvMaxPanels];
        int32_t* accs[kQconvMaxPanels];
        for (int j = 0; j < run; ++j) {
          fix[j].keep_lanes = lanes[static_cast<size_t>(p + j)].keep;
          accs[j] = acc_more[j];
        }
        for (int64_t r0 = 0; r0 < ocg; r0 += kQconvPanelRows) {
          const int rows = static_cast<int>(std::min<int64_t>(kQconvPanelRows, ocg - r0));
          fix[0].row_const = row_const.data() + gi * ocg + r0;
          qconv_vnni_ukernel_taps_panels(run, rows, kquads, wq.tile(r0 / kQgemmVnniMR) + r0 % kQgemmVnniMR, base,
                                         tap.data(), fix, accs);
          for (int j = 0; j < run; ++j) {
            const VirtualPanel& vj = lanes[static_cast<size_t>(p + j)];
            qgemm_epilogue_avx512(accs[j], rows, vj.nr, gi * ocg + r0, vj.first, ob);
          }
        }
        u += run - 1;
        continue;
      }
      for (int64_t t = 0; t < wq.tiles; ++t) {
        const int rows = static_cast<int>(std::min<int64_t>(kQgemmVnniMR, ocg - t * kQgemmVnniMR));
        VnniFix fix;
        fix.row_const = row_const.data() + gi * ocg + t * kQgemmVnniMR;
        fix.keep_lanes = vp.keep;
        qconv_vnni_ukernel_taps(rows, kquads, wq.tile(t), base, tap.data(), fix, acc);
        qgemm_epilogue_avx512(acc, rows, vp.nr, gi * ocg + t * kQgemmVnniMR, vp.first, ob);
      }
    }
  };
  const int64_t macs = g.batch * g.out_c * groups[0].k * pixels;
  if (pool == nullptr || !qconv_split_over_threads(pool->size(), g.batch, macs)) {
    work(0, units);
    return;
  }
  pool->parallel_for(units, work);
}

}  // namespace

std::vector<int64_t> qconv_quad_taps(const QconvGeometry& g, QconvQuadImage& l) {
  std::vector<int64_t> tap(static_cast<size_t>(g.kernel_h * g.kernel_w * l.c4));
  std::vector<bool> read_phases(static_cast<size_t>(l.phases));
  for (int64_t kh = 0; kh < g.kernel_h; ++kh)
    for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
      const int64_t th = kh * g.dilation_h, tw = kw * g.dilation_w;
      const int64_t phase = (th % g.stride_h) * g.stride_w + tw % g.stride_w;
      read_phases.at(static_cast<size_t>(phase)) = true;
      for (int64_t cq = 0; cq < l.c4; ++cq)
        tap[static_cast<size_t>((kh * g.kernel_w + kw) * l.c4 + cq)] =
            QconvQuadImage::front + (((phase * l.c4 + cq) * l.hph + th / g.stride_h) * l.wph + tw / g.stride_w) * 4;
    }
  l.unread_phases = 0;
  for (int64_t p = 0; p < std::min<int64_t>(l.phases, 64); ++p)
    if (!read_phases[static_cast<size_t>(p)]) l.unread_phases |= uint64_t{1} << p;
  return tap;
}

void qconv_vnni(const QconvGeometry& g, const void* x, bool x_signed, int32_t x_zero_point, const QconvWeights& w,
                const QgemmOutput& out, ThreadPool* pool) {
  const int64_t pixels = g.out_h * g.out_w, panels = (pixels + kQgemmNR - 1) / kQgemmNR;
  const int64_t units = g.batch * g.group * panels;
  const int64_t cg = g.in_c / g.group, ocg = g.out_c / g.group;
  // The padded, phase-split extent of qgemm_conv.cpp's layout.
  QconvQuadImage l;
  const int64_t hp = std::max(g.pad_top + g.in_h, (g.out_h - 1) * g.stride_h + (g.kernel_h - 1) * g.dilation_h + 1);
  const int64_t wp = std::max(g.pad_left + g.in_w, (g.out_w - 1) * g.stride_w + (g.kernel_w - 1) * g.dilation_w + 1);
  l.hph = (hp + g.stride_h - 1) / g.stride_h;
  // stride_w 1: rows share their pads (qgemm_vnni.h), so less waste in the direct path.
  l.wph = g.stride_w == 1 ? std::max(g.out_w, g.in_w + std::max(g.pad_left, wp - g.pad_left - g.in_w))
                          : (wp + g.stride_w - 1) / g.stride_w;
  l.c4 = (cg + 3) / 4;
  l.phases = g.stride_h * g.stride_w;
  // Slack past the last plane: windows wrapping past its last row, and the
  // direct path's virtual pixels past the last output row.
  l.bytes = QconvQuadImage::front + l.phases * l.c4 * l.hph * l.wph * 4 + (l.wph + 2 * kQgemmNR) * 4 + 64;
  const int64_t kquads = g.kernel_h * g.kernel_w * l.c4;
  const std::vector<int64_t> tap = qconv_quad_taps(g, l);
  const uint32_t zx = static_cast<uint32_t>(x_zero_point + (x_signed ? 128 : 0));
  std::vector<int32_t> row_const(static_cast<size_t>(g.out_c));
  bool col_sums = false;
  for (int64_t gi = 0; gi < g.group; ++gi) {
    const QgemmQuadA& wq = w.quad_groups[static_cast<size_t>(gi)];
    col_sums = col_sums || wq.any_zero_point;
    for (int64_t i = 0; i < ocg; ++i)
      row_const[static_cast<size_t>(gi * ocg + i)] = static_cast<int32_t>(
          static_cast<uint32_t>(wq.k) * zx * static_cast<uint32_t>(wq.zero_point[static_cast<size_t>(i)]) -
          zx * static_cast<uint32_t>(wq.rowsum[static_cast<size_t>(i)]));
  }
  const size_t out_esize = out.kind == QgemmOutputKind::kCodes ? 1 : 4;
  const uint8_t* xb = static_cast<const uint8_t*>(x);
  if (!col_sums && cg == 1 && !w.tap_quad_groups.empty() && g.stride_h == 1 && g.stride_w == 1 &&
      g.dilation_h == 1 && g.dilation_w == 1) {
    // One input channel: quads of 4 taps (qgemm_vnni.h), the same rows and widths.
    const int64_t w4 = (g.kernel_w + 3) / 4;
    std::vector<int64_t> row_taps(static_cast<size_t>(g.kernel_h * w4));
    for (int64_t kh = 0; kh < g.kernel_h; ++kh)
      for (int64_t j = 0; j < w4; ++j)
        row_taps[static_cast<size_t>(kh * w4 + j)] = QconvQuadImage::front + (kh * l.wph + 4 * j) * 4;
    QconvQuadImage lt = l;
    // Pixels read: below out_h·wph + 16 + (KH - 1)·wph + 4·w4 <= hph·wph + 16 + 4·w4.
    const int64_t zpix = (l.hph * l.wph + 4 * w4 + 2 * kQgemmNR + kQgemmNR - 1) / kQgemmNR * kQgemmNR;
    lt.bytes = QconvQuadImage::front + zpix * 4;
    qconv_vnni_direct(g, lt, row_taps, xb, cg, x_signed, static_cast<uint8_t>(zx), w.tap_quad_groups, true,
                      row_const, out, out_esize, pool);
    return;
  }
  if (!col_sums) {
    qconv_vnni_direct(g, l, tap, xb, cg, x_signed, static_cast<uint8_t>(zx), w.quad_groups, false, row_const, out,
                      out_esize, pool);
    return;
  }
  const int64_t panel_bytes = kquads * 4 * kQgemmNR;
  const int64_t block_panels = std::clamp<int64_t>(kPanelBlockBytes / std::max<int64_t>(panel_bytes, 1), 1, 64);

  auto work = [&](int64_t begin, int64_t end) {
    thread_local AlignedBuffer<uint8_t> image_buffer, panel_buffer;
    thread_local std::vector<int32_t> col_sum;
    alignas(64) int32_t acc[kQgemmVnniMR * kQgemmNR];
    uint8_t* panel_mem = panel_buffer.get(block_panels * panel_bytes);
    col_sum.assign(static_cast<size_t>(block_panels * kQgemmNR), 0);
    int64_t current = -1;
    QconvQuadPanel src;
    src.tap = tap.data();
    src.kquads = kquads;
    for (int64_t u = begin; u < end;) {
      const int64_t bg = u / panels, p_first = u % panels;
      const int64_t p_end = std::min({panels, p_first + block_panels, p_first + (end - u)});
      const int64_t b = bg / g.group, gi = bg % g.group;
      if (bg != current) {
        uint8_t* buf = image_buffer.get(l.bytes);
        qconv_fill_quad_image(g, l, xb + (b * g.in_c + gi * cg) * g.in_h * g.in_w, cg, x_signed,
                              static_cast<uint8_t>(zx), buf);
        src.src = buf;
        current = bg;
      }
      for (int64_t p = p_first; p < p_end; ++p) {
        const int64_t p0 = p * kQgemmNR;
        src.lanes = static_cast<int>(std::min<int64_t>(kQgemmNR, pixels - p0));
        int64_t oh = p0 / g.out_w, ow = p0 % g.out_w;  // no divisions per lane
        src.runs = 0;
        for (int j = 0; j < kQgemmNR; ++j) {
          src.lane_offset[j] = (oh * l.wph + ow) * 4;
          if (j == 0 || src.lane_offset[j] != src.lane_offset[j - 1] + 4) src.run_start[src.runs++] = j;
          if (++ow == g.out_w) {
            ow = 0;
            ++oh;
          }
        }
        src.run_start[src.runs] = kQgemmNR;
        qconv_pack_panel_quad_image(src, panel_mem + (p - p_first) * panel_bytes,
                                    col_sums ? col_sum.data() + (p - p_first) * kQgemmNR : nullptr);
      }
      QgemmOutput ob = out;
      ob.out = static_cast<uint8_t*>(out.out) + static_cast<size_t>(b * g.out_c * pixels) * out_esize;
      QgemmResidualAdd residual;
      ob.residual = image_residual(out, b * g.out_c * pixels, residual);
      const QgemmQuadA& wq = w.quad_groups[static_cast<size_t>(gi)];
      // Each panel stays in L1 while every weight tile passes over it.
      for (int64_t p = p_first; p < p_end; ++p) {
        const int nr = static_cast<int>(std::min<int64_t>(kQgemmNR, pixels - p * kQgemmNR));
        const uint8_t* panel = panel_mem + (p - p_first) * panel_bytes;
        for (int64_t t = 0; t < wq.tiles; ++t) {
          const int rows = static_cast<int>(std::min<int64_t>(kQgemmVnniMR, ocg - t * kQgemmVnniMR));
          VnniFix fix;
          fix.row_const = row_const.data() + gi * ocg + t * kQgemmVnniMR;
          if (col_sums) {
            fix.row_scale = wq.zero_point.data() + t * kQgemmVnniMR;
            fix.col_vec = col_sum.data() + (p - p_first) * kQgemmNR;
          }
          qgemm_vnni_ukernel(rows, kquads, wq.tile(t), panel, true, fix, acc);
          qgemm_epilogue_avx512(acc, rows, nr, gi * ocg + t * kQgemmVnniMR, p * kQgemmNR, ob);
        }
      }
      u += p_end - p_first;
    }
  };
  const int64_t macs = g.batch * g.out_c * w.k * pixels;
  if (pool == nullptr || !qconv_split_over_threads(pool->size(), g.batch, macs)) {
    work(0, units);
    return;
  }
  pool->parallel_for(units, work);
}

}  // namespace qtk::rt::x86::detail
