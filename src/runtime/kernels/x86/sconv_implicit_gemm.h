// Float convolution as an implicit GEMM: out[M, N] = W[M, K] * B[K, N] + bias,
// where B is never materialised as a matrix. Element (p, j) of B is read at
//   base[(j / NR) * tile_stride + k_off[p] + j % NR]
// which covers both ways Conv feeds it:
//  - stride-1 windows over the zero-padded image: tile_stride = NR and
//    k_off[p] = the (channel, tap) offset, so B(p, j) = padded[k_off[p] + j]
//    and a micro-tile reads NR contiguous floats of one padded row per k;
//  - an im2col matrix in sgemm's packed-B layout (strided windows):
//    tile_stride = K * NR and k_off[p] = p * NR.
// The weights are packed once (at session build) into MR-row slivers over the
// whole of K. Micro-kernels: AVX-512 (8 x 32), AVX2+FMA (6 x 16) and a
// portable one (6 x 16) that always builds; the tile shape follows the path
// (ref::sgemm_resolve_path), so pack and run with the same resolved path.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/kernels/ref/sgemm.h"

namespace qtk::rt {
class ThreadPool;
}

namespace qtk::rt::x86 {

struct SconvTile {
  int mr, nr;
};
// The tile shape of a path (resolved first).
SconvTile sconv_tile(ref::SgemmPath path);

// Packed weights: sliver s holds rows [s*MR, s*MR + MR) as
//   packed[s * K * MR + p * MR + i] = w[(s * MR + i) * K + p], rows past M zero.
int64_t sconv_packed_weights_floats(int64_t m, int64_t k, ref::SgemmPath path);
void sconv_pack_weights(int64_t m, int64_t k, const float* w, float* packed, ref::SgemmPath path);

// The B operand (see the top of this file). Reads may run up to NR - 1 floats
// past the last valid column of a row: the buffer needs that much slack.
struct SconvB {
  const float* base;
  const int64_t* k_off;  // K entries
  int64_t tile_stride;
  // sconv_k_blocks of these offsets, when the caller keeps them (a conv
  // plan); null: computed per call.
  const std::vector<int64_t>* k_bounds = nullptr;
};

// Where column j of the product lands. Plain (runs == nullptr): at
// data[i * ldo + j]. Mapped: tile t (columns [t * NR, t * NR + NR)) writes the
// runs runs[tile_runs[t] .. tile_runs[t + 1]), run r putting the tile's lanes
// [lane0, lane1) at data[i * ldo + offset + (lane - lane0)]; lanes in no run
// are dropped. Conv maps the grid of padded positions this way, so that the
// positions that are not outputs never reach memory.
struct SconvRun {
  int32_t lane0, lane1;
  int64_t offset;
};
struct SconvOut {
  float* data;
  int64_t ldo;
  const SconvRun* runs = nullptr;
  const int64_t* tile_runs = nullptr;  // one entry per tile, plus one
  // Epilogue, applied in registers once the whole sum is in (it fuses the
  // Add and Relu / Clip that follow a Conv): first v += addend[i * ldo + pos]
  // (addend laid out like data) when addend is given, then, when clamp is
  // set, v = v < lo ? lo : v and v = hi < v ? hi : v, as Clip computes
  // them (NaN passes). Each step rounds as the separate op would.
  const float* addend = nullptr;
  bool clamp = false;
  float lo = 0.f, hi = 0.f;
};

// The K blocks sconv_implicit_gemm sums in turn: their starts, then k. One
// block (bounds.size() == 2): each output value is written once, with its
// addend read just before at the same place, so the output may overwrite
// the addend (a residual nobody reads later).
void sconv_k_blocks(int64_t k, const int64_t* k_off, int64_t nr, std::vector<int64_t>& bounds);

// The runs of a grid of grid_cols padded positions of which output row r is
// positions [row_off[r], row_off[r] + row_len), written as output positions
// r * row_len + i, for tiles nr wide.
void sconv_grid_runs(const std::vector<int64_t>& row_off, int64_t row_len, int64_t grid_cols, int64_t nr,
                     std::vector<SconvRun>& runs, std::vector<int64_t>& tile_runs);
// The same with output row r written from out_off[r] on (rows of several
// images side by side in one grid land in different images' outputs).
void sconv_grid_runs(const std::vector<int64_t>& row_off, const std::vector<int64_t>& out_off, int64_t row_len,
                     int64_t grid_cols, int64_t nr, std::vector<SconvRun>& runs, std::vector<int64_t>& tile_runs);

// out(i, j) = bias[i] + sum_p W[i, p] * B(p, j) for i < m, j < n (bias may be
// null), then out's epilogue. Columns are split over `pool` when it is given and the product is
// large enough; nothing outside out(0:m, 0:n) is written.
void sconv_implicit_gemm(int64_t m, int64_t n, int64_t k, const float* packed_w, const SconvB& b, const float* bias,
                         const SconvOut& out, ThreadPool* pool, ref::SgemmPath path);

}  // namespace qtk::rt::x86
