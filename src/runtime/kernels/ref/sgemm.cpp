#include "runtime/kernels/ref/sgemm.h"
#include "core/cpu_features.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "runtime/thread_pool.h"

namespace qtk::rt::ref {

namespace {

using detail::SgemmKernel;
static_assert(detail::kSgemmNR <= kSgemmMaxPackedBWidth && detail::kSgemmNR512 <= kSgemmMaxPackedBWidth,
              "kSgemmMaxPackedBWidth bounds every tile width");
// Block sizes (Zen 4/5: 32-48 KiB L1d, 1 MiB L2). One B sliver (KC x NR,
// 16-32 KiB) stays in L1 while the A block (MC x KC, 144-192 KiB) streams
// from L2.
constexpr int64_t KC = 256;
constexpr int64_t kMcSlivers = 24;  // MC = 24 * MR
constexpr int64_t NC = 4096;        // a multiple of every NR
// Below this many multiply-adds a second thread costs more than it saves.
constexpr int64_t kParallelMinMacs = 1 << 19;

int64_t round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

struct PackBuffers {
  AlignedFloats a, b;
};

PackBuffers& thread_buffers() {
  thread_local PackBuffers bufs;
  return bufs;
}

// A full MR-row sliver of plain (not transposed) A: MR row streams with
// fixed-size stores the compiler unrolls.
template <int MR>
void pack_a_full_rows(const float* src, int64_t lda, int64_t kc, float* d) {
  for (int64_t p = 0; p < kc; ++p, d += MR)
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) d[i] = src[i * lda + p];
}

// Packs op(A)[i0:i0+mc, p0:p0+kc] into MR-tall slivers: sliver s holds rows
// s*MR.. as dst[s*kc*MR + p*MR + i], zero-padded past mc.
void pack_a(int64_t MR, bool trans, const float* a, int64_t lda, int64_t i0, int64_t p0, int64_t mc, int64_t kc,
            float* dst) {
  for (int64_t s = 0; s < mc; s += MR) {
    const int64_t rows = std::min(MR, mc - s);
    float* d = dst + s * kc;
    if (!trans && rows == MR && (MR == 6 || MR == 8)) {
      const float* src = a + (i0 + s) * lda + p0;
      if (MR == 6)
        pack_a_full_rows<6>(src, lda, kc, d);
      else
        pack_a_full_rows<8>(src, lda, kc, d);
    } else if (!trans) {
      const float* src = a + (i0 + s) * lda + p0;
      for (int64_t p = 0; p < kc; ++p) {
        for (int64_t i = 0; i < rows; ++i) d[p * MR + i] = src[i * lda + p];
        for (int64_t i = rows; i < MR; ++i) d[p * MR + i] = 0.f;
      }
    } else {  // op(A)(i, p) = a[p * lda + i]: rows of A^T are contiguous in i
      const float* src = a + p0 * lda + (i0 + s);
      for (int64_t p = 0; p < kc; ++p) {
        const float* row = src + p * lda;
        for (int64_t i = 0; i < rows; ++i) d[p * MR + i] = row[i];
        for (int64_t i = rows; i < MR; ++i) d[p * MR + i] = 0.f;
      }
    }
  }
}

// Packs op(B)[p0:p0+kc, j0:j0+nc] into NR-wide slivers: sliver s holds columns
// s*NR.. as dst[s*kc*NR + p*NR + j], zero-padded past nc.
void pack_b(int64_t NR, bool trans, const float* b, int64_t ldb, int64_t p0, int64_t j0, int64_t kc, int64_t nc,
            float* dst) {
  for (int64_t s = 0; s < nc; s += NR) {
    const int64_t cols = std::min(NR, nc - s);
    float* d = dst + s * kc;
    if (!trans) {
      const float* src = b + p0 * ldb + (j0 + s);
      for (int64_t p = 0; p < kc; ++p) {
        const float* row = src + p * ldb;
        float* out = d + p * NR;
        if (cols == NR) {
          std::memcpy(out, row, NR * sizeof(float));
        } else {
          for (int64_t j = 0; j < cols; ++j) out[j] = row[j];
          for (int64_t j = cols; j < NR; ++j) out[j] = 0.f;
        }
      }
    } else {  // op(B)(p, j) = b[j * ldb + p]: a column of op(B) is a row of b
      const float* src = b + (j0 + s) * ldb + p0;
      for (int64_t j = 0; j < cols; ++j)
        for (int64_t p = 0; p < kc; ++p) d[p * NR + j] = src[j * ldb + p];
      for (int64_t p = 0; cols < NR && p < kc; ++p)
        for (int64_t j = cols; j < NR; ++j) d[p * NR + j] = 0.f;
    }
  }
}

// C = beta * C, without reading C when beta == 0.
void scale_c(int64_t m, int64_t n, float beta, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    float* row = c + i * ldc;
    if (beta == 0.f) {
      std::fill(row, row + n, 0.f);
    } else if (beta != 1.f) {
      for (int64_t j = 0; j < n; ++j) row[j] *= beta;
    }
  }
}

// The unpacked triple loop, for when packing buffers cannot be allocated
// (results match the blocked path to rounding). b_at(p, j) reads op(B).
template <class BAt>
void gemm_unblocked(bool trans_a, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                    BAt&& b_at, float beta, float* c, int64_t ldc) {
  scale_c(m, n, beta, c, ldc);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t p = 0; p < k; ++p) {
      const float av = alpha * (trans_a ? a[p * lda + i] : a[i * lda + p]);
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] += av * b_at(p, j);
    }
}

// Reads op(B)(p, j) from a whole-B packed layout (see sgemm_pack_b).
struct PackedBAt {
  const float* packed;
  int64_t k, nr;
  float operator()(int64_t p, int64_t j) const { return packed[(j / nr) * k * nr + p * nr + j % nr]; }
};

// C[0:m, 0:n] = alpha * op(A)[0:m, p0:p0+kc] * Bpanel + beta * C, where
// sliver s of the packed B panel (kc x NR) starts at bp + s * b_stride. A is
// packed here, MC rows at a time, into pa, unless `packed_a` (A's slivers for
// this K block, see sgemm_pack_a) is given.
void macro_kernel(const SgemmKernel& uk, bool trans_a, int64_t m, int64_t n, int64_t p0, int64_t kc, float alpha,
                  const float* a, int64_t lda, const float* packed_a, const float* bp, int64_t b_stride, float beta,
                  float* c, int64_t ldc, float* pa) {
  const int64_t MR = uk.mr, NR = uk.nr, MC = kMcSlivers * MR;
  for (int64_t i0 = 0; i0 < m; i0 += MC) {
    const int64_t mc = std::min(MC, m - i0);
    const float* ablock = packed_a != nullptr ? packed_a + i0 * kc : pa;
    if (packed_a == nullptr) pack_a(MR, trans_a, a, lda, i0, p0, mc, kc, pa);
    for (int64_t jr = 0; jr < n; jr += NR) {
      const int nr = static_cast<int>(std::min(NR, n - jr));
      const float* bs = bp + (jr / NR) * b_stride;
      for (int64_t ir = 0; ir < mc; ir += MR) {
        const int mr = static_cast<int>(std::min(MR, mc - ir));
        uk.fn(kc, ablock + ir * kc, bs, c + (i0 + ir) * ldc + jr, ldc, alpha, beta, mr, nr);
      }
    }
  }
}

float* a_buffer(const SgemmKernel& uk, int64_t m, int64_t k) {
  return thread_buffers().a.get(std::min(KC, k) * round_up(std::min<int64_t>(kMcSlivers * uk.mr, m), uk.mr));
}

// One thread's whole product, blocked for the caches.
void sgemm_serial(const SgemmKernel& uk, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  float* pa = a_buffer(uk, m, k);
  float* pb = thread_buffers().b.get(std::min(KC, k) * round_up(std::min(NC, n), uk.nr));
  if (pa == nullptr || pb == nullptr) {
    gemm_unblocked(trans_a, m, n, k, alpha, a, lda,
                   [&](int64_t p, int64_t j) { return trans_b ? b[j * ldb + p] : b[p * ldb + j]; }, beta, c, ldc);
    return;
  }
  for (int64_t j0 = 0; j0 < n; j0 += NC) {
    const int64_t nc = std::min(NC, n - j0);
    for (int64_t p0 = 0; p0 < k; p0 += KC) {
      const int64_t kc = std::min(KC, k - p0);
      pack_b(uk.nr, trans_b, b, ldb, p0, j0, kc, nc, pb);
      // The first K block applies the caller's beta; later ones accumulate.
      macro_kernel(uk, trans_a, m, nc, p0, kc, alpha, a, lda, nullptr, pb, kc * uk.nr, p0 == 0 ? beta : 1.f, c + j0,
                   ldc, pa);
    }
  }
}

// Offset of K block p0 in a pre-packed A of m rows (see sgemm_pack_a).
int64_t packed_a_block(int64_t mr, int64_t m, int64_t p0) { return p0 * round_up(m, mr); }

// One thread's product with B packed whole (see sgemm_pack_b) and, if
// packed_a is given, A too: rows [a_row0, a_row0 + m) (a_row0 a multiple of
// MR) of a pre-packed A of m_total rows; otherwise A is packed from a.
void sgemm_serial_packed(const SgemmKernel& uk, bool trans_a, int64_t m, int64_t n, int64_t k, float alpha,
                         const float* a, int64_t lda, const float* packed_a, int64_t a_row0, int64_t m_total,
                         const float* packed_b, float beta, float* c, int64_t ldc) {
  float* pa = nullptr;
  if (packed_a == nullptr) {
    pa = a_buffer(uk, m, k);
    if (pa == nullptr) {
      gemm_unblocked(trans_a, m, n, k, alpha, a, lda, PackedBAt{packed_b, k, uk.nr}, beta, c, ldc);
      return;
    }
  }
  for (int64_t p0 = 0; p0 < k; p0 += KC) {
    const int64_t kc = std::min(KC, k - p0);
    const float* ablock =
        packed_a != nullptr ? packed_a + packed_a_block(uk.mr, m_total, p0) + a_row0 * kc : nullptr;
    macro_kernel(uk, trans_a, m, n, p0, kc, alpha, a, lda, ablock, packed_b + p0 * uk.nr, k * uk.nr,
                 p0 == 0 ? beta : 1.f, c, ldc, pa);
  }
}

// Splits a product over the pool along its longer side, in whole micro-tiles;
// run(i0, i1, j0, j1) computes C[i0:i1, j0:j1]. Small products stay serial.
template <class Run>
void split_over_pool(ThreadPool* pool, const SgemmKernel& uk, int64_t m, int64_t n, int64_t k, Run&& run) {
  const int threads = pool != nullptr ? pool->size() : 1;
  const int64_t MR = uk.mr, NR = uk.nr;
  if (threads <= 1 || m * n * k < kParallelMinMacs) {
    run(0, m, 0, n);
  } else if (n >= m) {
    pool->parallel_for((n + NR - 1) / NR, [&](int64_t b0, int64_t b1) { run(0, m, b0 * NR, std::min(n, b1 * NR)); });
  } else {
    pool->parallel_for((m + MR - 1) / MR, [&](int64_t b0, int64_t b1) { run(b0 * MR, std::min(m, b1 * MR), 0, n); });
  }
}

// Few rows of op(A): stream B once, no packing. False if the small buffer for
// A's rows cannot be had (the caller then takes the blocked path).
// op(A)'s m rows times alpha, k floats each, in a per-thread buffer (null
// when out of memory).
const float* small_m_rows_of_a(bool trans_a, int64_t m, int64_t k, float alpha, const float* a, int64_t lda) {
  thread_local AlignedFloats a_rows;
  float* ar = a_rows.get(m * k);
  if (ar == nullptr) return nullptr;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t p = 0; p < k; ++p) ar[i * k + p] = alpha * (trans_a ? a[p * lda + i] : a[i * lda + p]);
  return ar;
}

bool sgemm_small_m(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                   int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc, ThreadPool* pool,
                   SgemmPath path) {
  const float* ar = small_m_rows_of_a(trans_a, m, k, alpha, a, lda);
  if (ar == nullptr) return false;
  const bool avx2 = sgemm_resolve_path(path) != SgemmPath::kScalar;
  const int mi = static_cast<int>(m);
  if (!trans_b) scale_c(m, n, beta, c, ldc);
  auto run = [&](int64_t j0, int64_t j1) {
    if (trans_b) {
      (avx2 ? detail::sgemm_small_m_dots_avx2 : detail::sgemm_small_m_dots_scalar)(mi, j1 - j0, k, ar, b + j0 * ldb,
                                                                                  ldb, beta, c + j0, ldc);
    } else {
      (avx2 ? detail::sgemm_small_m_rows_avx2 : detail::sgemm_small_m_rows_scalar)(mi, j1 - j0, k, ar, b + j0, ldb,
                                                                                  c + j0, ldc);
    }
  };
  const int threads = pool != nullptr ? pool->size() : 1;
  constexpr int64_t kSplit = detail::kSgemmNR;
  if (threads <= 1 || m * n * k < kParallelMinMacs) {
    run(0, n);
  } else {
    pool->parallel_for((n + kSplit - 1) / kSplit,
                       [&](int64_t b0, int64_t b1) { run(b0 * kSplit, std::min(n, b1 * kSplit)); });
  }
  return true;
}

// The same for a packed B (sgemm_pack_b): each sliver of NR columns is a
// plain k x NR block, read row by row.
bool sgemm_small_m_packed(bool trans_a, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                          const float* packed_b, int nr, float beta, float* c, int64_t ldc, ThreadPool* pool,
                          SgemmPath path) {
  const float* ar = small_m_rows_of_a(trans_a, m, k, alpha, a, lda);
  if (ar == nullptr) return false;
  const auto rows = sgemm_resolve_path(path) != SgemmPath::kScalar ? detail::sgemm_small_m_rows_avx2
                                                                    : detail::sgemm_small_m_rows_scalar;
  scale_c(m, n, beta, c, ldc);
  const int mi = static_cast<int>(m);
  const int64_t slivers = (n + nr - 1) / nr;
  auto run = [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s)
      rows(mi, std::min<int64_t>(nr, n - s * nr), k, ar, packed_b + s * k * nr, nr, c + s * nr, ldc);
  };
  const int threads = pool != nullptr ? pool->size() : 1;
  if (threads <= 1 || m * n * k < kParallelMinMacs) run(0, slivers);
  else pool->parallel_for(slivers, run);
  return true;
}

}  // namespace

bool sgemm_avx2_supported() { return cpu_has_avx2_fma(); }

bool sgemm_avx512_supported() { return cpu_has_avx512f(); }

SgemmPath sgemm_auto_path() {
  static const SgemmPath p = [] {
    if (env_flag_set("QTK_SGEMM_SCALAR")) return SgemmPath::kScalar;
    if (sgemm_avx512_supported() && !env_flag_set("QTK_SGEMM_AVX2")) return SgemmPath::kAvx512;
    return sgemm_avx2_supported() ? SgemmPath::kAvx2 : SgemmPath::kScalar;
  }();
  return p;
}

SgemmPath sgemm_resolve_path(SgemmPath p) {
  if (p == SgemmPath::kAuto) return sgemm_auto_path();
  if (p == SgemmPath::kAvx512 && !sgemm_avx512_supported()) p = SgemmPath::kAvx2;
  if (p == SgemmPath::kAvx2 && !sgemm_avx2_supported()) p = SgemmPath::kScalar;
  return p;
}

const char* sgemm_path_name(SgemmPath p) {
  switch (p) {
    case SgemmPath::kAuto: return "auto";
    case SgemmPath::kScalar: return "scalar";
    case SgemmPath::kAvx2: return "avx2";
    case SgemmPath::kAvx512: return "avx512";
  }
  return "?";
}

namespace detail {
SgemmKernel sgemm_kernel(SgemmPath concrete) {
  switch (concrete) {
    case SgemmPath::kAvx512: return {kSgemmMR512, kSgemmNR512, sgemm_ukernel_8x32_avx512};
    case SgemmPath::kAvx2: return {kSgemmMR, kSgemmNR, sgemm_ukernel_6x16_avx2};
    default: return {kSgemmMR, kSgemmNR, sgemm_ukernel_6x16_scalar};
  }
}
}  // namespace detail

float* AlignedFloats::get(int64_t floats) {
  if (floats > capacity_ || !buf_) {
    const size_t bytes = (static_cast<size_t>(std::max<int64_t>(floats, 1)) * sizeof(float) + 63) / 64 * 64;
    buf_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    capacity_ = buf_ ? floats : 0;
  }
  return buf_.get();
}

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc, ThreadPool* pool, SgemmPath path) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == 0.f) {
    scale_c(m, n, beta, c, ldc);
    return;
  }
  if (m <= detail::kSgemmSmallM &&
      sgemm_small_m(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, pool, path))
    return;
  const SgemmKernel uk = detail::sgemm_kernel(sgemm_resolve_path(path));
  // Each slice runs the full blocked algorithm with its own packing buffers
  // (the shared operand is packed once per thread, a small cost next to the
  // product).
  split_over_pool(pool, uk, m, n, k, [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    const float* ai = trans_a ? a + i0 : a + i0 * lda;
    const float* bj = trans_b ? b + j0 * ldb : b + j0;
    sgemm_serial(uk, trans_a, trans_b, i1 - i0, j1 - j0, k, alpha, ai, lda, bj, ldb, beta, c + i0 * ldc + j0, ldc);
  });
}

int sgemm_packed_b_width(SgemmPath path) { return detail::sgemm_kernel(sgemm_resolve_path(path)).nr; }

int64_t sgemm_packed_b_floats(int64_t k, int64_t n, SgemmPath path) {
  return round_up(n, sgemm_packed_b_width(path)) * std::max<int64_t>(k, 0);
}

void sgemm_pack_b(bool trans_b, int64_t k, int64_t n, const float* b, int64_t ldb, float* packed_b, SgemmPath path) {
  if (k <= 0 || n <= 0) return;
  // pack_b with kc = k lays slivers out k * NR apart: exactly the whole-B layout.
  pack_b(sgemm_packed_b_width(path), trans_b, b, ldb, 0, 0, k, n, packed_b);
}

int64_t sgemm_packed_a_floats(int64_t m, int64_t k, SgemmPath path) {
  return round_up(m, detail::sgemm_kernel(sgemm_resolve_path(path)).mr) * std::max<int64_t>(k, 0);
}

void sgemm_pack_a(bool trans_a, int64_t m, int64_t k, const float* a, int64_t lda, float* packed_a, SgemmPath path) {
  const int64_t mr = detail::sgemm_kernel(sgemm_resolve_path(path)).mr;
  // K block by K block, each holding all of A's slivers (kc x MR each).
  for (int64_t p0 = 0; p0 < k; p0 += KC)
    pack_a(mr, trans_a, a, lda, 0, p0, m, std::min(KC, k - p0), packed_a + packed_a_block(mr, m, p0));
}

void sgemm_packed(int64_t m, int64_t n, int64_t k, float alpha, const float* packed_a, const float* packed_b,
                  float beta, float* c, int64_t ldc, ThreadPool* pool, SgemmPath path) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == 0.f) {
    scale_c(m, n, beta, c, ldc);
    return;
  }
  const SgemmKernel uk = detail::sgemm_kernel(sgemm_resolve_path(path));
  split_over_pool(pool, uk, m, n, k, [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    // Slices start on sliver boundaries: i0 a multiple of MR, j0 of NR.
    sgemm_serial_packed(uk, false, i1 - i0, j1 - j0, k, alpha, nullptr, 0, packed_a, i0, m,
                        packed_b + (j0 / uk.nr) * k * uk.nr, beta, c + i0 * ldc + j0, ldc);
  });
}

void sgemm_prepacked_b(bool trans_a, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                       const float* packed_b, float beta, float* c, int64_t ldc, ThreadPool* pool, SgemmPath path) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == 0.f) {
    scale_c(m, n, beta, c, ldc);
    return;
  }
  const SgemmKernel uk = detail::sgemm_kernel(sgemm_resolve_path(path));
  if (m <= detail::kSgemmSmallM &&
      sgemm_small_m_packed(trans_a, m, n, k, alpha, a, lda, packed_b, uk.nr, beta, c, ldc, pool, path))
    return;
  split_over_pool(pool, uk, m, n, k, [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    const float* ai = trans_a ? a + i0 : a + i0 * lda;
    sgemm_serial_packed(uk, trans_a, i1 - i0, j1 - j0, k, alpha, ai, lda, nullptr, 0, 0,
                        packed_b + (j0 / uk.nr) * k * uk.nr, beta, c + i0 * ldc + j0, ldc);
  });
}

}  // namespace qtk::rt::ref
