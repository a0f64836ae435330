// AVX-512 VNNI kernels (qgemm_vnni.h): the 16-row x 16-column vpdpbusd
// micro-kernel, activation tiles, and convolution panels in the quad layout.
// Per-function target attributes keep the library baseline x86-64; these run
// only when qgemm_avx512_vnni_supported().
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "runtime/kernels/x86/qgemm_vnni.h"

#if defined(__x86_64__) || defined(__i386__)
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the unused
// merge operand, which -Wmaybe-uninitialized reports (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define QTK_QGEMM_VNNI_X86 1
#endif

namespace qtk::rt::x86::detail {

void qgemm_vnni_pack_a_tile(const QgemmCodes& a, int64_t m0, int rows, int64_t k, uint32_t* tile,
                            int32_t* row_sum) {
  const int64_t kquads = qgemm_kquads(k), full = k / 4;
  const uint32_t flip = a.is_signed ? 0x80808080u : 0u;  // s8 -> u8: + 128
  for (int i = 0; i < kQgemmVnniMR; ++i) {
    uint32_t* dst = tile + i;
    if (i >= rows) {
      for (int64_t q = 0; q < kquads; ++q) dst[q * kQgemmVnniMR] = 0;
      if (row_sum) row_sum[i] = 0;
      continue;
    }
    const uint8_t* row = static_cast<const uint8_t*>(a.data) + (m0 + i) * a.stride_i;
    auto byte_at = [&](int64_t kk) { return static_cast<uint32_t>(row[kk * a.stride_j] ^ (flip & 0xff)); };
    if (a.stride_j == 1) {
      for (int64_t q = 0; q < full; ++q) {
        uint32_t w;
        std::memcpy(&w, row + 4 * q, 4);
        dst[q * kQgemmVnniMR] = w ^ flip;
      }
    } else {
      for (int64_t q = 0; q < full; ++q)
        dst[q * kQgemmVnniMR] =
            byte_at(4 * q) | byte_at(4 * q + 1) << 8 | byte_at(4 * q + 2) << 16 | byte_at(4 * q + 3) << 24;
    }
    if (full < kquads) {  // the last k: zero bytes after them
      uint32_t w = 0;
      for (int64_t kk = 4 * full; kk < k; ++kk) w |= byte_at(kk) << (8 * (kk - 4 * full));
      dst[full * kQgemmVnniMR] = w;
    }
    if (row_sum) {
      int32_t sum = 0;
      for (int64_t kk = 0; kk < k; ++kk) sum += static_cast<int32_t>(byte_at(kk));
      row_sum[i] = sum;
    }
  }
}

#ifdef QTK_QGEMM_VNNI_X86

namespace {

#define QTK_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

// Where the micro-kernel reads quad q of B: a packed panel (64 aligned bytes
// per quad), or 16 pixels of a conv's quad image straight from the image.
struct PanelB {
  const uint8_t* b;
  QTK_VNNI __m512i load(int64_t q) const { return _mm512_load_si512(b + q * 4 * kQgemmNR); }
};
struct TapB {
  const uint8_t* base;
  const int64_t* tap;
  QTK_VNNI __m512i load(int64_t q) const { return _mm512_loadu_si512(base + tap[q]); }
};

template <int ROWS, bool kSignedWords, class Src>
QTK_VNNI void vnni_rows(int64_t kquads, const uint32_t* a, Src b, const VnniFix& fix, int32_t* acc) {
  __m512i c[ROWS];
#pragma GCC unroll 16
  for (int i = 0; i < ROWS; ++i) c[i] = _mm512_setzero_si512();
#pragma GCC unroll 2
  for (int64_t q = 0; q < kquads; ++q) {
    const __m512i bv = b.load(q);
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; ++i) {
      const __m512i av = _mm512_set1_epi32(static_cast<int32_t>(a[i]));
      // vpdpbusd: unsigned bytes of the first operand times signed bytes of the second.
      c[i] = kSignedWords ? _mm512_dpbusd_epi32(c[i], bv, av) : _mm512_dpbusd_epi32(c[i], av, bv);
    }
    a += kQgemmVnniMR;
  }
  const __m512i col_const = fix.col_const ? _mm512_loadu_si512(fix.col_const) : _mm512_setzero_si512();
  const bool scaled = fix.row_scale && fix.col_vec;
  const __m512i col_vec = scaled ? _mm512_loadu_si512(fix.col_vec) : _mm512_setzero_si512();
  const __mmask16 keep = static_cast<__mmask16>(fix.keep_lanes);
#pragma GCC unroll 16
  for (int i = 0; i < ROWS; ++i) {
    __m512i v = _mm512_add_epi32(c[i], col_const);
    if (fix.row_const) v = _mm512_add_epi32(v, _mm512_set1_epi32(fix.row_const[i]));
    if (scaled) v = _mm512_sub_epi32(v, _mm512_mullo_epi32(_mm512_set1_epi32(fix.row_scale[i]), col_vec));
    if (keep != 0xFFFF) v = _mm512_maskz_compress_epi32(keep, v);
    _mm512_store_si512(acc + i * kQgemmNR, v);
  }
}

// The direct conv's run of PANELS 16-pixel panels side by side (panel j's
// quads 64·j bytes after the first's in the quad image) against rows <= 8 of
// A: each broadcast weight word feeds PANELS vpdpbusd, so the loads per
// vpdpbusd fall from 17/16 (one panel, 16 rows) to (PANELS + 8) / (8·PANELS).
// Only row_const and keep_lanes of the fixes apply (all the direct conv sets).
template <int ROWS, int PANELS>
QTK_VNNI void vnni_rows_panels(int64_t kquads, const uint32_t* a, TapB b, const VnniFix* fix, int32_t* const* acc) {
  __m512i c[PANELS][ROWS];
#pragma GCC unroll 8
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < PANELS; ++j) c[j][i] = _mm512_setzero_si512();
#pragma GCC unroll 2
  for (int64_t q = 0; q < kquads; ++q) {
    __m512i bv[PANELS];
#pragma GCC unroll 4
    for (int j = 0; j < PANELS; ++j) bv[j] = _mm512_loadu_si512(b.base + b.tap[q] + 4 * kQgemmNR * j);
#pragma GCC unroll 8
    for (int i = 0; i < ROWS; ++i) {
      const __m512i av = _mm512_set1_epi32(static_cast<int32_t>(a[i]));
#pragma GCC unroll 4
      for (int j = 0; j < PANELS; ++j) c[j][i] = _mm512_dpbusd_epi32(c[j][i], bv[j], av);
    }
    a += kQgemmVnniMR;
  }
#pragma GCC unroll 8
  for (int i = 0; i < ROWS; ++i) {
    const __m512i rc = fix[0].row_const ? _mm512_set1_epi32(fix[0].row_const[i]) : _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int j = 0; j < PANELS; ++j) {
      __m512i v = _mm512_add_epi32(c[j][i], rc);
      const __mmask16 keep = static_cast<__mmask16>(fix[j].keep_lanes);
      if (keep != 0xFFFF) v = _mm512_maskz_compress_epi32(keep, v);
      _mm512_store_si512(acc[j] + i * kQgemmNR, v);
    }
  }
}

template <int PANELS>
QTK_VNNI void vnni_panels_dispatch(int rows, int64_t kquads, const uint32_t* a, TapB b, const VnniFix* fix,
                                   int32_t* const* acc) {
  switch (rows) {
#define QTK_VNNI_PANELS(n) \
  case n: return vnni_rows_panels<n, PANELS>(kquads, a, b, fix, acc);
    QTK_VNNI_PANELS(1) QTK_VNNI_PANELS(2) QTK_VNNI_PANELS(3) QTK_VNNI_PANELS(4) QTK_VNNI_PANELS(5)
    QTK_VNNI_PANELS(6) QTK_VNNI_PANELS(7)
#undef QTK_VNNI_PANELS
    default: return vnni_rows_panels<8, PANELS>(kquads, a, b, fix, acc);
  }
}

template <bool kSignedWords, class Src>
QTK_VNNI void vnni_dispatch(int rows, int64_t kquads, const uint32_t* a, Src b, const VnniFix& fix, int32_t* acc) {
  static_assert(kQgemmVnniMR == 16, "one instance per row count");
  switch (rows) {
#define QTK_VNNI_ROWS(n) \
  case n: return vnni_rows<n, kSignedWords, Src>(kquads, a, b, fix, acc);
    QTK_VNNI_ROWS(1) QTK_VNNI_ROWS(2) QTK_VNNI_ROWS(3) QTK_VNNI_ROWS(4) QTK_VNNI_ROWS(5) QTK_VNNI_ROWS(6)
    QTK_VNNI_ROWS(7) QTK_VNNI_ROWS(8) QTK_VNNI_ROWS(9) QTK_VNNI_ROWS(10) QTK_VNNI_ROWS(11) QTK_VNNI_ROWS(12)
    QTK_VNNI_ROWS(13) QTK_VNNI_ROWS(14) QTK_VNNI_ROWS(15)
#undef QTK_VNNI_ROWS
    default: return vnni_rows<16, kSignedWords, Src>(kquads, a, b, fix, acc);
  }
}

QTK_VNNI void pack_panel_quads(const QconvQuadPanel& s, uint8_t* panel, int32_t* col_sum) {
  __mmask16 masks[kQgemmNR];
  const __mmask16 valid = static_cast<__mmask16>((1u << s.lanes) - 1);
  for (int r = 0; r < s.runs; ++r)
    masks[r] = static_cast<__mmask16>(((1u << s.run_start[r + 1]) - (1u << s.run_start[r])) & valid);
  __m512i sum = _mm512_setzero_si512();
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t q = 0; q < s.kquads; ++q) {
    const uint8_t* base = s.src + s.tap[q];
    __m512i v = _mm512_setzero_si512();
    for (int r = 0; r < s.runs; ++r) {
      // Lane j of run r reads base + lane_offset[start] + 4 (j - start); the
      // masked load touches only the run's lanes (front slack keeps the
      // pointer itself inside the buffer).
      const int start = s.run_start[r];
      v = _mm512_mask_loadu_epi32(v, masks[r], base + s.lane_offset[start] - 4 * start);
    }
    _mm512_store_si512(panel + q * 4 * kQgemmNR, v);
    if (col_sum) sum = _mm512_dpbusd_epi32(sum, v, ones);
  }
  if (col_sum) _mm512_storeu_si512(col_sum, sum);
}

// Four channel rows of 16 pixels as the zmm's blocks -> 16 pixels of 4
// bytes (interleave4's transpose).
QTK_VNNI inline __m512i quads_by_pixel(__m512i v) {
  const __m512i by_quad = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m512i by_pixel = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
  return _mm512_shuffle_epi8(_mm512_permutexvar_epi32(by_quad, v), by_pixel);
}

// The 16-pixel chunk at column ic of four channel rows (the bytes of mask m
// read, the rest zero), transposed to 16 pixels of 4 bytes.
QTK_VNNI inline __m512i chunk_by_pixel(const uint8_t* const* row, int64_t ic, __mmask16 m) {
  __m512i v = _mm512_castsi128_si512(_mm_maskz_loadu_epi8(m, row[0] + ic));
  v = _mm512_inserti32x4(v, _mm_maskz_loadu_epi8(m, row[1] + ic), 1);
  v = _mm512_inserti32x4(v, _mm_maskz_loadu_epi8(m, row[2] + ic), 2);
  return quads_by_pixel(_mm512_inserti32x4(v, _mm_maskz_loadu_epi8(m, row[3] + ic), 3));
}

// n (<= 16) pixels of 4 channel rows -> 4n bytes, 4 per pixel, each byte
// xor `flip`: the rows as the zmm's four 128-bit blocks, a dword transpose
// (block j: pixels 4j..4j+3 of every channel), then bytes regrouped by pixel
// inside each block; one store.
QTK_VNNI inline void interleave4(__m128i r0, __m128i r1, __m128i r2, __m128i r3, int64_t n, __m512i flip,
                                 uint8_t* dst) {
  const __m512i v = _mm512_inserti32x4(_mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(r0), r1, 1), r2, 2), r3, 3);
  const __m512i q = _mm512_xor_si512(quads_by_pixel(v), flip);
  if (n == 16) _mm512_storeu_si512(dst, q);
  else _mm512_mask_storeu_epi8(dst, (__mmask64{1} << (4 * n)) - 1, q);
}

// Columns ic, ic + s, ..., ic + (n - 1)s of an input row (n <= 16, s = 1 or
// 2): masked loads read only the row's bytes.
QTK_VNNI inline __m128i load_columns(const uint8_t* row, int64_t ic, int64_t n, int64_t s, int64_t in_w) {
  if (s == 1) return _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << n) - 1), row + ic);
  const int64_t bytes = std::min<int64_t>(32, in_w - ic);
  const __mmask32 m = bytes >= 32 ? ~0u : static_cast<__mmask32>((1u << bytes) - 1);
  const __m256i v = _mm256_maskz_loadu_epi8(m, row + ic);
  // Even bytes of each 128-bit half to its low 8 bytes, then the halves joined.
  const __m256i even = _mm256_shuffle_epi8(
      v, _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1, 0, 2, 4, 6, 8, 10, 12, 14, -1,
                          -1, -1, -1, -1, -1, -1, -1));
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(even, 0x08));
}

// The phase indices [first, second), below `extent`, that hold input
// positions: index i holds position i * stride + phase - pad of [0, in).
inline std::pair<int64_t, int64_t> phase_span(int64_t pad, int64_t in, int64_t phase, int64_t stride,
                                              int64_t extent) {
  const int64_t last = in - 1 - phase + pad;  // the last position's offset, if any
  return {(pad - phase + stride - 1) / stride, last < 0 ? 0 : std::min(extent, last / stride + 1)};
}

// One phase plane of one channel quad (sw = SW <= 2): rows[t] + ir·rs[t] is
// channel t's input row ir (rs 0: an absent channel reading a row of zp);
// phase rows `rspan` and columns `cspan` hold input. Specialized on the
// stride so the per-chunk work is the loads, the transpose and one store.
template <int SW>
QTK_VNNI void fill_quad_plane(const QconvGeometry& g, const QconvQuadImage& l, const uint8_t* const* rows,
                              const int64_t* rs, int64_t ph, int64_t pw, std::pair<int64_t, int64_t> rspan,
                              std::pair<int64_t, int64_t> cspan, __m512i vflip, uint8_t* out) {
  const auto [col_begin, col_end] = cspan;
  if (rspan.first >= rspan.second || col_begin >= col_end) return;
  // The row pointers step by stride_h rows (no multiplications per row).
  const int64_t ir0 = rspan.first * g.stride_h + ph - g.pad_top;
  const uint8_t* row[4] = {rows[0] + ir0 * rs[0], rows[1] + ir0 * rs[1], rows[2] + ir0 * rs[2], rows[3] + ir0 * rs[3]};
  const int64_t step[4] = {g.stride_h * rs[0], g.stride_h * rs[1], g.stride_h * rs[2], g.stride_h * rs[3]};
  uint8_t* out_row = out + rspan.first * l.wph * 4;
  const int64_t ic0 = col_begin * SW + pw - g.pad_left;
  if (SW == 1 && col_end - col_begin <= 32) {
    // Rows of at most 32 pixels (small planes): one or two chunks each,
    // their masks fixed; the last chunk holds n pixels.
    const int64_t width = col_end - col_begin, n = width > 16 ? width - 16 : width;
    const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
    const __mmask64 store = n == 16 ? ~__mmask64{0} : (__mmask64{1} << (4 * n)) - 1;
    const int64_t last = width > 16 ? 16 : 0;  // the last chunk's first pixel
    uint8_t* dst = out_row + col_begin * 4;
    for (int64_t r = rspan.first; r < rspan.second; ++r) {
      if (last != 0) _mm512_storeu_si512(dst, _mm512_xor_si512(chunk_by_pixel(row, ic0, 0xFFFF), vflip));
      _mm512_mask_storeu_epi8(dst + last * 4, store, _mm512_xor_si512(chunk_by_pixel(row, ic0 + last, m), vflip));
      for (int t = 0; t < 4; ++t) row[t] += step[t];
      dst += l.wph * 4;
    }
    return;
  }
  for (int64_t r = rspan.first; r < rspan.second; ++r) {
    for (int64_t col = col_begin; col < col_end; col += 16) {
      const int64_t n = std::min<int64_t>(16, col_end - col), ic = col * SW + pw - g.pad_left;
      __m128i v[4];
      if (SW == 1 && ic + 16 <= g.in_w) {
        for (int t = 0; t < 4; ++t) v[t] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row[t] + ic));
      } else {
        for (int t = 0; t < 4; ++t) v[t] = load_columns(row[t], ic, n, SW, g.in_w);
      }
      interleave4(v[0], v[1], v[2], v[3], n, vflip, out_row + col * 4);
    }
    for (int t = 0; t < 4; ++t) row[t] += step[t];
    out_row += l.wph * 4;
  }
}

QTK_VNNI void fill_quad_image(const QconvGeometry& g, const QconvQuadImage& l, const uint8_t* x, int64_t channels,
                              bool x_signed, uint8_t zp, uint8_t* dst, bool clear) {
  // All of it, unread phases too: with stride_w 1 a window past a plane's
  // last row reads the next plane's first left pads.
  if (clear) std::memset(dst, zp, static_cast<size_t>(l.bytes));
  const uint8_t flip = x_signed ? 0x80 : 0;
  const __m512i vflip = _mm512_set1_epi8(static_cast<char>(flip));
  // Absent channels (the last quad's) read this row: zp after the flip.
  thread_local std::vector<uint8_t> zp_row;
  zp_row.assign(static_cast<size_t>(g.in_w + 64), static_cast<uint8_t>(zp ^ flip));
  const int64_t plane = l.hph * l.wph * 4, sw = g.stride_w, chw = g.in_h * g.in_w;
  for (int64_t ph = 0; ph < g.stride_h; ++ph)
    for (int64_t pw = 0; pw < sw; ++pw) {
      const int64_t phase = ph * sw + pw;
      if (phase < 64 && (l.unread_phases >> phase & 1) != 0) continue;
      const auto rspan = phase_span(g.pad_top, g.in_h, ph, g.stride_h, l.hph);
      const auto cspan = phase_span(g.pad_left, g.in_w, pw, sw, l.wph);
      for (int64_t cq = 0; cq < l.c4; ++cq) {
        uint8_t* out = dst + QconvQuadImage::front + ((ph * sw + pw) * l.c4 + cq) * plane;
        const uint8_t* rows[4];
        int64_t rs[4];
        for (int t = 0; t < 4; ++t) {
          const bool present = 4 * cq + t < channels;
          rows[t] = present ? x + (4 * cq + t) * chw : zp_row.data();
          rs[t] = present ? g.in_w : 0;
        }
        if (sw == 1) {
          fill_quad_plane<1>(g, l, rows, rs, ph, pw, rspan, cspan, vflip, out);
        } else if (sw == 2) {
          fill_quad_plane<2>(g, l, rows, rs, ph, pw, rspan, cspan, vflip, out);
        } else {  // wider strides: byte by byte
          for (int64_t r = rspan.first; r < rspan.second; ++r) {
            const int64_t ir = r * g.stride_h + ph - g.pad_top;
            for (int64_t col = cspan.first; col < cspan.second; ++col) {
              const int64_t ic = col * sw + pw - g.pad_left;
              for (int t = 0; t < 4; ++t)
                out[(r * l.wph + col) * 4 + t] = static_cast<uint8_t>(rows[t][ir * rs[t] + ic] ^ flip);
            }
          }
        }
      }
    }
}

QTK_VNNI void fill_tap_quad_image(const QconvGeometry& g, const QconvQuadImage& l, const uint8_t* x, bool x_signed,
                                  uint8_t zp, uint8_t* plane, uint8_t* dst) {
  const int64_t pixels = (l.bytes - QconvQuadImage::front) / 4;  // a multiple of 16
  std::memset(plane, zp, static_cast<size_t>(pixels + 64));
  std::memset(dst, zp, QconvQuadImage::front);
  const uint8_t flip = x_signed ? 0x80 : 0;
  for (int64_t r = 0; r < g.in_h; ++r) {
    const uint8_t* in = x + r * g.in_w;
    uint8_t* out = plane + (r + g.pad_top) * l.wph + g.pad_left;
    for (int64_t c = 0; c < g.in_w; ++c) out[c] = in[c] ^ flip;
  }
  // Pixel i = plane bytes i .. i + 3: four shifted rows interleaved.
  for (int64_t i = 0; i < pixels; i += 16) {
    const auto at = [&](int t) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(plane + i + t)); };
    interleave4(at(0), at(1), at(2), at(3), 16, _mm512_setzero_si512(), dst + QconvQuadImage::front + i * 4);
  }
}

// The output stage of qgemm_epilogue_avx2 on 16 lanes (same results).
struct Lanes8 {
  __m512i mult, add, shift, lo, hi, off;
};

// g0[0..3] in lanes 0-3, g1[0..3] in lanes 4-7 (g1 = g0 + 48: g1 - 4 is in the array).
QTK_VNNI inline __m512i join(const int64_t* g0, const int64_t* g1) {
  return _mm512_mask_loadu_epi64(_mm512_maskz_loadu_epi64(0x0F, g0), 0xF0, g1 - 4);
}

// Columns n0..n0+15 (groups n0/8 and n0/8 + 1); even: channels 0,2,..,14, odd: 1,3,..,15.
QTK_VNNI inline Lanes8 column_lanes(const QgemmRequant& r, int64_t n0, int odd) {
  const int64_t* g0 = &r.lanes[(n0 / 8) * 48 + 4 * odd];
  const int64_t* g1 = g0 + 48;
  return {join(g0, g1), join(g0 + 8, g1 + 8), join(g0 + 16, g1 + 16),
          join(g0 + 24, g1 + 24), join(g0 + 32, g1 + 32), join(g0 + 40, g1 + 40)};
}

// u = acc·m + 2^62 + 2^(n-1), shifted right (logical) by n: see qgemm_make_requant.
QTK_VNNI inline __m512i rescale(__m512i v, const Lanes8& p) {
  return _mm512_srlv_epi64(_mm512_add_epi64(_mm512_mul_epi32(v, p.mult), p.add), p.shift);
}

QTK_VNNI __m512i requant16(__m512i v, const Lanes8& even, const Lanes8& odd, const QgemmRequant& r, __m512i offset) {
  __m512i e = rescale(v, even), o = rescale(_mm512_srli_epi64(v, 32), odd);
  if (r.below_one) {  // fits int32: finish in 32-bit lanes
    __m512i c = _mm512_add_epi32(_mm512_mask_blend_epi32(0xAAAA, e, _mm512_slli_epi64(o, 32)), offset);
    c = _mm512_min_epi32(_mm512_max_epi32(c, _mm512_set1_epi32(r.qmin - r.zero_point)),
                         _mm512_set1_epi32(r.qmax - r.zero_point));
    return _mm512_add_epi32(c, _mm512_set1_epi32(r.zero_point));
  }
  e = _mm512_add_epi64(_mm512_min_epi64(_mm512_max_epi64(e, even.lo), even.hi), even.off);
  o = _mm512_add_epi64(_mm512_min_epi64(_mm512_max_epi64(o, odd.lo), odd.hi), odd.off);
  return _mm512_mask_blend_epi32(0xAAAA, e, _mm512_slli_epi64(o, 32));
}

// The epilogue's codes for one channel per row (convs): the row's constants
// broadcast, the branches hoisted out of the row loop.
// The fused residual join on 16 codes (QgemmResidualAdd; ma, mb < 2^31):
// the even and odd lanes' sums in 64 bits, clamped there, then joined.
struct ResidualLanes {
  __m512i a_zp, b_zp, ma, mb, half, lo, hi, c_zp;
  __m128i n;
  bool is_signed;
};

QTK_VNNI inline ResidualLanes residual_lanes(const QgemmResidualAdd& r, bool is_signed) {
  return {_mm512_set1_epi32(r.a_zp),         _mm512_set1_epi32(r.b_zp),
          _mm512_set1_epi64(r.ma),           _mm512_set1_epi64(r.mb),
          _mm512_set1_epi64(int64_t{1} << (r.n - 1)), _mm512_set1_epi64(r.qmin - r.c_zp),
          _mm512_set1_epi64(r.qmax - r.c_zp), _mm512_set1_epi32(r.c_zp),
          _mm_cvtsi32_si128(r.n),            is_signed};
}

// The even lanes' sums (x, y: da, db), 64-bit, shifted and clamped.
QTK_VNNI inline __m512i residual_half(__m512i x, __m512i y, const ResidualLanes& p) {
  const __m512i s = _mm512_add_epi64(_mm512_add_epi64(_mm512_mul_epi32(x, p.ma), _mm512_mul_epi32(y, p.mb)), p.half);
  return _mm512_min_epi64(_mm512_max_epi64(_mm512_sra_epi64(s, p.n), p.lo), p.hi);
}

QTK_VNNI inline __m512i add_residual16(__m512i c, __m128i bytes, const ResidualLanes& p) {
  const __m512i rv = p.is_signed ? _mm512_cvtepi8_epi32(bytes) : _mm512_cvtepu8_epi32(bytes);
  const __m512i da = _mm512_sub_epi32(c, p.a_zp), db = _mm512_sub_epi32(rv, p.b_zp);
  const __m512i e = residual_half(da, db, p);
  const __m512i o = residual_half(_mm512_srli_epi64(da, 32), _mm512_srli_epi64(db, 32), p);
  return _mm512_add_epi32(_mm512_mask_blend_epi32(0xAAAA, e, _mm512_slli_epi64(o, 32)), p.c_zp);
}

// The same join from 16-bit products: with ma = ha·2^16 + la (la the
// signed low half) and likewise mb, one vpmaddwd on the (c, r) int16 pairs
// gives c·ha + r·hb, another c·la + r·lb (each below 2^24), and with the
// constant q = 2^(n-1) - a_zp·ma - b_zp·mb + c_zp·2^n = qh·2^16 + ql
// (0 <= ql < 2^16) the code is, exactly (nested floors),
//   (c·ha + r·hb + qh + ((c·la + r·lb + ql) >> 16)) >> (n - 16)
// clamped: twelve lane operations where the 64-bit join takes about twenty.
// Needs ha, hb <= 32767 (ma, mb <= 0x7FFF7FFF), 8-bit zero points and
// 16 <= n <= 38: qh, whose c_zp·2^(n-16) term grows with n, then fits int32
// with the sums (below 1.1e9 at n = 38; a checker compared every code pair
// with add_to_code at extreme multipliers and zero points).
struct ResidualPairs {
  __m512i m_high, m_low, qh, ql, qmin, qmax;
  __m128i shift;
  bool is_signed;
};

inline bool residual_pairs_fit(const QgemmResidualAdd& r) {
  const auto code = [&](int32_t zp) { return zp >= r.qmin && zp <= r.qmax; };
  constexpr int64_t kMaxSplit = 0x7FFF7FFF;  // the largest m whose high half (m - signed low) >> 16 is an int16
  return r.n >= 16 && r.n <= 38 && r.ma >= 0 && r.mb >= 0 && r.ma <= kMaxSplit && r.mb <= kMaxSplit &&
         r.qmin >= -128 && r.qmax <= 255 && code(r.a_zp) && code(r.b_zp) && code(r.c_zp);
}

// (a, b) as the int16 halves of every 32-bit lane, a low.
QTK_VNNI inline __m512i int16_pair(int16_t a, int16_t b) {
  return _mm512_set1_epi32(
      static_cast<int32_t>(static_cast<uint16_t>(a) | static_cast<uint32_t>(static_cast<uint16_t>(b)) << 16));
}

QTK_VNNI inline ResidualPairs residual_pairs(const QgemmResidualAdd& r, bool is_signed) {
  const int16_t la = static_cast<int16_t>(r.ma & 0xFFFF), lb = static_cast<int16_t>(r.mb & 0xFFFF);
  const auto ha = static_cast<int16_t>((r.ma - la) >> 16), hb = static_cast<int16_t>((r.mb - lb) >> 16);
  const int64_t q = (int64_t{1} << (r.n - 1)) - r.a_zp * r.ma - r.b_zp * r.mb + r.c_zp * (int64_t{1} << r.n);
  return {int16_pair(ha, hb),
          int16_pair(la, lb),
          _mm512_set1_epi32(static_cast<int32_t>(q >> 16)),  // floor: C++20's >> on a negative q
          _mm512_set1_epi32(static_cast<int32_t>(q & 0xFFFF)),
          _mm512_set1_epi32(r.qmin),
          _mm512_set1_epi32(r.qmax),
          _mm_cvtsi32_si128(r.n - 16),
          is_signed};
}

QTK_VNNI inline __m512i add_residual16(__m512i c, __m128i bytes, const ResidualPairs& p) {
  const __m512i rv = p.is_signed ? _mm512_cvtepi8_epi32(bytes) : _mm512_cvtepu8_epi32(bytes);
  // (c & 0xFFFF) | r << 16: the pair (c, r) as two int16.
  const __m512i cr = _mm512_ternarylogic_epi32(c, _mm512_slli_epi32(rv, 16), _mm512_set1_epi32(0xFFFF), 0xEC);
  const __m512i low_sum = _mm512_srai_epi32(_mm512_add_epi32(_mm512_madd_epi16(cr, p.m_low), p.ql), 16);
  const __m512i t = _mm512_add_epi32(_mm512_add_epi32(_mm512_madd_epi16(cr, p.m_high), p.qh), low_sum);
  return _mm512_min_epi32(_mm512_max_epi32(_mm512_sra_epi32(t, p.shift), p.qmin), p.qmax);
}

// kRuns: the lanes go out in runs.count runs; else one run, lanes from 0.
template <bool kBelowOne, bool kBias, bool kResidual, bool kRuns, class Residual = ResidualLanes>
QTK_VNNI void epilogue_row_codes(const int32_t* acc, int mr, int64_t m0, int64_t n0, const QconvLaneRuns& runs,
                                 const QgemmOutput& out) {
  const int count = kRuns ? runs.count : 1;
  const QgemmRequant& r = *out.requant;
  const __m512i zp = _mm512_set1_epi32(r.zero_point), lo = _mm512_set1_epi32(r.qmin - r.zero_point),
                hi = _mm512_set1_epi32(r.qmax - r.zero_point);
  Residual res{};
  if constexpr (kResidual && std::is_same_v<Residual, ResidualPairs>)
    res = residual_pairs(*out.residual, out.codes_signed);
  else if constexpr (kResidual) res = residual_lanes(*out.residual, out.codes_signed);
  for (int i = 0; i < mr; ++i) {
    const uint64_t m = static_cast<uint64_t>(m0 + i);
    __m512i v = _mm512_load_si512(acc + i * kQgemmNR);
    if constexpr (kBias) {
      const int32_t* bp = out.bias + static_cast<int64_t>(m) * out.bias_rs + n0 * out.bias_cs;
      const __m512i b = out.bias_cs ? _mm512_loadu_si512(bp) : _mm512_set1_epi32(bp[0]);
      const __m512i s = _mm512_add_epi32(v, b);
      if (out.bias_saturates) {  // the int64 sum clamped to int32
        const __mmask16 overflow = _mm512_cmplt_epi32_mask(
            _mm512_and_si512(_mm512_xor_si512(v, s), _mm512_xor_si512(b, s)), _mm512_setzero_si512());
        v = _mm512_mask_blend_epi32(overflow, s, _mm512_xor_si512(_mm512_srai_epi32(v, 31), _mm512_set1_epi32(0x7fffffff)));
      } else {
        v = s;
      }
    }
    const QgemmRequantRow& k = r.rows[m];
    // The 32-bit multiplier in both halves of each 64-bit lane: the product reads the low one.
    const __m512i mult = _mm512_set1_epi32(k.mult), add = _mm512_set1_epi64(k.add), shift = _mm512_set1_epi64(k.shift);
    __m512i e = _mm512_srlv_epi64(_mm512_add_epi64(_mm512_mul_epi32(v, mult), add), shift);
    __m512i o = _mm512_srlv_epi64(_mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(v, 32), mult), add), shift);
    __m512i c;
    if constexpr (kBelowOne) {
      c = _mm512_add_epi32(_mm512_mask_blend_epi32(0xAAAA, e, _mm512_slli_epi64(o, 32)),
                           _mm512_set1_epi32(k.round_offset));
      c = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(c, lo), hi), zp);
    } else {
      const QgemmRequantRowClamp& cl = r.row_clamps[m];
      const __m512i l64 = _mm512_set1_epi64(cl.lo), h64 = _mm512_set1_epi64(cl.hi), off = _mm512_set1_epi64(cl.off);
      e = _mm512_add_epi64(_mm512_min_epi64(_mm512_max_epi64(e, l64), h64), off);
      o = _mm512_add_epi64(_mm512_min_epi64(_mm512_max_epi64(o, l64), h64), off);
      c = _mm512_mask_blend_epi32(0xAAAA, e, _mm512_slli_epi64(o, 32));
    }
    const int64_t row = static_cast<int64_t>(m) * out.ldo;
    // The residual was written a whole batch ago (L2/L3): fetch the line the
    // panel after next reads (with runs: the same image's), so the wait is
    // off the critical path.
    if constexpr (kResidual) {
      const uint8_t* rp = static_cast<const uint8_t*>(out.residual->codes) + row;
      _mm_prefetch(reinterpret_cast<const char*>(rp + runs.offset[0] + 2 * kQgemmNR), _MM_HINT_T0);
      __m128i bytes = _mm_maskz_loadu_epi8(runs.mask[0], rp + runs.offset[0]);
      for (int k = 1; k < count; ++k) bytes = _mm_mask_loadu_epi8(bytes, runs.mask[k], rp + runs.offset[k]);
      c = add_residual16(c, bytes, res);
    }
    const __m128i codes = _mm512_cvtepi32_epi8(c);
    uint8_t* op = static_cast<uint8_t*>(out.out) + row;
    for (int k = 0; k < count; ++k) _mm_mask_storeu_epi8(op + runs.offset[k], runs.mask[k], codes);
  }
}

template <bool kBelowOne, bool kBias, bool kRuns>
QTK_VNNI void epilogue_row_codes(const int32_t* acc, int mr, int64_t m0, int64_t n0, const QconvLaneRuns& runs,
                                 const QgemmOutput& out) {
  if (out.residual && residual_pairs_fit(*out.residual))
    epilogue_row_codes<kBelowOne, kBias, true, kRuns, ResidualPairs>(acc, mr, m0, n0, runs, out);
  else if (out.residual) epilogue_row_codes<kBelowOne, kBias, true, kRuns>(acc, mr, m0, n0, runs, out);
  else epilogue_row_codes<kBelowOne, kBias, false, kRuns>(acc, mr, m0, n0, runs, out);
}

template <bool kRuns>
QTK_VNNI void epilogue_codes_by_row(const int32_t* acc, int mr, int64_t m0, int64_t n0, const QconvLaneRuns& runs,
                                    const QgemmOutput& out) {
  const bool bias = out.bias != nullptr;
  if (out.requant->below_one) {
    bias ? epilogue_row_codes<true, true, kRuns>(acc, mr, m0, n0, runs, out)
         : epilogue_row_codes<true, false, kRuns>(acc, mr, m0, n0, runs, out);
  } else {
    bias ? epilogue_row_codes<false, true, kRuns>(acc, mr, m0, n0, runs, out)
         : epilogue_row_codes<false, false, kRuns>(acc, mr, m0, n0, runs, out);
  }
}

}  // namespace

QTK_VNNI void qconv_epilogue_runs_avx512(const int32_t* acc, int mr, int64_t m0, const QconvLaneRuns& runs,
                                         const QgemmOutput& out) {
  epilogue_codes_by_row<true>(acc, mr, m0, 0, runs, out);
}

QTK_VNNI void qgemm_epilogue_avx512(const int32_t* acc, int mr, int nr, int64_t m0, int64_t n0,
                                    const QgemmOutput& out) {
  const bool by_row = out.channel_is_row;
  if (out.kind == QgemmOutputKind::kCodes && by_row) {
    QconvLaneRuns runs;  // one run: lanes [0, nr) at n0
    runs.count = 1;
    runs.mask[0] = static_cast<uint16_t>((1u << nr) - 1);
    runs.offset[0] = n0;
    epilogue_codes_by_row<false>(acc, mr, m0, n0, runs, out);
    return;
  }
  const __mmask16 keep = static_cast<__mmask16>((1u << nr) - 1);
  const QgemmRequant* r = out.requant;
  Lanes8 col_even{}, col_odd{};
  __m512i col_offset = _mm512_setzero_si512();
  if (out.kind == QgemmOutputKind::kCodes && !by_row) {
    col_even = column_lanes(*r, n0, 0);
    col_odd = column_lanes(*r, n0, 1);
    col_offset = _mm512_loadu_si512(&r->round_offset[static_cast<size_t>(n0)]);
  }
  for (int i = 0; i < mr; ++i) {
    const int64_t m = m0 + i;
    __m512i v = _mm512_load_si512(acc + i * kQgemmNR);
    if (out.bias) {
      const int32_t* bp = out.bias + m * out.bias_rs + n0 * out.bias_cs;
      const __m512i b = out.bias_cs ? _mm512_loadu_si512(bp) : _mm512_set1_epi32(bp[0]);
      const __m512i s = _mm512_add_epi32(v, b);
      if (out.bias_saturates) {  // the int64 sum clamped to int32
        const __mmask16 overflow = _mm512_cmplt_epi32_mask(
            _mm512_and_si512(_mm512_xor_si512(v, s), _mm512_xor_si512(b, s)), _mm512_setzero_si512());
        const __m512i limit = _mm512_xor_si512(_mm512_srai_epi32(v, 31), _mm512_set1_epi32(0x7fffffff));
        v = _mm512_mask_blend_epi32(overflow, s, limit);
      } else {
        v = s;
      }
    }
    const int64_t o = m * out.ldo + n0;
    switch (out.kind) {
      case QgemmOutputKind::kInt32:
        _mm512_mask_storeu_epi32(static_cast<int32_t*>(out.out) + o, keep, v);
        break;
      case QgemmOutputKind::kFloat: {
        const __m512 s = by_row ? _mm512_set1_ps(out.scale[m]) : _mm512_loadu_ps(out.scale + n0);
        _mm512_mask_storeu_ps(static_cast<float*>(out.out) + o, keep, _mm512_mul_ps(_mm512_cvtepi32_ps(v), s));
        break;
      }
      case QgemmOutputKind::kCodes: {
        const __m512i c = requant16(v, col_even, col_odd, *r, col_offset);  // by column: rows are above
        // Codes are within the 8-bit type: truncating to bytes is exact.
        _mm_mask_storeu_epi8(static_cast<uint8_t*>(out.out) + o, keep, _mm512_cvtepi32_epi8(c));
        break;
      }
    }
  }
}

void qgemm_vnni_ukernel(int rows, int64_t kquads, const uint32_t* a, const uint8_t* b, bool signed_words,
                        const VnniFix& fix, int32_t* acc) {
  if (signed_words) vnni_dispatch<true>(rows, kquads, a, PanelB{b}, fix, acc);
  else vnni_dispatch<false>(rows, kquads, a, PanelB{b}, fix, acc);
}

void qconv_vnni_ukernel_taps(int rows, int64_t kquads, const uint32_t* a, const uint8_t* base, const int64_t* tap,
                             const VnniFix& fix, int32_t* acc) {
  vnni_dispatch<true>(rows, kquads, a, TapB{base, tap}, fix, acc);
}

void qconv_pack_panel_quad_image(const QconvQuadPanel& s, uint8_t* panel, int32_t* col_sum) {
  pack_panel_quads(s, panel, col_sum);
}

void qconv_vnni_ukernel_taps_panels(int panels, int rows, int64_t kquads, const uint32_t* a, const uint8_t* base,
                                    const int64_t* tap, const VnniFix* fix, int32_t* const* acc) {
  static_assert(kQconvMaxPanels == 2, "one instance per panel count");
  (void)panels;
  vnni_panels_dispatch<2>(rows, kquads, a, TapB{base, tap}, fix, acc);
}

void qconv_fill_quad_image(const QconvGeometry& g, const QconvQuadImage& l, const uint8_t* x, int64_t channels,
                           bool x_signed, uint8_t zero_point_u8, uint8_t* dst, bool clear) {
  fill_quad_image(g, l, x, channels, x_signed, zero_point_u8, dst, clear);
}

void qconv_fill_tap_quad_image(const QconvGeometry& g, const QconvQuadImage& l, const uint8_t* x, bool x_signed,
                               uint8_t zero_point_u8, uint8_t* scratch, uint8_t* dst) {
  fill_tap_quad_image(g, l, x, x_signed, zero_point_u8, scratch, dst);
}

#else

void qgemm_vnni_ukernel(int, int64_t, const uint32_t*, const uint8_t*, bool, const VnniFix&, int32_t*) {}
void qconv_vnni_ukernel_taps(int, int64_t, const uint32_t*, const uint8_t*, const int64_t*, const VnniFix&,
                             int32_t*) {}
void qgemm_epilogue_avx512(const int32_t*, int, int, int64_t, int64_t, const QgemmOutput&) {}
void qconv_pack_panel_quad_image(const QconvQuadPanel&, uint8_t*, int32_t*) {}
void qconv_vnni_ukernel_taps_panels(int, int, int64_t, const uint32_t*, const uint8_t*, const int64_t*,
                                    const VnniFix*, int32_t* const*) {}
void qconv_fill_quad_image(const QconvGeometry&, const QconvQuadImage&, const uint8_t*, int64_t, bool, uint8_t,
                           uint8_t*, bool) {}
void qconv_epilogue_runs_avx512(const int32_t*, int, int64_t, const QconvLaneRuns&, const QgemmOutput&) {}
void qconv_fill_tap_quad_image(const QconvGeometry&, const QconvQuadImage&, const uint8_t*, bool, uint8_t, uint8_t*,
                               uint8_t*) {}

#endif

}  // namespace qtk::rt::x86::detail
