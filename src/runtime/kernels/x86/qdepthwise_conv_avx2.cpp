// AVX2 planes of the depthwise QLinearConv. Exact integer arithmetic only:
// the centred inputs and weights are int16 (|x - x_zp| <= 255), vpmaddwd
// multiplies pairs of them into int32 sums (never vpmaddubsw, whose int16
// pair sums saturate), and requantization is the reference's fixed-point
// rule done in 64-bit lanes. Built with a per-function target attribute;
// qdepthwise_conv.cpp only calls in here when the CPU reports AVX2.
//
// Three ways to form the int32 lane pairs (x at tap a, x at tap b) that
// vpmaddwd wants, all reading the padded int16 plane:
//  - stride 1, dilation 1 along W: a 32-bit load at column q holds
//    (x[q], x[q+1]) = taps (kw, kw+1) of one output, and lane j of it belongs
//    to output q + 2j. Even and odd outputs use loads one column apart, and
//    one byte shuffle restores their order at the end. No shuffles per tap.
//  - stride 2, dilation 1: lane j of the load at column 2o + kw is
//    (x[2(o+j) + kw], x[2(o+j) + kw + 1]): taps (kw, kw+1) of output o + j.
//  - anything else: each input row is split into `stride` phases (column
//    q = stride * i + phase) so that every tap is a contiguous 16-output
//    load; two taps are interleaved with vpunpck{l,h}wd.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "runtime/kernels/x86/qdepthwise_conv_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace qtk::rt::qdw {

namespace {

constexpr int64_t kBlock = 16;      // outputs per inner iteration (16 int16 lanes)
constexpr int64_t kLineElems = 32;  // int16 per 64-byte cache line

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

enum class Kind { kPairsStride1, kPairsStride2, kPhases };

Kind kind_of(const Geometry& g) {
  if (g.dil_w == 1 && g.stride_w == 1) return Kind::kPairsStride1;
  if (g.dil_w == 1 && g.stride_w == 2) return Kind::kPairsStride2;
  return Kind::kPhases;
}

// Where the padded plane lives in the scratch buffer: `rows` rows of
// row_stride int16, each `phases` runs of phase_len (phases == 1: the plain
// padded row). Widths cover every vector load of the last 16-output block.
struct Layout {
  int64_t rows = 0, row_stride = 0, phases = 1, phase_len = 0;
};

Layout layout_of(const Geometry& g) {
  Layout l;
  l.rows = (g.out_h - 1) * g.stride_h + (g.k_h - 1) * g.dil_h + 1;
  const int64_t owr = round_up(g.out_w, kBlock);
  const int64_t pair_cols = 2 * ((g.k_w + 1) / 2);
  switch (kind_of(g)) {
    case Kind::kPairsStride1: l.phase_len = owr + pair_cols + kBlock; break;
    case Kind::kPairsStride2: l.phase_len = 2 * owr + pair_cols + kBlock; break;
    case Kind::kPhases:
      l.phases = g.stride_w;
      l.phase_len = owr + ((g.k_w - 1) * g.dil_w) / g.stride_w + 1 + kBlock;
      break;
  }
  l.row_stride = l.phases * l.phase_len;
  // Whole 64-byte lines per row (and a line-aligned plane, see
  // run_plane_avx2): fewer of the unaligned 32-byte tap loads straddle two
  // lines (measured ~2% on 56x56 3x3 stride 1).
  if (l.phases == 1) l.row_stride = round_up(l.row_stride, kLineElems);
  return l;
}

}  // namespace

// Tells layouts apart in PlaneScratch (the scalar path uses another id).
PlaneScratch::Key layout_key(const Geometry& g, const Layout& l) {
  return {1, l.rows, l.row_stride, l.phases, l.phase_len, g.pad_top, g.pad_left, g.in_h, g.in_w, 0};
}

#if defined(__x86_64__) || defined(__i386__)

namespace {

// Writes the interior of the padded plane; the padding is already zero
// (PlaneScratch). Rows the windows never read are skipped.
template <class T>
__attribute__((target("avx2"))) void build_plane(const Geometry& g, const Layout& l, const T* x, int32_t zp,
                                                 int16_t* __restrict buf) {
  const int64_t r_lo = std::max<int64_t>(g.pad_top, 0), r_hi = std::min(g.pad_top + g.in_h, l.rows);
  if (l.phases > 1) {  // rare (dilated or stride > 2 along W): scalar split
    for (int64_t r = r_lo; r < r_hi; ++r) {
      int16_t* dst = buf + r * l.row_stride;
      const T* src_row = x + (r - g.pad_top) * g.in_w;
      for (int64_t p = 0; p < l.phases; ++p)
        for (int64_t i = 0; i < l.phase_len; ++i) {
          const int64_t ic = l.phases * i + p - g.pad_left;
          if (ic >= 0 && ic < g.in_w)
            dst[p * l.phase_len + i] = static_cast<int16_t>(static_cast<int32_t>(src_row[ic]) - zp);
        }
    }
    return;
  }
  // Every row copies the same column span [lo, hi): the loop bounds are
  // worked out once per plane, so the row loop is pointer bumps and whole
  // 16-column conversions (the last one moved back to end at hi, rewriting
  // a few columns with the same values). A per-row setup measured as costly
  // as the conversions themselves on 56-wide rows.
  const int64_t lo = std::clamp<int64_t>(g.pad_left, 0, l.row_stride);
  const int64_t hi = std::clamp<int64_t>(g.pad_left + g.in_w, lo, l.row_stride);
  const int64_t n = hi - lo;
  if (r_lo >= r_hi || n <= 0) return;
  const T* src = x + (r_lo - g.pad_top) * g.in_w + (lo - g.pad_left);  // input of padded (r_lo, lo)
  int16_t* dst = buf + r_lo * l.row_stride + lo;
  const int64_t rows = r_hi - r_lo, in_w = g.in_w, stride = l.row_stride;
  if (n < 16) {
    for (int64_t r = 0; r < rows; ++r, src += in_w, dst += stride)
      for (int64_t q = 0; q < n; ++q) dst[q] = static_cast<int16_t>(static_cast<int32_t>(src[q]) - zp);
    return;
  }
  const __m256i vzp = _mm256_set1_epi16(static_cast<int16_t>(zp));
  const int64_t last = n - 16;
  for (int64_t r = 0; r < rows; ++r, src += in_w, dst += stride) {
    const auto convert16 = [&](int64_t at) __attribute__((target("avx2"))) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + at));
      const __m256i w = std::is_signed_v<T> ? _mm256_cvtepi8_epi16(b) : _mm256_cvtepu8_epi16(b);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + at), _mm256_sub_epi16(w, vzp));
    };
    for (int64_t q = 0; q < last; q += 16) convert16(q);
    convert16(last);
  }
}

// Requantization constants of one channel, broadcast. The bias rides in the
// rounding constant: ((acc + bias) << pre) * m + 2^(shift-1)
//   = (acc << pre) * m + ((bias << pre) * m + 2^(shift-1)),
// each product below 2^62 in magnitude (vector_exact), the sum below 2^63.
struct Requant {
  __m256i mult, round, zp16;
  __m128i pre, post;
  bool has_pre;
};

__attribute__((target("avx2"))) void make_requant(const ChannelParams& p, int32_t y_zp, Requant& q) {
  const int64_t bias_scaled = static_cast<int64_t>(static_cast<int32_t>(static_cast<uint32_t>(p.bias) << p.pre_shift));
  q.mult = _mm256_set1_epi32(p.mult.multiplier);
  q.round = _mm256_set1_epi64x(bias_scaled * p.mult.multiplier + (int64_t{1} << (p.shift - 1)));
  q.zp16 = _mm256_set1_epi16(static_cast<int16_t>(y_zp));
  q.pre = _mm_cvtsi32_si128(p.pre_shift);
  q.post = _mm_cvtsi32_si128(p.shift - 32);
  q.has_pre = p.pre_shift != 0;
}

// r = ((acc << pre) * m + round) >> shift per int32 lane, shift >= 32: the
// high dword of the 64-bit sum, shifted by shift - 32 more (floor of a floor
// is the floor, so this is one exact rounding).
__attribute__((target("avx2"))) inline __m256i requant8(__m256i acc, const Requant& q) {
  if (q.has_pre) acc = _mm256_sll_epi32(acc, q.pre);  // only for multipliers >= 0.5
  const __m256i odd = _mm256_srli_epi64(acc, 32);
  const __m256i pe = _mm256_add_epi64(_mm256_mul_epi32(acc, q.mult), q.round);
  const __m256i po = _mm256_add_epi64(_mm256_mul_epi32(odd, q.mult), q.round);
  const __m256i r = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
  return _mm256_sra_epi32(r, q.post);
}

// 16 int16 codes (zero point added, saturated) in output order -> 8-bit.
// Saturating at each narrowing step equals the reference's one clamp, since
// every value clipped early lies beyond [qmin, qmax] on the same side.
template <bool kSigned>
__attribute__((target("avx2"))) inline void store16(__m256i v, uint8_t* __restrict dst, int64_t count) {
  __m256i b = kSigned ? _mm256_packs_epi16(v, v) : _mm256_packus_epi16(v, v);
  b = _mm256_permute4x64_epi64(b, 0x08);
  const __m128i lo = _mm256_castsi256_si128(b);
  if (count >= kBlock) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), lo);
  } else {
    alignas(16) uint8_t t[kBlock];
    _mm_store_si128(reinterpret_cast<__m128i*>(t), lo);
    std::memcpy(dst, t, static_cast<size_t>(count));
  }
}

// Start of the 16-output block after `o` in a row of out_w >= 16 outputs: the
// last block is moved back to end at out_w (recomputing a few outputs) so
// that every store is a whole 16 bytes.
inline int64_t block_start(int64_t o, int64_t out_w) { return o + kBlock <= out_w ? o : out_w - kBlock; }

__attribute__((target("avx2"))) inline __m256i load16(const int16_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// Up to kMaxPairs weight pairs are broadcast once per plane into locals
// (registers for the fixed 3x3 / 5x5 instances); more are read as needed.
constexpr int kMaxPairs = 32;

struct PairWeights {
  __m256i local[kMaxPairs];
  const int32_t* bits;
  bool all_local;
};

// One 16-output block of one output row for the two "pairs" kinds, starting
// at output o. Two accumulators:
//  stride 1: A = outputs o + 2j, B = o + 2j + 1 (loads one column apart);
//  stride 2: A = outputs o..o+7, B = o+8..o+15 (loads 16 columns apart).
// (Two blocks per iteration, for more independent chains, spilled registers
// and measured slower.)
template <Kind K, int KH_, int KWP_, bool kSigned>
__attribute__((target("avx2"))) inline void pairs_block(const int16_t* __restrict row0, int64_t dil_step,
                                                        int64_t kh_n, int64_t kwp_n, const PairWeights& pw,
                                                        const Requant& q, int64_t o, uint8_t* __restrict yrow,
                                                        int64_t count) {
  constexpr int64_t kOffB = K == Kind::kPairsStride1 ? 1 : 16;
  const int16_t* at = row0 + (K == Kind::kPairsStride1 ? o : 2 * o);
  __m256i acc_a = _mm256_setzero_si256(), acc_b = acc_a;
#pragma GCC unroll 8
  for (int64_t kh = 0; kh < kh_n; ++kh) {
    const int16_t* row = at + kh * dil_step;
#pragma GCC unroll 8
    for (int64_t p = 0; p < kwp_n; ++p) {
      const int64_t i = kh * kwp_n + p;
      const __m256i w = pw.all_local ? pw.local[i] : _mm256_set1_epi32(pw.bits[i]);
      acc_a = _mm256_add_epi32(acc_a, _mm256_madd_epi16(load16(row + 2 * p), w));
      acc_b = _mm256_add_epi32(acc_b, _mm256_madd_epi16(load16(row + 2 * p + kOffB), w));
    }
  }
  __m256i v = _mm256_packs_epi32(requant8(acc_a, q), requant8(acc_b, q));
  if constexpr (K == Kind::kPairsStride1) {
    // words e0 e1 e2 e3 o0 o1 o2 o3 per 128-bit lane -> e0 o0 e1 o1 ...
    const __m256i interleave = _mm256_setr_epi8(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15,  //
                                                0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15);
    v = _mm256_shuffle_epi8(_mm256_adds_epi16(v, q.zp16), interleave);
  } else {
    // packs interleaves 128-bit halves: [0-3 8-11 | 4-7 12-15] -> in order
    v = _mm256_adds_epi16(_mm256_permute4x64_epi64(v, 0xD8), q.zp16);
  }
  store16<kSigned>(v, yrow + o, count);
}

// The low `count` <= 8 bytes of v (a plain 8-byte store when count is 8,
// the usual case, rather than a library memcpy).
__attribute__((target("avx2"))) inline void store8(__m128i v, uint8_t* __restrict dst, int64_t count) {
  if (count == 8) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), v);
    return;
  }
  alignas(16) uint8_t t[16];
  _mm_store_si128(reinterpret_cast<__m128i*>(t), v);
  std::memcpy(dst, t, static_cast<size_t>(count));
}

__attribute__((target("avx2"))) inline __m256i load8x2(const int16_t* lo, const int16_t* hi) {
  return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lo))),
                                 _mm_loadu_si128(reinterpret_cast<const __m128i*>(hi)), 1);
}

// Stride 1: the last <= 8 outputs [o, o + count) of two output rows in one
// block, row oh in the low 128 bits and row oh + 1 in the high ones (a row
// of 56 outputs then costs 3.5 blocks instead of 4). Same even/odd split.
template <int KH_, int KWP_, bool kSigned>
__attribute__((target("avx2"))) inline void pairs_s1_tails2(const int16_t* __restrict row0, int64_t row_step,
                                                            int64_t dil_step, int64_t kh_n, int64_t kwp_n,
                                                            const PairWeights& pw, const Requant& q, int64_t o,
                                                            uint8_t* __restrict y0, uint8_t* __restrict y1,
                                                            int64_t count) {
  __m256i ae = _mm256_setzero_si256(), ao = ae;
#pragma GCC unroll 8
  for (int64_t kh = 0; kh < kh_n; ++kh) {
    const int16_t* lo = row0 + kh * dil_step + o;
    const int16_t* hi = lo + row_step;
#pragma GCC unroll 8
    for (int64_t p = 0; p < kwp_n; ++p) {
      const int64_t i = kh * kwp_n + p;
      const __m256i w = pw.all_local ? pw.local[i] : _mm256_set1_epi32(pw.bits[i]);
      ae = _mm256_add_epi32(ae, _mm256_madd_epi16(load8x2(lo + 2 * p, hi + 2 * p), w));
      ao = _mm256_add_epi32(ao, _mm256_madd_epi16(load8x2(lo + 2 * p + 1, hi + 2 * p + 1), w));
    }
  }
  const __m256i interleave = _mm256_setr_epi8(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15,  //
                                              0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15);
  __m256i v = _mm256_packs_epi32(requant8(ae, q), requant8(ao, q));
  v = _mm256_shuffle_epi8(_mm256_adds_epi16(v, q.zp16), interleave);
  const __m256i b = kSigned ? _mm256_packs_epi16(v, v) : _mm256_packus_epi16(v, v);
  store8(_mm256_castsi256_si128(b), y0 + o, count);
  store8(_mm256_extracti128_si256(b, 1), y1 + o, count);
}

// Stride 2: the last <= 8 outputs of a row need only the first accumulator.
template <int KH_, int KWP_, bool kSigned>
__attribute__((target("avx2"))) inline void pairs_s2_tail(const int16_t* __restrict row0, int64_t dil_step,
                                                          int64_t kh_n, int64_t kwp_n, const PairWeights& pw,
                                                          const Requant& q, int64_t o, uint8_t* __restrict yrow,
                                                          int64_t count) {
  __m256i acc = _mm256_setzero_si256();
#pragma GCC unroll 8
  for (int64_t kh = 0; kh < kh_n; ++kh) {
    const int16_t* row = row0 + kh * dil_step + 2 * o;
#pragma GCC unroll 8
    for (int64_t p = 0; p < kwp_n; ++p) {
      const int64_t i = kh * kwp_n + p;
      const __m256i w = pw.all_local ? pw.local[i] : _mm256_set1_epi32(pw.bits[i]);
      acc = _mm256_add_epi32(acc, _mm256_madd_epi16(load16(row + 2 * p), w));
    }
  }
  __m256i v = _mm256_packs_epi32(requant8(acc, q), requant8(acc, q));  // [0-3 0-3 | 4-7 4-7]
  v = _mm256_adds_epi16(_mm256_permute4x64_epi64(v, 0xD8), q.zp16);    // [0-3 4-7 | ...]
  const __m256i b = kSigned ? _mm256_packs_epi16(v, v) : _mm256_packus_epi16(v, v);
  store8(_mm256_castsi256_si128(b), yrow + o, count);
}

// Stride 1 or 2 along W, dilation 1 along W. KH_ / KWP_ (rows, tap pairs per
// row) are compile-time for the common kernels so the loops unroll fully;
// 0 = runtime. Each row is covered by whole 16-output blocks; a remainder
// of more than 8 takes one more block moved back to end at out_w
// (recomputing a few outputs, same values), one of at most 8 a half block.
template <Kind K, int KH_, int KWP_, bool kSigned>
__attribute__((target("avx2"))) void planes_pairs(const Geometry& g, const Layout& l, const int16_t* __restrict buf,
                                                  const int32_t* __restrict wbits, const Requant& rq,
                                                  uint8_t* __restrict y) {
  const int64_t kh_n = KH_ ? KH_ : g.k_h, kwp_n = KWP_ ? KWP_ : (g.k_w + 1) / 2;
  const int64_t out_w = g.out_w, out_h = g.out_h, row_step = g.stride_h * l.row_stride;
  const int64_t dil_step = g.dil_h * l.row_stride;
  const Requant q = rq;
  PairWeights pw;
  pw.bits = wbits;
  pw.all_local = kh_n * kwp_n <= kMaxPairs;
  if (pw.all_local)
    for (int64_t i = 0; i < kh_n * kwp_n; ++i) pw.local[i] = _mm256_set1_epi32(wbits[i]);
  const int64_t full = out_w / kBlock * kBlock, rest = out_w - full;
  const bool half_tail = rest > 0 && rest <= kBlock / 2;
  const int64_t tail_at = std::max<int64_t>(out_w - kBlock / 2, 0), tail_count = out_w - tail_at;
  for (int64_t oh = 0; oh < out_h; ++oh) {
    const int16_t* row0 = buf + oh * row_step;
    uint8_t* yrow = y + oh * out_w;
    for (int64_t o = 0; o < full; o += kBlock)
      pairs_block<K, KH_, KWP_, kSigned>(row0, dil_step, kh_n, kwp_n, pw, q, o, yrow, kBlock);
    if (rest == 0) continue;
    if (!half_tail) {
      const int64_t o = std::max<int64_t>(out_w - kBlock, 0);
      pairs_block<K, KH_, KWP_, kSigned>(row0, dil_step, kh_n, kwp_n, pw, q, o, yrow, out_w - o);
    } else if constexpr (K == Kind::kPairsStride2) {
      pairs_s2_tail<KH_, KWP_, kSigned>(row0, dil_step, kh_n, kwp_n, pw, q, tail_at, yrow, tail_count);
    } else if (oh % 2 == 0) {  // this row's tail and the next one's (or a repeat of this row's)
      const int64_t next = oh + 1 < out_h ? 1 : 0;
      pairs_s1_tails2<KH_, KWP_, kSigned>(row0, next * row_step, dil_step, kh_n, kwp_n, pw, q, tail_at, yrow,
                                          yrow + next * out_w, tail_count);
    }
  }
}

// Any stride / dilation: taps from the phase-split rows, paired by unpacking.
template <bool kSigned>
__attribute__((target("avx2"))) void planes_phases(const Geometry& g, const Layout& l, const int16_t* __restrict buf,
                                                   const int64_t* tap_a, const int64_t* tap_b,
                                                   const int32_t* __restrict wbits, int64_t pairs, const Requant& rq,
                                                   uint8_t* __restrict y) {
  const int64_t out_w = g.out_w, out_h = g.out_h, row_step = g.stride_h * l.row_stride;
  const Requant q = rq;
  for (int64_t oh = 0; oh < out_h; ++oh) {
    const int16_t* base = buf + oh * row_step;
    uint8_t* yrow = y + oh * out_w;
    for (int64_t o0 = 0; o0 < out_w; o0 += kBlock) {
      const int64_t o = out_w < kBlock ? 0 : block_start(o0, out_w);
      __m256i alo = _mm256_setzero_si256(), ahi = alo;  // outputs [0-3 8-11] and [4-7 12-15]
      for (int64_t p = 0; p < pairs; ++p) {
        const __m256i xa = load16(base + tap_a[p] + o), xb = load16(base + tap_b[p] + o);
        const __m256i w = _mm256_set1_epi32(wbits[p]);
        alo = _mm256_add_epi32(alo, _mm256_madd_epi16(_mm256_unpacklo_epi16(xa, xb), w));
        ahi = _mm256_add_epi32(ahi, _mm256_madd_epi16(_mm256_unpackhi_epi16(xa, xb), w));
      }
      __m256i v = _mm256_packs_epi32(requant8(alo, q), requant8(ahi, q));  // back in order
      store16<kSigned>(_mm256_adds_epi16(v, q.zp16), yrow + o, out_w - o);
    }
  }
}

template <bool kSigned>
__attribute__((target("avx2"))) void run_kind(const Geometry& g, const Layout& l, const int16_t* buf,
                                              const int16_t* w, const Requant& q, uint8_t* y) {
  const Kind kind = kind_of(g);
  if (kind == Kind::kPhases) {
    const int64_t taps = g.k_h * g.k_w, pairs = (taps + 1) / 2;
    std::vector<int64_t> off(static_cast<size_t>(taps));
    for (int64_t t = 0; t < taps; ++t) {
      const int64_t kh = t / g.k_w, kw = t % g.k_w, col = kw * g.dil_w;
      off[t] = kh * g.dil_h * l.row_stride + (col % g.stride_w) * l.phase_len + col / g.stride_w;
    }
    std::vector<int64_t> ta(static_cast<size_t>(pairs)), tb(static_cast<size_t>(pairs));
    std::vector<int32_t> wv(static_cast<size_t>(pairs));
    for (int64_t p = 0; p < pairs; ++p) {
      const bool has_b = 2 * p + 1 < taps;
      ta[p] = off[2 * p];
      tb[p] = has_b ? off[2 * p + 1] : off[2 * p];  // any readable column; weight 0
      wv[p] = pair_bits(w[2 * p], has_b ? w[2 * p + 1] : int16_t{0});
    }
    planes_phases<kSigned>(g, l, buf, ta.data(), tb.data(), wv.data(), pairs, q, y);
    return;
  }
  // No heap allocation per plane for the usual kernel sizes.
  const int64_t n_pairs = g.k_h * ((g.k_w + 1) / 2);
  int32_t small[2 * kMaxPairs];
  std::vector<int32_t> large;
  int32_t* bits = small;
  if (n_pairs > 2 * kMaxPairs) {
    large.resize(static_cast<size_t>(n_pairs));
    bits = large.data();
  }
  row_weight_pairs(g.k_h, g.k_w, w, bits);
  const int32_t* wv = bits;
  constexpr Kind S1 = Kind::kPairsStride1, S2 = Kind::kPairsStride2;
  if (kind == S1) {
    if (g.k_h == 3 && g.k_w == 3) return planes_pairs<S1, 3, 2, kSigned>(g, l, buf, wv, q, y);
    if (g.k_h == 5 && g.k_w == 5) return planes_pairs<S1, 5, 3, kSigned>(g, l, buf, wv, q, y);
    return planes_pairs<S1, 0, 0, kSigned>(g, l, buf, wv, q, y);
  }
  if (g.k_h == 3 && g.k_w == 3) return planes_pairs<S2, 3, 2, kSigned>(g, l, buf, wv, q, y);
  if (g.k_h == 5 && g.k_w == 5) return planes_pairs<S2, 5, 3, kSigned>(g, l, buf, wv, q, y);
  return planes_pairs<S2, 0, 0, kSigned>(g, l, buf, wv, q, y);
}

}  // namespace

namespace {

// Stride 1, dilation 1, and weights whose pairs fit vpmaddubsw (|w0| + |w1|
// <= 128 for taps (2i, 2i + 1) of a kernel row: 7-bit weights): the 8-bit
// plane of the AVX-512 vpdpbusd path instead of the int16 one. Codes as u8,
// pads the zero point's code, rows of pitch q (the padded width); a block
// is 32 flat outputs o.., accumulator s holding outputs o + 4j + s from the
// 32 bytes at o + s (each 32-bit lane one weight quad's 4 taps):
// vpmaddubsw (exact: 255 * 128 < 2^15) -> vpmaddwd by ones -> vpaddd, a
// third fewer multiply instructions than the int16 pairs. The zero point's
// share, zp * Σw, rides in the rounding constant with the bias.
struct U8Plane {
  int64_t q = 0, rows = 0, kwq = 0, blocks = 0, elems = 0;
};

U8Plane u8_plane_of(const Geometry& g) {
  U8Plane l;
  l.q = g.out_w + g.k_w - 1;
  l.rows = g.out_h + g.k_h - 1;
  l.kwq = (g.k_w + 3) / 4;
  l.blocks = (g.out_h * l.q + 31) / 32;
  // The last block's furthest load: 32 bytes at its start + 3 + the last row and quad.
  l.elems = std::max(l.rows * l.q, l.blocks * 32 + 3 + (g.k_h - 1) * l.q + 4 * (l.kwq - 1) + 32);
  return l;
}

bool u8_pairs_usable(const Geometry& g, const PlaneJob& job) {
  if (g.stride_w != 1 || g.stride_h != 1 || g.dil_w != 1 || g.dil_h != 1 || g.pad_top < 0 || g.pad_left < 0 ||
      !u8_plane_fits(job))
    return false;
  for (int64_t kh = 0; kh < g.k_h; ++kh)
    for (int64_t kw = 0; kw < g.k_w; kw += 2) {
      const int a = job.w[kh * g.k_w + kw], b = kw + 1 < g.k_w ? job.w[kh * g.k_w + kw + 1] : 0;
      if (std::abs(a) + std::abs(b) > 128) return false;
    }
  return true;
}

template <class T>
__attribute__((target("avx2"))) void build_u8_plane(const Geometry& g, const U8Plane& l, const T* x,
                                                    uint8_t* __restrict buf) {
  const __m256i flip = _mm256_set1_epi8(std::is_signed_v<T> ? static_cast<char>(0x80) : 0);
  const int64_t n = std::min(g.in_w, l.q - g.pad_left), rows = std::min(g.in_h, l.rows - g.pad_top);
  const auto* src = reinterpret_cast<const uint8_t*>(x);
  // Whole vectors, the last one ending at the row's end (rewriting a few
  // bytes with the same values). A memmove call per row (what GCC makes of
  // a plain copy loop) took a fifth of the plane's time.
  const auto move = [&](const uint8_t* from, uint8_t* to, auto width) __attribute__((target("avx2"))) {
    if constexpr (decltype(width)::value == 32)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(to),
                          _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(from)), flip));
    else
      _mm_storeu_si128(reinterpret_cast<__m128i*>(to), _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(from)),
                                                                      _mm256_castsi256_si128(flip)));
  };
  using W32 = std::integral_constant<int, 32>;
  using W16 = std::integral_constant<int, 16>;
  for (int64_t r = 0; r < rows; ++r, src += g.in_w) {
    uint8_t* dst = buf + (r + g.pad_top) * l.q + g.pad_left;
    if (n >= 32) {
      for (int64_t c = 0; c + 32 < n; c += 32) {
        move(src + c, dst + c, W32{});
        __asm__ volatile("" ::: "memory");  // else GCC makes a uint8 plane's loop a memmove call
      }
      move(src + n - 32, dst + n - 32, W32{});
    } else if (n >= 16) {
      move(src, dst, W16{});
      move(src + n - 16, dst + n - 16, W16{});
    } else {
      for (int64_t c = 0; c < n; ++c) {
        dst[c] = static_cast<uint8_t>(src[c] ^ (std::is_signed_v<T> ? 0x80 : 0));
        __asm__ volatile("" ::: "memory");
      }
    }
  }
}

template <int KH_, int KWQ_, bool kSigned>
__attribute__((target("avx2"))) void planes_u8_pairs(const Geometry& g, const U8Plane& l,
                                                     const uint8_t* __restrict buf, const int32_t* __restrict quads,
                                                     const Requant& q, uint8_t* __restrict codes) {
  const int64_t kh_n = KH_ ? KH_ : g.k_h, kwq_n = KWQ_ ? KWQ_ : l.kwq, pitch = l.q;
  const __m256i ones = _mm256_set1_epi16(1);
  // After the packs each 128-bit lane holds r0[0..3] r1[0..3] r2[0..3]
  // r3[0..3] (r_s: accumulator s's four outputs there); output 4j + s is
  // r_s[j]: a 4 x 4 byte transpose puts the lane's 16 outputs in order.
  const __m256i order = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,  //
                                         0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const auto madd = [&](__m256i acc, const uint8_t* at, __m256i w) __attribute__((target("avx2"))) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(at));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), ones));
  };
  for (int64_t o = 0; o < l.blocks * 32; o += 32) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
#pragma GCC unroll 8
    for (int64_t kh = 0; kh < kh_n; ++kh) {
#pragma GCC unroll 4
      for (int64_t t = 0; t < kwq_n; ++t) {
        const __m256i w = _mm256_set1_epi32(quads[kh * kwq_n + t]);
        const uint8_t* at = buf + o + kh * pitch + 4 * t;
        a0 = madd(a0, at, w);
        a1 = madd(a1, at + 1, w);
        a2 = madd(a2, at + 2, w);
        a3 = madd(a3, at + 3, w);
      }
    }
    const __m256i v01 = _mm256_adds_epi16(_mm256_packs_epi32(requant8(a0, q), requant8(a1, q)), q.zp16);
    const __m256i v23 = _mm256_adds_epi16(_mm256_packs_epi32(requant8(a2, q), requant8(a3, q)), q.zp16);
    // Saturating narrowing: the reference's one clamp (see store16).
    const __m256i b = kSigned ? _mm256_packs_epi16(v01, v23) : _mm256_packus_epi16(v01, v23);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + o), _mm256_shuffle_epi8(b, order));
  }
}

__attribute__((target("avx2"))) void run_plane_u8_pairs(const Geometry& g, const PlaneJob& job, PlaneScratch& ps) {
  const U8Plane l = u8_plane_of(g);
  const int32_t zp = u8_zero_point(job);  // the pads' code
  uint8_t* buf = ps.get_bytes({5, l.q, l.rows, g.k_h, g.k_w, g.pad_top, g.pad_left, g.in_h, g.in_w, zp},
                              static_cast<size_t>(l.elems), static_cast<uint8_t>(zp));
  if (job.x_signed) build_u8_plane(g, l, static_cast<const int8_t*>(job.x), buf);
  else build_u8_plane(g, l, static_cast<const uint8_t*>(job.x), buf);
  Requant q;
  make_requant(*job.params, job.y_zero_point, q);
  q.round = _mm256_set1_epi64x(static_cast<int64_t>(u8_plane_round(job)));  // the bias and the zero point's share
  uint8_t* codes = ps.codes_buf(static_cast<size_t>(l.blocks * 32));
  const auto run = [&](auto signed_tag) __attribute__((target("avx2"))) {
    constexpr bool kS = decltype(signed_tag)::value;
    if (g.k_h == 3 && g.k_w == 3) return planes_u8_pairs<3, 1, kS>(g, l, buf, job.w_quads, q, codes);
    if (g.k_h == 5 && g.k_w == 5) return planes_u8_pairs<5, 2, kS>(g, l, buf, job.w_quads, q, codes);
    return planes_u8_pairs<0, 0, kS>(g, l, buf, job.w_quads, q, codes);
  };
  if (job.y_signed) run(std::true_type{});
  else run(std::false_type{});
  // The rows to y at pitch out_w: inline 32- or 16-byte moves, the last
  // one ending at the row's end (a memcpy call per 56-byte row cost a
  // fifth of the plane).
  auto* y = static_cast<uint8_t*>(job.y);
  const int64_t w = g.out_w;
  for (int64_t oh = 0; oh < g.out_h; ++oh) {
    const uint8_t* src = codes + oh * l.q;
    uint8_t* dst = y + oh * w;
    if (w >= 32) {
      for (int64_t c = 0; c + 32 < w; c += 32) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + c),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + c)));
        __asm__ volatile("" ::: "memory");  // (as in build_u8_plane: no memmove call)
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + w - 32),
                          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + w - 32)));
    } else if (w >= 16) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + w - 16),
                       _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + w - 16)));
    } else if (w >= 8) {
      std::memcpy(dst, src, 8);  // fixed sizes: inline moves
      std::memcpy(dst + w - 8, src + w - 8, 8);
    } else {
      for (int64_t c = 0; c < w; ++c) {
        dst[c] = src[c];
        __asm__ volatile("" ::: "memory");
      }
    }
  }
}

}  // namespace

__attribute__((target("avx2"))) void run_plane_avx2(const Geometry& g, const PlaneJob& job, PlaneScratch& ps) {
  if (u8_pairs_usable(g, job)) return run_plane_u8_pairs(g, job, ps);
  const Layout l = layout_of(g);
  // The plane starts at the first 64-byte boundary of the buffer (the
  // buffer, and so the offset, stays the same while the layout key does).
  int16_t* scratch = ps.get(layout_key(g, l), static_cast<size_t>(l.rows * l.row_stride + kBlock + kLineElems));
  scratch = reinterpret_cast<int16_t*>((reinterpret_cast<uintptr_t>(scratch) + 63) & ~uintptr_t{63});
  if (job.x_signed) build_plane(g, l, static_cast<const int8_t*>(job.x), job.x_zero_point, scratch);
  else build_plane(g, l, static_cast<const uint8_t*>(job.x), job.x_zero_point, scratch);
  Requant q;
  make_requant(*job.params, job.y_zero_point, q);
  uint8_t* y = static_cast<uint8_t*>(job.y);
  if (job.y_signed) run_kind<true>(g, l, scratch, job.w, q, y);
  else run_kind<false>(g, l, scratch, job.w, q, y);
}

#else  // not x86: never selected (avx2_supported() is false); keeps the link whole.

void run_plane_avx2(const Geometry& g, const PlaneJob& job, PlaneScratch& scratch) {
  run_plane_scalar(g, job, scratch);
}

#endif

}  // namespace qtk::rt::qdw
