// The AVX2 tier's exact u8 x s8 convolution (qgemm_conv.h), for weights
// whose k pairs fit vpmaddubsw.
//
// vpmaddubsw multiplies u8 by s8 bytes and sums adjacent pairs into a
// saturating int16: with x in [0, 255] the sum x0·w0 + x1·w1 is exact when
// |w0| + |w1| <= 128 (255·128 = 32640 <= 32767): 7-bit weights
// ([-64, 63]), 4-bit weights stored as int8, or any layer whose pairs happen
// to fit. vpmaddwd by ones then adds pairs of pairs into int32 (k quads,
// what vpdpbusd does on the VNNI tier), 3 vector ops per 32 multiply-adds
// where the int16 scheme (qgemm.h) needs 4.
//
// Such weights (int8, zero point 0, every pair within the bound, checked at
// packing over the pairs as packed) are held as 8-bit k quads in MR-row tiles
// (QgemmNarrowA::quads, the same bytes as the pair tiles), and the pixels
// are packed as raw u8 codes, 4 k per pixel: 16-pixel panels of 64 bytes per
// quad. The activations' zero point comes out exactly afterwards:
//   Σ_k w·(x - zp) = Σ_k w·x_u - zp_u·Σ_k w
// with x_u = x (uint8) or x ^ 0x80 = x + 128 (int8) and zp_u likewise; the
// pads of the phase images hold the zero point's code, so they add nothing.
// The int32 accumulator tile is the int16 path's (wrapping the same way),
// and the same output stage writes it.
//
// Convs with channels per group in fours and several taps take k in (tap,
// channel) order where the pairs fit so (QconvWeights::tap_major): a quad is
// then 4 channels of one tap, so the input is interleaved 4 channels per
// pixel once per image (the quad image, QconvLayout::quad_offset) and each
// panel is a copy of it, not a transpose of 4 k rows per tap.
//
// QTK_QGEMM_NO_U8S8=1 packs the pair tiles whatever the weights (the int16
// path, for comparisons).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/kernels/x86/qgemm.h"
#include "runtime/kernels/x86/qgemm_conv.h"

namespace qtk::rt::x86::detail {

// The largest |w0| + |w1| of a k pair that vpmaddubsw sums exactly.
inline constexpr int32_t kQconvU8s8PairBound = 128;

// Whether every k pair (2j, 2j + 1) of every row of w (rows x k int8 codes;
// an odd k's last pair is padded with 0) satisfies the pair bound.
bool qconv_u8s8_pairs_fit(const QgemmCodes& w, int64_t rows, int64_t k);
// Whether qconv_pack_weights holds w (rows x k codes, zero points: 1 or
// rows values) as k quads: the CPU has AVX2, QTK_QGEMM_NO_U8S8 is not set,
// the codes are int8 with zero point 0 and the pairs fit.
bool qconv_u8s8_wanted(const QgemmCodes& w, int64_t rows, int64_t k, const std::vector<int32_t>& zero_points);
// rows x k int8 codes (zero point 0) as QgemmNarrowA's quad tiles, with
// their row sums.
void qconv_pack_u8s8_a(const QgemmCodes& w, int64_t rows, int64_t k, QgemmNarrowA& out);

// qconv on the u8 x s8 path: every group of w.narrow() in quads, AVX2.
void qconv_u8s8(const QconvGeometry& g, const void* x, bool x_signed, int32_t x_zero_point, const QconvWeights& w,
                const QgemmOutput& out, ThreadPool* pool);

// A 16-pixel panel as u8 quads: quad q is 64 bytes, pixel j's codes of
// k = 4q..4q+3 at 4j.. (xor `flip`: 0x80 turns int8 codes into u8 ones);
// k past s.k and the lanes past s.lanes hold anything (their weights are 0,
// their columns unused). s.zero_point is not read.
void qconv_pack_panel_u8_scalar(const QconvPanelSource& s, uint8_t flip, uint8_t* panel);
void qconv_pack_panel_u8_avx2(const QconvPanelSource& s, uint8_t flip, uint8_t* panel);
// The quad image (QconvLayout::quad_offset) of phase images `planes` (the
// first plane's byte; groups4 * 4 planes of `plane` bytes, each readable 15
// bytes past its end): planes 4g .. 4g + 3 interleaved per pixel into
// dst + kQconvQuadFront + g * plane * 4, xor `flip`. Writes up to 60 bytes
// past the last group (the layout's slack).
void qconv_interleave_quads_avx2(const uint8_t* planes, int64_t groups4, int64_t plane, uint8_t flip, uint8_t* dst);
// The same quad image made from the input itself for stride-1 convs (one
// phase; no phase image first): x is the group's first channel plane, pads
// hold pad_u8 (the zero point's u8 code), codes are xor `flip`. Only padded
// rows `rows` of each plane are written (qgemm_conv.h).
void qconv_fill_quad_image_s1_avx2(const QconvGeometry& g, const QconvLayout& l, const uint8_t* x, uint8_t flip,
                                   uint8_t pad_u8, uint8_t* dst, QconvImageRows rows = {});

// acc[i * NR + j] = Σ_q Σ_b a[q·4MR + 4i + b] (s8) · panel[q·64 + 4j + b] (u8)
// - corr[i], for i < rows <= MR (int32, wrapping; 5 rows run the 6-row kernel and
// write all MR rows of acc: the tile's pad rows are 0). a: one quad tile, panel:
// 32-byte aligned.
void qconv_ukernel_u8s8_avx2(int rows, int64_t kquads, const uint8_t* a, const uint8_t* panel, const int32_t* corr,
                             int32_t* acc);
// The same for a panel of nr <= kQconvFewLanes pixels (the last of an image
// whose pixels are not a multiple of 16): acc[i * NR + j] for i < rows, j < nr
// only. Reads 8 bytes past the tile (QgemmNarrowA's slack).
inline constexpr int kQconvFewLanes = 8;
void qconv_ukernel_u8s8_few_avx2(int rows, int nr, int64_t kquads, const uint8_t* a, const uint8_t* panel,
                                 const int32_t* corr, int32_t* acc);

}  // namespace qtk::rt::x86::detail
