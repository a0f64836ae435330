// Implicit-GEMM int8 convolution (qgemm_conv.h): the phase-split padded
// image, panel sources, and the threaded loop over (image, group, panels).
#include "runtime/kernels/x86/qgemm_conv.h"
#include "runtime/kernels/x86/qgemm_conv_u8s8.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "runtime/kernels/x86/qelementwise_x86_internal.h"
#include "runtime/thread_pool.h"

namespace qtk::rt::x86 {

namespace {
std::atomic<uint64_t> g_narrow_ids{0};
}  // namespace

struct QconvWeights::Narrow {
  // Names these weights for the threads' expanded copies (never reused).
  const uint64_t id = g_narrow_ids.fetch_add(1, std::memory_order_relaxed) + 1;
  std::once_flag once;
  std::atomic<bool> packed{false};
  std::vector<QgemmNarrowA> groups;
  QgemmCodes source;
  std::vector<int32_t> zero_points;
  std::shared_ptr<const void> owner;
  bool tap_major = false;  // QconvWeights::tap_major
};

namespace {

// Group gi's codes and zero points.
QgemmCodes group_codes(const QgemmCodes& w, int64_t oc_per_group, int64_t gi) {
  QgemmCodes sub = w;
  sub.data = static_cast<const uint8_t*>(w.data) + gi * oc_per_group * w.stride_i;  // 1-byte codes
  return sub;
}

std::vector<int32_t> group_zero_points(const std::vector<int32_t>& zero_points, int64_t oc_per_group, int64_t gi) {
  if (zero_points.size() <= 1) return {zero_points[0]};
  return {zero_points.begin() + gi * oc_per_group, zero_points.begin() + (gi + 1) * oc_per_group};
}

// Column j = c * taps + tap of w (rows x in_c * taps) at tap * in_c + c.
std::vector<uint8_t> tap_major_codes(const QgemmCodes& w, int64_t rows, int64_t in_c, int64_t taps) {
  std::vector<uint8_t> out(static_cast<size_t>(rows * in_c * taps));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < in_c; ++c)
      for (int64_t t = 0; t < taps; ++t)
        out[static_cast<size_t>((i * taps + t) * in_c + c)] = static_cast<uint8_t>(w.at(i, c * taps + t));
  return out;
}

}  // namespace

const QgemmNarrowA& QconvWeights::narrow(int64_t gi) const {
  Narrow& p = *narrow_;
  std::call_once(p.once, [&] {
    const int64_t oc_per_group = out_c / group, taps = kernel_h * kernel_w;
    p.groups = std::vector<QgemmNarrowA>(static_cast<size_t>(group));
    // Weights whose k pairs fit vpmaddubsw: k quads for the u8 x s8 path.
    // With channels in fours and several taps on AVX2, k runs (tap, c):
    // quads of 4 channels of one tap if their pairs (channels 2j, 2j + 1 of
    // a tap) fit, read from the quad image; else quads in (c, tap) order if
    // those fit; else int16 pair tiles in (tap, c) order, read from the pair
    // image. Either image is made once per image, so panels are copies.
    std::vector<uint8_t> tap_major_copy;
    QgemmCodes source = p.source;
    bool quads = false;
    if (in_c % 4 == 0 && taps > 1 && qgemm_avx2_supported()) {
      tap_major_copy = tap_major_codes(p.source, out_c, in_c, taps);
      const QgemmCodes permuted{tap_major_copy.data(), p.source.is_signed, k, 1};
      const bool tap_quads = detail::qconv_u8s8_wanted(permuted, out_c, k, p.zero_points);
      const bool channel_quads = !tap_quads && detail::qconv_u8s8_wanted(p.source, out_c, k, p.zero_points);
      quads = tap_quads || channel_quads;
      p.tap_major = !channel_quads;
      if (p.tap_major) source = permuted;
    } else {
      quads = detail::qconv_u8s8_wanted(p.source, out_c, k, p.zero_points);
    }
    for (int64_t g = 0; g < group; ++g) {
      QgemmNarrowA& dst = p.groups[static_cast<size_t>(g)];
      if (quads) detail::qconv_pack_u8s8_a(group_codes(source, oc_per_group, g), oc_per_group, k, dst);
      else qgemm_pack_narrow_a(group_codes(source, oc_per_group, g), oc_per_group, k,
                               group_zero_points(p.zero_points, oc_per_group, g), dst);
    }
    p.owner.reset();  // packed: the codes are no longer needed here
    p.packed.store(true, std::memory_order_release);
  });
  return p.groups[static_cast<size_t>(gi)];
}

bool QconvWeights::narrow_packed() const { return narrow_ && narrow_->packed.load(std::memory_order_acquire); }

bool QconvWeights::tap_major() const {
  narrow(0);
  return narrow_->tap_major;
}

void qconv_pack_weights(const QgemmCodes& w, int64_t out_c, int64_t in_c_per_group, int64_t kernel_h,
                        int64_t kernel_w, int64_t group, const std::vector<int32_t>& zero_points, QconvWeights& out,
                        std::shared_ptr<const void> source_owner, QconvLayouts layouts) {
  const int64_t k_per_group = in_c_per_group * kernel_h * kernel_w;
  out.out_c = out_c;
  out.group = group;
  out.k = k_per_group;
  out.in_c = in_c_per_group;
  out.kernel_h = kernel_h;
  out.kernel_w = kernel_w;
  const bool vnni_auto = qgemm_resolve_path(QgemmPath::kAuto) == QgemmPath::kAvx512Vnni;
  const bool vnni = qgemm_avx512_vnni_supported() && (layouts == QconvLayouts::kEvery || vnni_auto);
  out.quad_groups = std::vector<QgemmQuadA>(vnni ? static_cast<size_t>(group) : 0);
  out.tap_quad_groups = std::vector<QgemmQuadA>(vnni && in_c_per_group == 1 ? static_cast<size_t>(group) : 0);
  const int64_t oc_per_group = out_c / group;
  for (int64_t gi = 0; gi < group; ++gi) {
    const QgemmCodes sub = group_codes(w, oc_per_group, gi);
    const std::vector<int32_t> zp = group_zero_points(zero_points, oc_per_group, gi);
    if (!out.quad_groups.empty())
      detail::qconv_pack_quad_weights(sub, oc_per_group, in_c_per_group, kernel_h, kernel_w, zp,
                                      out.quad_groups[static_cast<size_t>(gi)]);
    if (!out.tap_quad_groups.empty())
      detail::qconv_pack_tap_quad_weights(sub, oc_per_group, kernel_h, kernel_w, zp,
                                          out.tap_quad_groups[static_cast<size_t>(gi)]);
  }
  out.narrow_ = std::make_shared<QconvWeights::Narrow>();
  out.narrow_->source = w;
  out.narrow_->zero_points = zero_points;
  out.narrow_->owner = std::move(source_owner);
  // On the VNNI tier the 8-bit tiles serve only a forced path: made on
  // first use where the codes outlive this call, never for a session.
  const bool deferred = vnni_auto && (out.narrow_->owner || layouts == QconvLayouts::kAutomatic);
  if (!deferred) out.narrow(0);
}

void qconv_release_source(QconvWeights& w) {
  if (!w.narrow_) return;
  w.narrow_->owner.reset();
  w.narrow_->source.data = nullptr;
}

void qconv_unpack_narrow_weights(const QconvWeights& w, void* codes) {
  const int64_t ocg = w.out_c / w.group;
  for (int64_t gi = 0; gi < w.group; ++gi)
    qgemm_unpack_narrow_a(w.narrow(gi), static_cast<uint8_t*>(codes) + gi * ocg * w.k);
  if (!w.tap_major()) return;
  // Back from (tap, c) to (c, tap) order, row by row.
  const int64_t taps = w.kernel_h * w.kernel_w;
  std::vector<uint8_t> row(static_cast<size_t>(w.k));
  for (int64_t i = 0; i < w.out_c; ++i) {
    uint8_t* r = static_cast<uint8_t*>(codes) + i * w.k;
    std::copy(r, r + w.k, row.begin());
    for (int64_t c = 0; c < w.in_c; ++c)
      for (int64_t t = 0; t < taps; ++t) r[c * taps + t] = row[static_cast<size_t>(t * w.in_c + c)];
  }
}

uint64_t qconv_narrow_bytes(const QconvWeights& w) {
  if (!w.narrow_packed()) return 0;
  uint64_t n = 0;
  for (const QgemmNarrowA& a : w.narrow_->groups) n += a.bytes();
  return n;
}

// The inverse of detail::qconv_pack_quad_weights (qgemm_conv_vnni.cpp): row
// i's byte for (c, kh, kw) sits at slot ((kh * KW + kw) * c4 + c / 4) * 4 +
// c % 4 of its tile's quads, made signed (u8 - 128).
void qconv_unpack_quad_weights(const QconvWeights& w, bool is_signed, void* codes) {
  const int64_t ocg = w.out_c / w.group, c4 = (w.in_c + 3) / 4;
  const int shift = is_signed ? 0 : 128;
  auto* dst = static_cast<uint8_t*>(codes);
  for (int64_t gi = 0; gi < w.group; ++gi) {
    const QgemmQuadA& q = w.quad_groups[static_cast<size_t>(gi)];
    for (int64_t i = 0; i < ocg; ++i) {
      const auto* row = reinterpret_cast<const uint8_t*>(q.words.data() + (i / kQgemmVnniMR) * q.kquads * kQgemmVnniMR +
                                                         i % kQgemmVnniMR);
      for (int64_t c = 0; c < w.in_c; ++c)
        for (int64_t kh = 0; kh < w.kernel_h; ++kh)
          for (int64_t kw = 0; kw < w.kernel_w; ++kw) {
            const int64_t b = ((kh * w.kernel_w + kw) * c4 + c / 4) * 4 + c % 4;
            const int32_t v = static_cast<int8_t>(row[(b / 4) * kQgemmVnniMR * 4 + b % 4]) + shift;
            *dst++ = static_cast<uint8_t>(v);
          }
    }
  }
}

namespace detail {

void qconv_pack_panel_scalar(const QconvPanelSource& s, int16_t* panel) {
  const int64_t kpairs = qgemm_kpairs(s.k);
  std::memset(panel, 0, static_cast<size_t>(kpairs * 2 * kQgemmNR) * sizeof(int16_t));
  for (int64_t k = 0; k < s.k; ++k) {
    int16_t* row = panel + (k / 2) * 2 * kQgemmNR + (k % 2);
    const int64_t tap = s.tap_offset[k];
    for (int j = 0; j < s.lanes; ++j) {
      const int64_t o = tap + s.lane_offset[j];
      const int32_t v = s.is_signed ? static_cast<const int8_t*>(s.src)[o] : static_cast<const uint8_t*>(s.src)[o];
      row[2 * j] = static_cast<int16_t>(v - s.zero_point);
    }
  }
}

}  // namespace detail

namespace {

constexpr int64_t kSlack = 32;  // bytes before and after the phase images (>= one 16-byte read)
constexpr int64_t kPanelBlockBytes = 80 * 1024;  // packed panels a thread keeps per block
// The AVX2 and scalar tiers widen the weights' 8-bit tiles to int16 pairs
// per thread. A group's weights up to kHeldGroupBytes widened stay so for
// the thread's next blocks (the next images, the next panels): widened
// again per block of 4 panels, a 64-channel 3x3 conv on 56x56 ran 4-7%
// slower than from a kept int16 copy, and 256 channels on 14x14 (1 panel a
// block) 10%; held, as fast. The held copy is scratch (per thread, the
// largest group's), not per weight. Larger groups are widened in chunks of
// kExpandedChunkBytes once per block.
constexpr int64_t kHeldGroupBytes = 2 * 1024 * 1024;
constexpr int64_t kExpandedChunkBytes = 96 * 1024;

using Layout = detail::QconvLayout;

// Fills l in place (its vectors keep their capacity: callers reuse one per
// thread, as this runs once per conv per run).
void fill_layout(const QconvGeometry& g, bool tap_major, Layout& l) {
  const int64_t cg = g.in_c / g.group;
  l.direct = g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_top == 0 &&
             g.pad_left == 0 && g.out_h == g.in_h && g.out_w == g.in_w;
  l.tap_offset.resize(static_cast<size_t>(cg * g.kernel_h * g.kernel_w));
  l.quad_offset.clear();
  l.pair_offset.clear();
  l.hph = l.wph = l.plane = l.bytes = l.first_plane = l.quad_bytes = l.pair_bytes = 0;
  l.phases = 1;
  l.read_phase.clear();
  if (l.direct) {
    for (int64_t c = 0; c < cg; ++c) l.tap_offset[static_cast<size_t>(c)] = c * g.in_h * g.in_w;
    return;
  }
  // Padded extent: every window of every output lies inside.
  const int64_t hp = std::max(g.pad_top + g.in_h, (g.out_h - 1) * g.stride_h + (g.kernel_h - 1) * g.dilation_h + 1);
  const int64_t wp = std::max(g.pad_left + g.in_w, (g.out_w - 1) * g.stride_w + (g.kernel_w - 1) * g.dilation_w + 1);
  l.hph = (hp + g.stride_h - 1) / g.stride_h;
  l.wph = (wp + g.stride_w - 1) / g.stride_w;
  l.plane = l.hph * l.wph;
  l.phases = g.stride_h * g.stride_w;
  l.bytes = kSlack + l.phases * cg * l.plane + kSlack;
  l.first_plane = kSlack;
  l.read_phase.assign(static_cast<size_t>(l.phases), false);
  // Per tap once (divisions), then per channel a plane further: at batch 1
  // this runs once per conv per run.
  const int64_t taps = g.kernel_h * g.kernel_w;
  for (int64_t kh = 0; kh < g.kernel_h; ++kh)
    for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
      const int64_t th = kh * g.dilation_h, tw = kw * g.dilation_w;
      const int64_t phase = (th % g.stride_h) * g.stride_w + tw % g.stride_w;
      l.read_phase[static_cast<size_t>(phase)] = true;
      const int64_t pixel = (th / g.stride_h) * l.wph + tw / g.stride_w;
      const int64_t at = kSlack + phase * cg * l.plane + pixel;
      const int64_t tap = kh * g.kernel_w + kw;
      int64_t* dst = l.tap_offset.data() + (tap_major ? tap * cg : tap);
      const int64_t step = tap_major ? 1 : taps;
      for (int64_t c = 0; c < cg; ++c) dst[c * step] = at + c * l.plane;
      if (cg % 4 == 0) {  // the quad and pair images: groups of n channels, 4 bytes a pixel
        for (auto [n, offsets] : {std::pair{cg / 4, &l.quad_offset}, std::pair{cg / 2, &l.pair_offset}}) {
          offsets->resize(static_cast<size_t>(taps * n));
          for (int64_t j = 0; j < n; ++j)
            (*offsets)[static_cast<size_t>(tap * n + j)] = detail::kQconvQuadFront + ((phase * n + j) * l.plane + pixel) * 4;
        }
      }
    }
  // Past the last plane: a panel's junk lanes (up to 16 pixels) read on.
  if (cg % 4 == 0) {
    l.quad_bytes = detail::kQconvQuadFront + l.phases * cg * l.plane + 16 * 4 + 64;
    l.pair_bytes = detail::kQconvQuadFront + l.phases * cg * 2 * l.plane + 16 * 4 + 64;
  }
}

// memcpy for a row of n bytes, inline: rows are short (28 bytes in a small
// net's first layers) and the call dominated. Overlapping fixed-size moves;
// reads stay inside [in, in + n).
inline void copy_row(const uint8_t* in, int64_t n, uint8_t* out) {
  if (n >= 16) {
    for (int64_t i = 0; i + 16 < n; i += 16) std::memcpy(out + i, in + i, 16);
    std::memcpy(out + n - 16, in + n - 16, 16);
  } else if (n >= 8) {
    std::memcpy(out, in, 8);
    std::memcpy(out + n - 8, in + n - 8, 8);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = in[i];
  }
}

// out[i] = in[2 i] for i < n (a stride-2 phase row), reading no further
// than in[2 (n - 1)]: 16 at a time with SSE2 where 32 bytes are inside.
void copy_every_second(const uint8_t* in, int64_t n, uint8_t* out) {
  int64_t i = 0;
#if defined(__SSE2__)
  const __m128i low = _mm_set1_epi16(0x00ff);
  for (; i + 17 <= n; i += 16) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i + 16));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm_packus_epi16(_mm_and_si128(a, low), _mm_and_si128(b, low)));
  }
#endif
  for (; i < n; ++i) out[i] = in[2 * i];
}

// The phase images of `channels` input planes (8-bit codes), pads = zero
// point; phases no tap reads stay all zero point.
void fill_phases(const QconvGeometry& g, const Layout& l, const uint8_t* x, int64_t channels, uint8_t pad,
                 uint8_t* dst) {
  std::memset(dst, pad, static_cast<size_t>(l.bytes));
  for (int64_t ph = 0; ph < g.stride_h; ++ph)
    for (int64_t pw = 0; pw < g.stride_w; ++pw) {
      if (!l.read_phase[static_cast<size_t>(ph * g.stride_w + pw)]) continue;
      // Phase columns col hold padded columns col*sw + pw = input columns
      // col*sw + pw - pad_left: those in [col_begin, col_end) are inside.
      // Bounds and strides in locals: the byte stores may alias `g`.
      const int64_t sw = g.stride_w, in_w = g.in_w, in_h = g.in_h, wph = l.wph;
      const int64_t col_begin = std::max<int64_t>(0, (g.pad_left - pw + sw - 1) / sw);
      const int64_t col_end = std::clamp<int64_t>((in_w + g.pad_left - pw + sw - 1) / sw, col_begin, wph);
      const int64_t first = col_begin * sw + pw - g.pad_left, n = col_end - col_begin;
      for (int64_t c = 0; c < channels; ++c) {
        uint8_t* plane = dst + kSlack + ((ph * g.stride_w + pw) * channels + c) * l.plane;
        const uint8_t* src = x + c * in_h * in_w;
        for (int64_t r = 0; r < l.hph; ++r) {
          const int64_t ir = r * g.stride_h + ph - g.pad_top;
          if (ir < 0 || ir >= in_h) continue;
          const uint8_t* in_row = src + ir * in_w + first;
          uint8_t* out_row = plane + r * wph + col_begin;
          if (sw == 1) copy_row(in_row, n, out_row);
          else if (sw == 2) copy_every_second(in_row, n, out_row);
          else
            for (int64_t i = 0; i < n; ++i) out_row[i] = in_row[i * sw];
        }
      }
    }
}

}  // namespace

namespace detail {

void qconv_make_layout(const QconvGeometry& g, bool tap_major, QconvLayout& l) {
  if (l.made && l.made_for == g && l.tap_major == tap_major) return;
  l.made = false;  // (fill_layout may throw on allocation)
  fill_layout(g, tap_major, l);
  l.made_for = g;
  l.tap_major = tap_major;
  l.made = true;
}

const uint8_t* qconv_image(const QconvGeometry& g, const QconvLayout& l, const uint8_t* x, int64_t b, int64_t gi,
                           bool x_signed, int32_t x_zero_point, QconvImage kind, AlignedBuffer<uint8_t>& phases,
                           AlignedBuffer<uint8_t>& interleaved, QconvImageRows rows) {
  const int64_t cg = g.in_c / g.group;
  const uint8_t* image = x + (b * g.in_c + gi * cg) * g.in_h * g.in_w;
  const auto pad = static_cast<uint8_t>(x_zero_point);  // the code's byte (int8 or uint8)
  const uint8_t flip = x_signed ? 0x80 : 0;               // int8 codes -> the quads' u8 ones
  const bool quads = kind == QconvImage::kQuads;
  if (kind != QconvImage::kPhases && g.stride_h == 1 && g.stride_w == 1) {
    uint8_t* out = interleaved.get(quads ? l.quad_bytes : l.pair_bytes);
    if (quads) qconv_fill_quad_image_s1_avx2(g, l, image, flip, static_cast<uint8_t>(pad ^ flip), out, rows);
    else qconv_fill_pair_image_s1_avx2(g, l, image, x_signed, x_zero_point, out, rows);
    return out;
  }
  if (l.direct) return image;
  uint8_t* copy = phases.get(l.bytes);
  fill_phases(g, l, image, cg, pad, copy);
  if (kind == QconvImage::kPhases) return copy;
  uint8_t* out = interleaved.get(quads ? l.quad_bytes : l.pair_bytes);
  if (quads) qconv_interleave_quads_avx2(copy + l.first_plane, l.phases * cg / 4, l.plane, flip, out);
  else qconv_fill_pair_image_avx2(copy + l.first_plane, l.phases * cg / 2, l.plane, x_signed, x_zero_point, out);
  return out;
}

void qconv_clear_image_rows(const QconvGeometry& g, const QconvLayout& l, int64_t planes, QconvImageRows rows,
                            uint8_t pad, int64_t bytes, uint8_t* dst, int64_t& r_begin, int64_t& r_end) {
  const int64_t row_begin = std::max<int64_t>(rows.begin, 0), row_end = std::min(rows.end, l.hph);
  if (row_begin == 0 && row_end == l.hph) {
    std::memset(dst, pad, static_cast<size_t>(bytes));
  } else {
    const int64_t row_bytes = l.wph * 4;
    for (int64_t p = 0; p < planes && row_end > row_begin; ++p)
      std::memset(dst + kQconvQuadFront + (p * l.hph + row_begin) * row_bytes, pad,
                  static_cast<size_t>((row_end - row_begin) * row_bytes));
  }
  r_begin = std::max<int64_t>(row_begin - g.pad_top, 0);
  r_end = std::max(r_begin, std::min<int64_t>(row_end - g.pad_top, g.in_h));
}

QconvImageRows qconv_share_rows(const QconvGeometry& g, const QconvLayout& l, int64_t p_begin, int64_t p_end) {
  const int64_t pixels = g.out_h * g.out_w, panels = (pixels + kQgemmNR - 1) / kQgemmNR;
  if (g.stride_h != 1 || g.stride_w != 1 || (p_begin <= 0 && p_end >= panels)) return {};
  if (p_end <= p_begin) return {0, 0};
  const int64_t oh0 = p_begin * kQgemmNR / g.out_w, oh1 = (std::min(p_end * kQgemmNR, pixels) - 1) / g.out_w;
  return {oh0, std::min(l.hph, oh1 + (g.kernel_h - 1) * g.dilation_h + 1)};
}

void qconv_set_panel_lanes(const QconvGeometry& g, const QconvLayout& l, int64_t p, QconvPanelSource& src) {
  const int64_t pixels = g.out_h * g.out_w;
  const int64_t p0 = p * kQgemmNR;
  src.lanes = static_cast<int>(std::min<int64_t>(kQgemmNR, pixels - p0));
  // Pixel (oh, ow) reads at oh * row_pitch + ow (no divisions per lane).
  const int64_t row_pitch = l.direct ? g.out_w : l.wph;
  int64_t oh = p0 / g.out_w, ow = p0 % g.out_w;
  for (int j = 0; j < kQgemmNR; ++j) {
    src.lane_offset[j] = j == 0 || j < src.lanes ? oh * row_pitch + ow
                                                 : src.lane_offset[j - 1] + 1;  // junk lanes extend the last run
    if (++ow == g.out_w) {
      ow = 0;
      ++oh;
    }
  }
  src.runs = 1;
  src.run_start[0] = 0;
  for (int j = 1; j < kQgemmNR; ++j)
    if (src.lane_offset[j] != src.lane_offset[j - 1] + 1) src.run_start[src.runs++] = j;
  src.run_start[src.runs] = kQgemmNR;
  // The input itself has no slack: its last partial panel is read lane by lane.
  src.contiguous_reads = !l.direct || src.lanes == kQgemmNR;
}

namespace {
qew::AddParams add_params(const QgemmResidualAdd& r, bool is_signed) {
  qew::AddParams p;
  p.a_zp = r.a_zp, p.b_zp = r.b_zp, p.c_zp = r.c_zp, p.ma = r.ma, p.mb = r.mb, p.n = r.n;
  p.is_signed = is_signed;
  return p;
}
void add_codes(const void* a, const void* b, int64_t n, const qew::AddParams& p, void* c) {
  if (qew::avx2_supported()) qew::qadd_avx2(a, 1, b, 1, n, p, c);
  else qew::qadd_scalar(a, 1, b, 1, n, p, c);
}
}  // namespace

void qconv_add_residual(const QconvGeometry& g, const QgemmOutput& out) {
  const int64_t n = g.batch * g.out_c * g.out_h * g.out_w;  // the output is dense (ldo = OH·OW)
  add_codes(out.out, out.residual->codes, n, add_params(*out.residual, out.codes_signed), out.out);
}

int64_t qconv_acc_bound(const QgemmOutput& out, int64_t k_padded, int64_t rows) {
  if (out.bias && out.bias_cs != 0) return INT64_MAX;  // a bias per column: not a conv's
  int64_t bias = 0;
  for (int64_t i = 0; out.bias && i < rows; ++i)
    bias = std::max(bias, std::abs(static_cast<int64_t>(out.bias[i * out.bias_rs])));
  return k_padded * 255 * 255 + bias;
}

void qconv_keep_residual(const QgemmResidualAdd& r, int64_t ldo, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                         uint8_t* kept) {
  const auto* residual = static_cast<const uint8_t*>(r.codes);
  if (n0 == 0 && n1 == ldo) {  // whole rows: one block of memory
    std::memcpy(kept, residual + m0 * ldo, static_cast<size_t>((m1 - m0) * ldo));
    return;
  }
  for (int64_t m = m0; m < m1; ++m) std::memcpy(kept + (m - m0) * (n1 - n0), residual + m * ldo + n0, n1 - n0);
}

void qconv_join_residual(const QgemmOutput& out, const QgemmResidualAdd& r, int64_t m0, int64_t m1, int64_t n0,
                         int64_t n1, const uint8_t* kept) {
  const qew::AddParams p = add_params(r, out.codes_signed);
  auto* y = static_cast<uint8_t*>(out.out);
  if (n0 == 0 && n1 == out.ldo) {  // whole rows: one call, not one per (short) row
    add_codes(y + m0 * out.ldo, kept, (m1 - m0) * out.ldo, p, y + m0 * out.ldo);
    return;
  }
  for (int64_t m = m0; m < m1; ++m) {
    uint8_t* row = y + m * out.ldo + n0;
    add_codes(row, kept + (m - m0) * (n1 - n0), n1 - n0, p, row);
  }
}

}  // namespace detail

bool qconv_fuses_residual(const QconvWeights& w, const QgemmOutput& out, QgemmPath path) {
  const QgemmResidualAdd* r = out.residual;
  constexpr int64_t kMaxMult = int64_t{1} << 31;
  if (r == nullptr || out.kind != QgemmOutputKind::kCodes) return false;
  // The VNNI output stage adds in 32-bit lanes; the int16 tiers join each tile with qadd.
  if (qgemm_resolve_path(path) != QgemmPath::kAvx512Vnni || w.quad_groups.empty()) return true;
  return r->ma >= 0 && r->ma < kMaxMult && r->mb >= 0 && r->mb < kMaxMult;
}

void qconv(const QconvGeometry& g, const void* x, bool x_signed, int32_t x_zero_point, const QconvWeights& w,
           const QgemmOutput& out, ThreadPool* pool, QgemmPath path) {
  detail::check_requant_layout(out);
  const int64_t pixels = g.out_h * g.out_w, panels = (pixels + kQgemmNR - 1) / kQgemmNR;
  const int64_t units = g.batch * g.group * panels;
  if (units == 0 || g.out_c == 0) return;
  const QgemmPath resolved = qgemm_resolve_path(path);
  const bool vnni = resolved == QgemmPath::kAvx512Vnni && !w.quad_groups.empty();
  if (const QgemmResidualAdd* r = out.residual) {
    if (!qconv_fuses_residual(w, out, path)) {
      QgemmOutput plain = out, joined = out;
      plain.residual = nullptr;
      // The output may be the residual's own storage (written over it):
      // keep the residual's codes before the conv overwrites them.
      AlignedBuffer<uint8_t> kept;
      QgemmResidualAdd kept_residual = *r;
      if (r->codes == out.out) {
        const size_t n = static_cast<size_t>(g.batch * g.out_c * g.out_h * g.out_w);
        kept_residual.codes = std::memcpy(kept.get(static_cast<int64_t>(n)), r->codes, n);
        joined.residual = &kept_residual;
      }
      qconv(g, x, x_signed, x_zero_point, w, plain, pool, path);
      detail::qconv_add_residual(g, joined);
      return;
    }
  }
  if (vnni) return detail::qconv_vnni(g, x, x_signed, x_zero_point, w, out, pool);
  if (resolved == QgemmPath::kAvx2 && w.narrow(0).quads)
    return detail::qconv_u8s8(g, x, x_signed, x_zero_point, w, out, pool);
  const detail::QgemmUkernel ukernel = detail::qgemm_ukernel(resolved);
  const bool few_lanes = resolved == QgemmPath::kAvx2;  // an image's last few pixels: qgemm_ukernel_few_avx2
  // Where acc + bias cannot leave int32 its saturating add is a plain one.
  QgemmOutput out_bounded = out;
  const int64_t acc_bound = detail::qconv_acc_bound(out, qgemm_kpairs(w.k) * 2, g.out_c);
  if (acc_bound <= INT32_MAX) out_bounded.bias_saturates = false;
  out_bounded.small_acc = acc_bound < (int64_t{1} << 30);
  const detail::QgemmEpilogue epilogue = detail::qgemm_epilogue(resolved, out_bounded);
  const detail::QconvPackPanel pack_panel =
      resolved == QgemmPath::kScalar ? detail::qconv_pack_panel_scalar : detail::qconv_pack_panel_avx2;
  // Pair tiles in (tap, c) order on AVX2 read the pair image: panels are copies.
  const bool pair_image = resolved == QgemmPath::kAvx2 && w.tap_major() && !w.narrow(0).quads;
  // Weights in (tap, c) order that read k rows (the scalar tier, or expanded
  // u8 x s8 quads): the rows in that order too.
  thread_local Layout reused;  // (a reference below: the workers read this thread's)
  detail::qconv_make_layout(g, w.tap_major() && !pair_image, reused);
  const Layout& layout = reused;
  const int64_t ocg = g.out_c / g.group, kpairs = qgemm_kpairs(w.k);
  const int64_t panel_bytes = kpairs * 4 * kQgemmNR;  // int16 pairs
  const int64_t block_panels = std::clamp<int64_t>(kPanelBlockBytes / std::max<int64_t>(panel_bytes, 1), 1, 64);
  const detail::QgemmExpandA expand = detail::qgemm_expand_a(resolved);
  const int64_t tile_words = kpairs * kQgemmMR, tiles = (ocg + kQgemmMR - 1) / kQgemmMR;
  const int64_t chunk_tiles =
      tiles * tile_words * 4 <= kHeldGroupBytes
          ? std::max<int64_t>(tiles, 1)
          : std::clamp<int64_t>(kExpandedChunkBytes / std::max<int64_t>(tile_words * 4, 1), 1, tiles);
  const size_t out_esize = out.kind == QgemmOutputKind::kCodes ? 1 : 4;
  const uint8_t* xb = static_cast<const uint8_t*>(x);

  auto work = [&](int64_t begin, int64_t end) {
    thread_local AlignedBuffer<uint8_t> image_buffer, pair_buffer;
    thread_local AlignedBuffer<uint8_t> panel_buffer;
    thread_local AlignedBuffer<int32_t> tile_buffer;
    thread_local AlignedBuffer<uint8_t> residual_buffer;
    alignas(64) int32_t acc[kQgemmMR * kQgemmNR] = {};  // (a few-pixel panel writes only its lanes)
    uint8_t* panel_mem = panel_buffer.get(block_panels * panel_bytes);
    // Which group's weights the buffer holds whole, expanded (id 0: none).
    thread_local uint64_t held_id = 0;
    thread_local int64_t held_group = -1;
    thread_local const int32_t* held_at = nullptr;
    int32_t* expanded = tile_buffer.get(chunk_tiles * tile_words + kQgemmExpandSlack / 2);
    if (expanded != held_at) held_id = 0;  // a new buffer: nothing in it
    int64_t current = -1;
    detail::QconvPanelSource src;
    src.is_signed = x_signed;
    src.zero_point = x_zero_point;
    src.tap_offset = layout.tap_offset.data();
    src.k = w.k;
    for (int64_t u = begin; u < end;) {
      const int64_t bg = u / panels, p_first = u % panels;
      const int64_t p_end = std::min({panels, p_first + block_panels, p_first + (end - u)});
      const int64_t b = bg / g.group, gi = bg % g.group;
      if (bg != current) {
        src.src = detail::qconv_image(g, layout, xb, b, gi, x_signed, x_zero_point,
                                      pair_image ? detail::QconvImage::kPairs : detail::QconvImage::kPhases,
                                      image_buffer, pair_buffer,
                                      detail::qconv_share_rows(g, layout, p_first, std::min(panels, p_first + (end - u))));
        current = bg;
      }
      for (int64_t p = p_first; p < p_end; ++p) {
        detail::qconv_set_panel_lanes(g, layout, p, src);
        uint8_t* panel = panel_mem + (p - p_first) * panel_bytes;
        if (pair_image)
          detail::qconv_pack_panel_copy_avx2(static_cast<const uint8_t*>(src.src), layout.pair_offset.data(), kpairs,
                                             src, panel);
        else
          pack_panel(src, reinterpret_cast<int16_t*>(panel));
      }
      QgemmOutput ob = out_bounded;
      ob.out = static_cast<uint8_t*>(out.out) + static_cast<size_t>(b * g.out_c * pixels) * out_esize;
      ob.residual = nullptr;
      QgemmResidualAdd rb;  // this image's residual (codes: out_esize is 1)
      if (out.residual) {
        rb = *out.residual;
        rb.codes = static_cast<const uint8_t*>(rb.codes) + b * g.out_c * pixels;
      }
      const int64_t n0 = p_first * kQgemmNR, n1 = std::min(p_end * kQgemmNR, pixels);
      uint8_t* kept = out.residual ? residual_buffer.get(ocg * (n1 - n0)) : nullptr;
      if (kept) detail::qconv_keep_residual(rb, pixels, gi * ocg, (gi + 1) * ocg, n0, n1, kept);
      // The weights' 8-bit tiles, a chunk at a time widened to int16 pairs;
      // each panel stays in L1 while the chunk's tiles pass over it.
      const QgemmNarrowA& wg = w.narrow(gi);
      for (int64_t c0 = 0; c0 < wg.tiles; c0 += chunk_tiles) {
        const int64_t c1 = std::min(wg.tiles, c0 + chunk_tiles);
        if (c0 == 0 && c1 == wg.tiles) {  // the whole group
          if (held_id != w.narrow_->id || held_group != gi) {
            expand(wg, c0, c1, expanded);
            held_id = w.narrow_->id, held_group = gi, held_at = expanded;
          }
        } else {
          expand(wg, c0, c1, expanded);
          held_id = 0;
        }
        for (int64_t p = p_first; p < p_end; ++p) {
          const int nr = static_cast<int>(std::min<int64_t>(kQgemmNR, pixels - p * kQgemmNR));
          const uint8_t* panel = panel_mem + (p - p_first) * panel_bytes;
          for (int64_t t = c0; t < c1; ++t) {
            const int rows = static_cast<int>(std::min<int64_t>(kQgemmMR, ocg - t * kQgemmMR));
            if (few_lanes && nr <= detail::kQgemmFewLanes)
              detail::qgemm_ukernel_few_avx2(rows, nr, kpairs, expanded + (t - c0) * tile_words,
                                             reinterpret_cast<const int16_t*>(panel), acc);
            else
              ukernel(rows, kpairs, expanded + (t - c0) * tile_words, reinterpret_cast<const int16_t*>(panel), acc);
            epilogue(acc, rows, nr, gi * ocg + t * kQgemmMR, p * kQgemmNR, ob);
          }
        }
      }
      if (kept) detail::qconv_join_residual(ob, rb, gi * ocg, (gi + 1) * ocg, n0, n1, kept);
      u += p_end - p_first;
    }
  };
  const int64_t macs = g.batch * g.out_c * w.k * pixels;
  if (pool == nullptr || !detail::qconv_split_over_threads(pool->size(), g.batch, macs, /*int16_tier=*/true)) {
    work(0, units);
    return;
  }
  pool->parallel_for(units, work);
}

}  // namespace qtk::rt::x86
