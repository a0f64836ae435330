// Packing, A quantization, the portable scalar kernel and the threaded driver
// of the weight-only n-bit GEMM (qnbits.h). The AVX2 and AVX-512 VNNI kernels
// are in qnbits_avx2.cpp and qnbits_avx512.cpp.
#include "runtime/kernels/x86/qnbits.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/cpu_features.h"
#include "runtime/kernels/ref/matmul_nbits.h"
#include "runtime/thread_pool.h"

namespace qtk::rt::x86 {

int64_t QnbitsPacked::held_bytes() const {
  return panels * blocks * (groups * 64 + kQnbitsNR * static_cast<int64_t>(sizeof(float))) +
         static_cast<int64_t>(zero_points.size());
}

void qnbits_pack(int64_t k, int64_t n, int64_t bits, int64_t block, const uint8_t* b, const float* scales,
                 const uint8_t* zero_points, QnbitsPacked& out) {
  out.k = k;
  out.n = n;
  out.bits = bits;
  out.block = block;
  out.blocks = (k + block - 1) / block;
  out.panels = (n + kQnbitsNR - 1) / kQnbitsNR;
  out.groups = block * bits / 32;
  out.has_zero_points = zero_points != nullptr;
  const int64_t blob = block * bits / 8, zp_bytes = (out.blocks * bits + 7) / 8, per_byte = 8 / bits;
  const int64_t quads_per_group = 8 / bits;  // one 64-byte group: 16 columns x quads_per_group·4 k
  const uint32_t mask = (1u << bits) - 1;
  const int64_t code_bytes = std::max<int64_t>(out.panels * out.blocks * out.groups * 64, 1);
  uint8_t* dst = out.codes.get(code_bytes);
  std::memset(dst, 0, static_cast<size_t>(code_bytes));
  const int64_t param_len = std::max<int64_t>(out.panels * out.blocks * kQnbitsNR, 1);
  float* sdst = out.scales.get(param_len);
  std::fill(sdst, sdst + param_len, 0.f);
  out.zero_points.assign(static_cast<size_t>(param_len), static_cast<uint8_t>(1u << (bits - 1)));
  for (int64_t col = 0; col < n; ++col) {
    const int64_t p = col / kQnbitsNR, j = col % kQnbitsNR;
    for (int64_t kb = 0; kb < out.blocks; ++kb) {
      const int64_t param = (p * out.blocks + kb) * kQnbitsNR + j;
      sdst[param] = scales[col * out.blocks + kb];
      if (zero_points)
        out.zero_points[static_cast<size_t>(param)] =
            static_cast<uint8_t>((zero_points[col * zp_bytes + kb / per_byte] >> (bits * (kb % per_byte))) & mask);
      const uint8_t* src = b + (col * out.blocks + kb) * blob;
      uint8_t* blk = dst + (p * out.blocks + kb) * out.groups * 64;
      const int64_t len = std::min(block, k - kb * block);  // codes past K stay 0
      for (int64_t kk = 0; kk < len; ++kk) {
        const uint32_t c = (src[kk / per_byte] >> (bits * (kk % per_byte))) & mask;
        const int64_t quad = kk / 4, t = kk % 4;
        const int64_t g = quad / quads_per_group, s = quad % quads_per_group;
        blk[g * 64 + 4 * j + t] |= static_cast<uint8_t>(c << (bits * s));
      }
    }
  }
}

namespace detail {

void qnbits_quantize_a(int64_t m, int64_t k, int64_t block, const float* a, QgemmPath resolved, QnbitsA& out) {
  out.m = m;
  out.blocks = (k + block - 1) / block;
  out.kpad = out.blocks * block;
  int8_t* qa = out.qa.get(std::max<int64_t>(m * out.kpad, 1));
  out.sa.resize(static_cast<size_t>(m * out.blocks));
  out.asum.resize(static_cast<size_t>(m * out.blocks));
  for (int64_t r = 0; r < m; ++r) {
    int8_t* row = qa + r * out.kpad;
    float* sa = out.sa.data() + r * out.blocks;
    int32_t* asum = out.asum.data() + r * out.blocks;
    if (resolved == QgemmPath::kAvx512Vnni) {
      qnbits_quantize_a_avx512(a + r * k, k, block, out.blocks, row, sa, asum);
    } else if (resolved == QgemmPath::kAvx2) {
      qnbits_quantize_a_avx2(a + r * k, k, block, out.blocks, row, sa, asum);
    } else {
      qnbits_quantize_a_scalar(a + r * k, k, block, out.blocks, row, sa, asum);
    }
  }
}

void qnbits_quantize_a_scalar(const float* a, int64_t k, int64_t block, int64_t blocks, int8_t* qa, float* sa,
                              int32_t* asum) {
  std::memset(qa, 0, static_cast<size_t>(blocks * block));
  for (int64_t kb = 0; kb < blocks; ++kb) {
    const int64_t k0 = kb * block;
    matmul_nbits_quantize_a_block(a + k0, std::min(block, k - k0), qa + k0, &sa[kb], &asum[kb]);
  }
}

void qnbits_kernel_scalar(int rows, const QnbitsA& a, int64_t m0, const QnbitsPacked& w, int64_t p0, int64_t p1,
                          const float* bias, float* y) {
  const int64_t quads_per_group = 8 / w.bits;
  const uint32_t mask = (1u << w.bits) - 1;
  for (int r = 0; r < rows; ++r) {
    const int8_t* qa = a.qa.data() + (m0 + r) * a.kpad;
    const float* sa = a.sa.data() + (m0 + r) * a.blocks;
    const int32_t* asum = a.asum.data() + (m0 + r) * a.blocks;
    for (int64_t p = p0; p < p1; ++p) {
      const uint8_t* codes = w.panel_codes(p);
      for (int j = 0; j < kQnbitsNR && p * kQnbitsNR + j < w.n; ++j) {
        const int64_t col = p * kQnbitsNR + j;
        float acc = bias ? bias[col] : 0.f;
        for (int64_t kb = 0; kb < w.blocks; ++kb) {
          const int64_t param = (p * w.blocks + kb) * kQnbitsNR + j;
          const int8_t* qb = qa + kb * w.block;
          int32_t dot = 0;
          for (int64_t g = 0; g < w.groups; ++g) {
            const uint8_t* grp = codes + (kb * w.groups + g) * 64 + 4 * j;
            for (int64_t s = 0; s < quads_per_group; ++s)
              for (int t = 0; t < 4; ++t)
                dot += static_cast<int32_t>((grp[t] >> (w.bits * s)) & mask) * qb[(g * quads_per_group + s) * 4 + t];
          }
          dot -= static_cast<int32_t>(w.zero_points[static_cast<size_t>(param)]) * asum[kb];
          acc = std::fma(static_cast<float>(dot), sa[kb] * w.scales.data()[param], acc);
        }
        y[(m0 + r) * w.n + col] = acc;
      }
    }
  }
}

}  // namespace detail

void qnbits_gemm(int64_t m, const float* a, const QnbitsPacked& w, const float* bias, float* y, ThreadPool* pool,
                 QgemmPath path) {
  QgemmPath resolved = qgemm_resolve_path(path);
  if (resolved == QgemmPath::kAvx2 && !cpu_has_avx2_fma()) resolved = QgemmPath::kScalar;  // the tier uses FMA
  detail::QnbitsA qa;
  detail::qnbits_quantize_a(m, w.k, w.block, a, resolved, qa);
  const detail::QnbitsKernel kernel = resolved == QgemmPath::kAvx512Vnni ? detail::qnbits_kernel_vnni
                                      : resolved == QgemmPath::kAvx2     ? detail::qnbits_kernel_avx2
                                                                         : detail::qnbits_kernel_scalar;
  // Work units of 4 panels (64 columns); within one, every row group of 4
  // runs over the same few KiB of codes, which stay in L1.
  constexpr int64_t kChunk = 4;
  const int64_t chunks = (w.panels + kChunk - 1) / kChunk;
  auto run = [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t p0 = c * kChunk, p1 = std::min(p0 + kChunk, w.panels);
      for (int64_t m0 = 0; m0 < m; m0 += 4)
        kernel(static_cast<int>(std::min<int64_t>(4, m - m0)), qa, m0, w, p0, p1, bias, y);
    }
  };
  // The int8 GEMM's threshold (qgemm.h): a GEMV of 1024 x 1024 (~8 us here)
  // stays on the calling thread.
  if (pool && pool->size() > 1 && chunks > 1 && m * w.n * w.k >= detail::kQgemmMinParallelMacs)
    pool->parallel_for(chunks, run);
  else
    run(0, chunks);
}

}  // namespace qtk::rt::x86
