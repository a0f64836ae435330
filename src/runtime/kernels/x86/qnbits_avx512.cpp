// AVX-512 VNNI tier of the weight-only n-bit GEMM (qnbits.h): A quantized 16
// floats at a time, and the micro-kernel that unpacks 64 bytes of codes into
// 8/bits vpdpbusd operands (shift, mask) and multiplies them by broadcast
// quads of A. Per-function target attributes keep the library baseline
// x86-64; these run only when qgemm_avx512_vnni_supported().
#include <algorithm>
#include <cstring>
#include <limits>

#include "runtime/kernels/x86/qnbits.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC bug 105593, see qgemm_vnni_avx512.cpp
#include <immintrin.h>
#define QTK_QNBITS_VNNI_X86 1
#endif

namespace qtk::rt::x86::detail {

#ifdef QTK_QNBITS_VNNI_X86

#define QTK_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

namespace {

QTK_VNNI inline __mmask16 lanes_below(int64_t n) {
  if (n <= 0) return 0;
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1);
}

QTK_VNNI inline int32_t load_quad(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// MR rows x NP panels (16 columns each) over all of K. GROUPS: 64-byte
// groups per block when known at compile time (block 32), else 0.
template <int MR, int NP, int BITS, int GROUPS>
QTK_VNNI void vnni_tile(const QnbitsA& a, int64_t m0, const QnbitsPacked& w, int64_t p0, const float* bias, float* y) {
  constexpr int kQuads = 8 / BITS;  // vpdpbusd operands per 64-byte group
  const __m512i mask = _mm512_set1_epi8(static_cast<char>(BITS == 8 ? 0xff : (1 << BITS) - 1));
  const int64_t blocks = w.blocks, groups = GROUPS ? GROUPS : w.groups;
  __mmask16 cols[NP];
  __m512 f[MR][NP];
  const uint8_t* codes[NP];
#pragma GCC unroll 4
  for (int np = 0; np < NP; ++np) {
    cols[np] = lanes_below(w.n - (p0 + np) * kQnbitsNR);
    const __m512 b0 = bias ? _mm512_maskz_loadu_ps(cols[np], bias + (p0 + np) * kQnbitsNR) : _mm512_setzero_ps();
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) f[r][np] = b0;
    codes[np] = w.panel_codes(p0 + np);
  }
  const int8_t* qa[MR];
  const float* sa[MR];
  const int32_t* asum[MR];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
    qa[r] = a.qa.data() + (m0 + r) * a.kpad;
    sa[r] = a.sa.data() + (m0 + r) * a.blocks;
    asum[r] = a.asum.data() + (m0 + r) * a.blocks;
  }
  const int32_t z_default = 1 << (BITS - 1);
  for (int64_t kb = 0; kb < blocks; ++kb) {
    // acc starts at -z · asum: the zero-point correction, exact in int32.
    __m512i acc[MR][NP];
    if (w.has_zero_points) {
#pragma GCC unroll 4
      for (int np = 0; np < NP; ++np) {
        const __m512i z = _mm512_cvtepu8_epi32(_mm_loadu_si128(
            reinterpret_cast<const __m128i*>(w.zero_points.data() + ((p0 + np) * blocks + kb) * kQnbitsNR)));
#pragma GCC unroll 4
        for (int r = 0; r < MR; ++r) acc[r][np] = _mm512_mullo_epi32(z, _mm512_set1_epi32(-asum[r][kb]));
      }
    } else {
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) {
        const __m512i init = _mm512_set1_epi32(-z_default * asum[r][kb]);
#pragma GCC unroll 4
        for (int np = 0; np < NP; ++np) acc[r][np] = init;
      }
    }
#pragma GCC unroll 8
    for (int64_t g = 0; g < groups; ++g) {
      __m512i v[NP];
#pragma GCC unroll 4
      for (int np = 0; np < NP; ++np) v[np] = _mm512_load_si512(codes[np] + (kb * groups + g) * 64);
      const int64_t k0 = kb * w.block + g * kQuads * 4;
#pragma GCC unroll 4
      for (int s = 0; s < kQuads; ++s) {
        __m512i av[MR];
#pragma GCC unroll 4
        for (int r = 0; r < MR; ++r) av[r] = _mm512_set1_epi32(load_quad(qa[r] + k0 + 4 * s));
#pragma GCC unroll 4
        for (int np = 0; np < NP; ++np) {
          __m512i c = v[np];
          if (BITS != 8) c = _mm512_and_si512(s == 0 ? c : _mm512_srli_epi16(c, BITS * s), mask);
#pragma GCC unroll 4
          for (int r = 0; r < MR; ++r) acc[r][np] = _mm512_dpbusd_epi32(acc[r][np], c, av[r]);
        }
      }
    }
#pragma GCC unroll 4
    for (int np = 0; np < NP; ++np) {
      const __m512 sw = _mm512_load_ps(w.scales.data() + ((p0 + np) * blocks + kb) * kQnbitsNR);
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r)
        f[r][np] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][np]), _mm512_mul_ps(sw, _mm512_set1_ps(sa[r][kb])),
                                   f[r][np]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int np = 0; np < NP; ++np)
      _mm512_mask_storeu_ps(y + (m0 + r) * w.n + (p0 + np) * kQnbitsNR, cols[np], f[r][np]);
}

template <int MR, int NP, int BITS>
QTK_VNNI void vnni_panels(const QnbitsA& a, int64_t m0, const QnbitsPacked& w, int64_t p0, int64_t p1,
                          const float* bias, float* y) {
  int64_t p = p0;
  if (w.block == 32) {  // the common block: the group loop unrolled
    for (; p + NP <= p1; p += NP) vnni_tile<MR, NP, BITS, BITS>(a, m0, w, p, bias, y);
    for (; p < p1; ++p) vnni_tile<MR, 1, BITS, BITS>(a, m0, w, p, bias, y);
    return;
  }
  for (; p + NP <= p1; p += NP) vnni_tile<MR, NP, BITS, 0>(a, m0, w, p, bias, y);
  for (; p < p1; ++p) vnni_tile<MR, 1, BITS, 0>(a, m0, w, p, bias, y);
}

template <int BITS>
void vnni_rows(int rows, const QnbitsA& a, int64_t m0, const QnbitsPacked& w, int64_t p0, int64_t p1,
               const float* bias, float* y) {
  // Few rows: more panels at once, for independent accumulator chains.
  switch (rows) {
    case 1: vnni_panels<1, 4, BITS>(a, m0, w, p0, p1, bias, y); break;
    case 2: vnni_panels<2, 4, BITS>(a, m0, w, p0, p1, bias, y); break;
    case 3: vnni_panels<3, 2, BITS>(a, m0, w, p0, p1, bias, y); break;
    default: vnni_panels<4, 2, BITS>(a, m0, w, p0, p1, bias, y); break;
  }
}

}  // namespace

void qnbits_kernel_vnni(int rows, const QnbitsA& a, int64_t m0, const QnbitsPacked& w, int64_t p0, int64_t p1,
                        const float* bias, float* y) {
  switch (w.bits) {
    case 2: vnni_rows<2>(rows, a, m0, w, p0, p1, bias, y); break;
    case 4: vnni_rows<4>(rows, a, m0, w, p0, p1, bias, y); break;
    default: vnni_rows<8>(rows, a, m0, w, p0, p1, bias, y); break;
  }
}

QTK_VNNI void qnbits_quantize_a_avx512(const float* a, int64_t k, int64_t block, int64_t blocks, int8_t* qa,
                                       float* sa, int32_t* asum) {
  const __m512 inf = _mm512_set1_ps(std::numeric_limits<float>::infinity());
  for (int64_t kb = 0; kb < blocks; ++kb) {
    const int64_t k0 = kb * block, len = std::min(block, k - k0);
    const float* src = a + k0;
    int8_t* dst = qa + k0;
    __m512 vmax = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int64_t i = 0; i < len; i += 16) {
      const __m512 v = _mm512_abs_ps(_mm512_maskz_loadu_ps(lanes_below(len - i), src + i));
      bad |= _mm512_cmp_ps_mask(v, inf, _CMP_NLT_UQ);  // NaN or infinite
      vmax = _mm512_max_ps(vmax, v);
    }
    const float s = _mm512_reduce_max_ps(vmax) / 127.f;
    if (bad || s == 0.f) {  // as matmul_nbits_quantize_a_block
      sa[kb] = bad ? std::numeric_limits<float>::quiet_NaN() : 0.f;
      asum[kb] = 0;
      std::memset(dst, 0, static_cast<size_t>(block));
      continue;
    }
    sa[kb] = s;
    const __m512 vs = _mm512_set1_ps(s), lo = _mm512_set1_ps(-127.f), hi = _mm512_set1_ps(127.f);
    __m512i sum = _mm512_setzero_si512();
    for (int64_t i = 0; i < block; i += 16) {  // past len: zeros, which stay 0
      const __m512 v = _mm512_maskz_loadu_ps(lanes_below(len - i), src + i);
      const __m512i c = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_div_ps(v, vs), lo), hi));
      sum = _mm512_add_epi32(sum, c);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm512_cvtepi32_epi8(c));
    }
    asum[kb] = _mm512_reduce_add_epi32(sum);
  }
}

#else

void qnbits_kernel_vnni(int rows, const QnbitsA& a, int64_t m0, const QnbitsPacked& w, int64_t p0, int64_t p1,
                        const float* bias, float* y) {
  qnbits_kernel_scalar(rows, a, m0, w, p0, p1, bias, y);
}

void qnbits_quantize_a_avx512(const float* a, int64_t k, int64_t block, int64_t blocks, int8_t* qa, float* sa,
                              int32_t* asum) {
  qnbits_quantize_a_avx2(a, k, block, blocks, qa, sa, asum);
}

#endif

}  // namespace qtk::rt::x86::detail
