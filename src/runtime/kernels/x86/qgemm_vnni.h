// The AVX-512 VNNI tier of the int8 GEMM (qgemm.h), for CPUs that have it
// (AMD Zen 4/5, Intel Ice Lake and later): vpdpbusd multiplies 4 unsigned by
// 4 signed bytes and adds the 4 products to an int32 lane — exactly (no
// int16 intermediate, unlike vpmaddubsw), 64 multiply-adds per instruction.
//
// Operands are the raw 8-bit codes, made unsigned (u8 as is, s8 + 128) on one
// side and signed (s8 as is, u8 - 128) on the other; zero points z'
// shifted alike. The zero points then come out of the sums exactly:
//   Σ_k (a' - za')(b' - zb'[n]) = Σ a'b' - za'·Σ_k b'[n] - zb'[n]·Σ_k a' + K·za'·zb'[n]
// with the column sums of the constant operand computed once and the other
// sums per call (only when some zb' != 0). Layouts: k in quads (zero-padded);
//   B quads: panel p (16 columns), quad q: 64 bytes, column j at 4j..4j+3;
//   A words: tile t (16 rows), quad q: 16 words of 4 bytes, row i at word i.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/kernels/x86/qgemm.h"
#include "runtime/kernels/x86/qgemm_conv.h"

namespace qtk::rt::x86 {

namespace detail {

// Added to the sums before they leave the micro-kernel (any may be null):
//   acc[i][j] += row_const[i] + col_const[j] - row_scale[i] * col_vec[j].
struct VnniFix {
  const int32_t* row_const = nullptr;
  const int32_t* col_const = nullptr;
  const int32_t* row_scale = nullptr;
  const int32_t* col_vec = nullptr;
  // Lanes kept, moved to the front of each acc row in order (vpcompressd):
  // the direct conv drops the columns past a row's end this way.
  uint16_t keep_lanes = 0xFFFF;
};

// acc[i * 16 + j] = Σ_q dot4(a[q * 16 + i], b[q * 64 + 4j ...]) + fix, i < rows <= 16.
// signed_words: A's words hold the signed bytes (conv weights) and B the
// unsigned ones; else the other way round (GEMM: activations unsigned).
void qgemm_vnni_ukernel(int rows, int64_t kquads, const uint32_t* a, const uint8_t* b, bool signed_words,
                        const VnniFix& fix, int32_t* acc);

// The same on a conv's quad image (below) without panels: quad q of the 16
// pixels is the 64 bytes at base + tap[q]; A's words are signed.
void qconv_vnni_ukernel_taps(int rows, int64_t kquads, const uint32_t* a, const uint8_t* base, const int64_t* tap,
                             const VnniFix& fix, int32_t* acc);

// Up to kQconvMaxPanels panels at once: panel j's quad q at base + tap[q] +
// 64·j; rows <= kQconvPanelRows (a: the first row's words, 16 apart per quad
// as in a tile); fix[j] and acc[j] per panel, the fixes with only row_const
// (fix[0]'s, for all) and keep_lanes. (Three panels of 8 rows ran 35%
// slower than two on resnet20: 24 sums and 3 panels overflow the registers.)
inline constexpr int kQconvPanelRows = 8, kQconvMaxPanels = 2;
void qconv_vnni_ukernel_taps_panels(int panels, int rows, int64_t kquads, const uint32_t* a, const uint8_t* base,
                                    const int64_t* tap, const VnniFix* fix, int32_t* const* acc);

// qgemm_epilogue_avx2 on 16-lane registers (identical results).
void qgemm_epilogue_avx512(const int32_t* acc, int mr, int nr, int64_t m0, int64_t n0, const QgemmOutput& out);

// Where a conv panel's 16 lanes go when its pixels come from several images
// or output rows (qconv_vnni_images): run r's lanes (the bits of mask[r]) of
// output row m are stored at out.out + m·ldo + offset[r] + lane, offsets in
// elements from image 0's start. The runs' lanes are disjoint.
struct QconvLaneRuns {
  static constexpr int kMax = 3;
  int count = 0;
  uint16_t mask[kMax] = {};
  int64_t offset[kMax] = {};
};
// qgemm_epilogue_avx512 into those runs, for code output by row (convs) with
// a per-row bias (bias_cs 0) or none.
void qconv_epilogue_runs_avx512(const int32_t* acc, int mr, int64_t m0, const QconvLaneRuns& runs,
                                const QgemmOutput& out);

// Rows [m0, m0 + rows) of A as one tile of unsigned words (a' = a or a + 128);
// row_sum[i] = Σ_k a' when row_sum is not null.
void qgemm_vnni_pack_a_tile(const QgemmCodes& a, int64_t m0, int rows, int64_t k, uint32_t* tile,
                            int32_t* row_sum);

// qgemm() on this tier.
void qgemm_vnni(int64_t m, const QgemmCodes& a, int32_t a_zero_point, const QgemmPackedB& b, const QgemmOutput& out,
                ThreadPool* pool);

// The VNNI tier's copy of one image's group of channels (qgemm_conv.h):
// byte (((phase * c4 + cq) * hph + r) * wph + col) * 4 + t holds channel
// 4cq + t at phase-image row r, column col (qgemm_conv.h's phase split) as an
// unsigned code x' (x, or x + 128 for int8). Pads, and channels past the
// group's, hold the zero point zx' so that they add nothing; `front` bytes of
// slack come first. With stride_w = 1, rows are only as wide as the input
// plus the larger side pad (and at least the output): a window past a row's
// end reads the next row's left pads, which hold zx' as the right pads would.
// Then the 16 pixels at phase-image offset o are 64 contiguous bytes for any
// tap: the direct path computes "virtual" pixels o = oh * wph + ow and drops
// the columns ow >= out_w.
struct QconvQuadImage {
  static constexpr int64_t front = 64;
  int64_t hph = 0, wph = 0, c4 = 0, phases = 1, bytes = 0;
  // Phases no tap reads (bit p: phase p, p < 64): left at the zero point,
  // not filled from the input (a 1x1 stride-2 conv reads one of its four).
  uint64_t unread_phases = 0;
};
// clear = false: the caller has set all of l.bytes from dst on (pads, the
// planes of unread phases, the slack) to the zero point, as qconv_vnni_images
// does for a buffer holding several images side by side.
void qconv_fill_quad_image(const QconvGeometry& g, const QconvQuadImage& l, const uint8_t* x, int64_t channels,
                           bool x_signed, uint8_t zero_point_u8, uint8_t* dst, bool clear = true);
// The direct conv path (no weight zero points) with several images side by
// side in each row of the quad image, on small planes where that uses more
// of each panel's lanes (qgemm_conv_vnni_images.cpp); `single` is one
// image's layout and row_const has the bias folded in when it could be.
// false: not taken (geometry, output kind, or no gain), nothing done.
bool qconv_vnni_images(const QconvGeometry& g, const QconvQuadImage& single, const uint8_t* xb, bool x_signed,
                       uint8_t zx, const std::vector<QgemmQuadA>& groups, const std::vector<int32_t>& row_const,
                       const QgemmOutput& out, ThreadPool* pool);

// The direct conv path for one group, no dilation and input planes stride
// times the output's (stride 1 or 2; stride 1: "same" convs) on a copy
// without pads: every lane an output pixel, the pads' terms added back per
// lane class (qgemm_conv_vnni_dense.cpp); row_const has the bias folded in
// when it could be. false: not taken (geometry, output kind, or no lanes
// saved), nothing done.
bool qconv_vnni_dense(const QconvGeometry& g, const uint8_t* xb, bool x_signed, uint8_t zx,
                      const std::vector<QgemmQuadA>& groups, const std::vector<int32_t>& row_const,
                      const QgemmOutput& out, ThreadPool* pool);
// How many calls qconv_vnni_dense has taken in this process (for tests).
uint64_t qconv_vnni_dense_taken();

// Tap quad q's byte offset in that copy (k = (kh, kw, channel quad)); sets
// l.unread_phases.
std::vector<int64_t> qconv_quad_taps(const QconvGeometry& g, QconvQuadImage& l);

// Single-channel convs with stride 1 and no dilation read a different copy:
// pixel i (o = i, in the layout above with c4 = 1, phases = 1) holds the 4
// padded pixels i .. i + 3 of its row, so quad (kh, j) of output pixel o is
// at o + kh·wph + 4j: kquads = KH·ceil(KW/4) instead of KH·KW. Fills pixels
// [0, (bytes - front) / 4), a multiple of 16; `scratch` takes the padded
// plane, (bytes - front) / 4 + 64 bytes.
void qconv_fill_tap_quad_image(const QconvGeometry& g, const QconvQuadImage& l, const uint8_t* x, bool x_signed,
                               uint8_t zero_point_u8, uint8_t* scratch, uint8_t* dst);

// One 16-pixel panel of that copy: quad q, lane j = the 4 bytes at
// src + tap[q] + lane_offset[j]; runs of lanes with consecutive pixels are
// read with one masked load each; lanes >= `lanes` are zero.
struct QconvQuadPanel {
  const uint8_t* src = nullptr;
  const int64_t* tap = nullptr;
  int64_t kquads = 0;
  int lanes = 16, runs = 0;
  int run_start[17] = {};
  int64_t lane_offset[16] = {};
};
// panel: kquads * 64 bytes; col_sum (if not null): Σ_q of each lane's 4 bytes.
void qconv_pack_panel_quad_image(const QconvQuadPanel& s, uint8_t* panel, int32_t* col_sum);

}  // namespace detail

}  // namespace qtk::rt::x86
