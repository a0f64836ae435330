// AVX-512 planes of the depthwise QLinearConv (AVX512F/BW/VL/VNNI); exact
// integer arithmetic, as the AVX2 planes (qdepthwise_conv_avx2.cpp). Built
// with per-function target attributes; qdepthwise_conv.cpp only calls in
// here when the CPU reports AVX-512 VNNI. Two kinds of planes:
//  - vpdpbusd (stride 1 or 2 along W, weights w - w_zp that fit int8, the
//    usual symmetric weights): four u8 x s8 taps per int32 lane, 64 outputs
//    per block; see the comment above U8Layout.
//  - vpdpwssd (stride 1 or 2 along W, any 8-bit weights): two int16 x int16
//    taps per int32 lane (|x - x_zp|, |w - w_zp| <= 255; it wraps as
//    vpmaddwd + vpaddd would), 32 outputs per block.
// Dilation along W and strides above 2 along W go to the AVX2 planes.
// Requantization is the AVX2 planes' fixed-point rule in 64-bit lanes.
//
// Both lay the padded plane out so that outputs form one flat index:
//   - each padded row has p = s_w * q columns, q >= out_w the output pitch;
//   - rows are split into s_h phases (padded row R lives in phase R % s_h, at
//     row R / s_h), so output row oh and kernel row kh read phase row
//     oh + (kh * dil_h) / s_h of phase (kh * dil_h) % s_h;
// then output (oh, ow), flat index i = oh * q + ow, reads tap (kh, kw) at
// row_off[kh] + s_w * i + kw. Blocks run straight across row ends, so narrow
// planes (28, 14, 7 wide) fill the vector rather than wasting most of a block
// per row. The q - out_w columns between rows are dropped on the way out:
// for rows of 64 and more the codes go to a buffer of pitch q with
// whole-vector stores and pack_rows copies the rows into the output plane
// (masked stores per block and row measured slower there: their row
// bookkeeping outweighed the copy); for narrower rows (vpdpbusd planes) each
// block goes out with one masked store per row it covers, since pack_rows'
// loads of just-stored codes stalled on small planes.
//
// vpdpwssd lane pairs as in the AVX2 "pairs" kinds: stride 1, the 32-bit
// lane j of a load at s_w * i + 2p holds taps (2p, 2p + 1) of output i + 2j
// (even outputs; the load one column on gives the odd ones); stride 2, of
// output i + j (the load 32 columns on gives outputs i + 16 + j).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <type_traits>
#include <vector>

#include "runtime/kernels/x86/qdepthwise_conv_internal.h"

#if defined(__x86_64__) || defined(__i386__)
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the unused
// merge operand, which -Wmaybe-uninitialized (and, for
// _mm512_broadcast_i32x4, -Wuninitialized) reports (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#define QTK_QDW_X86 1
#endif

namespace qtk::rt::qdw {

#ifdef QTK_QDW_X86

#define QTK_QDW_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,bmi2")))

namespace {

constexpr int64_t kLanes = 32;  // int16 lanes per zmm, flat outputs per block

struct FlatLayout {
  int64_t s_w = 1, s_h = 1;
  int64_t q = 0;           // output pitch in the flat index, >= out_w
  int64_t p = 0;           // padded-row pitch, s_w * q
  int64_t last_row = 0;    // last padded row any output reads
  int64_t phase_size = 0;  // int16 per row phase
  int64_t kwp = 0;         // weight pairs per kernel row
  int64_t elems = 0;       // buffer length, with every over-read of the last block
};

FlatLayout flat_layout_of(const Geometry& g) {
  FlatLayout l;
  l.s_w = g.stride_w, l.s_h = g.stride_h;
  l.kwp = (g.k_w + 1) / 2;
  // Columns the real taps of a row's outputs read: (out_w - 1) * s_w + k_w.
  const int64_t cols = (g.out_w - 1) * l.s_w + g.k_w;
  l.q = std::max(g.out_w, (cols + l.s_w - 1) / l.s_w);
  l.p = l.s_w * l.q;
  l.last_row = (g.out_h - 1) * l.s_h + (g.k_h - 1) * g.dil_h;
  l.phase_size = (l.last_row / l.s_h + 1) * l.p;
  // The last block's last load: s_w * (blocks - 1) * 32 + largest row offset
  // + the last pair + the B load's offset, 32 lanes.
  const int64_t blocks = (g.out_h * l.q + kLanes - 1) / kLanes;
  const int64_t max_row_off = (l.s_h - 1) * l.phase_size + (((g.k_h - 1) * g.dil_h) / l.s_h) * l.p;
  const int64_t off_b = l.s_w == 1 ? 1 : kLanes;
  const int64_t last_load_end = l.s_w * (blocks - 1) * kLanes + max_row_off + 2 * (l.kwp - 1) + off_b + kLanes;
  l.elems = std::max(l.s_h * l.phase_size, last_load_end);
  return l;
}

// Tells layouts apart in PlaneScratch (interior positions depend on these).
PlaneScratch::Key flat_key(const Geometry& g, const FlatLayout& l) {
  return {3, l.p, l.s_h, l.last_row, l.phase_size, g.pad_top, g.pad_left, g.in_h, g.in_w, l.elems};
}

// Writes the interior of the padded plane (the padding is already zero,
// PlaneScratch), 32 columns at a time; masked loads never read past a row.
template <class T>
QTK_QDW_AVX512 void build_flat_plane(const Geometry& g, const FlatLayout& l, const T* x, int32_t zp,
                                     int16_t* __restrict buf) {
  const __m512i vzp = _mm512_set1_epi16(static_cast<int16_t>(zp));
  const int64_t r_lo = g.pad_top, r_hi = std::min(g.pad_top + g.in_h, l.last_row + 1);
  const int64_t c_lo = std::min(g.pad_left, l.p), c_hi = std::min(g.pad_left + g.in_w, l.p);
  const int64_t n = c_hi - c_lo;
  if (n <= 0) return;
  const __mmask32 tail = static_cast<__mmask32>((uint64_t{1} << (n % kLanes)) - 1);
  // Padded row r lives in phase r % s_h at row r / s_h (stepped, not divided).
  int64_t phase = r_lo % l.s_h, phase_row = r_lo / l.s_h;
  for (int64_t r = r_lo; r < r_hi; ++r, phase = phase + 1 == l.s_h ? 0 : phase + 1, phase_row += phase == 0) {
    int16_t* dst = buf + phase * l.phase_size + phase_row * l.p + c_lo;
    const T* src = x + (r - g.pad_top) * g.in_w + (c_lo - g.pad_left);
    int64_t c = 0;
    for (; c + kLanes <= n; c += kLanes) {
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + c));
      const __m512i w = std::is_signed_v<T> ? _mm512_cvtepi8_epi16(b) : _mm512_cvtepu8_epi16(b);
      _mm512_storeu_si512(dst + c, _mm512_sub_epi16(w, vzp));
    }
    if (c < n) {
      const __m256i b = _mm256_maskz_loadu_epi8(tail, src + c);
      const __m512i w = std::is_signed_v<T> ? _mm512_cvtepi8_epi16(b) : _mm512_cvtepu8_epi16(b);
      _mm512_mask_storeu_epi16(dst + c, tail, _mm512_sub_epi16(w, vzp));
    }
  }
}

// Requantization constants of one channel, broadcast; the bias rides in the
// rounding constant as in the AVX2 planes (see make_requant there).
struct Requant {
  __m512i mult, round, zp16;
  __m128i pre, post;
  bool has_pre;
};

// The rescale of 16 accumulators, on values the caller keeps in registers
// (a Requant passed whole went to the stack): shift in, 64-bit products of
// even and odd lanes plus the rounding constant, high halves, shift out.
QTK_QDW_AVX512 __attribute__((always_inline)) inline __m512i requant_lanes(__m512i acc, __m512i mult, __m512i round,
                                                                          __m128i pre, __m128i post, bool has_pre) {
  if (has_pre) acc = _mm512_sll_epi32(acc, pre);
  const __m512i odd = _mm512_srli_epi64(acc, 32);
  const __m512i pe = _mm512_add_epi64(_mm512_mul_epi32(acc, mult), round);
  const __m512i po = _mm512_add_epi64(_mm512_mul_epi32(odd, mult), round);
  return _mm512_sra_epi32(_mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(pe, 32), po), post);
}

QTK_QDW_AVX512 void make_requant(const ChannelParams& p, int32_t y_zp, Requant& q) {
  const int64_t bias_scaled = static_cast<int64_t>(static_cast<int32_t>(static_cast<uint32_t>(p.bias) << p.pre_shift));
  q.mult = _mm512_set1_epi32(p.mult.multiplier);
  q.round = _mm512_set1_epi64(bias_scaled * p.mult.multiplier + (int64_t{1} << (p.shift - 1)));
  q.zp16 = _mm512_set1_epi16(static_cast<int16_t>(y_zp));
  q.pre = _mm_cvtsi32_si128(p.pre_shift);
  q.post = _mm_cvtsi32_si128(p.shift - 32);
  q.has_pre = p.pre_shift != 0;
}

// The lambda `requant` in planes_flat: r = ((acc << pre) * m + round) >> shift
// per int32 lane (shift >= 32: the high dword of the 64-bit sum, then
// shift - 32 more), as requant8 in the AVX2 planes.
QTK_QDW_AVX512 inline __m512i load32(const int16_t* p) { return _mm512_loadu_si512(p); }

// Rows of out_w codes from pitch-q codes (q >= out_w; `codes` readable 64
// bytes past its last row) into the output plane. Whole 64-byte stores, rows
// in order: what one runs past its row's end lands in later rows, which are
// written after it; only stores that would pass the plane's end are masked.
QTK_QDW_AVX512 void pack_rows(const uint8_t* __restrict codes, int64_t q, int64_t out_w, int64_t out_h,
                              uint8_t* __restrict y) {
  const int64_t plane = out_h * out_w;
  for (int64_t oh = 0; oh < out_h; ++oh) {
    const uint8_t* src = codes + oh * q;
    const int64_t row = oh * out_w;
    for (int64_t c = 0; c < out_w; c += 64) {
      const __m512i v = _mm512_loadu_si512(src + c);
      const int64_t at = row + c;
      if (at + 64 <= plane) _mm512_storeu_si512(y + at, v);
      else _mm512_mask_storeu_epi8(y + at, (__mmask64{1} << (plane - at)) - 1, v);
    }
  }
}

constexpr int kMaxPairs = 25;  // weight pairs kept in registers (5x5 -> 15)

// All output rows of one plane, 32 flat outputs per block. KH_ / KWP_ (kernel
// rows, weight pairs per row) are compile-time for the common kernels so the
// tap loops unroll fully; 0 = run time.
// `codes`: round_up(out_h * q, 32) bytes, or null when q == out_w (the
// blocks then go straight to y, the last one masked).
template <int SW, int KH_, int KWP_, bool kSigned>
QTK_QDW_AVX512 void planes_flat(const Geometry& g, const FlatLayout& l, const int16_t* __restrict buf,
                                const int64_t* __restrict row_off, const int32_t* __restrict wbits,
                                const Requant& rq, uint8_t* __restrict codes, uint8_t* __restrict y) {
  constexpr int64_t kOffB = SW == 1 ? 1 : kLanes;
  const int64_t kh_n = KH_ ? KH_ : g.k_h, kwp_n = KWP_ ? KWP_ : l.kwp;
  const int64_t out_w = g.out_w, out_h = g.out_h, q = l.q, total = out_h * q;
  // Locals rather than struct members, so that they stay in registers.
  const __m512i mult = rq.mult, round = rq.round, zp16 = rq.zp16;
  const __m128i pre = rq.pre, post = rq.post;
  const bool has_pre = rq.has_pre;
  const auto requant = [&](__m512i acc) QTK_QDW_AVX512 { return requant_lanes(acc, mult, round, pre, post, has_pre); };
  uint8_t* const dst = codes ? codes : y;
  const int64_t full_end = codes ? total : total / kLanes * kLanes;  // blocks stored whole before this
  const bool all_local = kh_n * kwp_n <= kMaxPairs;
  __m512i wl[kMaxPairs];
  if (all_local)
    for (int64_t i = 0; i < kh_n * kwp_n; ++i) wl[i] = _mm512_set1_epi32(wbits[i]);
  int64_t offs[KH_ ? KH_ : 1];
  if constexpr (KH_ != 0)
    for (int i = 0; i < KH_; ++i) offs[i] = row_off[i];
  const int64_t* ro = KH_ ? offs : row_off;
  // stride 1: per 128-bit lane, words e0 e1 e2 e3 o0 o1 o2 o3 -> e0 o0 e1 o1 ...
  const __m512i interleave = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15));
  // stride 2: packs leaves qwords A0 B0 A1 B1 A2 B2 A3 B3 -> A0 A1 A2 A3 B0 ...
  const __m512i qword_order = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t o = 0; o < total; o += kLanes) {
    const int16_t* at = buf + SW * o;
    __m512i acc_a = _mm512_setzero_si512(), acc_b = acc_a;
#pragma GCC unroll 8
    for (int64_t kh = 0; kh < kh_n; ++kh) {
      const int16_t* src = at + ro[kh];
#pragma GCC unroll 8
      for (int64_t p = 0; p < kwp_n; ++p) {
        const int64_t i = kh * kwp_n + p;
        const __m512i w = all_local ? wl[i] : _mm512_set1_epi32(wbits[i]);
        acc_a = _mm512_dpwssd_epi32(acc_a, load32(src + 2 * p), w);
        acc_b = _mm512_dpwssd_epi32(acc_b, load32(src + 2 * p + kOffB), w);
      }
    }
    __m512i v = _mm512_packs_epi32(requant(acc_a), requant(acc_b));
    if constexpr (SW == 1) v = _mm512_shuffle_epi8(v, interleave);
    else v = _mm512_permutexvar_epi64(qword_order, v);
    v = _mm512_adds_epi16(v, zp16);
    // Saturating narrowing equals the reference's one clamp to [qmin, qmax]:
    // every value clipped earlier lies beyond it on the same side.
    const __m256i b = kSigned ? _mm512_cvtsepi16_epi8(v) : _mm512_cvtusepi16_epi8(_mm512_max_epi16(v, zero));
    if (o < full_end) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + o), b);
    } else {
      _mm256_mask_storeu_epi8(dst + o, static_cast<__mmask32>((uint64_t{1} << (total - o)) - 1), b);
    }
  }
  if (codes != nullptr) pack_rows(codes, q, out_w, out_h, y);
}

template <bool kSigned>
QTK_QDW_AVX512 void run_flat(const Geometry& g, const FlatLayout& l, const int16_t* buf, const int16_t* w,
                             const Requant& q, uint8_t* codes, uint8_t* y) {
  // No heap allocation per plane for kernels up to 16 rows of 32 taps.
  const int64_t n_pairs = g.k_h * l.kwp;
  int32_t small_w[256];
  int64_t small_off[16];
  std::vector<int32_t> large_w;
  std::vector<int64_t> large_off;
  int32_t* bits = small_w;
  int64_t* row_off = small_off;
  if (n_pairs > 256) {
    large_w.resize(static_cast<size_t>(n_pairs));
    bits = large_w.data();
  }
  if (g.k_h > 16) {
    large_off.resize(static_cast<size_t>(g.k_h));
    row_off = large_off.data();
  }
  row_weight_pairs(g.k_h, g.k_w, w, bits);
  for (int64_t kh = 0; kh < g.k_h; ++kh) {
    const int64_t rows = kh * g.dil_h;
    row_off[kh] = (rows % l.s_h) * l.phase_size + (rows / l.s_h) * l.p;
  }
  if (l.s_w == 1) {
    if (g.k_h == 3 && g.k_w == 3) return planes_flat<1, 3, 2, kSigned>(g, l, buf, row_off, bits, q, codes, y);
    if (g.k_h == 5 && g.k_w == 5) return planes_flat<1, 5, 3, kSigned>(g, l, buf, row_off, bits, q, codes, y);
    return planes_flat<1, 0, 0, kSigned>(g, l, buf, row_off, bits, q, codes, y);
  }
  if (g.k_h == 3 && g.k_w == 3) return planes_flat<2, 3, 2, kSigned>(g, l, buf, row_off, bits, q, codes, y);
  if (g.k_h == 5 && g.k_w == 5) return planes_flat<2, 5, 3, kSigned>(g, l, buf, row_off, bits, q, codes, y);
  return planes_flat<2, 0, 0, kSigned>(g, l, buf, row_off, bits, q, codes, y);
}

// ---------------------------------------------------------------------------
// vpdpbusd planes: four taps per int32 lane, not two. The plane is kept as
// 8-bit codes, x (+128 for int8, so unsigned), padded with the zero point
// (so a padding tap adds xzp * w and the correction below cancels it, as the
// reference skips it); the weights w - w_zp must fit int8. Then
//   sum (x - xzp) w = sum x w - xzp * sum w,
// vpdpbusd forms sum x w exactly (u8 x s8 products summed into int32
// without saturation), and -xzp * sum w joins the bias in the rounding
// constant. Lane j of a 64-byte load at byte column c holds taps 4t..4t+3
// of the output whose window starts at c + 4j, so one block of 64 outputs
// takes four accumulators:
//   stride 1: loads at c, c+1, c+2, c+3 -> outputs o + 4j + k;
//   stride 2: loads at c, c+2 -> outputs o + 2j, o + 2j + 1, and again
//             64 bytes on for outputs o + 32 + ...
// Same flat layout and row phases as the vpdpwssd planes (FlatLayout), in
// bytes, with 64 bytes between phases (room for build_u8_plane's stores).
// Taken only when, besides vector_exact, sum x w shifted left by pre_shift
// cannot wrap int32 (u8_usable); the zero point's term then rides in the
// 64-bit rounding constant, where wrapping is harmless (the final sum is the
// exact one, which fits).

constexpr int64_t kBytes = 64;  // outputs per vpdpbusd block

struct U8Layout {
  int64_t s_w = 1, s_h = 1;
  int64_t q = 0, p = 0;    // output pitch, padded-row pitch (s_w * q)
  int64_t last_row = 0;    // last padded row any output reads
  int64_t phase_size = 0;  // bytes per row phase, with 64 to spare
  int64_t kwq = 0;         // weight quads per kernel row
  int64_t elems = 0;       // bytes, with every over-read of the last block
};

U8Layout u8_layout_of(const Geometry& g) {
  U8Layout l;
  l.s_w = g.stride_w, l.s_h = g.stride_h;
  l.kwq = (g.k_w + 3) / 4;
  const int64_t cols = (g.out_w - 1) * l.s_w + g.k_w;
  l.q = std::max(g.out_w, (cols + l.s_w - 1) / l.s_w);
  l.p = l.s_w * l.q;
  l.last_row = (g.out_h - 1) * l.s_h + (g.k_h - 1) * g.dil_h;
  l.phase_size = (l.last_row / l.s_h + 1) * l.p + kBytes;
  const int64_t blocks = (g.out_h * l.q + kBytes - 1) / kBytes;
  const int64_t max_row_off = (l.s_h - 1) * l.phase_size + (((g.k_h - 1) * g.dil_h) / l.s_h) * l.p;
  const int64_t max_acc_off = l.s_w == 1 ? 3 : kBytes + 2;
  l.elems = std::max(l.s_h * l.phase_size,
                     l.s_w * (blocks - 1) * kBytes + max_row_off + 4 * (l.kwq - 1) + max_acc_off + kBytes);
  return l;
}

// Whether the vpdpbusd planes can take this plane (see above).
bool u8_usable(const Geometry& g, const PlaneJob& job) { return g.stride_w <= 2 && g.dil_w == 1 && u8_plane_fits(job); }

// Rows are written in order (within a phase) with whole 64-byte stores
// (masked ones cost more here); what a row's last store writes past the
// row's end (right padding, the next row's left padding and start, or the
// gap after the phase) is set back to the zero point by one more store, and
// the next row overwrites its own part. Input is read whole-vector too,
// except where that would pass the end of the plane.
template <class T>
QTK_QDW_AVX512 void build_u8_plane(const Geometry& g, const U8Layout& l, const T* x, uint8_t xzp,
                                   uint8_t* __restrict buf) {
  // int8 codes + 128 = flipping the sign bit.
  const __m512i flip = _mm512_set1_epi8(std::is_signed_v<T> ? static_cast<char>(0x80) : 0);
  const __m512i pad = _mm512_set1_epi8(static_cast<char>(xzp));
  const int64_t r_hi = std::min(g.pad_top + g.in_h, l.last_row + 1);
  const int64_t c_lo = std::min(g.pad_left, l.p), c_hi = std::min(g.pad_left + g.in_w, l.p);
  const int64_t n = c_hi - c_lo;
  if (n <= 0) return;
  const __mmask64 tail = n % kBytes == 0 ? ~__mmask64{0} : (__mmask64{1} << (n % kBytes)) - 1;
  const int64_t full = (n - 1) / kBytes * kBytes;  // columns before the last (maybe partial) vector
  const auto* plane = reinterpret_cast<const uint8_t*>(x);
  const int64_t plane_end = g.in_h * g.in_w;
  // Padded row r lives in phase r % s_h at row r / s_h (stepped, not
  // divided: a 64-bit division per row cost 15% of a 56x56 plane).
  int64_t phase = g.pad_top % l.s_h, phase_row = g.pad_top / l.s_h;
  for (int64_t r = g.pad_top; r < r_hi; ++r, phase = phase + 1 == l.s_h ? 0 : phase + 1, phase_row += phase == 0) {
    uint8_t* dst = buf + phase * l.phase_size + phase_row * l.p + c_lo;
    const int64_t at = (r - g.pad_top) * g.in_w + (c_lo - g.pad_left);
    const uint8_t* src = plane + at;
    for (int64_t c = 0; c < full; c += kBytes)
      _mm512_storeu_si512(dst + c, _mm512_xor_si512(_mm512_loadu_si512(src + c), flip));
    const __m512i last = at + full + kBytes <= plane_end ? _mm512_loadu_si512(src + full)
                                                         : _mm512_maskz_loadu_epi8(tail, src + full);
    _mm512_storeu_si512(dst + full, _mm512_xor_si512(last, flip));
    _mm512_storeu_si512(dst + n, pad);
  }
}

template <int SW, int KH_, int KWQ_, bool kSigned>
QTK_QDW_AVX512 void planes_u8(const Geometry& g, const U8Layout& l, const uint8_t* __restrict buf,
                              const int64_t* __restrict row_off, const int32_t* __restrict quads, const Requant& rq,
                              uint8_t* __restrict codes, uint8_t* __restrict y) {
  // Byte offsets of the four accumulators' loads (see above).
  constexpr int64_t kOff1 = SW == 1 ? 1 : 2, kOff2 = SW == 1 ? 2 : kBytes, kOff3 = SW == 1 ? 3 : kBytes + 2;
  const int64_t kh_n = KH_ ? KH_ : g.k_h, kwq_n = KWQ_ ? KWQ_ : l.kwq;
  const int64_t out_w = g.out_w, out_h = g.out_h, q = l.q, total = out_h * q;
  const __m512i mult = rq.mult, round = rq.round, zp16 = rq.zp16;
  const __m128i pre = rq.pre, post = rq.post;
  const bool has_pre = rq.has_pre;
  const auto requant = [&](__m512i acc) QTK_QDW_AVX512 { return requant_lanes(acc, mult, round, pre, post, has_pre); };
  __m512i wl[kMaxPairs];
  const bool all_local = kh_n * kwq_n <= kMaxPairs;
  if (all_local)
    for (int64_t i = 0; i < kh_n * kwq_n; ++i) wl[i] = _mm512_set1_epi32(quads[i]);
  int64_t offs[KH_ ? KH_ : 1];
  if constexpr (KH_ != 0)
    for (int i = 0; i < KH_; ++i) offs[i] = row_off[i];
  const int64_t* ro = KH_ ? offs : row_off;
  // After packing, each 128-bit lane holds bytes r0[0..3] r1[0..3] r2[0..3]
  // r3[0..3] (r_k: accumulator k's four outputs there).
  //   stride 1: output 4i + k is r_k[i] -> a 4x4 byte transpose puts the
  //             lane's 16 outputs in order;
  //   stride 2: r0/r1 hold the lane's 8 outputs of the first 32 (even/odd),
  //             r2/r3 those of the second 32 -> interleave each half, then
  //             gather the halves' qwords (0 2 4 6 | 1 3 5 7).
  const __m512i shuffle =
      SW == 1 ? _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15))
              : _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15));
  const __m512i qword_order = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
  uint8_t* const dst = codes ? codes : y;
  const int64_t full_end = codes ? total : total / kBytes * kBytes;
  // Narrow rows (a block spans several): masked stores per row rather than
  // pack_rows, whose loads of just-stored codes stall on small planes.
  const bool narrow = codes != nullptr && q <= 32;
  int64_t row = 0;  // first output row the block touches (narrow)
  for (int64_t o = 0; o < total; o += kBytes) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
#pragma GCC unroll 8
    for (int64_t kh = 0; kh < kh_n; ++kh) {
      const uint8_t* src = buf + SW * o + ro[kh];
#pragma GCC unroll 8
      for (int64_t t = 0; t < kwq_n; ++t) {
        const int64_t i = kh * kwq_n + t;
        const __m512i w = all_local ? wl[i] : _mm512_set1_epi32(quads[i]);
        const uint8_t* at = src + 4 * t;
        a0 = _mm512_dpbusd_epi32(a0, _mm512_loadu_si512(at), w);
        a1 = _mm512_dpbusd_epi32(a1, _mm512_loadu_si512(at + kOff1), w);
        a2 = _mm512_dpbusd_epi32(a2, _mm512_loadu_si512(at + kOff2), w);
        a3 = _mm512_dpbusd_epi32(a3, _mm512_loadu_si512(at + kOff3), w);
      }
    }
    const __m512i v01 = _mm512_adds_epi16(_mm512_packs_epi32(requant(a0), requant(a1)), zp16);
    const __m512i v23 = _mm512_adds_epi16(_mm512_packs_epi32(requant(a2), requant(a3)), zp16);
    // Saturating narrowing: the reference's one clamp (see planes_flat).
    __m512i b = _mm512_shuffle_epi8(kSigned ? _mm512_packs_epi16(v01, v23) : _mm512_packus_epi16(v01, v23), shuffle);
    if constexpr (SW == 2) b = _mm512_permutexvar_epi64(qword_order, b);
    if (narrow) {
      // One masked store per output row the block covers: byte k is flat
      // output o + k, which in row rr goes to y[rr * out_w + (o + k - rr * q)]
      // (lanes before the row's start are masked off, so the base may lie
      // before it).
      while ((row + 1) * q <= o) ++row;
      for (int64_t rr = row, start = row * q; rr < out_h && start < o + kBytes; ++rr, start += q) {
        const int64_t lo = std::max(o, start) - o, hi = std::min(o + kBytes, start + out_w) - o;
        if (hi <= lo) continue;
        const __mmask64 m = _bzhi_u64(~uint64_t{0}, static_cast<unsigned>(hi)) & ~_bzhi_u64(~uint64_t{0}, static_cast<unsigned>(lo));
        _mm512_mask_storeu_epi8(reinterpret_cast<uint8_t*>(reinterpret_cast<uintptr_t>(y) + rr * out_w - start + o), m, b);
      }
    } else if (o < full_end) {
      _mm512_storeu_si512(dst + o, b);
    } else {
      _mm512_mask_storeu_epi8(dst + o, (__mmask64{1} << (total - o)) - 1, b);
    }
  }
  if (codes != nullptr && !narrow) pack_rows(codes, q, out_w, out_h, y);
}

QTK_QDW_AVX512 void run_plane_u8(const Geometry& g, const PlaneJob& job, PlaneScratch& ps) {
  const U8Layout l = u8_layout_of(g);
  const int32_t xzp = u8_zero_point(job);  // in the unsigned codes, [0, 255]
  uint8_t* buf = ps.get_bytes({4, l.p, l.phase_size, l.s_h, l.last_row, g.pad_top, g.pad_left, g.in_h, g.in_w, xzp},
                              static_cast<size_t>(l.elems), static_cast<uint8_t>(xzp));
  if (job.x_signed) build_u8_plane(g, l, static_cast<const int8_t*>(job.x), static_cast<uint8_t>(xzp), buf);
  else build_u8_plane(g, l, static_cast<const uint8_t*>(job.x), static_cast<uint8_t>(xzp), buf);
  Requant q;
  make_requant(*job.params, job.y_zero_point, q);
  q.round = _mm512_set1_epi64(static_cast<int64_t>(u8_plane_round(job)));  // the bias and the zero point's share
  int64_t small_off[16];
  std::vector<int64_t> large_off;
  int64_t* row_off = small_off;
  if (g.k_h > 16) {
    large_off.resize(static_cast<size_t>(g.k_h));
    row_off = large_off.data();
  }
  for (int64_t kh = 0; kh < g.k_h; ++kh) {
    const int64_t rows = kh * g.dil_h;
    row_off[kh] = (rows % l.s_h) * l.phase_size + (rows / l.s_h) * l.p;
  }
  auto* y = static_cast<uint8_t*>(job.y);
  uint8_t* codes = l.q == g.out_w
                       ? nullptr
                       : ps.codes_buf(static_cast<size_t>((g.out_h * l.q + kBytes - 1) / kBytes * kBytes + 64));
  const auto run = [&](auto sw_tag, auto signed_tag) QTK_QDW_AVX512 {
    constexpr int kSW = decltype(sw_tag)::value;
    constexpr bool kS = decltype(signed_tag)::value;
    const int32_t* wq = job.w_quads;
    if (g.k_h == 3 && g.k_w == 3) return planes_u8<kSW, 3, 1, kS>(g, l, buf, row_off, wq, q, codes, y);
    if (g.k_h == 5 && g.k_w == 5) return planes_u8<kSW, 5, 2, kS>(g, l, buf, row_off, wq, q, codes, y);
    return planes_u8<kSW, 0, 0, kS>(g, l, buf, row_off, wq, q, codes, y);
  };
  using S1 = std::integral_constant<int, 1>;
  using S2 = std::integral_constant<int, 2>;
  if (l.s_w == 1) {
    if (job.y_signed) run(S1{}, std::true_type{});
    else run(S1{}, std::false_type{});
  } else {
    if (job.y_signed) run(S2{}, std::true_type{});
    else run(S2{}, std::false_type{});
  }
}

}  // namespace

QTK_QDW_AVX512 void run_plane_avx512(const Geometry& g, const PlaneJob& job, PlaneScratch& ps) {
  if (g.dil_w != 1 || g.stride_w > 2) return run_plane_avx2(g, job, ps);
  if (u8_usable(g, job)) return run_plane_u8(g, job, ps);
  const FlatLayout l = flat_layout_of(g);
  int16_t* scratch = ps.get(flat_key(g, l), static_cast<size_t>(l.elems));
  if (job.x_signed) build_flat_plane(g, l, static_cast<const int8_t*>(job.x), job.x_zero_point, scratch);
  else build_flat_plane(g, l, static_cast<const uint8_t*>(job.x), job.x_zero_point, scratch);
  Requant q;
  make_requant(*job.params, job.y_zero_point, q);
  auto* y = static_cast<uint8_t*>(job.y);
  uint8_t* codes =
      l.q == g.out_w ? nullptr : ps.codes_buf(static_cast<size_t>((g.out_h * l.q + kLanes - 1) / kLanes * kLanes + 64));
  if (job.y_signed) run_flat<true>(g, l, scratch, job.w, q, codes, y);
  else run_flat<false>(g, l, scratch, job.w, q, codes, y);
}

#else  // not x86: never selected (avx512_supported() is false); keeps the link whole.

void run_plane_avx512(const Geometry& g, const PlaneJob& job, PlaneScratch& scratch) {
  run_plane_scalar(g, job, scratch);
}

#endif

}  // namespace qtk::rt::qdw
