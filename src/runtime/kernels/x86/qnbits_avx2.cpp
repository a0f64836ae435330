// AVX2 tier of the weight-only n-bit GEMM (qnbits.h): A quantized 8 floats
// at a time, and a micro-kernel on half panels (8 columns, 32 bytes of each
// 64-byte group). Products: vpmaddubsw (u8 code x s8 activation, int16 pair
// sums), exact below 8 bits: the int16 sum of a group's 8/bits quads is at
// most 2 · 4 · 15 · 127 (4 bits) or 4 · 2 · 3 · 127 (2 bits), then vpmaddwd
// by ones into int32. 8-bit codes would overflow int16, so they go as two
// nibbles, the high one weighted by 16 in the vpmaddwd.
#include <algorithm>
#include <cstring>
#include <limits>

#include "runtime/kernels/x86/qnbits.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QTK_QNBITS_AVX2_X86 1
#endif

namespace qtk::rt::x86::detail {

#ifdef QTK_QNBITS_AVX2_X86

#define QTK_AVX2 __attribute__((target("avx2,fma")))

namespace {

// Lane i set (all ones) when i < n.
QTK_AVX2 inline __m256i lanes_below(int64_t n) {
  const int32_t c = static_cast<int32_t>(std::clamp<int64_t>(n, 0, 8));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

QTK_AVX2 inline int32_t load_quad(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// MR rows x one panel (two halves of 8 columns) over all of K.
template <int MR, int BITS>
QTK_AVX2 void avx2_tile(const QnbitsA& a, int64_t m0, const QnbitsPacked& w, int64_t p, const float* bias, float* y) {
  constexpr int kQuads = 8 / BITS;
  const __m256i mask = _mm256_set1_epi8(static_cast<char>(BITS == 8 ? 0x0f : (1 << BITS) - 1));
  const __m256i ones = _mm256_set1_epi16(1), sixteens = _mm256_set1_epi16(16);
  const int64_t blocks = w.blocks, groups = w.groups;
  const uint8_t* codes = w.panel_codes(p);
  __m256i cols[2];
  __m256 f[MR][2];
  for (int h = 0; h < 2; ++h) {
    cols[h] = lanes_below(w.n - p * kQnbitsNR - 8 * h);
    const __m256 b0 = bias ? _mm256_maskload_ps(bias + p * kQnbitsNR + 8 * h, cols[h]) : _mm256_setzero_ps();
    for (int r = 0; r < MR; ++r) f[r][h] = b0;
  }
  const int8_t* qa[MR];
  for (int r = 0; r < MR; ++r) qa[r] = a.qa.data() + (m0 + r) * a.kpad;
  const int32_t z_default = 1 << (BITS - 1);
  for (int64_t kb = 0; kb < blocks; ++kb) {
    __m256i acc[MR][2];
    for (int h = 0; h < 2; ++h) {
      if (w.has_zero_points) {
        const __m256i z = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
            reinterpret_cast<const __m128i*>(w.zero_points.data() + (p * blocks + kb) * kQnbitsNR + 8 * h)));
        for (int r = 0; r < MR; ++r)
          acc[r][h] = _mm256_mullo_epi32(z, _mm256_set1_epi32(-a.asum[(m0 + r) * a.blocks + kb]));
      } else {
        for (int r = 0; r < MR; ++r) acc[r][h] = _mm256_set1_epi32(-z_default * a.asum[(m0 + r) * a.blocks + kb]);
      }
    }
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t k0 = kb * w.block + g * kQuads * 4;
      __m256i v[2];
      for (int h = 0; h < 2; ++h)
        v[h] = _mm256_load_si256(reinterpret_cast<const __m256i*>(codes + (kb * groups + g) * 64 + 32 * h));
      if constexpr (BITS == 8) {
        for (int r = 0; r < MR; ++r) {
          const __m256i av = _mm256_set1_epi32(load_quad(qa[r] + k0));
          for (int h = 0; h < 2; ++h) {
            const __m256i lo = _mm256_maddubs_epi16(_mm256_and_si256(v[h], mask), av);
            const __m256i hi = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v[h], 4), mask), av);
            acc[r][h] = _mm256_add_epi32(
                acc[r][h], _mm256_add_epi32(_mm256_madd_epi16(lo, ones), _mm256_madd_epi16(hi, sixteens)));
          }
        }
      } else {
        __m256i s16[MR][2];
        for (int s = 0; s < kQuads; ++s) {
          __m256i c[2];
          for (int h = 0; h < 2; ++h) c[h] = _mm256_and_si256(s == 0 ? v[h] : _mm256_srli_epi16(v[h], BITS * s), mask);
          for (int r = 0; r < MR; ++r) {
            const __m256i av = _mm256_set1_epi32(load_quad(qa[r] + k0 + 4 * s));
            for (int h = 0; h < 2; ++h) {
              const __m256i prod = _mm256_maddubs_epi16(c[h], av);
              s16[r][h] = s == 0 ? prod : _mm256_add_epi16(s16[r][h], prod);
            }
          }
        }
        for (int r = 0; r < MR; ++r)
          for (int h = 0; h < 2; ++h) acc[r][h] = _mm256_add_epi32(acc[r][h], _mm256_madd_epi16(s16[r][h], ones));
      }
    }
    for (int h = 0; h < 2; ++h) {
      const __m256 sw = _mm256_load_ps(w.scales.data() + (p * blocks + kb) * kQnbitsNR + 8 * h);
      for (int r = 0; r < MR; ++r)
        f[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][h]),
                                  _mm256_mul_ps(sw, _mm256_set1_ps(a.sa[(m0 + r) * a.blocks + kb])), f[r][h]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int h = 0; h < 2; ++h) _mm256_maskstore_ps(y + (m0 + r) * w.n + p * kQnbitsNR + 8 * h, cols[h], f[r][h]);
}

template <int BITS>
void avx2_rows(int rows, const QnbitsA& a, int64_t m0, const QnbitsPacked& w, int64_t p0, int64_t p1,
               const float* bias, float* y) {
  for (int64_t p = p0; p < p1; ++p)
    for (int r = 0; r < rows; r += 2) {
      if (rows - r >= 2) avx2_tile<2, BITS>(a, m0 + r, w, p, bias, y);
      else avx2_tile<1, BITS>(a, m0 + r, w, p, bias, y);
    }
}

QTK_AVX2 inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

QTK_AVX2 inline int32_t hsum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
  return _mm_cvtsi128_si32(s);
}

}  // namespace

void qnbits_kernel_avx2(int rows, const QnbitsA& a, int64_t m0, const QnbitsPacked& w, int64_t p0, int64_t p1,
                        const float* bias, float* y) {
  switch (w.bits) {
    case 2: avx2_rows<2>(rows, a, m0, w, p0, p1, bias, y); break;
    case 4: avx2_rows<4>(rows, a, m0, w, p0, p1, bias, y); break;
    default: avx2_rows<8>(rows, a, m0, w, p0, p1, bias, y); break;
  }
}

QTK_AVX2 void qnbits_quantize_a_avx2(const float* a, int64_t k, int64_t block, int64_t blocks, int8_t* qa, float* sa,
                                     int32_t* asum) {
  const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  const __m256 sign = _mm256_set1_ps(-0.f);
  for (int64_t kb = 0; kb < blocks; ++kb) {
    const int64_t k0 = kb * block, len = std::min(block, k - k0);
    const float* src = a + k0;
    int8_t* dst = qa + k0;
    __m256 vmax = _mm256_setzero_ps();
    int bad = 0;
    for (int64_t i = 0; i < len; i += 8) {
      const __m256 v = _mm256_andnot_ps(sign, _mm256_maskload_ps(src + i, lanes_below(len - i)));
      bad |= _mm256_movemask_ps(_mm256_cmp_ps(v, inf, _CMP_NLT_UQ));  // NaN or infinite
      vmax = _mm256_max_ps(vmax, v);
    }
    const float s = hmax(vmax) / 127.f;
    if (bad || s == 0.f) {  // as matmul_nbits_quantize_a_block
      sa[kb] = bad ? std::numeric_limits<float>::quiet_NaN() : 0.f;
      asum[kb] = 0;
      std::memset(dst, 0, static_cast<size_t>(block));
      continue;
    }
    sa[kb] = s;
    const __m256 vs = _mm256_set1_ps(s), lo = _mm256_set1_ps(-127.f), hi = _mm256_set1_ps(127.f);
    __m256i sum = _mm256_setzero_si256();
    for (int64_t i = 0; i < block; i += 8) {  // past len: zeros, which stay 0
      const __m256 v = _mm256_maskload_ps(src + i, lanes_below(len - i));
      const __m256i c = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_div_ps(v, vs), lo), hi));
      sum = _mm256_add_epi32(sum, c);
      const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + i), _mm_packs_epi16(w16, w16));
    }
    asum[kb] = hsum(sum);
  }
}

#else

void qnbits_kernel_avx2(int rows, const QnbitsA& a, int64_t m0, const QnbitsPacked& w, int64_t p0, int64_t p1,
                        const float* bias, float* y) {
  qnbits_kernel_scalar(rows, a, m0, w, p0, p1, bias, y);
}

void qnbits_quantize_a_avx2(const float* a, int64_t k, int64_t block, int64_t blocks, int8_t* qa, float* sa,
                            int32_t* asum) {
  qnbits_quantize_a_scalar(a, k, block, blocks, qa, sa, asum);
}

#endif

}  // namespace qtk::rt::x86::detail
