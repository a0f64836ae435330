// AVX2 rows of the quantized element-wise and pooling kernels, each equal
// bit for bit to its scalar twin in qelementwise_x86_ops.cpp (which also runs
// their tails). Built with per-function target attributes; only called when
// the CPU reports AVX2.
#include <algorithm>
#include <cstring>

#include "runtime/kernels/x86/qelementwise_x86_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace qtk::rt::qew {

#if defined(__x86_64__) || defined(__i386__)

namespace {

#define QTK_AVX2 __attribute__((target("avx2,fma")))

// 8 codes -> 8 int32 lanes.
QTK_AVX2 inline __m256i load8_epi32(const void* p, bool is_signed) {
  const __m128i b = _mm_loadl_epi64(static_cast<const __m128i*>(p));
  return is_signed ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
}

// 8 codes of an input that is either a stream (step 1) or one value (step 0).
QTK_AVX2 inline __m256i codes8(const uint8_t* p, int64_t step, int64_t i, bool is_signed, __m256i broadcast) {
  return step ? load8_epi32(p + i, is_signed) : broadcast;
}

QTK_AVX2 inline __m256i broadcast_code(const void* p, bool is_signed) {
  const int32_t v = is_signed ? *static_cast<const int8_t*>(p) : *static_cast<const uint8_t*>(p);
  return _mm256_set1_epi32(v);
}

// 32 int32 lanes in four vectors (in order) -> 32 codes, saturating: the
// values are already within the code range or beyond it on one side, and
// each narrowing saturates to that side.
QTK_AVX2 inline void store32_codes(__m256i v0, __m256i v1, __m256i v2, __m256i v3, bool is_signed, void* dst) {
  const __m256i w01 = _mm256_permute4x64_epi64(_mm256_packs_epi32(v0, v1), 0xD8);
  const __m256i w23 = _mm256_permute4x64_epi64(_mm256_packs_epi32(v2, v3), 0xD8);
  const __m256i b = is_signed ? _mm256_packs_epi16(w01, w23) : _mm256_packus_epi16(w01, w23);
  _mm256_storeu_si256(static_cast<__m256i*>(dst), _mm256_permute4x64_epi64(b, 0xD8));
}

// ((acc << pre) * m + 2^(shift-1)) >> shift per int32 lane, shift in [32, 62]
// (as in qdepthwise_conv_avx2.cpp): the high dword of the rounded 64-bit
// product, shifted by shift - 32 more.
struct FixedPoint {
  __m256i mult, round;
  __m128i pre, post;
};

QTK_AVX2 inline __m256i requantize8(__m256i acc, const FixedPoint& f) {
  acc = _mm256_sll_epi32(acc, f.pre);
  const __m256i odd = _mm256_srli_epi64(acc, 32);
  const __m256i pe = _mm256_add_epi64(_mm256_mul_epi32(acc, f.mult), f.round);
  const __m256i po = _mm256_add_epi64(_mm256_mul_epi32(odd, f.mult), f.round);
  return _mm256_sra_epi32(_mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA), f.post);
}

}  // namespace

QTK_AVX2 void quantize_avx2(const float* x, int64_t n, const QuantizeParams& p, void* y) {
  const __m256 scale = _mm256_set1_ps(p.scale), zp = _mm256_set1_ps(static_cast<float>(p.zero_point));
  const __m256 lo = _mm256_set1_ps(p.y_signed ? -128.f : 0.f), hi = _mm256_set1_ps(p.y_signed ? 127.f : 255.f);
  auto* out = static_cast<uint8_t*>(y);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i q[4];
    for (int k = 0; k < 4; ++k) {
      const __m256 v = _mm256_loadu_ps(x + i + 8 * k);
      // Exact IEEE division (as the reference), ties to even; |r| >= 2^24
      // (or inf) makes r + zp inexact but still beyond the code range.
      const __m256 r = _mm256_round_ps(_mm256_div_ps(v, scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      __m256 c = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, zp), lo), hi);
      c = _mm256_blendv_ps(c, zp, _mm256_cmp_ps(r, r, _CMP_UNORD_Q));  // NaN -> zero point
      q[k] = _mm256_cvtps_epi32(c);
    }
    store32_codes(q[0], q[1], q[2], q[3], p.y_signed, out + i);
  }
  quantize_scalar(x + i, n - i, p, out + i);
}

QTK_AVX2 void dequantize_avx2(const void* x, int64_t n, const DequantizeParams& p, float* y) {
  const __m256 scale = _mm256_set1_ps(p.scale);
  const __m256i zp = _mm256_set1_epi32(p.zero_point);
  const auto* in = static_cast<const uint8_t*>(x);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i d = _mm256_sub_epi32(load8_epi32(in + i, p.x_signed), zp);  // exact, |d| <= 255
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_cvtepi32_ps(d), scale));
  }
  dequantize_scalar(in + i, n - i, p, y + i);
}

// QLinearAdd without 64-bit lanes. Split ma = ha * 2^15 + la (la < 2^15, so
// ha < 2^16), likewise mb; then acc = da*ma + db*mb = P * 2^15 + Q with
// P = da*ha + db*hb (|P| < 2^25) and Q = da*la + db*lb (|Q| < 2^24), both
// exact in int32. With n = 15 + k and k >= 1, the rounding term 2^(n-1) is
// 2^(k-1) * 2^15, so
//   (acc + 2^(n-1)) >> n = (P + (Q >> 15) + 2^(k-1)) >> k
// (floor of a floor is the floor); k = 0 rounds Q instead:
//   P + ((Q + 2^14) >> 15).
// n < 15 (a scale ratio above 2^15) runs the scalar code; n >= 42 gives 0
// for every input (|acc| < 2^40), which this formula also computes.
QTK_AVX2 void qadd_avx2(const void* a, int64_t a_step, const void* b, int64_t b_step, int64_t n, const AddParams& p,
                        void* c) {
  if (p.n < 15 || p.n > 46) return qadd_scalar(a, a_step, b, b_step, n, p, c);
  const int k = p.n - 15;
  const int32_t ha = static_cast<int32_t>(p.ma >> 15), la = static_cast<int32_t>(p.ma & 0x7FFF);
  const int32_t hb = static_cast<int32_t>(p.mb >> 15), lb = static_cast<int32_t>(p.mb & 0x7FFF);
  const __m256i vha = _mm256_set1_epi32(ha), vla = _mm256_set1_epi32(la);
  const __m256i vhb = _mm256_set1_epi32(hb), vlb = _mm256_set1_epi32(lb);
  const __m256i za = _mm256_set1_epi32(p.a_zp), zb = _mm256_set1_epi32(p.b_zp), zc = _mm256_set1_epi32(p.c_zp);
  const __m256i p_round = _mm256_set1_epi32(k >= 1 ? int32_t{1} << (k - 1) : 0);
  const __m256i q_round = _mm256_set1_epi32(k == 0 ? int32_t{1} << 14 : 0);
  const __m128i shift_k = _mm_cvtsi32_si128(k);
  const auto* pa = static_cast<const uint8_t*>(a);
  const auto* pb = static_cast<const uint8_t*>(b);
  const __m256i a_one = broadcast_code(a, p.is_signed), b_one = broadcast_code(b, p.is_signed);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i v[4];
    for (int t = 0; t < 4; ++t) {
      const __m256i da = _mm256_sub_epi32(codes8(pa, a_step, i + 8 * t, p.is_signed, a_one), za);
      const __m256i db = _mm256_sub_epi32(codes8(pb, b_step, i + 8 * t, p.is_signed, b_one), zb);
      const __m256i P = _mm256_add_epi32(_mm256_mullo_epi32(da, vha), _mm256_mullo_epi32(db, vhb));
      const __m256i Q = _mm256_add_epi32(_mm256_add_epi32(_mm256_mullo_epi32(da, vla), _mm256_mullo_epi32(db, vlb)),
                                         q_round);
      const __m256i s = _mm256_add_epi32(_mm256_add_epi32(P, _mm256_srai_epi32(Q, 15)), p_round);
      v[t] = _mm256_add_epi32(_mm256_sra_epi32(s, shift_k), zc);
    }
    store32_codes(v[0], v[1], v[2], v[3], p.is_signed, static_cast<uint8_t*>(c) + i);
  }
  qadd_scalar(pa + i * a_step, a_step, pb + i * b_step, b_step, n - i, p, static_cast<uint8_t*>(c) + i);
}

// QLinearMul: |da * db| <= 65025 < 2^16, so the product is exact in int32 and
// can be shifted left by up to 15 to bring any rounding shift below 32 up to
// 32 (n >= 17); smaller n (a multiplier of 2^14 or more) runs the scalar code.
QTK_AVX2 void qmul_avx2(const void* a, int64_t a_step, const void* b, int64_t b_step, int64_t n, const MulParams& p,
                        void* c) {
  const int nn = std::clamp(31 - p.mult.shift, 1, 62);
  if (nn < 17) return qmul_scalar(a, a_step, b, b_step, n, p, c);
  const int pre = nn >= 32 ? 0 : 32 - nn, shift = nn + pre;
  FixedPoint f;
  f.mult = _mm256_set1_epi32(p.mult.multiplier);
  f.round = _mm256_set1_epi64x(int64_t{1} << (shift - 1));
  f.pre = _mm_cvtsi32_si128(pre);
  f.post = _mm_cvtsi32_si128(shift - 32);
  const __m256i za = _mm256_set1_epi32(p.a_zp), zb = _mm256_set1_epi32(p.b_zp), zc = _mm256_set1_epi32(p.c_zp);
  const auto* pa = static_cast<const uint8_t*>(a);
  const auto* pb = static_cast<const uint8_t*>(b);
  const __m256i a_one = broadcast_code(a, p.is_signed), b_one = broadcast_code(b, p.is_signed);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i v[4];
    for (int t = 0; t < 4; ++t) {
      const __m256i da = _mm256_sub_epi32(codes8(pa, a_step, i + 8 * t, p.is_signed, a_one), za);
      const __m256i db = _mm256_sub_epi32(codes8(pb, b_step, i + 8 * t, p.is_signed, b_one), zb);
      v[t] = _mm256_add_epi32(requantize8(_mm256_mullo_epi32(da, db), f), zc);
    }
    store32_codes(v[0], v[1], v[2], v[3], p.is_signed, static_cast<uint8_t*>(c) + i);
  }
  qmul_scalar(pa + i * a_step, a_step, pb + i * b_step, b_step, n - i, p, static_cast<uint8_t*>(c) + i);
}

// vpsadbw against zero sums each 8 bytes into a 64-bit lane; int8 codes are
// biased by 128 first (x ^ 0x80 = x + 128 as uint8) and the bias removed.
QTK_AVX2 int64_t sum_codes_avx2(const void* x, bool is_signed, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(x);
  const __m256i bias = _mm256_set1_epi8(static_cast<char>(0x80)), zero = _mm256_setzero_si256();
  __m256i acc = zero;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i));
    if (is_signed) v = _mm256_xor_si256(v, bias);
    acc = _mm256_add_epi64(acc, _mm256_sad_epu8(v, zero));
  }
  alignas(32) int64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc);
  int64_t s = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  if (is_signed) s -= 128 * i;
  return s + sum_codes_scalar(p + i, is_signed, n - i);
}

QTK_AVX2 void max_row_avx2(const uint8_t* const* taps, int taps_n, int64_t out_w, bool is_signed, uint8_t* y) {
  int64_t o = 0;
  for (; o + 32 <= out_w; o += 32) {
    __m256i m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(taps[0] + o));
    for (int t = 1; t < taps_n; ++t) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(taps[t] + o));
      m = is_signed ? _mm256_max_epi8(m, v) : _mm256_max_epu8(m, v);
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + o), m);
  }
  max_row_scalar(taps, taps_n, o, out_w, is_signed, y);
}

namespace {

QTK_AVX2 inline __m256i max32(__m256i a, __m256i b, bool is_signed) {
  return is_signed ? _mm256_max_epi8(a, b) : _mm256_max_epu8(a, b);
}
QTK_AVX2 inline __m128i max16(__m128i a, __m128i b, bool is_signed) {
  return is_signed ? _mm_max_epi8(a, b) : _mm_max_epu8(a, b);
}

// d[j] = max(a[j], b[j]), j < n. Short rows use two overlapping loads (the
// overlap is written twice with the same values).
QTK_AVX2 void vertical_max(const uint8_t* a, const uint8_t* b, int64_t n, bool is_signed, uint8_t* d) {
  auto v32 = [&](int64_t j) QTK_AVX2 {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + j));
    const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + j));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + j), max32(x, y, is_signed));
  };
  auto v16 = [&](int64_t j) QTK_AVX2 {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + j));
    const __m128i y = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + j));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + j), max16(x, y, is_signed));
  };
  auto v8 = [&](int64_t j) QTK_AVX2 {
    const __m128i x = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(a + j));
    const __m128i y = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + j));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(d + j), max16(x, y, is_signed));
  };
  if (n >= 32) {
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) v32(j);
    if (j < n) v32(n - 32);
  } else if (n >= 16) {
    v16(0), v16(n - 16);
  } else if (n >= 8) {
    v8(0), v8(n - 8);
  } else {
    for (int64_t j = 0; j < n; ++j)
      d[j] = is_signed ? static_cast<uint8_t>(std::max(static_cast<int8_t>(a[j]), static_cast<int8_t>(b[j])))
                       : std::max(a[j], b[j]);
  }
}

}  // namespace

QTK_AVX2 void max_pool_2x2_avx2(const uint8_t* x, int64_t in_w, int64_t out_h, int64_t out_w, bool is_signed,
                                uint8_t* v, uint8_t* y) {
  const int64_t vw = 2 * out_w, n = out_h * out_w;
  if (n < 16) return max_pool_2x2_scalar(x, in_w, out_h, out_w, is_signed, v, y);
  for (int64_t i = 0; i < out_h; ++i) vertical_max(x + 2 * i * in_w, x + (2 * i + 1) * in_w, vw, is_signed, v + i * vw);
  // The row maxima are one flat array of pairs: y[k] = max(v[2k], v[2k+1]).
  const __m256i even = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1,  //
                                        0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1);
  auto pairs16 = [&](int64_t k) QTK_AVX2 {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + 2 * k));
    const __m256i m = max32(w, _mm256_srli_epi16(w, 8), is_signed);  // even bytes: max of each pair
    const __m256i e = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(m, even), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + k), _mm256_castsi256_si128(e));
  };
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) pairs16(k);
  if (k < n) pairs16(n - 16);
}

QTK_AVX2 void gather_phase_avx2(const uint8_t* src, int64_t stride, int64_t n, uint8_t* dst) {
  int64_t i = 0;
  if (stride == 1) {
    std::memcpy(dst, src, static_cast<size_t>(n));
    return;
  }
  if (stride == 2) {
    // Even bytes of each 128-bit lane to its low half, then the two low halves together.
    const __m256i even = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1,  //
                                          0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1);
    for (; i + 17 <= n; i += 16) {  // reads src[2i .. 2i + 31], all within src[0 .. 2(n-1)]
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * i));
      const __m256i e = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, even), 0x08);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm256_castsi256_si128(e));
    }
  }
  gather_phase_scalar(src + stride * i, stride, n - i, dst + i);
}

#else  // not x86: never selected (avx2_supported() is false); keeps the link whole.

void quantize_avx2(const float* x, int64_t n, const QuantizeParams& p, void* y) { quantize_scalar(x, n, p, y); }
void dequantize_avx2(const void* x, int64_t n, const DequantizeParams& p, float* y) { dequantize_scalar(x, n, p, y); }
void qadd_avx2(const void* a, int64_t as, const void* b, int64_t bs, int64_t n, const AddParams& p, void* c) {
  qadd_scalar(a, as, b, bs, n, p, c);
}
void qmul_avx2(const void* a, int64_t as, const void* b, int64_t bs, int64_t n, const MulParams& p, void* c) {
  qmul_scalar(a, as, b, bs, n, p, c);
}
int64_t sum_codes_avx2(const void* x, bool is_signed, int64_t n) { return sum_codes_scalar(x, is_signed, n); }
void max_row_avx2(const uint8_t* const* taps, int taps_n, int64_t out_w, bool is_signed, uint8_t* y) {
  max_row_scalar(taps, taps_n, 0, out_w, is_signed, y);
}
void gather_phase_avx2(const uint8_t* src, int64_t stride, int64_t n, uint8_t* dst) {
  gather_phase_scalar(src, stride, n, dst);
}
void max_pool_2x2_avx2(const uint8_t* x, int64_t in_w, int64_t out_h, int64_t out_w, bool is_signed, uint8_t* v,
                       uint8_t* y) {
  max_pool_2x2_scalar(x, in_w, out_h, out_w, is_signed, v, y);
}

#endif

}  // namespace qtk::rt::qew
