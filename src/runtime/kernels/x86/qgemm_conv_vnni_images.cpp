// The VNNI direct conv (qgemm_conv_vnni.cpp) with k images side by side in
// each row of the quad image. On a small plane the direct path wastes lanes:
// a row of out_w pixels takes wph virtual pixels (the pad columns), and each
// image ends inside a panel (7x7 with pad 1: 49 of 64 lanes used). With the
// images' rows placed one after another, virtual row r holds row r of k
// images (each image's right pads are the next one's left pads, as rows
// already share them), so the rounding falls once per k images: 7x7 with
// k = 2 uses 14 of 16 lanes. Lanes are not compressed: each panel's kept
// lanes go out in runs (one per image slot and output row) through
// qconv_epilogue_runs_avx512.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "runtime/kernels/x86/qgemm_conv.h"
#include "runtime/kernels/x86/qgemm_vnni.h"
#include "runtime/thread_pool.h"

namespace qtk::rt::x86::detail {

namespace {

// A panel's kept lanes as runs of one image slot and output row: lane j of
// run r is pixel pixel[r] + j of image slot[r].
struct SlotRuns {
  int count = 0;
  uint16_t keep = 0;
  uint16_t mask[QconvLaneRuns::kMax] = {};
  int slot[QconvLaneRuns::kMax] = {};
  int64_t pixel[QconvLaneRuns::kMax] = {};
};

// Each panel's runs with k images of unit_w virtual columns per row; false
// when a panel would need more than QconvLaneRuns::kMax runs.
bool plan_panels(const QconvGeometry& g, int64_t unit_w, int64_t k, std::vector<SlotRuns>& panels) {
  const int64_t row_w = k * unit_w, vpanels = (g.out_h * row_w + kQgemmNR - 1) / kQgemmNR;
  panels.assign(static_cast<size_t>(vpanels), SlotRuns{});
  for (int64_t p = 0; p < vpanels; ++p) {
    SlotRuns& s = panels[static_cast<size_t>(p)];
    int64_t last_slot = -1, last_oh = -1;
    bool prev_kept = false;
    for (int j = 0; j < kQgemmNR; ++j) {
      const int64_t o = p * kQgemmNR + j, oh = o / row_w, col = o % row_w, slot = col / unit_w, ow = col % unit_w;
      const bool kept = oh < g.out_h && ow < g.out_w;
      if (kept) {
        if (!prev_kept || slot != last_slot || oh != last_oh) {
          if (s.count == QconvLaneRuns::kMax) return false;
          s.slot[s.count] = static_cast<int>(slot);
          s.pixel[s.count] = oh * g.out_w + ow - j;
          ++s.count;
        }
        s.mask[s.count - 1] |= static_cast<uint16_t>(1u << j);
        s.keep |= static_cast<uint16_t>(1u << j);
        last_slot = slot;
        last_oh = oh;
      }
      prev_kept = kept;
    }
  }
  return true;
}

// Images per row: the k in [2, 16] (at most the batch) with the fewest
// panels over the whole batch (the smallest on ties) among those that cut
// them by 10% and whose panels need at most QconvLaneRuns::kMax runs, with
// its panels' runs; 1 if none (the runs' extra stores ate a 6% saving on
// 14x14, measured).
int64_t images_per_row(const QconvGeometry& g, int64_t unit_w, std::vector<SlotRuns>& panels) {
  const auto count = [&](int64_t k) {
    return (g.batch + k - 1) / k * ((g.out_h * k * unit_w + kQgemmNR - 1) / kQgemmNR);
  };
  std::vector<int64_t> ks;
  for (int64_t k = 2; k <= std::min<int64_t>(g.batch, 16); ++k)
    if (count(k) * 100 <= count(1) * 90) ks.push_back(k);
  std::stable_sort(ks.begin(), ks.end(), [&](int64_t a, int64_t b) { return count(a) < count(b); });
  for (int64_t k : ks)
    if (plan_panels(g, unit_w, k, panels)) return k;
  return 1;
}

}  // namespace

bool qconv_vnni_images(const QconvGeometry& g, const QconvQuadImage& single, const uint8_t* xb, bool x_signed,
                       uint8_t zx, const std::vector<QgemmQuadA>& groups, const std::vector<int32_t>& row_const,
                       const QgemmOutput& out, ThreadPool* pool) {
  if (g.group != 1 || g.stride_w != 1 || g.batch < 2 || out.kind != QgemmOutputKind::kCodes ||
      !out.channel_is_row || (out.bias && out.bias_cs != 0))
    return false;
  std::vector<SlotRuns> panels;
  const int64_t k = images_per_row(g, single.wph, panels);
  if (k < 2) return false;
  QconvQuadImage l = single;
  l.wph = k * single.wph;
  l.bytes = QconvQuadImage::front + l.phases * l.c4 * l.hph * l.wph * 4 + (l.wph + 2 * kQgemmNR) * 4 + 64;
  const std::vector<int64_t> tap = qconv_quad_taps(g, l);
  const int64_t vpanels = static_cast<int64_t>(panels.size()), kquads = static_cast<int64_t>(tap.size());
  const int64_t image_codes = g.out_c * g.out_h * g.out_w, image_in = g.in_c * g.in_h * g.in_w;
  const int64_t units = (g.batch + k - 1) / k * vpanels, ocg = g.out_c;
  const QgemmQuadA& wq = groups[0];
  // Panel p's runs of the images from b0 on (slots past the batch dropped).
  const auto lane_runs = [&](const SlotRuns& s, int64_t b0) {
    QconvLaneRuns r;
    for (int i = 0; i < s.count; ++i) {
      if (b0 + s.slot[i] >= g.batch) continue;
      r.mask[r.count] = s.mask[i];
      r.offset[r.count] = (b0 + s.slot[i]) * image_codes + s.pixel[i];
      ++r.count;
    }
    return r;
  };
  auto work = [&](int64_t begin, int64_t end) {
    thread_local AlignedBuffer<uint8_t> image_buffer;
    alignas(64) int32_t acc[kQgemmVnniMR * kQgemmNR];
    alignas(64) int32_t acc_more[kQconvMaxPanels][kQconvPanelRows * kQgemmNR];
    int64_t current = -1;
    uint8_t* image = nullptr;
    for (int64_t u = begin; u < end; ++u) {
      const int64_t row_group = u / vpanels, p = u % vpanels, b0 = row_group * k;
      if (row_group != current) {
        image = image_buffer.get(l.bytes);
        std::memset(image, zx, static_cast<size_t>(l.bytes));
        for (int64_t s = 0; s < k && b0 + s < g.batch; ++s)
          qconv_fill_quad_image(g, l, xb + (b0 + s) * image_in, g.in_c, x_signed, zx, image + s * single.wph * 4,
                                false);
        current = row_group;
      }
      if (panels[static_cast<size_t>(p)].keep == 0) continue;
      const uint8_t* base = image + p * kQgemmNR * 4;
      int run = 1;  // this panel and the next ones of the row group, up to kQconvMaxPanels
      while (run < kQconvMaxPanels && u + run < end && p + run < vpanels &&
             panels[static_cast<size_t>(p + run)].keep != 0)
        ++run;
      if (run > 1) {
        VnniFix fix[kQconvMaxPanels];
        int32_t* accs[kQconvMaxPanels];
        QconvLaneRuns runs[kQconvMaxPanels];
        for (int j = 0; j < run; ++j) {
          accs[j] = acc_more[j];
          runs[j] = lane_runs(panels[static_cast<size_t>(p + j)], b0);
        }
        for (int64_t r0 = 0; r0 < ocg; r0 += kQconvPanelRows) {
          const int rows = static_cast<int>(std::min<int64_t>(kQconvPanelRows, ocg - r0));
          fix[0].row_const = row_const.data() + r0;
          qconv_vnni_ukernel_taps_panels(run, rows, kquads, wq.tile(r0 / kQgemmVnniMR) + r0 % kQgemmVnniMR, base,
                                         tap.data(), fix, accs);
          for (int j = 0; j < run; ++j)
            if (runs[j].count > 0) qconv_epilogue_runs_avx512(accs[j], rows, r0, runs[j], out);
        }
        u += run - 1;
        continue;
      }
      const QconvLaneRuns runs = lane_runs(panels[static_cast<size_t>(p)], b0);
      for (int64_t t = 0; t < wq.tiles; ++t) {
        const int rows = static_cast<int>(std::min<int64_t>(kQgemmVnniMR, ocg - t * kQgemmVnniMR));
        VnniFix fix;
        fix.row_const = row_const.data() + t * kQgemmVnniMR;
        qconv_vnni_ukernel_taps(rows, kquads, wq.tile(t), base, tap.data(), fix, acc);
        if (runs.count > 0) qconv_epilogue_runs_avx512(acc, rows, t * kQgemmVnniMR, runs, out);
      }
    }
  };
  const int64_t macs = g.batch * g.out_c * wq.k * g.out_h * g.out_w;
  if (pool == nullptr || !qconv_split_over_threads(pool->size(), (g.batch + k - 1) / k, macs)) {
    work(0, units);
    return true;
  }
  pool->parallel_for(units, work);
  return true;
}

}  // namespace qtk::rt::x86::detail
