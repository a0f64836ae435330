#include "runtime/kernels/x86/sconv_implicit_gemm.h"

#include <algorithm>

#include "runtime/thread_pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QTK_SCONV_X86 1
#endif

namespace qtk::rt::x86 {

namespace {

using ref::SgemmPath;

// SconvOut's epilogue for one tile call: z is the addend at the tile's row 0
// (indexed like c), or null. Passed only with the last K block.
struct Epilogue {
  const float* z;
  bool clamp;
  float lo, hi;
};

// For i < mr: acc_i = sum_{p < kc} a[p * MR + i] * b[k_off[p] + 0:NR], and
// each run of the tile's row i (see SconvOut) gets (accumulate ? its current
// value : bias[i]) + acc_i at c + i * ldc + offset, then the epilogue when
// epi is not null. bias may be null (zero).
using TileFn = void (*)(int64_t kc, const float* a, const float* b, const int64_t* k_off, float* c, int64_t ldc,
                        const SconvRun* runs, int nruns, const float* bias, bool accumulate, const Epilogue* epi,
                        int mr);

// Largest K block, as the floats its B rows span for one tile (32 KiB):
// they stay in L1 while every weight sliver of the block passes over them.
// Conv's shifted rows overlap (neighbouring taps are a float apart), so a
// 3x3 layer of 64 channels (K = 576) spans ~6.5K floats and runs as one
// block: no partial sums stored and reloaded between blocks.
constexpr int64_t kBlockFloats = 8192;
// Below this many multiply-adds a second thread costs more than it saves
// (measured: resnet20's batch-1 convs, 1.8M each, ran 1.65x slower split in two).
constexpr int64_t kParallelMinMacs = 1 << 22;

// Writes row i of a tile, spilled to acc[0:NR], through its runs: each
// value's sum, then (last K block) + its addend and the clamp, stored once.
// The addend is read before the value is stored: the output may be the
// addend's storage (sconv_k_blocks: one block).
inline void store_runs(const float* acc, float* c, const SconvRun* runs, int nruns, const float* bias, int i,
                       bool accumulate, const Epilogue* epi, int64_t ldc) {
  const float b0 = bias != nullptr ? bias[i] : 0.f;
  for (int r = 0; r < nruns; ++r) {
    float* dst = c + runs[r].offset;
    const float* src = acc + runs[r].lane0;
    const float* z = epi != nullptr && epi->z != nullptr ? epi->z + i * ldc + runs[r].offset : nullptr;
    const bool clamp = epi != nullptr && epi->clamp;
    const int len = runs[r].lane1 - runs[r].lane0;
    for (int j = 0; j < len; ++j) {
      float v = accumulate ? dst[j] + src[j] : b0 + src[j];
      if (z != nullptr) v = v + z[j];
      if (clamp) {
        v = v < epi->lo ? epi->lo : v;
        v = epi->hi < v ? epi->hi : v;
      }
      dst[j] = v;
    }
  }
}

// Portable 6x16 tile, as two 6x8 halves so the accumulators fit the 16 SSE
// registers of a baseline build once the compiler vectorizes the j loop.
void tile_scalar(int64_t kc, const float* a, const float* b, const int64_t* k_off, float* c, int64_t ldc,
                 const SconvRun* runs, int nruns, const float* bias, bool accumulate, const Epilogue* epi, int mr) {
  constexpr int MR = ref::detail::kSgemmMR, NR = ref::detail::kSgemmNR, kHalf = NR / 2;
  float row[ref::detail::kSgemmMR][NR];
  for (int jh = 0; jh < NR; jh += kHalf) {
    float acc[MR][kHalf] = {};
    for (int64_t p = 0; p < kc; ++p) {
      const float* ap = a + p * MR;
      const float* bp = b + k_off[p] + jh;
#pragma GCC unroll 6
      for (int i = 0; i < MR; ++i) {
        const float av = ap[i];
#pragma GCC unroll 8
        for (int j = 0; j < kHalf; ++j) acc[i][j] += av * bp[j];
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < kHalf; ++j) row[i][jh + j] = acc[i][j];
  }
  for (int i = 0; i < mr; ++i) store_runs(row[i], c + i * ldc, runs, nruns, bias, i, accumulate, epi, ldc);
}

#if QTK_SCONV_X86

// The addend was written layers ago and is out of cache by now: a tile asks
// for its rows of it before the products, so that they arrive meanwhile
// (read after the loop they cost more than the separate Add did).
inline void prefetch_addend(const Epilogue* epi, int64_t ldc, const SconvRun* runs, int nruns, int rows) {
  if (epi == nullptr || epi->z == nullptr) return;
  for (int r = 0; r < nruns; ++r)
    for (int i = 0; i < rows; ++i) {
      const float* zp = epi->z + i * ldc + runs[r].offset;
      _mm_prefetch(reinterpret_cast<const char*>(zp), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(zp + (runs[r].lane1 - runs[r].lane0 - 1)), _MM_HINT_T0);
    }
}

// AVX2+FMA ROWS x (8 * VECS) tile of the 6x16 shape: 12 accumulators, 2 B
// vectors and a broadcast fill the 16 ymm registers. Every loop over acc is
// unrolled: a run-time index would keep acc in memory.
template <int ROWS, int VECS>
__attribute__((target("avx2,fma"))) void tile_avx2(int64_t kc, const float* a, const float* b, const int64_t* k_off,
                                                   float* c, int64_t ldc, const SconvRun* runs, int nruns,
                                                   const float* bias, bool accumulate, const Epilogue* epi) {
  constexpr int MR = ref::detail::kSgemmMR;
  prefetch_addend(epi, ldc, runs, nruns, ROWS);
  __m256 acc[ROWS][VECS];
#pragma GCC unroll 6
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < VECS; ++v) acc[i][v] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; ++p) {
    const float* bp = b + k_off[p];
    __m256 bv[VECS];
#pragma GCC unroll 2
    for (int v = 0; v < VECS; ++v) bv[v] = _mm256_loadu_ps(bp + 8 * v);
#pragma GCC unroll 6
    for (int i = 0; i < ROWS; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + i);
#pragma GCC unroll 2
      for (int v = 0; v < VECS; ++v) acc[i][v] = _mm256_fmadd_ps(av, bv[v], acc[i][v]);
    }
    a += MR;
  }
  if (nruns == 1 && runs[0].lane0 == 0 && runs[0].lane1 == 8 * VECS) {  // one whole row segment
    const float* z = epi != nullptr ? epi->z : nullptr;
    const bool clamp = epi != nullptr && epi->clamp;
    const __m256 lo = _mm256_set1_ps(clamp ? epi->lo : 0.f), hi = _mm256_set1_ps(clamp ? epi->hi : 0.f);
#pragma GCC unroll 6
    for (int i = 0; i < ROWS; ++i) {
      float* cp = c + i * ldc + runs[0].offset;
      const __m256 init = _mm256_set1_ps(!accumulate && bias != nullptr ? bias[i] : 0.f);
#pragma GCC unroll 2
      for (int v = 0; v < VECS; ++v) {
        const __m256 base = accumulate ? _mm256_loadu_ps(cp + 8 * v) : init;
        __m256 r = _mm256_add_ps(base, acc[i][v]);
        if (z != nullptr) r = _mm256_add_ps(r, _mm256_loadu_ps(z + i * ldc + runs[0].offset + 8 * v));
        // max(lo, r) is r < lo ? lo : r and min(hi, r) is hi < r ? hi : r
        // (the second operand when unordered), exactly as Clip computes.
        if (clamp) r = _mm256_min_ps(hi, _mm256_max_ps(lo, r));
        _mm256_storeu_ps(cp + 8 * v, r);
      }
    }
    return;
  }
  alignas(32) float t[8 * VECS];  // otherwise spill a row at a time and write its runs
#pragma GCC unroll 6
  for (int i = 0; i < ROWS; ++i) {
#pragma GCC unroll 2
    for (int v = 0; v < VECS; ++v) _mm256_store_ps(t + 8 * v, acc[i][v]);
    store_runs(t, c + i * ldc, runs, nruns, bias, i, accumulate, epi, ldc);
  }
}

template <int VECS>
__attribute__((target("avx2,fma"))) void rows_avx2(int64_t kc, const float* a, const float* b, const int64_t* k_off,
                                                   float* c, int64_t ldc, const SconvRun* runs, int nruns,
                                                   const float* bias, bool acc, const Epilogue* epi, int mr) {
  switch (mr) {
    case 1: return tile_avx2<1, VECS>(kc, a, b, k_off, c, ldc, runs, nruns, bias, acc, epi);
    case 2: return tile_avx2<2, VECS>(kc, a, b, k_off, c, ldc, runs, nruns, bias, acc, epi);
    case 3: return tile_avx2<3, VECS>(kc, a, b, k_off, c, ldc, runs, nruns, bias, acc, epi);
    case 4: return tile_avx2<4, VECS>(kc, a, b, k_off, c, ldc, runs, nruns, bias, acc, epi);
    case 5: return tile_avx2<5, VECS>(kc, a, b, k_off, c, ldc, runs, nruns, bias, acc, epi);
    default: return tile_avx2<6, VECS>(kc, a, b, k_off, c, ldc, runs, nruns, bias, acc, epi);
  }
}

// The highest lane any run of the tile writes, plus one.
inline int lanes_used(const SconvRun* runs, int nruns) {
  int hi = 0;
  for (int r = 0; r < nruns; ++r) hi = std::max(hi, runs[r].lane1);
  return hi;
}

__attribute__((target("avx2,fma"))) void tile_6x16_avx2(int64_t kc, const float* a, const float* b,
                                                        const int64_t* k_off, float* c, int64_t ldc,
                                                        const SconvRun* runs, int nruns, const float* bias,
                                                        bool accumulate, const Epilogue* epi, int mr) {
  if (lanes_used(runs, nruns) > 8)
    rows_avx2<2>(kc, a, b, k_off, c, ldc, runs, nruns, bias, accumulate, epi, mr);
  else
    rows_avx2<1>(kc, a, b, k_off, c, ldc, runs, nruns, bias, accumulate, epi, mr);
}

// AVX-512 ROWS x (16 * VECS) tile of the 8x32 shape (16 accumulators). Runs
// are written straight from registers with masked stores.
template <int ROWS, int VECS>
__attribute__((target("avx512f,avx2,fma"))) void tile_avx512(int64_t kc, const float* a, const float* b,
                                                             const int64_t* k_off, float* c, int64_t ldc,
                                                             const SconvRun* runs, int nruns, const float* bias,
                                                             bool accumulate, const Epilogue* epi) {
  constexpr int MR = ref::detail::kSgemmMR512;
  prefetch_addend(epi, ldc, runs, nruns, ROWS);
  __m512 acc[ROWS][VECS];
#pragma GCC unroll 8
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < VECS; ++v) acc[i][v] = _mm512_setzero_ps();
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; ++p) {
    const float* bp = b + k_off[p];
    __m512 bv[VECS];
#pragma GCC unroll 2
    for (int v = 0; v < VECS; ++v) bv[v] = _mm512_loadu_ps(bp + 16 * v);
#pragma GCC unroll 8
    for (int i = 0; i < ROWS; ++i) {
      const __m512 av = _mm512_set1_ps(a[i]);
#pragma GCC unroll 2
      for (int v = 0; v < VECS; ++v) acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
    }
    a += MR;
  }
  const float* z = epi != nullptr ? epi->z : nullptr;
  const bool clamp = epi != nullptr && epi->clamp;
  const __m512 lo = _mm512_set1_ps(clamp ? epi->lo : 0.f), hi = _mm512_set1_ps(clamp ? epi->hi : 0.f);
  for (int r = 0; r < nruns; ++r) {
    // Lane l of vector v goes to dst + 16 * v + l - lane0; masked-off lanes
    // are never touched.
    // Lanes [lane0, lane1) of the tile's 16 * VECS <= 32, as one bit mask
    // cut into 16-lane pieces (plain shifts: per-vector clamps were turned
    // into vector code that spilled through the stack).
    const uint64_t lanes = ((uint64_t{1} << runs[r].lane1) - 1u) & ~((uint64_t{1} << runs[r].lane0) - 1u);
    __mmask16 mask[VECS];
#pragma GCC unroll 2
    for (int v = 0; v < VECS; ++v) mask[v] = static_cast<__mmask16>(lanes >> (16 * v));
    float* dst = c + runs[r].offset - runs[r].lane0;
    const float* zdst = z != nullptr ? z + runs[r].offset - runs[r].lane0 : nullptr;
    // Vector by vector, skipping those the run has no lanes in: a run
    // within one half of the tile costs one store per row, not two (layers
    // with few taps, such as a first Conv of one channel, are bound by these
    // stores).
#pragma GCC unroll 2
    for (int v = 0; v < VECS; ++v) {
      if (mask[v] == 0) continue;
#pragma GCC unroll 8
      for (int i = 0; i < ROWS; ++i) {
        const __m512 init = _mm512_set1_ps(!accumulate && bias != nullptr ? bias[i] : 0.f);
        float* cp = dst + i * ldc + 16 * v;
        const __m512 base = accumulate ? _mm512_maskz_loadu_ps(mask[v], cp) : init;
        __m512 y = _mm512_add_ps(base, acc[i][v]);
        if (zdst != nullptr) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask[v], zdst + i * ldc + 16 * v));
        // max(lo, y) is lo > y ? lo : y and min(hi, y) is hi < y ? hi : y
        // (the second operand when unordered), exactly as Clip computes.
        // Zero-masked with every lane on: the same instructions, without
        // GCC 12's false uninitialized warning on the unmasked intrinsics.
        if (clamp) y = _mm512_maskz_min_ps(0xFFFF, hi, _mm512_maskz_max_ps(0xFFFF, lo, y));
        _mm512_mask_storeu_ps(cp, mask[v], y);
      }
    }
  }
}

template <int VECS>
__attribute__((target("avx512f,avx2,fma"))) void rows_avx512(int64_t kc, const float* a, const float* b,
                                                             const int64_t* k_off, float* c, int64_t ldc,
                                                             const SconvRun* runs, int nruns, const float* bias,
                                                             bool acc, const Epilogue* epi, int mr) {
  switch (mr) {
    case 1: return tile_avx512<1, VECS>(kc, a, b, k_off, c, ldc, runs, nruns, bias, acc, epi);
    case 2: return tile_avx512<2, VECS>(kc, a, b, k_off, c, ldc, runs, nruns, bias, acc, epi);
    case 3: return tile_avx512<3, VECS>(kc, a, b, k_off, c, ldc, runs, nruns, bias, acc, epi);
    case 4: return tile_avx512<4, VECS>(kc, a, b, k_off, c, ldc, runs, nruns, bias, acc, epi);
    case 5: return tile_avx512<5, VECS>(kc, a, b, k_off, c, ldc, runs, nruns, bias, acc, epi);
    case 6: return tile_avx512<6, VECS>(kc, a, b, k_off, c, ldc, runs, nruns, bias, acc, epi);
    case 7: return tile_avx512<7, VECS>(kc, a, b, k_off, c, ldc, runs, nruns, bias, acc, epi);
    default: return tile_avx512<8, VECS>(kc, a, b, k_off, c, ldc, runs, nruns, bias, acc, epi);
  }
}

__attribute__((target("avx512f,avx2,fma"))) void tile_8x32_avx512(int64_t kc, const float* a, const float* b,
                                                                  const int64_t* k_off, float* c, int64_t ldc,
                                                                  const SconvRun* runs, int nruns,
                                                                  const float* bias, bool accumulate,
                                                                  const Epilogue* epi, int mr) {
  if (lanes_used(runs, nruns) > 16)
    rows_avx512<2>(kc, a, b, k_off, c, ldc, runs, nruns, bias, accumulate, epi, mr);
  else
    rows_avx512<1>(kc, a, b, k_off, c, ldc, runs, nruns, bias, accumulate, epi, mr);
}

#endif  // QTK_SCONV_X86

struct TileKernel {
  int mr, nr;
  TileFn fn;
};

TileKernel tile_kernel(SgemmPath path) {
  switch (ref::sgemm_resolve_path(path)) {
#if QTK_SCONV_X86
    case SgemmPath::kAvx512: return {ref::detail::kSgemmMR512, ref::detail::kSgemmNR512, tile_8x32_avx512};
    case SgemmPath::kAvx2: return {ref::detail::kSgemmMR, ref::detail::kSgemmNR, tile_6x16_avx2};
#endif
    default: return {ref::detail::kSgemmMR, ref::detail::kSgemmNR, tile_scalar};
  }
}

// Splits [0, k) into K blocks that each span about the same number of B
// floats, at most kBlockFloats: bounds gets their starts, then k. Row p adds
// the floats it does not share with row p - 1 when the offsets ascend (the
// shifted rows of a padded image), else a whole row of nr.
void k_blocks(int64_t k, const int64_t* k_off, int64_t nr, std::vector<int64_t>& bounds) {
  bounds.assign(1, 0);
  if (k <= 0) {
    bounds.push_back(0);
    return;
  }
  auto adds = [&](int64_t p) {
    const int64_t step = p > 0 ? k_off[p] - k_off[p - 1] : nr;
    return step >= 0 ? std::min(step, nr) : nr;
  };
  int64_t total = 0;
  for (int64_t p = 0; p < k; ++p) total += adds(p);
  const int64_t blocks = (total + kBlockFloats - 1) / kBlockFloats;
  int64_t span = 0;
  for (int64_t p = 0; p < k; ++p) {
    span += adds(p);
    // Block b ends once the floats so far reach (b + 1) / blocks of them.
    if (p + 1 < k && span * blocks >= static_cast<int64_t>(bounds.size()) * total) bounds.push_back(p + 1);
  }
  bounds.push_back(k);
}

}  // namespace

void sconv_k_blocks(int64_t k, const int64_t* k_off, int64_t nr, std::vector<int64_t>& bounds) {
  k_blocks(k, k_off, nr, bounds);
}

SconvTile sconv_tile(SgemmPath path) {
  const TileKernel k = tile_kernel(path);
  return {k.mr, k.nr};
}

int64_t sconv_packed_weights_floats(int64_t m, int64_t k, SgemmPath path) {
  const int64_t mr = tile_kernel(path).mr;
  return (m + mr - 1) / mr * mr * std::max<int64_t>(k, 0);
}

void sconv_pack_weights(int64_t m, int64_t k, const float* w, float* packed, SgemmPath path) {
  const int64_t mr = tile_kernel(path).mr;
  for (int64_t s = 0; s * mr < m; ++s) {
    float* d = packed + s * k * mr;
    const int64_t rows = std::min(mr, m - s * mr);
    for (int64_t p = 0; p < k; ++p) {
      for (int64_t i = 0; i < rows; ++i) d[p * mr + i] = w[(s * mr + i) * k + p];
      for (int64_t i = rows; i < mr; ++i) d[p * mr + i] = 0.f;
    }
  }
}

void sconv_grid_runs(const std::vector<int64_t>& row_off, int64_t row_len, int64_t grid_cols, int64_t nr,
                     std::vector<SconvRun>& runs, std::vector<int64_t>& tile_runs) {
  std::vector<int64_t> out_off(row_off.size());
  for (size_t q = 0; q < out_off.size(); ++q) out_off[q] = static_cast<int64_t>(q) * row_len;
  sconv_grid_runs(row_off, out_off, row_len, grid_cols, nr, runs, tile_runs);
}

void sconv_grid_runs(const std::vector<int64_t>& row_off, const std::vector<int64_t>& out_off, int64_t row_len,
                     int64_t grid_cols, int64_t nr, std::vector<SconvRun>& runs, std::vector<int64_t>& tile_runs) {
  runs.clear();
  tile_runs.assign(1, 0);
  size_t r = 0;  // first output row that may still reach the current tile
  for (int64_t j0 = 0; j0 < grid_cols; j0 += nr) {
    const int64_t j1 = std::min(j0 + nr, grid_cols);
    while (r < row_off.size() && row_off[r] + row_len <= j0) ++r;
    for (size_t q = r; q < row_off.size() && row_off[q] < j1; ++q) {
      const int64_t lo = std::max(j0, row_off[q]), hi = std::min(j1, row_off[q] + row_len);
      if (lo < hi)
        runs.push_back({static_cast<int32_t>(lo - j0), static_cast<int32_t>(hi - j0), out_off[q] + (lo - row_off[q])});
    }
    tile_runs.push_back(static_cast<int64_t>(runs.size()));
  }
}

void sconv_implicit_gemm(int64_t m, int64_t n, int64_t k, const float* packed_w, const SconvB& b, const float* bias,
                         const SconvOut& out, ThreadPool* pool, SgemmPath path) {
  if (m <= 0 || n <= 0) return;
  const TileKernel kern = tile_kernel(path);
  const int64_t mr = kern.mr, nr = kern.nr, tiles = (n + nr - 1) / nr;
  // Balanced K blocks (a packed K = 288 runs as 2 x 144, not 256 + 32).
  std::vector<int64_t> local;
  if (b.k_bounds == nullptr) k_blocks(k, b.k_off, nr, local);
  const std::vector<int64_t>& bounds = b.k_bounds != nullptr ? *b.k_bounds : local;
  const size_t kblocks = bounds.size() - 1;
  static const int64_t kNoTaps = 0;
  const bool has_epilogue = out.addend != nullptr || out.clamp;
  auto run = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      SconvRun plain{0, static_cast<int32_t>(std::min(nr, n - t * nr)), t * nr};
      const SconvRun* runs = &plain;
      int nruns = 1;
      if (out.runs != nullptr) {
        runs = out.runs + out.tile_runs[t];
        nruns = static_cast<int>(out.tile_runs[t + 1] - out.tile_runs[t]);
        if (nruns == 0) continue;
      }
      const float* bt = b.base + t * b.tile_stride;
      // k == 0 (no taps) still runs one empty block, which writes the bias.
      for (size_t blk = 0; blk < kblocks; ++blk) {
        const int64_t p0 = bounds[blk], kc = bounds[blk + 1] - p0;
        const bool last_block = blk + 1 == kblocks;
        for (int64_t i0 = 0; i0 < m; i0 += mr) {
          const Epilogue epi{out.addend != nullptr ? out.addend + i0 * out.ldo : nullptr, out.clamp, out.lo, out.hi};
          kern.fn(kc, packed_w + i0 * k + p0 * mr, bt, k > 0 ? b.k_off + p0 : &kNoTaps, out.data + i0 * out.ldo,
                  out.ldo, runs, nruns, bias != nullptr ? bias + i0 : nullptr, p0 > 0,
                  has_epilogue && last_block ? &epi : nullptr, static_cast<int>(std::min(mr, m - i0)));
        }
      }
    }
  };
  if (pool != nullptr && pool->size() > 1 && m * n * k >= kParallelMinMacs)
    pool->parallel_for(tiles, run);
  else
    run(0, tiles);
}

}  // namespace qtk::rt::x86
