// Exact int8 GEMM for the integer runtime:
//   acc[m, n] = Σ_k (a[m, k] - a_zp[m]) · (b[k, n] - b_zp[n])     (int32)
// followed by a fused output stage: + int32 bias, then either the raw int32,
// a float dequantization, or fixed-point requantization to uint8/int8 codes
// (bit-identical to quant::requantize_to_code; docs/integer-semantics.md,
// "Optimized x86 kernels").
//
// Why int16: vpmaddubsw (u8 × s8 pairs summed into a saturating int16) would
// overflow on 8-bit data (255·127·2 > 32767); it is exact only for weights
// whose k pairs satisfy |w0| + |w1| <= 128, which the AVX2 tier then uses
// (qgemm_u8s8.h, qgemm_conv_u8s8.h). Both operands are otherwise packed
// as int16 with their zero points already subtracted (|v| <= 255) and
// multiplied with vpmaddwd (int16 pairs -> exact int32), k taken in pairs.
//
// Layouts (both zero-padded, 32-byte aligned):
//   B: ceil(N/NR) panels of NR columns; panel p, k pair q holds NR int32
//      words, column j's word = (b[2q, j], b[2q+1, j]) as two int16.
//   A: ceil(M/MR) tiles of MR rows; tile t, k pair q holds MR int32 words,
//      row i's word = (a[2q, i], a[2q+1, i]).
// A register-blocked MR x NR micro-kernel (12 int32 accumulators) runs one
// A tile against one B panel over all of K. AVX2 kernels are picked at run
// time; portable scalar kernels always build and give identical results.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "quant/schemes/fixed_point.h"

namespace qtk::rt {
class ThreadPool;
}

namespace qtk::rt::x86 {

inline constexpr int kQgemmMR = 6;
inline constexpr int kQgemmNR = 16;

enum class QgemmPath {
  kAuto,        // the best the CPU has; QTK_QGEMM_SCALAR=1 forces scalar, QTK_QGEMM_NO_VNNI=1 stops at AVX2
  kScalar,      // portable C++
  kAvx2,        // AVX2 int16 kernels, u8 x s8 where the weights allow (qgemm_u8s8.h; QTK_QGEMM_NO_U8S8=1: never)
  kAvx512Vnni,  // AVX-512 VNNI kernels, qgemm_vnni.h (AVX2 without them)
};
bool qgemm_avx2_supported();
bool qgemm_avx512_vnni_supported();
// kAuto -> the path it resolves to; a path the CPU lacks -> the next one down.
QgemmPath qgemm_resolve_path(QgemmPath p);
const char* qgemm_path_name(QgemmPath p);

// A growable, 64-byte aligned buffer of T (contents are not kept on growth).
template <class T>
class AlignedBuffer {
 public:
  T* get(int64_t count) {
    if (count > capacity_ || !buf_) {
      const size_t bytes = (static_cast<size_t>(count > 0 ? count : 1) * sizeof(T) + 63) / 64 * 64;
      buf_.reset(static_cast<T*>(std::aligned_alloc(64, bytes)));
      capacity_ = buf_ ? count : 0;
    }
    return buf_.get();
  }
  T* data() { return buf_.get(); }
  const T* data() const { return buf_.get(); }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> buf_;
  int64_t capacity_ = 0;
};

inline int64_t qgemm_kpairs(int64_t k) { return (k + 1) / 2; }

// 8-bit codes read from memory: element (i, j) at data[i * stride_i + j * stride_j].
struct QgemmCodes {
  const void* data = nullptr;
  bool is_signed = false;  // int8, else uint8
  int64_t stride_i = 0, stride_j = 0;
  int32_t at(int64_t i, int64_t j) const {
    const int64_t o = i * stride_i + j * stride_j;
    return is_signed ? static_cast<const int8_t*>(data)[o] : static_cast<const uint8_t*>(data)[o];
  }
};

// The VNNI tier's layouts (qgemm_vnni.h): k in quads, raw codes made signed
// (s8 as is, u8 - 128) on the constant side, with sums for the zero points.
inline constexpr int kQgemmVnniMR = 16;
inline int64_t qgemm_kquads(int64_t k) { return (k + 3) / 4; }

// B as signed bytes: panel p (16 columns), quad q: 64 bytes, column j at 4j..4j+3.
struct QgemmQuadB {
  int64_t kquads = 0;
  AlignedBuffer<int8_t> codes;
  std::vector<int32_t> colsum, zero_point;  // Σ_k b', zb' per column, padded to whole panels
  bool any_zero_point = false;
  const int8_t* panel(int64_t p) const { return codes.data() + p * kquads * 4 * kQgemmNR; }
};

// A (conv weights) as signed bytes: tile t (16 rows), quad q: 16 words of 4
// bytes, row i at word i.
struct QgemmQuadA {
  int64_t m = 0, k = 0, kquads = 0, tiles = 0;
  AlignedBuffer<uint32_t> words;
  std::vector<int32_t> rowsum, zero_point;  // Σ_k a', za' per row
  bool any_zero_point = false;
  const uint32_t* tile(int64_t t) const { return words.data() + t * kquads * kQgemmVnniMR; }
};

// B [K x N], a constant operand, in the layouts the tiers read:
//   pairs(): int16 values minus zero points (the scalar tier);
//   narrow(): the raw codes in the same panel layout (the AVX2 tier: half
//     the bytes, widened in registers; the zero points then come out as
//     acc -= zp[n] · Σ_k (a[m, k] - a_zp));
//   quads(): the VNNI tier's signed quads.
// qgemm_pack_b builds the layout the automatic tier reads; any other is
// made from the source codes on first use (once, thread-safe), so the source
// must stay alive as long as the packed B unless the caller only ever runs
// the automatic tier (kernels that do let the initializer go).
struct QgemmPackedB {
  int64_t k = 0, n = 0, kpairs = 0, panels = 0;
  bool is_signed = false;
  std::vector<int32_t> zero_points;  // per column, padded to whole panels (0 past n)
  bool any_zero_point = false;
  QgemmCodes source;  // (i, j) = (k, n)

  // Panel p at pairs() + p * kpairs * 2 * NR int16.
  const int16_t* pairs() const;
  // Panel p at narrow() + p * kpairs * 2 * NR bytes.
  const uint8_t* narrow() const;
  const QgemmQuadB& quads() const;
  // Bytes the AVX2 tier's layout holds: the narrow codes and the zero
  // points, or with u8s8 the quads, their sums and zero points.
  uint64_t narrow_bytes() const;
  // The quads' signed codes fit vpmaddubsw (every k pair |b0| + |b1| <= 128,
  // zero points 0 once made signed: int8 with 0, uint8 with 128): the AVX2
  // tier then reads quads() instead of narrow() (qgemm_u8s8.h). Decided by
  // qgemm_pack_b where the CPU has AVX2.
  bool u8s8 = false;

  struct Lazy;  // the layouts, each made once (qgemm.cpp)
  std::shared_ptr<Lazy> lazy;
  void* consumable = nullptr;  // qgemm_pack_b's, while it packs
};
// B's codes back from the narrow panels (made from the source first if need
// be): (k, n) at out[k * N + n], or at out[n * K + k] when transposed.
void qgemm_unpack_narrow_b(const QgemmPackedB& b, bool transposed, void* out);
// The same from the quads (the VNNI layout, and the AVX2 tier's u8 x s8 one).
void qgemm_unpack_quads_b(const QgemmPackedB& b, bool transposed, void* out);
// codes: (i, j) = (k, n). zero_points: 1 value or n values.
// consumable: b's storage when the caller will let it go right after (and
// never read it again: KernelInit::consumable_constant); where the VNNI
// quads or the AVX2 tier's 8-bit panels are packed now from columns that are
// contiguous rows of it, each packed panel's pages are let go as the packing
// moves on.
// per_call: B is packed for one product (an activation B): never the u8s8
// layout (its column-at-a-time packing would cost more than it saves).
void qgemm_pack_b(const QgemmCodes& b, int64_t k, int64_t n, const std::vector<int32_t>& zero_points,
                  QgemmPackedB& out, void* consumable = nullptr, bool per_call = false);

// A [M x K] minus zero points (one, or one per row), packed once (conv weights).
struct QgemmPackedA {
  int64_t m = 0, k = 0, kpairs = 0, tiles = 0;
  AlignedBuffer<int32_t> storage;
  const int32_t* tile(int64_t t) const { return storage.data() + t * kpairs * kQgemmMR; }
};
// codes: (i, j) = (m, k). zero_points: 1 value or m values.
void qgemm_pack_a(const QgemmCodes& a, int64_t m, int64_t k, const std::vector<int32_t>& zero_points,
                  QgemmPackedA& out);

// A [M x K] held as its 8-bit codes in QgemmPackedA's tile order (conv
// weights on the AVX2 and scalar tiers: half the bytes of the pairs, a
// quarter with the source gone): tile t, k pair q, row i: the codes of
// k = 2q and 2q + 1 at bytes (t·kpairs + q)·2MR + 2i and 2i + 1. An odd K's
// pad byte is the row's zero point, rows past M are code 0 with zero point
// 0: both expand to 0. detail::qgemm_expand_a makes the int16 pairs of a few
// tiles right before the micro-kernel reads them.
//
// quads: the same codes in k quads instead (the AVX2 tier's u8 x s8 conv
// path, qgemm_conv_u8s8.h): tile t, quad q, row i: the codes of k = 4q..4q+3
// at bytes (t·kquads + q)·4MR + 4i.. (pad 0), int8 with zero point 0 only,
// and row_sums[i] = Σ_k of row i's codes (padded to whole tiles) in place of
// zero_points (empty). Both tiers' expansions read either layout.
struct QgemmNarrowA {
  int64_t m = 0, k = 0, kpairs = 0, tiles = 0;
  bool is_signed = false;
  bool quads = false;
  int64_t kquads = 0;                // quads only
  AlignedBuffer<uint8_t> codes;      // kQgemmExpandSlack bytes of slack after the last tile
  std::vector<int32_t> zero_points;  // per row, padded to whole tiles
  bool any_zero_point = false;
  std::vector<int32_t> row_sums;     // quads only
  int64_t tile_bytes() const { return quads ? kquads * 4 * kQgemmMR : kpairs * 2 * kQgemmMR; }
  const uint8_t* tile(int64_t t) const { return codes.data() + t * tile_bytes(); }
  uint64_t bytes() const;  // what it holds: codes (slack included), zero points, row sums
};
// Bytes past the end that the vector expansion may read (codes) and write
// (its output, as int16): each tile is expanded in 48-byte steps.
inline constexpr int64_t kQgemmExpandSlack = 48;
// codes: (i, j) = (m, k). zero_points: 1 value or m values, codes of a's
// type (the pad byte holds them; anything else aborts: a caller's bug).
void qgemm_pack_narrow_a(const QgemmCodes& a, int64_t m, int64_t k, const std::vector<int32_t>& zero_points,
                         QgemmNarrowA& out);
// The codes back, row-major: out[i * k + j], one byte each.
void qgemm_unpack_narrow_a(const QgemmNarrowA& a, void* out);

// Channel c's constants of the vector output stage (qgemm_requant_channel):
// r = (acc·m + 2^(n-1)) >> n computed as u = acc·mult + add (never
// negative), u >>> shift = r + 2^(62-n); clamped to [lo, hi], plus off, it
// is the code; below one, u >>> shift plus round_offset (mod 2^32) is r.
struct QgemmRequantChannel {
  int64_t mult, add, shift, lo, hi, off;
  int32_t round_offset;
};

// What an output stage with one channel per row (convs) reads of a channel,
// broadcast from memory: 24 bytes, where the column tables take 52. The
// clamp constants (lo, hi, off) only where a multiplier is 1 or more (rare:
// the 32-bit finish clamps with the zero point and range instead).
struct QgemmRequantRow {
  int64_t add, shift;
  int32_t mult, round_offset;
};
struct QgemmRequantRowClamp {
  int64_t lo, hi, off;
};

enum class QgemmRequantFor { kColumns, kRows };

// Fixed-point requantization per output channel, prepared once:
// code = clamp(requantize_fixed_point(acc, mult[c]) + zero_point, qmin, qmax).
struct QgemmRequant {
  int64_t channels = 0;
  // Which output stage it was made for: qgemm and qconv refuse (abort) a
  // QgemmOutput whose channel_is_row disagrees, since the vector stages
  // would read the other layout's empty tables.
  QgemmRequantFor use = QgemmRequantFor::kColumns;
  std::vector<quant::FixedPointMultiplier> mult;  // per channel (the scalar path)
  int32_t zero_point = 0, qmin = 0, qmax = 255;
  // Every multiplier below 1 (shift <= 0): the rescaled value then fits
  // int32, and the vector path finishes in 32-bit lanes with round_offset
  // instead of clamping in 64 bits.
  bool below_one = false;
  // By column (QgemmOutput::channel_is_row false): the vector path's
  // constants, 8 channels per group in lane order (channels 0,2,4,6 then
  // 1,3,5,7), and round_offset per channel, natural order; see
  // qgemm_make_requant. Empty in a requant made for rows.
  std::vector<int64_t> lanes;
  std::vector<int32_t> round_offset;
  // By row (channel_is_row): per channel; row_clamps empty when below_one.
  // Empty in a requant made for columns.
  std::vector<QgemmRequantRow> rows;
  std::vector<QgemmRequantRowClamp> row_clamps;
};
// mult: 1 value (per tensor) or `channels` values. `use`: which output
// stage reads it: kRows for channel_is_row (convs), else kColumns; each
// lays out only the tables its readers need.
QgemmRequant qgemm_make_requant(const std::vector<quant::FixedPointMultiplier>& mult, int64_t channels,
                                int32_t zero_point, int32_t qmin, int32_t qmax,
                                QgemmRequantFor use);
// Channel c's constants (c past the channels: channel 0's), from which
// qgemm_make_requant fills the tables.
QgemmRequantChannel qgemm_requant_channel(const QgemmRequant& r, int64_t c);

enum class QgemmOutputKind {
  kInt32,  // acc (+ bias)
  kFloat,  // float(acc + bias) * scale[channel]
  kCodes,  // requantized 8-bit codes
};

// A conv's fused residual join (quant/graph/residual_add_fusion.h): its
// output codes c become clamp(((c - a_zp)·ma + (r - b_zp)·mb + 2^(n-1)) >> n
// + c_zp) over the codes r of a tensor laid out like the output.
struct QgemmResidualAdd {
  const void* codes = nullptr;  // image 0, like QgemmOutput::out
  int32_t a_zp = 0, b_zp = 0, c_zp = 0, qmin = 0, qmax = 255;
  int64_t ma = 0, mb = 0;
  int n = 31;
};

// Where the output stage reads its parameters and writes element (m, n):
// out + m * ldo + n (elements of the output type). Per-channel parameters are
// indexed by n (a matmul's output columns) or by m (a conv's output channels,
// when weights are the A operand).
struct QgemmOutput {
  QgemmOutputKind kind = QgemmOutputKind::kInt32;
  bool channel_is_row = false;
  // bias (m, n) = bias[m * bias_rs + n * bias_cs], bias_cs 0 or 1; must be
  // readable up to the last tile's padded column when bias_cs == 1
  // (round N up to NR).
  const int32_t* bias = nullptr;
  int64_t bias_rs = 0, bias_cs = 0;
  // true: int64 sum clamped to int32 (QLinearConv); false: int32 wrap (QGemm's C).
  bool bias_saturates = true;
  // kCodes: made for the stage that reads it (QgemmRequantFor::kRows with
  // channel_is_row, else kColumns): the other's tables are empty.
  const QgemmRequant* requant = nullptr;
  bool codes_signed = false;              // kCodes: int8, else uint8
  const float* scale = nullptr;           // kFloat: per channel, readable to a multiple of NR
  void* out = nullptr;
  int64_t ldo = 0;
  // kCodes with channel_is_row (convs): applied after requantization.
  const QgemmResidualAdd* residual = nullptr;
  // The caller bounds |acc + bias| below 2^30 (qconv_acc_bound): adding the
  // zero point cannot wrap, so where [qmin, qmax] is the whole 8-bit range
  // the saturating packs clamp and the AVX2 output stage skips its own.
  bool small_acc = false;
};

// One call: y = (A - a_zp) · packed B, through `out`. A (i, j) = (m, k).
// Splits the work over `pool` (may be null).
void qgemm(int64_t m, const QgemmCodes& a, int32_t a_zero_point, const QgemmPackedB& b, const QgemmOutput& out,
           ThreadPool* pool, QgemmPath path = QgemmPath::kAuto);

namespace detail {

// Aborts (a caller's bug, not bad input) when out's requant was made for the
// other output stage (QgemmRequant::use vs channel_is_row).
void check_requant_layout(const QgemmOutput& out);
// acc[i * NR + j] = Σ_q lo(a[q*MR + i])·b[q*2NR + 2j] + hi(a[q*MR + i])·b[q*2NR + 2j + 1]
// for i < rows <= MR, j < NR, q < kpairs (int32, wrapping), where lo/hi are
// the two int16 halves of the packed word.
using QgemmUkernel = void (*)(int rows, int64_t kpairs, const int32_t* a, const int16_t* b, int32_t* acc);
void qgemm_ukernel_scalar(int rows, int64_t kpairs, const int32_t* a, const int16_t* b, int32_t* acc);
void qgemm_ukernel_avx2(int rows, int64_t kpairs, const int32_t* a, const int16_t* b, int32_t* acc);
// The same for nr <= kQgemmFewLanes columns (a conv's last few pixels): acc
// for i < rows, j < nr only. Reads 8 bytes past a's tile (kQgemmExpandSlack).
inline constexpr int kQgemmFewLanes = 8;
void qgemm_ukernel_few_avx2(int rows, int nr, int64_t kpairs, const int32_t* a, const int16_t* b, int32_t* acc);
// The same product with B given as raw 8-bit codes (QgemmPackedB::narrow),
// rows <= MR. With b_zp (NR values, the panel's column zero points) it
// then subtracts b_zp[j] · a_sum[i] (int32, wrapping), a_sum[i] = Σ_k of
// row i of A (its codes minus their zero point): the product with B minus
// its zero points.
void qgemm_ukernel_narrow_avx2(int rows, int64_t kpairs, const int32_t* a, const uint8_t* b, bool b_signed,
                               const int32_t* b_zp, const int32_t* a_sum, int32_t* acc);
// One panel of QgemmPackedB::narrow (kpairs · 2NR codes) as int16 minus the
// column zero points (zp: NR values, or null for none): the pairs() panel,
// except that an odd K's pad is -zp (A is 0 there: the same products).
void qgemm_expand_b_panel_avx2(const uint8_t* codes, int64_t kpairs, bool is_signed, const int32_t* zp,
                               int16_t* out);
// a_sum[i] = Σ_q lo(a[q*MR + i]) + hi(a[q*MR + i]) for i < MR (one packed tile).
void qgemm_tile_row_sums_avx2(int64_t kpairs, const int32_t* a, int32_t* a_sum);

// Tiles [t0, t1) of a in QgemmPackedA's int16-pair layout (what
// qgemm_pack_a makes of the same codes), (t1 - t0) · kpairs · MR words at
// out; the vector version may write kQgemmExpandSlack int16 past them.
using QgemmExpandA = void (*)(const QgemmNarrowA& a, int64_t t0, int64_t t1, int32_t* out);
void qgemm_expand_a_scalar(const QgemmNarrowA& a, int64_t t0, int64_t t1, int32_t* out);
void qgemm_expand_a_avx2(const QgemmNarrowA& a, int64_t t0, int64_t t1, int32_t* out);
QgemmExpandA qgemm_expand_a(QgemmPath resolved);

// Writes the mr x nr corner of acc (row stride NR) as output rows m0.., columns n0..
using QgemmEpilogue = void (*)(const int32_t* acc, int mr, int nr, int64_t m0, int64_t n0, const QgemmOutput& out);
void qgemm_epilogue_scalar(const int32_t* acc, int mr, int nr, int64_t m0, int64_t n0, const QgemmOutput& out);
void qgemm_epilogue_avx2(const int32_t* acc, int mr, int nr, int64_t m0, int64_t n0, const QgemmOutput& out);

// Packs rows [m0, m0 + rows) of A into one tile (rows <= MR; the rest zero).
using QgemmPackATile = void (*)(const QgemmCodes& a, int64_t m0, int rows, int64_t k, const int32_t* zero_points,
                                bool zp_per_row, int32_t* tile);
void qgemm_pack_a_tile(const QgemmCodes& a, int64_t m0, int rows, int64_t k, const int32_t* zero_points,
                       bool zp_per_row, int32_t* tile);
void qgemm_pack_a_tile_avx2(const QgemmCodes& a, int64_t m0, int rows, int64_t k, const int32_t* zero_points,
                            bool zp_per_row, int32_t* tile);

QgemmUkernel qgemm_ukernel(QgemmPath resolved);

// Below this many multiply-adds a product runs on the calling thread (waking
// the pool costs more than a few microseconds of work saves).
inline constexpr int64_t kQgemmMinParallelMacs = int64_t{1} << 21;
// Convolutions split over threads from 8M multiply-adds: below that (a
// batch-1 conv of a small net, a few microseconds a thread) each thread
// also builds its own copy of the padded input image, and two threads were
// measured slower than one (int8 cnn batch 1: 0.050 vs 0.035 ms).
inline constexpr int64_t kQconvMinParallelMacs = int64_t{1} << 23;
// With at least one image (a row group, for convs that put several images
// in one copy) per thread the split falls between copies and no copy is
// built twice: smaller convs pay (mobilenetv2_fm int8 batch 64
// on 2 threads: 2.17 -> 1.70 ms, its 1x1 convs are 1.6-6M multiply-adds).
inline constexpr int64_t kQconvMinParallelMacsPerImageSplit = int64_t{1} << 21;
// int16_tier: the AVX2 / scalar loops (int16 or u8 x s8), whose multiply-adds
// take 3-4x the VNNI tier's time: splitting pays from an eighth of the size
// (QTK_ISA=avx2, 2 threads, batch 1: int8 resnet20 0.628 -> 0.489 ms, int7
// 0.568 -> 0.463, cnn 0.077 -> 0.065; mobilenetv2_fm unchanged).
inline bool qconv_split_over_threads(int threads, int64_t batch, int64_t macs, bool int16_tier = false) {
  if (threads <= 1) return false;
  const int64_t least = batch >= threads ? kQconvMinParallelMacsPerImageSplit : kQconvMinParallelMacs;
  return macs >= (int16_tier ? least / 8 : least);
}
// How a product's tiles x panels are split over threads: tm x tn rectangles,
// the largest as small as possible (ties: fewer threads).
struct QgemmGrid {
  int64_t tm = 1, tn = 1;
};
QgemmGrid qgemm_choose_grid(int64_t tiles, int64_t panels, int threads);
// The grid of an m-row product with b: one block below kQgemmMinParallelMacs
// or without a pool, else qgemm_choose_grid over the pool's threads.
QgemmGrid qgemm_grid_for(int64_t m, const QgemmPackedB& b, int64_t tiles, ThreadPool* pool);
// Block `index` of the grid (row-major over tm x tn): A tiles [t_begin,
// t_end) x B panels [p_begin, p_end).
struct QgemmBlock {
  int64_t t_begin, t_end, p_begin, p_end;
};
inline QgemmBlock qgemm_grid_block(const QgemmGrid& grid, int64_t index, int64_t tiles, int64_t panels) {
  const int64_t bi = index / grid.tn, bj = index % grid.tn;
  return {tiles * bi / grid.tm, tiles * (bi + 1) / grid.tm, panels * bj / grid.tn, panels * (bj + 1) / grid.tn};
}
// Runs a product's A tiles x B panels over `grid`: run_tiles(t0, t1, next)
// for A blocks of at most block_tiles tiles, next() handing out the block's
// panels (-1 once none is left; run_tiles packs the tiles only if it gave
// one). Each block of a grid takes its own panels in order; a grid split by
// columns only (every block packs all of A) shares them out instead: a
// thread takes its own share from the front, then the other threads' from
// their backs, so one that ends early helps a slower one. Shares are taken
// `group` panels at a time, so that two threads never write the same output
// cache line (qgemm_panel_group).
using QgemmRunTiles = std::function<void(int64_t, int64_t, const std::function<int64_t()>&)>;
void qgemm_run_grid(const QgemmGrid& grid, ThreadPool* pool, int64_t tiles, int64_t panels, int64_t block_tiles,
                    int64_t group, const QgemmRunTiles& run_tiles);
// Panels whose output columns fill one 64-byte line: 4 of u8 codes, 1 of int32 or float.
inline int64_t qgemm_panel_group(const QgemmOutput& out) {
  return out.kind == QgemmOutputKind::kCodes ? 64 / kQgemmNR : 1;
}
// Bytes of packed A a thread keeps per block (L2-resident, re-read per panel).
inline constexpr int64_t kQgemmABlockBytes = 192 * 1024;
// The output stage of a resolved path for `out`, chosen once per call: on
// AVX2, qgemm_epilogue_avx2_for.
QgemmEpilogue qgemm_epilogue(QgemmPath resolved, const QgemmOutput& out);
// The AVX2 output stage for `out`: a specialised one for the convs' common
// case (codes by row, multipliers below 1, no or a plain per-row bias) or
// the matmuls' (codes by column, multipliers below 1, no bias), chosen once
// per call instead of per tile; else qgemm_epilogue_avx2.
QgemmEpilogue qgemm_epilogue_avx2_for(const QgemmOutput& out);
}  // namespace detail

}  // namespace qtk::rt::x86
