// Channels-last path of the depthwise QLinearConv (AVX512F/BW/VL/VNNI), for
// small planes: MobileNetV2 on 28x28 inputs has 14x14, 7x7 and 4x4 planes,
// where the per-plane paths (qdepthwise_conv_avx512.cpp) spend more on each
// plane's set-up, and on vectors mostly empty along W, than on arithmetic.
// Here the 16 lanes of a vector are 16 channels of one image instead (one
// task: an image and a block of 16 channels):
//  1. the block's 16 input planes, flat, are regrouped (a 4x4 dword
//     transpose per 16 bytes of each plane) so that one 64-byte "group"
//     holds four consecutive bytes of every channel, lane c/4, dword c%4;
//     codes x, +128 for int8 (so unsigned);
//  2. per padded row and window start column, one "quad vector": lane c
//     holds channel c's four padded-row bytes at columns col..col+3 (two
//     groups, each dword shifted by the window's byte offset; bytes in the
//     padding set to the input zero point, so a padding tap adds xzp * w and
//     the correction in the rounding constant cancels it, as the reference
//     skips it -- the vpdpbusd planes' rule); one vpdpbusd of it with lane
//     c's weight quad (w[kh][4t..4t+3] - w_zp, zero past k_w) adds four taps
//     of 16 channels;
//  3. each output pixel sums k_h * ceil(k_w / 4) of them (exact int32, as in
//     the vpdpbusd planes), rescales per lane with the per-channel
//     multiplier, shifts and rounding constant (bias - xzp * sum w in it),
//     and four pixels' results narrow together to 8-bit codes, which a
//     transpose per 16 pixels puts back into the block's NCHW output planes.
// Results equal the reference bit for bit under the vpdpbusd planes'
// conditions, checked per conv by prepare_channels (else the per-plane paths
// run).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "runtime/kernels/x86/qdepthwise_conv_internal.h"

#if defined(__x86_64__) || defined(__i386__)
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the unused
// merge operand, which -Wmaybe-uninitialized reports (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#define QTK_QDW_X86 1
#endif

namespace qtk::rt::qdw {

bool prepare_channels(int64_t channels, int64_t k_h, int64_t k_w, const int32_t* quads, const uint8_t* quads_fit,
                      const int64_t* w_sum, const int64_t* w_abs, const ChannelParams* params, int32_t x_zero_point,
                      bool x_signed, ChannelsPrepared& out) {
  const int64_t kwq = (k_w + 3) / 4, kq = k_h * kwq;
  for (int64_t ch = 0; ch < channels; ++ch) {
    if (!quads_fit[ch] || !params[ch].vector_exact) return false;
    const int64_t bound = 255 * w_abs[ch];  // |sum x w| over u8 x
    if (bound > INT32_MAX || (bound << params[ch].pre_shift) > INT32_MAX) return false;
  }
  const int64_t blocks = (channels + kChannelBlock - 1) / kChannelBlock;
  out.kwq = kwq;
  out.blocks.assign(static_cast<size_t>(blocks), ChannelBlock{});
  out.quads.assign(static_cast<size_t>(blocks * kq * kChannelBlock), 0);
  // In the unsigned codes, [0, 255]: padding bytes hold it (a zero point
  // outside its type's range would wrap there; the per-plane paths take it).
  const int64_t xzp = static_cast<int64_t>(x_zero_point) + (x_signed ? 128 : 0);
  if (xzp < 0 || xzp > 255) return false;
  for (int64_t ch = 0; ch < channels; ++ch) {
    const int64_t b = ch / kChannelBlock, lane = ch % kChannelBlock;
    const ChannelParams& p = params[ch];
    ChannelBlock& blk = out.blocks[b];
    blk.mult[lane] = p.mult.multiplier;
    // (bias - xzp * sum w) << pre_shift, times the multiplier, plus half: in
    // uint64, wrapping as the vector sum does; the final sum is the exact
    // one, which fits (see run_plane_u8).
    const int64_t bias2 = static_cast<int64_t>(p.bias) - xzp * w_sum[ch];
    const uint64_t round = (static_cast<uint64_t>(bias2) << p.pre_shift) *
                               static_cast<uint64_t>(static_cast<int64_t>(p.mult.multiplier)) +
                           (uint64_t{1} << (p.shift - 1));
    (lane % 2 == 0 ? blk.round_even : blk.round_odd)[lane / 2] = static_cast<int64_t>(round);
    blk.pre[lane] = p.pre_shift;
    blk.post[lane] = p.shift - 32;
    blk.has_pre = blk.has_pre || p.pre_shift != 0;
    for (int64_t i = 0; i < kq; ++i) out.quads[(b * kq + i) * kChannelBlock + lane] = quads[ch * kq + i];
  }
  return true;
}

#ifdef QTK_QDW_X86

#define QTK_QDW_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,bmi2")))

namespace {

// Per 128-bit lane, position 4b + a takes 4a + b (a 4x4 transpose of bytes in
// dwords).
QTK_QDW_AVX512 inline __m512i swap4_bytes() {
  return _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
}

// The block's 16 input planes, flat, as "dword groups": group G (64 bytes)
// holds in lane c/4, dword c%4 channel c's bytes 4G..4G+3 (codes x, +128 for
// int8). Per 16 bytes of the planes one 16x16 transpose, which for this
// layout is only a 4x4 dword transpose across registers: with r[a] lane b =
// channel 4b + a, dword d of every lane is bytes 4d..4d+3, and the unpacks
// move (reg a, dword d) to (reg d, dword a). `groups` gets ceil(hw / 16) * 4
// groups; bytes past the planes are don't-cares (masked by the caller).
QTK_QDW_AVX512 void build_groups(const Geometry& g, const uint8_t* x, int64_t nch, bool x_signed,
                                 uint8_t* __restrict groups) {
  const int64_t hw = g.in_h * g.in_w;
  const __m512i flip = _mm512_set1_epi8(x_signed ? static_cast<char>(0x80) : 0);
  // Row (channel) pointers; channels past the block's last repeat it (their
  // lanes are never stored).
  const uint8_t* src[kChannelBlock];
  for (int64_t c = 0; c < kChannelBlock; ++c) src[c] = x + std::min(c, nch - 1) * hw;
  for (int64_t p0 = 0; p0 < hw; p0 += 16) {
    __m512i r[4];
    if (p0 + 16 <= hw) {
      for (int a = 0; a < 4; ++a) {
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src[a] + p0)));
        v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[4 + a] + p0)), 1);
        v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[8 + a] + p0)), 2);
        r[a] = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[12 + a] + p0)), 3);
      }
    } else {  // the last bytes of the planes: no reads past them
      const __mmask16 m = static_cast<__mmask16>((1u << (hw - p0)) - 1);
      for (int a = 0; a < 4; ++a) {
        __m512i v = _mm512_castsi128_si512(_mm_maskz_loadu_epi8(m, src[a] + p0));
        v = _mm512_inserti32x4(v, _mm_maskz_loadu_epi8(m, src[4 + a] + p0), 1);
        v = _mm512_inserti32x4(v, _mm_maskz_loadu_epi8(m, src[8 + a] + p0), 2);
        r[a] = _mm512_inserti32x4(v, _mm_maskz_loadu_epi8(m, src[12 + a] + p0), 3);
      }
    }
    const __m512i t0 = _mm512_unpacklo_epi32(r[0], r[1]), t1 = _mm512_unpackhi_epi32(r[0], r[1]);
    const __m512i t2 = _mm512_unpacklo_epi32(r[2], r[3]), t3 = _mm512_unpackhi_epi32(r[2], r[3]);
    uint8_t* dst = groups + p0 * 16;
    _mm512_storeu_si512(dst, _mm512_xor_si512(_mm512_unpacklo_epi64(t0, t2), flip));
    _mm512_storeu_si512(dst + 64, _mm512_xor_si512(_mm512_unpackhi_epi64(t0, t2), flip));
    _mm512_storeu_si512(dst + 128, _mm512_xor_si512(_mm512_unpacklo_epi64(t1, t3), flip));
    _mm512_storeu_si512(dst + 192, _mm512_xor_si512(_mm512_unpackhi_epi64(t1, t3), flip));
  }
}

constexpr int kMaxQuads = 25;  // weight quads kept in registers

// Output pixels of one block: KH_ / KWQ_ compile-time for the common kernels
// (0 = run time). `qv`: quad vectors, [rows][jn], window start column
// j * SW. Four pixels at a time, so that their codes narrow together: after
// the packs, `codes` gets per four pixels (flat order) one vector whose lane u,
// dword k holds pixel k's channels 4u..4u+3 (the order unpack_codes takes).
template <int SW, int KH_, int KWQ_, bool kSigned>
QTK_QDW_AVX512 void block_outputs(const Geometry& g, int64_t jn, const uint8_t* __restrict qv,
                                  const int32_t* __restrict wq, const ChannelBlock& blk, int32_t y_zp,
                                  uint8_t* __restrict codes) {
  const int64_t kh_n = KH_ ? KH_ : g.k_h, kwq_n = KWQ_ ? KWQ_ : (g.k_w + 3) / 4;
  const int64_t nq = kh_n * kwq_n;
  __m512i wl[kMaxQuads];
  const bool all_local = nq <= kMaxQuads;
  if (all_local)
    for (int64_t i = 0; i < nq; ++i) wl[i] = _mm512_loadu_si512(wq + i * kChannelBlock);
  const __m512i mult = _mm512_loadu_si512(blk.mult), mult_odd = _mm512_srli_epi64(mult, 32);
  const __m512i round_e = _mm512_loadu_si512(blk.round_even), round_o = _mm512_loadu_si512(blk.round_odd);
  const __m512i pre = _mm512_loadu_si512(blk.pre), post = _mm512_loadu_si512(blk.post);
  const bool has_pre = blk.has_pre;
  const __m512i zp16 = _mm512_set1_epi16(static_cast<int16_t>(y_zp));
  // Bytes between the quad rows of successive kernel rows / output rows.
  const int64_t row_step = g.dil_h * jn * 64, oh_step = g.stride_h * jn * 64;
  const int64_t total = g.out_h * g.out_w;
  const auto pixel = [&](const uint8_t* at) QTK_QDW_AVX512 {
    __m512i acc = _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int64_t kh = 0; kh < kh_n; ++kh) {
#pragma GCC unroll 8
      for (int64_t t = 0; t < kwq_n; ++t) {
        const int64_t i = kh * kwq_n + t;
        const __m512i w = all_local ? wl[i] : _mm512_loadu_si512(wq + i * kChannelBlock);
        // Quad t starts 4t columns on: 4t / SW quad vectors.
        acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(at + kh * row_step + (4 * t / SW) * 64), w);
      }
    }
    if (has_pre) acc = _mm512_sllv_epi32(acc, pre);
    const __m512i pe = _mm512_add_epi64(_mm512_mul_epi32(acc, mult), round_e);
    const __m512i po = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(acc, 32), mult_odd), round_o);
    return _mm512_srav_epi32(_mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(pe, 32), po), post);
  };
  // Window of the next pixel (flat order); past the last pixel the last one
  // again (its codes land in slots nobody reads).
  int64_t oh = 0, ow = 0;
  const auto next = [&]() {
    const uint8_t* at = qv + oh * oh_step + ow * 64;
    if (++ow == g.out_w) {
      ow = 0;
      if (oh + 1 < g.out_h) ++oh;
      else ow = g.out_w - 1;
    }
    return at;
  };
  for (int64_t p = 0; p < total; p += 4) {
    const __m512i r0 = pixel(next()), r1 = pixel(next()), r2 = pixel(next()), r3 = pixel(next());
    // Saturating narrowing: int16 (packs), + zero point saturating, then 8
    // bits: the reference's one clamp (see planes_flat).
    const __m512i v01 = _mm512_adds_epi16(_mm512_packs_epi32(r0, r1), zp16);
    const __m512i v23 = _mm512_adds_epi16(_mm512_packs_epi32(r2, r3), zp16);
    _mm512_storeu_si512(codes + p * 16, kSigned ? _mm512_packs_epi16(v01, v23) : _mm512_packus_epi16(v01, v23));
  }
}

// 16 pixels' codes as block_outputs leaves them (v[m] lane u, dword k, byte
// v: pixel 4m + k, channel 4u + v) to v[u] lane v = channel 4u + v's 16
// pixels: bytes within dwords (dword k, byte v -> dword v, byte k), dwords
// across registers (reg m <-> dword), then 128-bit lanes across registers.
QTK_QDW_AVX512 inline void unpack_codes(__m512i r[4], __m512i bytes_ctl) {
  for (int m = 0; m < 4; ++m) r[m] = _mm512_shuffle_epi8(r[m], bytes_ctl);
  const __m512i t0 = _mm512_unpacklo_epi32(r[0], r[1]), t1 = _mm512_unpackhi_epi32(r[0], r[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(r[2], r[3]), t3 = _mm512_unpackhi_epi32(r[2], r[3]);
  const __m512i a0 = _mm512_unpacklo_epi64(t0, t2), a1 = _mm512_unpackhi_epi64(t0, t2);
  const __m512i a2 = _mm512_unpacklo_epi64(t1, t3), a3 = _mm512_unpackhi_epi64(t1, t3);
  // a[v] lane u -> r[u] lane v.
  const __m512i x0 = _mm512_shuffle_i64x2(a0, a1, 0x44), x1 = _mm512_shuffle_i64x2(a0, a1, 0xEE);
  const __m512i x2 = _mm512_shuffle_i64x2(a2, a3, 0x44), x3 = _mm512_shuffle_i64x2(a2, a3, 0xEE);
  r[0] = _mm512_shuffle_i64x2(x0, x2, 0x88), r[1] = _mm512_shuffle_i64x2(x0, x2, 0xDD);
  r[2] = _mm512_shuffle_i64x2(x1, x3, 0x88), r[3] = _mm512_shuffle_i64x2(x1, x3, 0xDD);
}

}  // namespace

QTK_QDW_AVX512 void run_channels_avx512(const ChannelsJob& job, const uint8_t* x, uint8_t* y, int64_t block,
                                        PlaneScratch& ps) {
  const Geometry& g = *job.g;
  const ChannelsPrepared& prep = *job.prep;
  const int64_t c0 = block * kChannelBlock, nch = std::min(kChannelBlock, job.channels - c0);
  const int64_t kwq = prep.kwq, sw = g.stride_w;
  // Padded rows any output reads; window start columns j * s_w, j < jn
  // (each window's quads at 4t columns on).
  const int64_t rows = (g.out_h - 1) * g.stride_h + (g.k_h - 1) * g.dil_h + 1;
  const int64_t jn = g.out_w + (4 * (kwq - 1)) / sw;
  const int64_t hw = g.in_h * g.in_w, out_plane = g.out_h * g.out_w, groups_out = (out_plane + 15) / 16;
  // Flat byte f of the planes sits at byte 4 * lead + f of `flat` (lead
  // groups before it, so that windows starting in the left padding of the
  // first row read inside the buffer), and windows reach 4 * kwq + 3 bytes
  // past the last row's start plus the row; `tail` groups cover them.
  const int64_t lead = (g.pad_left + 3) / 4 + 1;
  const int64_t flat_groups = lead + (hw + 15) / 16 * 4 + ((jn - 1) * sw + 4 * kwq) / 4 + 2;
  const size_t q_bytes = static_cast<size_t>(rows * jn * 64), flat_bytes = static_cast<size_t>(flat_groups * 64);
  uint8_t* qv = ps.wide_buf(q_bytes + flat_bytes + static_cast<size_t>(groups_out * 256));
  uint8_t* flat = qv + q_bytes;
  uint8_t* codes = flat + flat_bytes;
  build_groups(g, x + c0 * hw, nch, job.x_signed, flat + lead * 64);

  // Quad vector (r, j): lane c holds channel c's padded-row bytes at columns
  // col..col+3 (col = j * s_w) -- flat bytes f..f+3, f = ih * in_w + col -
  // pad_left, from groups f/4 and f/4 + 1 shifted by f%4 bytes per dword
  // (the shifts take counts of 32 as zero); bytes in the padding (left or
  // right of the row, or rows outside the plane) are the zero point.
  const uint8_t xzp = static_cast<uint8_t>(job.x_zero_point + (job.x_signed ? 128 : 0));
  const __m512i zpv = _mm512_set1_epi8(static_cast<char>(xzp));
  // Per window start: which bytes (e of each dword: column col + e) lie in
  // the row, as a blend mask; all ones for windows inside it.
  uint64_t* masks = ps.masks_buf(static_cast<size_t>(jn));
  for (int64_t j = 0; j < jn; ++j) {
    const int64_t col = j * sw, first = g.pad_left - col, last = g.pad_left + g.in_w - col;  // valid e in [first, last)
    uint64_t pat = 0;
    for (int64_t e = 0; e < 4; ++e) pat |= (e >= first && e < last) ? uint64_t{1} << e : 0;
    masks[j] = pat * 0x1111111111111111ull;
  }
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* dst = qv + r * jn * 64;
    const int64_t ih = r - g.pad_top;
    if (ih < 0 || ih >= g.in_h) {
      for (int64_t j = 0; j < jn; ++j) _mm512_storeu_si512(dst + j * 64, zpv);
      continue;
    }
    const int64_t f0 = 4 * lead + ih * g.in_w - g.pad_left;
    // Bytes outside the row: the zero point.
    const auto emit = [&](int64_t j, __m512i q) QTK_QDW_AVX512 {
      if (masks[j] != ~uint64_t{0}) q = _mm512_mask_blend_epi8(masks[j], zpv, q);
      _mm512_storeu_si512(dst + j * 64, q);
    };
    if (sw == 1) {
      // Windows f0 + j: the ones starting in one group take its shifts in
      // turn (immediate counts).
      for (int64_t j = 0; j < jn;) {
        const int64_t f = f0 + j, gi = f >> 2;
        const __m512i lo = _mm512_loadu_si512(flat + gi * 64), hi = _mm512_loadu_si512(flat + gi * 64 + 64);
        switch (f & 3) {
          case 0:
            emit(j, lo);
            if (++j == jn) break;
            [[fallthrough]];
          case 1:
            emit(j, _mm512_or_si512(_mm512_srli_epi32(lo, 8), _mm512_slli_epi32(hi, 24)));
            if (++j == jn) break;
            [[fallthrough]];
          case 2:
            emit(j, _mm512_or_si512(_mm512_srli_epi32(lo, 16), _mm512_slli_epi32(hi, 16)));
            if (++j == jn) break;
            [[fallthrough]];
          default:
            emit(j, _mm512_or_si512(_mm512_srli_epi32(lo, 24), _mm512_slli_epi32(hi, 8)));
            ++j;
        }
      }
      continue;
    }
    for (int64_t j = 0; j < jn; ++j) {
      const int64_t f = f0 + j * sw, gi = f >> 2;
      const int shift = static_cast<int>(f & 3) * 8;
      const __m512i lo = _mm512_loadu_si512(flat + gi * 64), hi = _mm512_loadu_si512(flat + gi * 64 + 64);
      emit(j, _mm512_or_si512(_mm512_srl_epi32(lo, _mm_cvtsi32_si128(shift)),
                              _mm512_sll_epi32(hi, _mm_cvtsi32_si128(32 - shift))));
    }
  }

  const int32_t* wq = prep.quads.data() + block * g.k_h * kwq * kChannelBlock;
  const ChannelBlock& blk = prep.blocks[block];
  const auto run = [&](auto sw_tag, auto signed_tag) QTK_QDW_AVX512 {
    constexpr int kSW = decltype(sw_tag)::value;
    constexpr bool kS = decltype(signed_tag)::value;
    if (g.k_h == 3 && g.k_w == 3) return block_outputs<kSW, 3, 1, kS>(g, jn, qv, wq, blk, job.y_zero_point, codes);
    if (g.k_h == 5 && g.k_w == 5) return block_outputs<kSW, 5, 2, kS>(g, jn, qv, wq, blk, job.y_zero_point, codes);
    return block_outputs<kSW, 0, 0, kS>(g, jn, qv, wq, blk, job.y_zero_point, codes);
  };
  using S1 = std::integral_constant<int, 1>;
  using S2 = std::integral_constant<int, 2>;
  if (sw == 1) {
    if (job.y_signed) run(S1{}, std::true_type{});
    else run(S1{}, std::false_type{});
  } else {
    if (job.y_signed) run(S2{}, std::true_type{});
    else run(S2{}, std::false_type{});
  }

  // Codes back to NCHW: per group of 16 output pixels, a transpose gives
  // 16 pixels of each channel.
  const __m512i bytes_ctl = swap4_bytes();
  uint8_t* yb = y + c0 * out_plane;
  for (int64_t gi = 0; gi < groups_out; ++gi) {
    const int64_t p0 = gi * 16, n = std::min<int64_t>(16, out_plane - p0);
    const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
    __m512i r[4];
    for (int a = 0; a < 4; ++a) r[a] = _mm512_loadu_si512(codes + gi * 256 + a * 64);
    unpack_codes(r, bytes_ctl);
    // r[a] lane b: channel 4a + b's 16 pixels.
    for (int64_t c = 0; c < nch; ++c) {
      const __m512i v = r[c / 4];
      __m128i lane;
      switch (c % 4) {
        case 0: lane = _mm512_castsi512_si128(v); break;
        case 1: lane = _mm512_extracti32x4_epi32(v, 1); break;
        case 2: lane = _mm512_extracti32x4_epi32(v, 2); break;
        default: lane = _mm512_extracti32x4_epi32(v, 3); break;
      }
      _mm_mask_storeu_epi8(yb + c * out_plane + p0, m, lane);
    }
  }
}

#else  // not x86: never selected (avx512_supported() is false); keeps the link whole.

void run_channels_avx512(const ChannelsJob&, const uint8_t*, uint8_t*, int64_t, PlaneScratch&) { std::abort(); }

#endif

}  // namespace qtk::rt::qdw
