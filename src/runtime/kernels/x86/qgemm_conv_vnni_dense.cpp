// The VNNI direct conv (qgemm_conv_vnni.cpp) without pad lanes, for convs
// whose input plane is stride times the output plane (stride 1 or 2 per
// axis, no dilation: "same" convs, and a ResNet's stride-2 ones): the copy
// holds only the input's pixels, split by stride phase into planes of the
// output's size (stride 1: the image itself), several images one after
// another, so every lane of a 16-pixel panel is an output pixel (the padded
// layout spends 29 lanes on a 28-pixel row, 14 panels on a 14x14 image that
// needs 12.25, 4 on a 7x7 one that needs 3.06). A tap's window then starts
// past a row's (or image's) end for the lanes at the edges: those lanes are
// masked out of that tap's vpdpbusd (merge masking costs nothing) and get
// back, after the sums, what the pads would have added:
//   zx' · Σ (weights of the taps masked for the lane)
// (row_const subtracts zx' · Σ all weights, the pads' terms included). The
// lanes fall in few classes (which taps reach outside: top-left corner, left
// column, ..., 9 for a 3x3 with pad 1; at most 16 taken), one correction per
// class and output channel: a row's 16 (with row_const) are one vector, and
// a vpermd by the panel's lane classes gives each lane its own, one add per
// row as row_const alone takes (one masked add per class and row ate the 4%
// saved on 28x28 planes, measured).
// All sums wrap in int32 as the padded path's do: the same codes, bit for bit.
#include <algorithm>
#include <atomic>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <vector>

#include "runtime/kernels/x86/qgemm_conv.h"
#include "runtime/kernels/x86/qgemm_vnni.h"
#include "runtime/thread_pool.h"

#if defined(__x86_64__) || defined(__i386__)
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the unused
// merge operand, which -Wmaybe-uninitialized reports (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define QTK_QCONV_DENSE_X86 1
#endif

namespace qtk::rt::x86::detail {

namespace {

// Blocks of `images` images: lane o of the block is pixel o % hw of image
// o / hw. Per panel: each tap's lanes that read the image (bits past the
// block's pixels set too: their sums are never stored), each lane's class
// (0 past the pixels), and where the lanes go (offsets from the block's
// first image).
struct DensePlan {
  int64_t images = 0, pixels = 0, panels = 0;
  std::vector<uint16_t> tap_masks;  // [panel * taps + tap]
  std::vector<int32_t> lane_class;  // [panel * 16 + lane]
  std::vector<QconvLaneRuns> runs;
};

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((b - 1 - a) / b); }  // b > 0

// Along one axis, tap k of output position pos reads input pos·stride + k -
// pad: in its stride phase (k - pad) mod stride, at phase position pos +
// floor((k - pad) / stride). The input being stride·extent long, every
// phase is `extent` long, and the tap reads the image iff that position is
// in [0, extent): for taps [lo, hi) (a range: the position grows with k).
struct TapRange {
  int64_t lo = 0, hi = 0;
  bool operator==(const TapRange&) const = default;
};
TapRange tap_range(int64_t pos, int64_t pad, int64_t kernel, int64_t stride, int64_t extent) {
  TapRange r{kernel, 0};
  for (int64_t k = 0; k < kernel; ++k) {
    const int64_t at = pos + floor_div(k - pad, stride);
    if (at >= 0 && at < extent) r.lo = std::min(r.lo, k), r.hi = k + 1;
  }
  return r.lo < r.hi ? r : TapRange{};
}

// Each position's class along one axis (the distinct tap ranges, in order).
std::vector<int> axis_classes(int64_t extent, int64_t pad, int64_t kernel, int64_t stride,
                              std::vector<TapRange>& ranges) {
  std::vector<int> cls(static_cast<size_t>(extent));
  for (int64_t i = 0; i < extent; ++i) {
    const TapRange r = tap_range(i, pad, kernel, stride, extent);
    const auto it = std::find(ranges.begin(), ranges.end(), r);
    cls[static_cast<size_t>(i)] = static_cast<int>(it - ranges.begin());
    if (it == ranges.end()) ranges.push_back(r);
  }
  return cls;
}

struct Classes {
  std::vector<TapRange> rows, cols;
  std::vector<int> row_of, col_of;  // per output row / column
  int count() const { return static_cast<int>(rows.size() * cols.size()); }
};

Classes make_classes(const QconvGeometry& g) {
  Classes c;
  c.row_of = axis_classes(g.out_h, g.pad_top, g.kernel_h, g.stride_h, c.rows);
  c.col_of = axis_classes(g.out_w, g.pad_left, g.kernel_w, g.stride_w, c.cols);
  return c;
}

// false: some panel's lanes span more than QconvLaneRuns::kMax images.
bool make_plan(const QconvGeometry& g, const Classes& c, int64_t images, DensePlan& plan) {
  const int64_t hw = g.out_h * g.out_w, taps = g.kernel_h * g.kernel_w, image_codes = g.out_c * hw;
  plan.images = images;
  plan.pixels = images * hw;
  plan.panels = (plan.pixels + kQgemmNR - 1) / kQgemmNR;
  plan.tap_masks.assign(static_cast<size_t>(plan.panels * taps), 0);
  plan.lane_class.assign(static_cast<size_t>(plan.panels * kQgemmNR), 0);
  plan.runs.assign(static_cast<size_t>(plan.panels), QconvLaneRuns{});
  // Which taps each class reads, as the lanes' class masks are ORed into the
  // tap masks per panel (not per lane and tap).
  std::vector<uint8_t> reads(static_cast<size_t>(c.count() * taps));
  for (int k = 0; k < c.count(); ++k) {
    const TapRange rr = c.rows[static_cast<size_t>(k) / c.cols.size()], cr = c.cols[static_cast<size_t>(k) % c.cols.size()];
    for (int64_t kh = rr.lo; kh < rr.hi; ++kh)
      for (int64_t kw = cr.lo; kw < cr.hi; ++kw) reads[static_cast<size_t>(k * taps + kh * g.kernel_w + kw)] = 1;
  }
  std::vector<uint16_t> class_mask(static_cast<size_t>(c.count()));
  const int cols = static_cast<int>(c.cols.size());
  int64_t s = 0, oh = 0, ow = 0;  // lane o's image, row and column (no divisions per lane)
  for (int64_t p = 0; p < plan.panels; ++p) {
    uint16_t* masks = &plan.tap_masks[static_cast<size_t>(p * taps)];
    std::fill(class_mask.begin(), class_mask.end(), 0);
    QconvLaneRuns& runs = plan.runs[static_cast<size_t>(p)];
    const int lanes = static_cast<int>(std::min<int64_t>(kQgemmNR, plan.pixels - p * kQgemmNR));
    int64_t last_image = -1;
    for (int j = 0; j < lanes; ++j) {
      const uint16_t bit = static_cast<uint16_t>(1u << j);
      const int cls = c.row_of[static_cast<size_t>(oh)] * cols + c.col_of[static_cast<size_t>(ow)];
      class_mask[static_cast<size_t>(cls)] |= bit;
      plan.lane_class[static_cast<size_t>(p * kQgemmNR + j)] = cls;
      if (s != last_image) {
        if (runs.count == QconvLaneRuns::kMax) return false;
        runs.offset[runs.count] = s * image_codes + oh * g.out_w + ow - j;
        ++runs.count;
        last_image = s;
      }
      runs.mask[runs.count - 1] |= bit;
      if (++ow == g.out_w && (ow = 0, ++oh == g.out_h)) oh = 0, ++s;
    }
    const uint16_t inactive = static_cast<uint16_t>(~((1u << lanes) - 1));
    for (int64_t t = 0; t < taps; ++t) masks[t] = inactive;
    for (int k = 0; k < c.count(); ++k) {
      const uint16_t m = class_mask[static_cast<size_t>(k)];
      if (m == 0) continue;
      for (int64_t t = 0; t < taps; ++t)
        if (reads[static_cast<size_t>(k * taps + t)]) masks[t] |= m;
    }
  }
  return true;
}

// A geometry's classes and block plans (false: the plans fail), kept per
// thread for the geometries met last: rebuilt per call they took a third of
// resnet20's time at batch 1, measured.
struct DenseLayout {
  Classes classes;
  DensePlan full, last;
  bool ok = false;
};
std::shared_ptr<const DenseLayout> dense_layout(const QconvGeometry& g, int64_t images, int64_t last_images) {
  using Key = std::array<int64_t, 12>;
  const Key key{g.out_c, g.out_h, g.out_w, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_top, g.pad_left,
                images, last_images, 0};
  thread_local std::vector<std::pair<Key, std::shared_ptr<const DenseLayout>>> cache;  // newest last
  for (size_t i = 0; i < cache.size(); ++i)
    if (cache[i].first == key) {
      auto hit = cache[i];
      cache.erase(cache.begin() + static_cast<std::ptrdiff_t>(i));
      cache.push_back(hit);
      return hit.second;
    }
  auto layout = std::make_shared<DenseLayout>();
  layout->classes = make_classes(g);
  layout->ok = layout->classes.count() <= kQgemmNR && make_plan(g, layout->classes, images, layout->full) &&
               (last_images == images || make_plan(g, layout->classes, last_images, layout->last));
  constexpr size_t kCached = 16;
  if (cache.size() == kCached) cache.erase(cache.begin());
  cache.emplace_back(key, layout);
  return layout;
}

// Where the micro-kernel reads: quad (tap t, channel quad cq) of the panel at
// `base` is the 64 bytes at base + tap[t] + cq * plane_bytes.
struct DenseSource {
  const uint8_t* base = nullptr;
  const int64_t* tap = nullptr;
  int64_t taps = 0, c4 = 0, plane_bytes = 0;
};

// Per panel: its tap masks and its lanes' classes.
struct DenseFix {
  const uint16_t* tap_masks = nullptr;
  const int32_t* lane_class = nullptr;
};

#ifdef QTK_QCONV_DENSE_X86

#define QTK_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

// PANELS consecutive panels against ROWS rows of A (the first row's words,
// 16 apart per quad, quads in (tap, channel quad) order).
template <int ROWS, int PANELS>
QTK_VNNI void dense_rows(const DenseSource& s, const uint32_t* a, const DenseFix* fix, const int32_t* table,
                         int32_t* const* acc) {
  __m512i c[PANELS][ROWS];
#pragma GCC unroll 16
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 2
    for (int j = 0; j < PANELS; ++j) c[j][i] = _mm512_setzero_si512();
  for (int64_t t = 0; t < s.taps; ++t) {
    __mmask16 m[PANELS];
#pragma GCC unroll 2
    for (int j = 0; j < PANELS; ++j) m[j] = static_cast<__mmask16>(fix[j].tap_masks[t]);
    const uint8_t* bt = s.base + s.tap[t];
#pragma GCC unroll 2
    for (int64_t cq = 0; cq < s.c4; ++cq) {
      __m512i bv[PANELS];
#pragma GCC unroll 2
      for (int j = 0; j < PANELS; ++j) bv[j] = _mm512_loadu_si512(bt + cq * s.plane_bytes + 4 * kQgemmNR * j);
#pragma GCC unroll 16
      for (int i = 0; i < ROWS; ++i) {
        const __m512i av = _mm512_set1_epi32(static_cast<int32_t>(a[i]));
#pragma GCC unroll 2
        for (int j = 0; j < PANELS; ++j) c[j][i] = _mm512_mask_dpbusd_epi32(c[j][i], m[j], bv[j], av);
      }
      a += kQgemmVnniMR;
    }
  }
  // (maskz: the plain intrinsic's undefined merge operand trips
  // -Wuninitialized in GCC 12, bug 105593; all lanes kept.)
  __m512i cls[PANELS];
#pragma GCC unroll 2
  for (int j = 0; j < PANELS; ++j) cls[j] = _mm512_loadu_si512(fix[j].lane_class);
#pragma GCC unroll 16
  for (int i = 0; i < ROWS; ++i) {
    const __m512i row = _mm512_loadu_si512(table + i * kQgemmNR);  // row i's constant per class
#pragma GCC unroll 2
    for (int j = 0; j < PANELS; ++j)
      _mm512_store_si512(acc[j] + i * kQgemmNR, _mm512_add_epi32(c[j][i], _mm512_maskz_permutexvar_epi32(0xFFFF, cls[j], row)));
  }
}

// table[i * 16 + cls]: row_const[i] plus what the pads would add to row i's
// sums for the lanes of class cls, zx' · Σ over the taps outside the class's
// ranges of row i's weights (wrapping, like row_const); c.count() <= 16.
// The taps' weight sums of 16 rows at a time by vpdpbusd with ones.
QTK_VNNI std::vector<int32_t> class_table(const QconvGeometry& g, const Classes& c, const QgemmQuadA& wq, int64_t c4,
                                          uint8_t zx, const std::vector<int32_t>& row_const) {
  const int64_t taps = g.kernel_h * g.kernel_w, cols = static_cast<int64_t>(c.cols.size());
  std::vector<int32_t> table(static_cast<size_t>(g.out_c * kQgemmNR), 0);
  std::vector<int32_t> tap_sum(static_cast<size_t>(taps * kQgemmVnniMR));
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t tile = 0; tile < wq.tiles; ++tile) {
    const uint32_t* w = wq.tile(tile);
    for (int64_t t = 0; t < taps; ++t) {
      __m512i sum = _mm512_setzero_si512();
      for (int64_t cq = 0; cq < c4; ++cq)
        sum = _mm512_dpbusd_epi32(sum, ones, _mm512_loadu_si512(w + (t * c4 + cq) * kQgemmVnniMR));
      _mm512_storeu_si512(&tap_sum[static_cast<size_t>(t * kQgemmVnniMR)], sum);
    }
    const int rows = static_cast<int>(std::min<int64_t>(kQgemmVnniMR, g.out_c - tile * kQgemmVnniMR));
    const __m512i rc = _mm512_maskz_loadu_epi32(static_cast<__mmask16>((1u << rows) - 1),
                                                row_const.data() + tile * kQgemmVnniMR);
    for (int k = 0; k < c.count(); ++k) {
      const TapRange rr = c.rows[static_cast<size_t>(k / cols)], cr = c.cols[static_cast<size_t>(k % cols)];
      __m512i outside = _mm512_setzero_si512();
      for (int64_t kh = 0; kh < g.kernel_h; ++kh)
        for (int64_t kw = 0; kw < g.kernel_w; ++kw)
          if (kh < rr.lo || kh >= rr.hi || kw < cr.lo || kw >= cr.hi)
            outside = _mm512_add_epi32(
                outside, _mm512_loadu_si512(&tap_sum[static_cast<size_t>((kh * g.kernel_w + kw) * kQgemmVnniMR)]));
      alignas(64) int32_t v[kQgemmVnniMR];
      _mm512_store_si512(v, _mm512_add_epi32(rc, _mm512_mullo_epi32(outside, _mm512_set1_epi32(zx))));
      for (int i = 0; i < rows; ++i) table[static_cast<size_t>((tile * kQgemmVnniMR + i) * kQgemmNR + k)] = v[i];
    }
  }
  return table;
}

// Rows per pass: 8 with two panels (each weight word feeds two vpdpbusd), 16
// with one (bound by loads otherwise).
constexpr int kPairRows = 8, kSingleRows = 16;

template <int PANELS>
QTK_VNNI void dense_dispatch(int rows, const DenseSource& s, const uint32_t* a, const DenseFix* fix,
                             const int32_t* table, int32_t* const* acc) {
  switch (rows) {
#define QTK_DENSE_ROWS(n) \
  case n: return dense_rows<n, PANELS>(s, a, fix, table, acc);
    QTK_DENSE_ROWS(1) QTK_DENSE_ROWS(2) QTK_DENSE_ROWS(3) QTK_DENSE_ROWS(4) QTK_DENSE_ROWS(5) QTK_DENSE_ROWS(6)
    QTK_DENSE_ROWS(7)
#undef QTK_DENSE_ROWS
  }
  if constexpr (PANELS == 1) {
    switch (rows) {
#define QTK_DENSE_ROWS(n) \
  case n: return dense_rows<n, 1>(s, a, fix, table, acc);
      QTK_DENSE_ROWS(8) QTK_DENSE_ROWS(9) QTK_DENSE_ROWS(10) QTK_DENSE_ROWS(11) QTK_DENSE_ROWS(12)
      QTK_DENSE_ROWS(13) QTK_DENSE_ROWS(14) QTK_DENSE_ROWS(15)
#undef QTK_DENSE_ROWS
      default: return dense_rows<16, 1>(s, a, fix, table, acc);
    }
  } else {
    return dense_rows<8, PANELS>(s, a, fix, table, acc);
  }
}

// Four channel rows of n <= 16 pixels as the zmm's blocks -> 16 pixels of
// 4 bytes (as qgemm_vnni_avx512.cpp's quads_by_pixel), bytes xor `flip`.
QTK_VNNI inline __m512i dense_quads(__m128i r0, __m128i r1, __m128i r2, __m128i r3, __m512i flip) {
  const __m512i v =
      _mm512_inserti32x4(_mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(r0), r1, 1), r2, 2), r3, 3);
  const __m512i by_quad = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m512i by_pixel = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
  return _mm512_xor_si512(_mm512_shuffle_epi8(_mm512_maskz_permutexvar_epi32(0xFFFF, by_quad, v), by_pixel), flip);
}

// n <= 16 pixels from p: every byte (stride 1) or every other one (stride
// 2; `avail` bytes readable from p, at least 2n - 1).
template <int SW>
QTK_VNNI inline __m128i dense_pixels(const uint8_t* p, int64_t n, int64_t avail) {
  if constexpr (SW == 1) {
    return _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << n) - 1), p);
  } else {
    const __mmask32 m = avail >= 32 ? ~0u : static_cast<__mmask32>((1u << avail) - 1);
    const __m256i even = _mm256_shuffle_epi8(
        _mm256_maskz_loadu_epi8(m, p), _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1, 0,
                                                        2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1));
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(even, 0x08));
  }
}

// Pixels i .. i + n - 1 (n <= 16) of four channel rows, as dense_quads.
QTK_VNNI inline __m512i dense_chunk(const uint8_t* const* rows, int64_t i, int64_t n, __m512i flip) {
  return dense_quads(dense_pixels<1>(rows[0] + i, n, 0), dense_pixels<1>(rows[1] + i, n, 0),
                     dense_pixels<1>(rows[2] + i, n, 0), dense_pixels<1>(rows[3] + i, n, 0), flip);
}

// One phase (ph, pw) of one channel quad of an image: rows[t] is channel t's
// plane, step[t] its row length (0: an absent channel reading a row of zx');
// phase pixel (r, c) = input (r·SH + ph, c·SW + pw) to dst + 4 (r·out_w + c).
template <int SW>
QTK_VNNI void fill_phase(const QconvGeometry& g, const uint8_t* const* rows, const int64_t* step, int64_t ph,
                         int64_t pw, __m512i flip, uint8_t* dst) {
  for (int64_t r = 0; r < g.out_h; ++r) {
    const int64_t ir = r * g.stride_h + ph;
    for (int64_t c = 0; c < g.out_w; c += 16) {
      const int64_t n = std::min<int64_t>(16, g.out_w - c), ic = c * SW + pw;
      __m128i v[4];
      for (int t = 0; t < 4; ++t) v[t] = dense_pixels<SW>(rows[t] + ir * step[t] + ic, n, g.in_w - ic);
      const __m512i q = dense_quads(v[0], v[1], v[2], v[3], flip);
      uint8_t* d = dst + (r * g.out_w + c) * 4;
      if (n == 16) _mm512_storeu_si512(d, q);
      else _mm512_mask_storeu_epi8(d, (__mmask64{1} << (4 * n)) - 1, q);
    }
  }
}

// The block's images (x: the first) as planes of plane_bytes, one per read
// phase (phases[k] = ph·SW + pw) and channel quad: plane (k·c4 + cq) holds
// pixel o (image o / hw) at 4o; channels past in_c hold zx'.
QTK_VNNI void fill_dense(const QconvGeometry& g, const uint8_t* x, int64_t images, const std::vector<int64_t>& phases,
                         int64_t c4, int64_t plane_bytes, bool x_signed, uint8_t zx, uint8_t* planes) {
  const uint8_t flip = x_signed ? 0x80 : 0;
  const __m512i vflip = _mm512_set1_epi8(static_cast<char>(flip));
  const int64_t hw = g.out_h * g.out_w, in_hw = g.in_h * g.in_w;
  thread_local std::vector<uint8_t> zp_row;  // an absent channel: zx' after the flip
  zp_row.assign(static_cast<size_t>(std::max(hw, g.in_w) + 32), static_cast<uint8_t>(zx ^ flip));
  const bool contiguous = g.stride_h == 1 && g.stride_w == 1;  // the phase is the image
  for (size_t k = 0; k < phases.size(); ++k)
    for (int64_t cq = 0; cq < c4; ++cq)
      for (int64_t s = 0; s < images; ++s) {
        const uint8_t* rows[4];
        int64_t step[4];
        for (int t = 0; t < 4; ++t) {
          const bool present = 4 * cq + t < g.in_c;
          rows[t] = present ? x + (s * g.in_c + 4 * cq + t) * in_hw : zp_row.data();
          step[t] = present ? g.in_w : 0;
        }
        uint8_t* dst = planes + (static_cast<int64_t>(k) * c4 + cq) * plane_bytes + s * hw * 4;
        if (contiguous) {  // the whole plane as one row: full chunks, then the rest
          int64_t i = 0;
          for (; i + 16 <= hw; i += 16) _mm512_storeu_si512(dst + 4 * i, dense_chunk(rows, i, 16, vflip));
          if (i < hw)
            _mm512_mask_storeu_epi8(dst + 4 * i, (__mmask64{1} << (4 * (hw - i))) - 1,
                                    dense_chunk(rows, i, hw - i, vflip));
          continue;
        }
        const int64_t ph = phases[k] / g.stride_w, pw = phases[k] % g.stride_w;
        if (g.stride_w == 1) fill_phase<1>(g, rows, step, ph, pw, vflip, dst);
        else fill_phase<2>(g, rows, step, ph, pw, vflip, dst);
      }
}

#endif  // QTK_QCONV_DENSE_X86

}  // namespace

namespace {
std::atomic<uint64_t> g_dense_taken{0};  // calls the path took (tests check it is reached)
}  // namespace

uint64_t qconv_vnni_dense_taken() { return g_dense_taken.load(std::memory_order_relaxed); }

bool qconv_vnni_dense(const QconvGeometry& g, const uint8_t* xb, bool x_signed, uint8_t zx,
                      const std::vector<QgemmQuadA>& groups, const std::vector<int32_t>& row_const,
                      const QgemmOutput& out, ThreadPool* pool) {
#ifdef QTK_QCONV_DENSE_X86
  const int64_t sh = g.stride_h, sw = g.stride_w;
  if (g.group != 1 || sh < 1 || sh > 2 || sw < 1 || sw > 2 || g.dilation_h != 1 || g.dilation_w != 1 ||
      g.in_h != sh * g.out_h || g.in_w != sw * g.out_w || g.pad_top < 0 || g.pad_left < 0 ||
      g.pad_top >= g.kernel_h || g.pad_left >= g.kernel_w || out.kind != QgemmOutputKind::kCodes ||
      !out.channel_is_row || (out.bias && out.bias_cs != 0))
    return false;
  const int64_t hw = g.out_h * g.out_w, taps = g.kernel_h * g.kernel_w, c4 = (g.in_c + 3) / 4;
  // Images per block: the fewest whose pixels fill whole panels (a block's
  // panels then all look alike), at most the batch.
  const int64_t images = std::min<int64_t>(g.batch, kQgemmNR / std::gcd(hw, int64_t{kQgemmNR}));
  const int64_t blocks = (g.batch + images - 1) / images, last_images = g.batch - (blocks - 1) * images;
  // Only where it saves panels over the padded layout (qconv_vnni's row
  // width; not on 7x7 at batch 1: 4 either way).
  const int64_t wp = std::max(g.pad_left + g.in_w, (g.out_w - 1) * sw + g.kernel_w);
  const int64_t padded_w = sw == 1 ? std::max(g.out_w, g.in_w + std::max(g.pad_left, wp - g.pad_left - g.in_w))
                                   : (wp + sw - 1) / sw;
  const int64_t padded_panels = g.batch * ((g.out_h * padded_w + kQgemmNR - 1) / kQgemmNR);
  const int64_t dense_panels = (blocks - 1) * ((images * hw + kQgemmNR - 1) / kQgemmNR) +
                               (last_images * hw + kQgemmNR - 1) / kQgemmNR;
  if (dense_panels >= padded_panels) return false;
  // At most 16 classes: one vpermd picks a lane's.
  const std::shared_ptr<const DenseLayout> layout = dense_layout(g, images, last_images);
  if (!layout->ok) return false;
  const Classes& classes = layout->classes;
  const DensePlan &full = layout->full, &last = layout->last;
  const QgemmQuadA& wq = groups[0];
  const std::vector<int32_t> table = class_table(g, classes, wq, c4, zx, row_const);
  // Tap (kh, kw) reads its phase's planes (only the phases some tap reads
  // are copied: a 1x1 stride-2 conv reads one of four) `shift` pixels on.
  const int64_t plane_bytes = full.panels * kQgemmNR * 4;
  std::vector<int64_t> tap(static_cast<size_t>(taps)), phases, slot(static_cast<size_t>(sh * sw), -1);
  int64_t shift_min = 0, shift_max = 0;
  for (int64_t kh = 0; kh < g.kernel_h; ++kh)
    for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
      const int64_t dh = kh - g.pad_top, dw = kw - g.pad_left;
      const int64_t phase = (dh - floor_div(dh, sh) * sh) * sw + dw - floor_div(dw, sw) * sw;
      if (slot[static_cast<size_t>(phase)] < 0) {
        slot[static_cast<size_t>(phase)] = static_cast<int64_t>(phases.size());
        phases.push_back(phase);
      }
      const int64_t shift = floor_div(dh, sh) * g.out_w + floor_div(dw, sw);
      shift_min = std::min(shift_min, shift);
      shift_max = std::max(shift_max, shift);
      tap[static_cast<size_t>(kh * g.kernel_w + kw)] = slot[static_cast<size_t>(phase)] * c4 * plane_bytes + shift * 4;
    }
  // Masked lanes still load: slack before the planes (windows above the
  // first pixel) and after them (below the last panel's last lane).
  const int64_t planes_n = static_cast<int64_t>(phases.size()) * c4;
  const int64_t front = -shift_min * 4 / 64 * 64 + 64, tail = shift_max * 4 / 64 * 64 + 64;
  const int64_t bytes = front + planes_n * plane_bytes + tail;
  const int64_t image_codes = g.out_c * hw, image_in = g.in_c * g.in_h * g.in_w, ocg = g.out_c;
  const int64_t units = blocks * full.panels;
  auto work = [&](int64_t begin, int64_t end) {
    thread_local AlignedBuffer<uint8_t> buffer;
    alignas(64) int32_t acc_mem[2][kSingleRows * kQgemmNR];
    int32_t* accs[2] = {acc_mem[0], acc_mem[1]};
    int64_t current = -1;
    uint8_t* planes = nullptr;
    for (int64_t u = begin; u < end; ++u) {
      const int64_t block = u / full.panels, p = u % full.panels;
      const DensePlan& plan = block == blocks - 1 && last_images != images ? last : full;
      if (p >= plan.panels) continue;
      if (block != current) {
        uint8_t* buf = buffer.get(bytes);
        planes = buf + front;
        // The slack and the planes' unused ends are read by masked lanes
        // only: any bytes would do, zx' keeps them defined.
        std::memset(buf, zx, static_cast<size_t>(front));
        std::memset(planes + planes_n * plane_bytes, zx, static_cast<size_t>(tail));
        if (plan.pixels * 4 < plane_bytes)
          for (int64_t cq = 0; cq < planes_n; ++cq)
            std::memset(planes + cq * plane_bytes + plan.pixels * 4, zx,
                        static_cast<size_t>(plane_bytes - plan.pixels * 4));
        fill_dense(g, xb + block * images * image_in, plan.images, phases, c4, plane_bytes, x_signed, zx, planes);
        current = block;
      }
      const int panels = u + 1 < end && p + 1 < plan.panels ? 2 : 1;
      DenseFix fix[2];
      QconvLaneRuns runs[2];
      int lanes[2] = {};
      for (int j = 0; j < panels; ++j) {
        const int64_t pj = p + j;
        fix[j].tap_masks = &plan.tap_masks[static_cast<size_t>(pj * taps)];
        fix[j].lane_class = &plan.lane_class[static_cast<size_t>(pj * kQgemmNR)];
        runs[j] = plan.runs[static_cast<size_t>(pj)];
        lanes[j] = static_cast<int>(std::min<int64_t>(kQgemmNR, plan.pixels - pj * kQgemmNR));
        for (int r = 0; r < runs[j].count; ++r) runs[j].offset[r] += block * images * image_codes;
      }
      DenseSource src{planes + p * kQgemmNR * 4, tap.data(), taps, c4, plane_bytes};
      const int pass = panels == 2 ? kPairRows : kSingleRows;
      for (int64_t r0 = 0; r0 < ocg; r0 += pass) {
        const int rows = static_cast<int>(std::min<int64_t>(pass, ocg - r0));
        const uint32_t* a = wq.tile(r0 / kQgemmVnniMR) + r0 % kQgemmVnniMR;
        if (panels == 2)
          dense_dispatch<2>(rows, src, a, fix, table.data() + r0 * kQgemmNR, accs);
        else
          dense_dispatch<1>(rows, src, a, fix, table.data() + r0 * kQgemmNR, accs);
        for (int j = 0; j < panels; ++j) {
          // One image: its lanes from 0 on, the plain output stage (the runs'
          // loops cost 20% more per panel, measured); else one run per image.
          if (runs[j].count == 1)
            qgemm_epilogue_avx512(accs[j], rows, lanes[j], r0, runs[j].offset[0], out);
          else
            qconv_epilogue_runs_avx512(accs[j], rows, r0, runs[j], out);
        }
      }
      u += panels - 1;
    }
  };
  const int64_t macs = g.batch * g.out_c * wq.k * hw;
  g_dense_taken.fetch_add(1, std::memory_order_relaxed);
  if (pool == nullptr || !qconv_split_over_threads(pool->size(), blocks, macs)) {
    work(0, units);
    return true;
  }
  pool->parallel_for(units, work);
  return true;
#else
  (void)g, (void)xb, (void)x_signed, (void)zx, (void)groups, (void)row_const, (void)out, (void)pool;
  return false;
#endif
}

}  // namespace qtk::rt::x86::detail
