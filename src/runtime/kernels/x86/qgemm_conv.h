// Exact int8 2-D convolution on the int8 GEMM (qgemm.h), NCHW in and out:
// per image and group, Y_g[OC_g, P] = W_g[OC_g, K] · col[K, P] with
// K = C_g·KH·KW (k = (c, kh, kw), the ONNX weight order) and P = OH·OW.
//
// Weights are the A operand, packed once into MR-row tiles (on the AVX2 and
// scalar tiers as 8-bit codes, widened minus their zero points a chunk of
// tiles at a time); the column matrix is the B operand, built per call in
// 16-pixel panels straight from the image — so output rows are output
// channels and each tile row is 16 contiguous NCHW pixels (vector stores).
//
// Panels read a zero-padded, stride-phase-split copy of the image: for
// stride s, the padded image is split into s_h·s_w phase images
// (phase (ph, pw) holds padded rows ph, ph+s_h, ...), so that pixel (oh, ow)
// and tap (kh, kw) read phase ((kh·d_h) % s_h, (kw·d_w) % s_w) at row
// oh + (kh·d_h)/s_h, column ow + (kw·d_w)/s_w: tap offset + pixel offset,
// contiguous along ow whatever the stride or dilation. A 16-pixel panel is
// then one 16-byte load per k (two or more, blended, where it wraps an output
// row). Pad positions hold the input zero point, which becomes 0 when it is
// subtracted while converting to int16. 1x1 stride-1 unpadded convs read the
// input directly.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "runtime/kernels/x86/qgemm.h"

namespace qtk::rt::x86 {

struct QconvGeometry {
  int64_t batch = 0, in_c = 0, in_h = 0, in_w = 0;
  int64_t out_c = 0, out_h = 0, out_w = 0;
  int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, dilation_h = 1, dilation_w = 1;
  int64_t pad_top = 0, pad_left = 0;  // the end pads follow from the output size
  int64_t group = 1;
  bool operator==(const QconvGeometry&) const = default;
};

// Weights [OC, C/group, KH, KW] and their zero points (one, or one per
// output channel), one packed A per group.
//
// The AVX2 and scalar tiers hold them as 8-bit codes in MR-row tiles
// (QgemmNarrowA) and widen a few tiles at a time to the int16 pairs the
// micro-kernel reads, right before it reads them. Where the CPU has AVX2,
// int8 weights with zero point 0 whose k pairs all fit vpmaddubsw
// (|w0| + |w1| <= 128: 7-bit or 4-bit weights) are held as k quads in the
// same bytes instead and run the AVX2 tier's u8 x s8 kernel
// (qgemm_conv_u8s8.h); the scalar tier widens those quads.
//
// The VNNI tier (CPUs with AVX-512 VNNI) reads its own layout: k ordered
// (kh, kw, c) with the group's channels padded to a multiple of 4, so that a
// k quad is 4 channels of one tap, and the image is copied channel-quad
// interleaved (4 channels per pixel, 4 bytes): a 16-pixel panel row is then
// 64 contiguous bytes of that copy.
struct QconvWeights {
  int64_t out_c = 0, group = 1, k = 0;  // k: per group, C/group * KH * KW
  int64_t in_c = 0, kernel_h = 1, kernel_w = 1;  // in_c: per group
  // Group gi in the 8-bit tile layout of the AVX2 and scalar tiers. Packed
  // at build where one of those tiers is the automatic choice; on a VNNI CPU
  // only on first use (a forced path), when the caller lets the weights'
  // codes outlive the packing (qconv_pack_weights' source_owner).
  const QgemmNarrowA& narrow(int64_t gi) const;
  // Whether narrow() is packed (it then needs no source).
  bool narrow_packed() const;
  // Whether narrow()'s k runs (kh, kw, c), not (c, kh, kw) (AVX2 CPUs,
  // channels per group in fours, several taps): u8 x s8 quads of 4 channels
  // of one tap read from the quad image, or int16 pair tiles read from the
  // pair image (QconvLayout); the other tiers read k rows in that order too.
  bool tap_major() const;
  struct Narrow;  // qgemm_conv.cpp
  std::shared_ptr<Narrow> narrow_;
  std::vector<QgemmQuadA> quad_groups;  // the VNNI layout, when the CPU has it
  // Single-channel groups on the VNNI tier: quads of 4 taps of one kernel row
  // (k ordered (kh, kw padded to 4)), for stride-1 convs (qgemm_vnni.h).
  std::vector<QgemmQuadA> tap_quad_groups;
};
// Which layouts qconv_pack_weights makes.
enum class QconvLayouts {
  kEvery,      // every tier the CPU has may run (tests, tools): the VNNI quads where it has them, and the
               // 8-bit tiles (on a VNNI CPU with source_owner: on first use)
  kAutomatic,  // only the automatic tier's (a session's kernel, which always runs QgemmPath::kAuto)
};
// source_owner, when given, keeps w's codes alive as long as `out` (the
// 8-bit tiles may then be packed later, from them).
void qconv_pack_weights(const QgemmCodes& w, int64_t out_c, int64_t in_c_per_group, int64_t kernel_h,
                        int64_t kernel_w, int64_t group, const std::vector<int32_t>& zero_points, QconvWeights& out,
                        std::shared_ptr<const void> source_owner = nullptr,
                        QconvLayouts layouts = QconvLayouts::kEvery);

// Lets the codes w was packed from go (qconv_pack_weights' source_owner):
// for a caller that only runs the automatic path, whose layout is packed
// (the VNNI quads, or the 8-bit tiles). A layout not packed yet can then no
// longer be made; a path that needs it faults on the null codes.
void qconv_release_source(QconvWeights& w);
// The codes w was packed from, rebuilt from quad_groups (the VNNI layout):
// out_c x in_c x kernel_h x kernel_w bytes (int8 when is_signed, else uint8),
// for a caller that let the source go and still needs the plain weights.
void qconv_unpack_quad_weights(const QconvWeights& w, bool is_signed, void* codes);
// The same from the 8-bit tiles (narrow_packed() must be true).
void qconv_unpack_narrow_weights(const QconvWeights& w, void* codes);
// Bytes held by the 8-bit tiles of every group (0 when not packed).
uint64_t qconv_narrow_bytes(const QconvWeights& w);

// y = conv(x - x_zp, w) through `out`, whose rows are the output channels
// (channel_is_row = true) and whose columns are the pixels of one image:
// out.out points at image 0, out.ldo = OH·OW, and image b starts
// b·OC·OH·OW elements further. x: NCHW codes.
void qconv(const QconvGeometry& g, const void* x, bool x_signed, int32_t x_zero_point, const QconvWeights& w,
           const QgemmOutput& out, ThreadPool* pool, QgemmPath path = QgemmPath::kAuto);

// Whether qconv adds out.residual as it writes each output tile (code
// output; on the VNNI tier, multipliers below 2^31): then each residual code
// is read just before the output code at its place is written, and the
// output may be the residual's own storage at no cost. Otherwise the join is
// a pass after the conv, which must first copy a residual it would overwrite.
bool qconv_fuses_residual(const QconvWeights& w, const QgemmOutput& out, QgemmPath path = QgemmPath::kAuto);

namespace detail {

// The fused residual join as a pass over a finished conv output (codes, dense
// NCHW): for the paths whose output stage does not add it.
void qconv_add_residual(const QconvGeometry& g, const QgemmOutput& out);
// A bound on |acc + bias| of a conv whose k (padded) is k_padded: |acc| <=
// k_padded·255·255, plus the largest per-row bias (rows of them). Where it
// is at most INT32_MAX a per-row bias may join the row constants (the
// epilogue's saturating add would change nothing); below 2^30, out.small_acc.
int64_t qconv_acc_bound(const QgemmOutput& out, int64_t k_padded, int64_t rows);
// The AVX2 / scalar tiers' fused join, one block of output channels
// [m0, m1) x pixels [n0, n1) of one image at a time (r and out: that image's;
// rows ldo apart): keep the block's residual codes before the block's tiles
// write their outputs (out may be the residual's storage), then add them as
// qconv_add_residual would. Same bits, while the block is still in cache.
void qconv_keep_residual(const QgemmResidualAdd& r, int64_t ldo, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                         uint8_t* kept);
void qconv_join_residual(const QgemmOutput& out, const QgemmResidualAdd& r, int64_t m0, int64_t m1, int64_t n0,
                         int64_t n1, const uint8_t* kept);

// Where a 16-pixel panel reads its lanes: lane j of k-row k is
// src[tap_offset[k] + lane_offset[j]] minus the zero point.
struct QconvPanelSource {
  const void* src = nullptr;
  bool is_signed = false;
  int32_t zero_point = 0;
  const int64_t* tap_offset = nullptr;
  int64_t k = 0;
  int lanes = 16;  // valid lanes; the rest of the panel is zero
  int64_t lane_offset[16] = {};
  // Runs of lanes with consecutive offsets: run r covers lanes
  // [run_start[r], run_start[r + 1]). contiguous_reads: every run may be read
  // as 16 bytes at src + tap_offset[k] + lane_offset[run_start] - run_start
  // (the buffer has slack); else lanes are read one by one.
  int runs = 0;
  int run_start[17] = {};
  bool contiguous_reads = false;
};
// The image the panels read (qgemm_conv.cpp): a zero-padded, stride-phase
// split copy of one (image, group), or the input itself (direct).
struct QconvLayout {
  bool direct = false;  // 1x1, stride 1, no padding: read the input itself
  int64_t hph = 0, wph = 0, plane = 0, phases = 1;
  int64_t bytes = 0;                // per (image, group) copy, slack included
  int64_t first_plane = 0;          // where the copy's first plane starts
  std::vector<int64_t> tap_offset;  // per k = (c, kh, kw), or (kh, kw, c) when tap_major
  std::vector<bool> read_phase;     // phases some tap reads (a 1x1 stride-2 conv: one of four)
  // Not direct, channels per group a multiple of 4: the same phase images
  // with 4 channels interleaved per pixel (the u8 x s8 path's quad image,
  // qgemm_conv_u8s8.h): byte kQconvQuadFront + ((phase * c4 + cq) * plane +
  // pixel) * 4 + t holds channel 4cq + t. quad_offset[tap * c4 + cq] (tap =
  // kh * KW + kw): where quad (tap, cq) of pixel 0 is; quad_bytes: the size.
  std::vector<int64_t> quad_offset;
  int64_t quad_bytes = 0;
  // The int16 path's pair image, for the same weights in (tap, c) order as
  // pair tiles: 2 channels per pixel as int16 (x - zero point), byte
  // kQconvQuadFront + ((phase * c2 + cp) * plane + pixel) * 4; pads 0.
  // pair_offset[tap * c2 + cp] like quad_offset.
  std::vector<int64_t> pair_offset;
  int64_t pair_bytes = 0;
  // What it was made for: a block's convs often share a geometry, and the
  // thread's next conv then keeps the layout as it is.
  QconvGeometry made_for;
  bool tap_major = false;
  bool made = false;
};
inline constexpr int64_t kQconvQuadFront = 64;  // >= 15 pixels of 4 bytes read before a run
// Fills l in place (callers keep one per thread: no allocations per run),
// unless it was last made for g and the same k order: tap_major, k rows
// (tap_offset) in (kh, kw, c) order, for weights packed that way.
void qconv_make_layout(const QconvGeometry& g, bool tap_major, QconvLayout& l);
// What the panels of image b, group gi read (x: the whole NCHW input):
// kPhases, the input itself (direct) or its phase images (pads hold the zero
// point's code), made in `phases`; kQuads / kPairs, the quad or pair image
// (QconvLayout), made in `interleaved`, straight from the input for stride 1,
// else from the phase images. Quads and pairs need an AVX2 CPU.
// `rows`: for a stride-1 quad or pair image, only padded rows [begin, end)
// of each plane are made (what a thread's share of the image's panels reads:
// qconv_share_rows); phase images are always whole.
enum class QconvImage { kPhases, kQuads, kPairs };
struct QconvImageRows {
  int64_t begin = 0, end = INT64_MAX;
};
const uint8_t* qconv_image(const QconvGeometry& g, const QconvLayout& l, const uint8_t* x, int64_t b, int64_t gi,
                           bool x_signed, int32_t x_zero_point, QconvImage kind, AlignedBuffer<uint8_t>& phases,
                           AlignedBuffer<uint8_t>& interleaved, QconvImageRows rows = {});
// Sets the pads of an interleaved stride-1 image of `planes` planes (4 bytes a
// pixel) to `pad`: all `bytes` of it when `rows` is the whole image, else
// rows [rows.begin, rows.end) of each plane; [r_begin, r_end): the input
// rows whose padded rows those are, for the caller to copy.
void qconv_clear_image_rows(const QconvGeometry& g, const QconvLayout& l, int64_t planes, QconvImageRows rows,
                            uint8_t pad, int64_t bytes, uint8_t* dst, int64_t& r_begin, int64_t& r_end);
// The padded rows panels [p_begin, p_end) of one image read, where a thread
// takes only those of a stride-1 conv: half the copying on 2 threads, and of
// the input mostly what this thread wrote as the previous conv's share. The
// whole image otherwise.
QconvImageRows qconv_share_rows(const QconvGeometry& g, const QconvLayout& l, int64_t p_begin, int64_t p_end);
// Panel p's lanes (16 output pixels) in src: where each reads in the layout,
// the runs of consecutive reads, and whether they may be read 16 at a time.
void qconv_set_panel_lanes(const QconvGeometry& g, const QconvLayout& l, int64_t p, QconvPanelSource& src);

// A 16-pixel panel from a quad or pair image: entry q of lane j is the 4
// bytes at image + offset[q] + 4 * s.lane_offset[j] (s: qconv_set_panel_lanes'
// runs, in pixels; s.src and s.tap_offset are not read): one pair of 32-byte
// loads per run, no transpose. panel: entries * 64 bytes.
void qconv_pack_panel_copy_avx2(const uint8_t* image, const int64_t* offset, int64_t entries,
                                const QconvPanelSource& s, uint8_t* panel);
// The pair image (QconvLayout::pair_offset) of phase images `planes` (the
// first plane's byte; 2 * pairs planes of `plane` bytes, codes of the given
// signedness): channels 2P, 2P + 1 as int16 (code - zero_point) per pixel at
// dst + kQconvQuadFront + P * plane * 4.
void qconv_fill_pair_image_avx2(const uint8_t* planes, int64_t pairs, int64_t plane, bool is_signed,
                                int32_t zero_point, uint8_t* dst);
// The same straight from the input for stride-1 convs: x is the group's
// first channel plane; pads 0.
void qconv_fill_pair_image_s1_avx2(const QconvGeometry& g, const QconvLayout& l, const uint8_t* x, bool is_signed,
                                   int32_t zero_point, uint8_t* dst, QconvImageRows rows = {});

// panel: kpairs * 2 * NR int16 (qgemm.h's B panel layout).
using QconvPackPanel = void (*)(const QconvPanelSource& s, int16_t* panel);
void qconv_pack_panel_scalar(const QconvPanelSource& s, int16_t* panel);
void qconv_pack_panel_avx2(const QconvPanelSource& s, int16_t* panel);

// qconv on the VNNI tier (qgemm_conv_vnni.cpp); w.quad_groups must be packed.
void qconv_vnni(const QconvGeometry& g, const void* x, bool x_signed, int32_t x_zero_point, const QconvWeights& w,
                const QgemmOutput& out, ThreadPool* pool);
// The VNNI weight layout of one group's weights (rows: output channels).
void qconv_pack_quad_weights(const QgemmCodes& w, int64_t rows, int64_t in_c, int64_t kernel_h, int64_t kernel_w,
                             const std::vector<int32_t>& zero_points, QgemmQuadA& out);
// The same for one input channel, quads of 4 taps of a kernel row
// (QconvWeights::tap_quad_groups).
void qconv_pack_tap_quad_weights(const QgemmCodes& w, int64_t rows, int64_t kernel_h, int64_t kernel_w,
                                 const std::vector<int32_t>& zero_points, QgemmQuadA& out);

}  // namespace detail

}  // namespace qtk::rt::x86
