#include "runtime/kernels/ref/sgemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "runtime/thread_pool.h"

namespace qtk::rt::ref {

namespace {

using detail::kSgemmMR;
using detail::kSgemmNR;
constexpr int64_t MR = kSgemmMR;
constexpr int64_t NR = kSgemmNR;
// Block sizes (Zen 4: 32 KiB L1d, 1 MiB L2). One B sliver (KC x NR = 16 KiB)
// stays in L1 while the A block (MC x KC = 144 KiB) streams from L2.
constexpr int64_t KC = 256;
constexpr int64_t MC = MR * 24;
constexpr int64_t NC = NR * 256;
// Below this many multiply-adds a second thread costs more than it saves.
constexpr int64_t kParallelMinMacs = 1 << 19;

struct PackBuffers {
  AlignedFloats a, b;
};

PackBuffers& thread_buffers() {
  thread_local PackBuffers bufs;
  return bufs;
}

// Packs op(A)[i0:i0+mc, p0:p0+kc] into MR-tall slivers: sliver s holds rows
// s*MR.. as dst[s*kc*MR + p*MR + i], zero-padded past mc.
void pack_a(bool trans, const float* a, int64_t lda, int64_t i0, int64_t p0, int64_t mc, int64_t kc, float* dst) {
  for (int64_t s = 0; s < mc; s += MR) {
    const int64_t rows = std::min(MR, mc - s);
    float* d = dst + s * kc;
    if (!trans && rows == MR) {
      // Full sliver: six row streams, fixed-size stores the compiler unrolls.
      const float* r0 = a + (i0 + s) * lda + p0;
      const float* r1 = r0 + lda;
      const float* r2 = r1 + lda;
      const float* r3 = r2 + lda;
      const float* r4 = r3 + lda;
      const float* r5 = r4 + lda;
      for (int64_t p = 0; p < kc; ++p, d += MR) {
        d[0] = r0[p];
        d[1] = r1[p];
        d[2] = r2[p];
        d[3] = r3[p];
        d[4] = r4[p];
        d[5] = r5[p];
      }
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
void pack_b(bool trans, const float* b, int64_t ldb, int64_t p0, int64_t j0, int64_t kc, int64_t nc, float* dst) {
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
    } else {  // op(B)(p, j) = b[j * ldb + p]
      const float* src = b + (j0 + s) * ldb + p0;
      for (int64_t p = 0; p < kc; ++p) {
        float* out = d + p * NR;
        for (int64_t j = 0; j < cols; ++j) out[j] = src[j * ldb + p];
        for (int64_t j = cols; j < NR; ++j) out[j] = 0.f;
      }
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

// C[0:m, 0:n] = alpha * op(A)[0:m, p0:p0+kc] * Bpanel + beta * C, where
// sliver s of the packed B panel (kc x NR) starts at bp + s * b_stride. A is
// packed here, MC rows at a time, into pa, unless `packed_a` (A's slivers for
// this K block, see sgemm_pack_a) is given.
void macro_kernel(detail::SgemmMicroKernel ukernel, bool trans_a, int64_t m, int64_t n, int64_t p0, int64_t kc,
                  float alpha, const float* a, int64_t lda, const float* packed_a, const float* bp, int64_t b_stride,
                  float beta, float* c, int64_t ldc, float* pa) {
  for (int64_t i0 = 0; i0 < m; i0 += MC) {
    const int64_t mc = std::min(MC, m - i0);
    const float* ablock = packed_a != nullptr ? packed_a + i0 * kc : pa;
    if (packed_a == nullptr) pack_a(trans_a, a, lda, i0, p0, mc, kc, pa);
    for (int64_t jr = 0; jr < n; jr += NR) {
      const int nr = static_cast<int>(std::min(NR, n - jr));
      const float* bs = bp + (jr / NR) * b_stride;
      for (int64_t ir = 0; ir < mc; ir += MR) {
        const int mr = static_cast<int>(std::min(MR, mc - ir));
        ukernel(kc, ablock + ir * kc, bs, c + (i0 + ir) * ldc + jr, ldc, alpha, beta, mr, nr);
      }
    }
  }
}

float* a_buffer(PackBuffers& bufs, int64_t m, int64_t k) {
  return bufs.a.get(std::min(KC, k) * ((std::min(MC, m) + MR - 1) / MR * MR));
}

// One thread's whole product, blocked for the caches.
void sgemm_serial(detail::SgemmMicroKernel ukernel, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                  float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                  int64_t ldc) {
  PackBuffers& bufs = thread_buffers();
  float* pa = a_buffer(bufs, m, k);
  float* pb = bufs.b.get(std::min(KC, k) * ((std::min(NC, n) + NR - 1) / NR * NR));
  if (pa == nullptr || pb == nullptr) {
    gemm_unblocked(trans_a, m, n, k, alpha, a, lda,
                   [&](int64_t p, int64_t j) { return trans_b ? b[j * ldb + p] : b[p * ldb + j]; }, beta, c, ldc);
    return;
  }
  for (int64_t j0 = 0; j0 < n; j0 += NC) {
    const int64_t nc = std::min(NC, n - j0);
    for (int64_t p0 = 0; p0 < k; p0 += KC) {
      const int64_t kc = std::min(KC, k - p0);
      pack_b(trans_b, b, ldb, p0, j0, kc, nc, pb);
      // The first K block applies the caller's beta; later ones accumulate.
      macro_kernel(ukernel, trans_a, m, nc, p0, kc, alpha, a, lda, nullptr, pb, kc * NR, p0 == 0 ? beta : 1.f,
                   c + j0, ldc, pa);
    }
  }
}

// Offset of K block p0 in a pre-packed A of m rows (see sgemm_pack_a).
int64_t packed_a_block(int64_t m, int64_t p0) { return p0 * ((m + MR - 1) / MR * MR); }

// One thread's product with B packed whole (see sgemm_pack_b) and, if
// packed_a is given, A too: rows [a_row0, a_row0 + m) (a_row0 a multiple of
// MR) of a pre-packed A of m_total rows; otherwise A is packed from a.
void sgemm_serial_packed(detail::SgemmMicroKernel ukernel, bool trans_a, int64_t m, int64_t n, int64_t k,
                         float alpha, const float* a, int64_t lda, const float* packed_a, int64_t a_row0,
                         int64_t m_total, const float* packed_b, float beta, float* c, int64_t ldc) {
  float* pa = nullptr;
  if (packed_a == nullptr) {
    pa = a_buffer(thread_buffers(), m, k);
    if (pa == nullptr) {
      gemm_unblocked(trans_a, m, n, k, alpha, a, lda,
                     [&](int64_t p, int64_t j) { return packed_b[(j / NR) * k * NR + p * NR + j % NR]; }, beta, c,
                     ldc);
      return;
    }
  }
  for (int64_t p0 = 0; p0 < k; p0 += KC) {
    const int64_t kc = std::min(KC, k - p0);
    const float* ablock = packed_a != nullptr ? packed_a + packed_a_block(m_total, p0) + a_row0 * kc : nullptr;
    macro_kernel(ukernel, trans_a, m, n, p0, kc, alpha, a, lda, ablock, packed_b + p0 * NR, k * NR,
                 p0 == 0 ? beta : 1.f, c, ldc, pa);
  }
}

detail::SgemmMicroKernel pick_kernel(SgemmPath path) {
  if (path == SgemmPath::kAuto) path = sgemm_auto_path();
  if (path == SgemmPath::kAvx2 && sgemm_avx2_supported()) return detail::sgemm_ukernel_6x16_avx2;
  return detail::sgemm_ukernel_6x16_scalar;
}

}  // namespace

namespace detail {

void sgemm_ukernel_6x16_scalar(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                               float beta, int mr, int nr) {
  // Two passes of 6x8 so the accumulators fit the 16 SSE registers of a
  // baseline x86-64 build once the compiler vectorizes the j loop.
  constexpr int kHalf = kSgemmNR / 2;
  for (int jh = 0; jh < nr; jh += kHalf) {
    float acc[kSgemmMR][kHalf] = {};
    for (int64_t p = 0; p < kc; ++p) {
      const float* ap = a + p * kSgemmMR;
      const float* bp = b + p * kSgemmNR + jh;
#pragma GCC unroll 6
      for (int i = 0; i < kSgemmMR; ++i) {
        const float av = ap[i];
#pragma GCC unroll 8
        for (int j = 0; j < kHalf; ++j) acc[i][j] += av * bp[j];
      }
    }
    const int nj = nr - jh < kHalf ? nr - jh : kHalf;
    for (int i = 0; i < mr; ++i) {
      float* row = c + i * ldc + jh;
      if (beta == 0.f) {
        for (int j = 0; j < nj; ++j) row[j] = alpha * acc[i][j];
      } else {
        for (int j = 0; j < nj; ++j) row[j] = alpha * acc[i][j] + beta * row[j];
      }
    }
  }
}

void sgemm_small_m_dots_scalar(int m, int64_t n, int64_t k, const float* a, const float* b, int64_t ldb, float beta,
                               float* c, int64_t ldc) {
  for (int64_t j = 0; j < n; ++j) {
    const float* bj = b + j * ldb;
    for (int i = 0; i < m; ++i) {
      const float* ai = a + i * k;
      float s = 0.f;
      for (int64_t p = 0; p < k; ++p) s += ai[p] * bj[p];
      float& cij = c[i * ldc + j];
      cij = beta == 0.f ? s : s + beta * cij;
    }
  }
}

void sgemm_small_m_rows_scalar(int m, int64_t n, int64_t k, const float* a, const float* b, int64_t ldb, float* c,
                               int64_t ldc) {
  for (int64_t p = 0; p < k; ++p) {
    const float* bp = b + p * ldb;
    for (int i = 0; i < m; ++i) {
      const float av = a[i * k + p];
      float* ci = c + i * ldc;
      for (int64_t j = 0; j < n; ++j) ci[j] += av * bp[j];
    }
  }
}

}  // namespace detail

bool sgemm_avx2_supported() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

SgemmPath sgemm_auto_path() {
  static const SgemmPath p = [] {
    const char* env = std::getenv("QTK_SGEMM_SCALAR");
    if (env != nullptr && env[0] != '\0' && env[0] != '0') return SgemmPath::kScalar;
    return sgemm_avx2_supported() ? SgemmPath::kAvx2 : SgemmPath::kScalar;
  }();
  return p;
}

const char* sgemm_path_name(SgemmPath p) {
  switch (p) {
    case SgemmPath::kAuto: return "auto";
    case SgemmPath::kScalar: return "scalar";
    case SgemmPath::kAvx2: return "avx2";
  }
  return "?";
}

float* AlignedFloats::get(int64_t floats) {
  if (floats > capacity_ || !buf_) {
    const size_t bytes = (static_cast<size_t>(std::max<int64_t>(floats, 1)) * sizeof(float) + 63) / 64 * 64;
    buf_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    capacity_ = buf_ ? floats : 0;
  }
  return buf_.get();
}

namespace {

// Splits a product over the pool along its longer side, in whole micro-tiles;
// run(i0, i1, j0, j1) computes C[i0:i1, j0:j1]. Small products stay serial.
template <class Run>
void split_over_pool(ThreadPool* pool, int64_t m, int64_t n, int64_t k, Run&& run) {
  const int threads = pool != nullptr ? pool->size() : 1;
  if (threads <= 1 || m * n * k < kParallelMinMacs) {
    run(0, m, 0, n);
  } else if (n >= m) {
    pool->parallel_for((n + NR - 1) / NR, [&](int64_t b0, int64_t b1) { run(0, m, b0 * NR, std::min(n, b1 * NR)); });
  } else {
    pool->parallel_for((m + MR - 1) / MR, [&](int64_t b0, int64_t b1) { run(b0 * MR, std::min(m, b1 * MR), 0, n); });
  }
}

}  // namespace

namespace {

// Few rows of op(A): stream B once, no packing. False if the small buffer for
// A's rows cannot be had (the caller then takes the blocked path).
bool sgemm_small_m(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                   int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc, ThreadPool* pool,
                   SgemmPath path) {
  thread_local AlignedFloats a_rows;
  float* ar = a_rows.get(m * k);
  if (ar == nullptr) return false;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t p = 0; p < k; ++p) ar[i * k + p] = alpha * (trans_a ? a[p * lda + i] : a[i * lda + p]);
  if (path == SgemmPath::kAuto) path = sgemm_auto_path();
  const bool avx2 = path == SgemmPath::kAvx2 && sgemm_avx2_supported();
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
  if (threads <= 1 || m * n * k < kParallelMinMacs) {
    run(0, n);
  } else {
    pool->parallel_for((n + NR - 1) / NR, [&](int64_t b0, int64_t b1) { run(b0 * NR, std::min(n, b1 * NR)); });
  }
  return true;
}

}  // namespace

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
  const detail::SgemmMicroKernel ukernel = pick_kernel(path);
  // Each slice runs the full blocked algorithm with its own packing buffers
  // (the shared operand is packed once per thread, a small cost next to the
  // product).
  split_over_pool(pool, m, n, k, [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    const float* ai = trans_a ? a + i0 : a + i0 * lda;
    const float* bj = trans_b ? b + j0 * ldb : b + j0;
    sgemm_serial(ukernel, trans_a, trans_b, i1 - i0, j1 - j0, k, alpha, ai, lda, bj, ldb, beta, c + i0 * ldc + j0,
                 ldc);
  });
}

int64_t sgemm_packed_b_floats(int64_t k, int64_t n) { return (n + NR - 1) / NR * NR * std::max<int64_t>(k, 0); }

void sgemm_pack_b(bool trans_b, int64_t k, int64_t n, const float* b, int64_t ldb, float* packed_b) {
  if (k <= 0 || n <= 0) return;
  // pack_b with kc = k lays slivers out k * NR apart: exactly the whole-B layout.
  pack_b(trans_b, b, ldb, 0, 0, k, n, packed_b);
}

int64_t sgemm_packed_a_floats(int64_t m, int64_t k) { return (m + MR - 1) / MR * MR * std::max<int64_t>(k, 0); }

void sgemm_pack_a(bool trans_a, int64_t m, int64_t k, const float* a, int64_t lda, float* packed_a) {
  // K block by K block, each holding all of A's slivers (kc x MR each).
  for (int64_t p0 = 0; p0 < k; p0 += KC)
    pack_a(trans_a, a, lda, 0, p0, m, std::min(KC, k - p0), packed_a + packed_a_block(m, p0));
}

void sgemm_packed(int64_t m, int64_t n, int64_t k, float alpha, const float* packed_a, const float* packed_b,
                  float beta, float* c, int64_t ldc, ThreadPool* pool, SgemmPath path) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == 0.f) {
    scale_c(m, n, beta, c, ldc);
    return;
  }
  const detail::SgemmMicroKernel ukernel = pick_kernel(path);
  split_over_pool(pool, m, n, k, [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    // Slices start on sliver boundaries: i0 a multiple of MR, j0 of NR.
    sgemm_serial_packed(ukernel, false, i1 - i0, j1 - j0, k, alpha, nullptr, 0, packed_a, i0, m,
                        packed_b + (j0 / NR) * k * NR, beta, c + i0 * ldc + j0, ldc);
  });
}

}  // namespace qtk::rt::ref
