// AVX2 kernels of the int8 GEMM (qgemm.h): the MR x 16 vpmaddwd micro-kernel
// and the vectorized output stage. Built with per-function target attributes
// so the library stays baseline x86-64; qgemm.cpp only calls them when the
// CPU has AVX2. Without an x86 compiler these fall back to the scalar ones.
#include <cstring>

#include "runtime/kernels/x86/qgemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QTK_QGEMM_X86 1
#endif

namespace qtk::rt::x86::detail {

#ifdef QTK_QGEMM_X86

namespace {

#define QTK_AVX2 __attribute__((target("avx2")))

// ROWS x 16 tile: 2 * ROWS accumulators, two B vectors and one broadcast A
// word per k pair. vpmaddwd multiplies int16 pairs into exact int32 sums.
template <int ROWS>
QTK_AVX2 void ukernel_rows(int64_t kpairs, const int32_t* a, const int16_t* b, int32_t* acc) {
  __m256i c[ROWS][2];
#pragma GCC unroll 6
  for (int i = 0; i < ROWS; ++i) c[i][0] = c[i][1] = _mm256_setzero_si256();
#pragma GCC unroll 2
  for (int64_t q = 0; q < kpairs; ++q) {
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b));
    const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + 16));
#pragma GCC unroll 6
    for (int i = 0; i < ROWS; ++i) {
      const __m256i av = _mm256_set1_epi32(a[i]);
      c[i][0] = _mm256_add_epi32(c[i][0], _mm256_madd_epi16(av, b0));
      c[i][1] = _mm256_add_epi32(c[i][1], _mm256_madd_epi16(av, b1));
    }
    a += kQgemmMR;
    b += 2 * kQgemmNR;
  }
#pragma GCC unroll 6
  for (int i = 0; i < ROWS; ++i) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(acc + i * kQgemmNR), c[i][0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(acc + i * kQgemmNR + 8), c[i][1]);
  }
}

// As ukernel_rows, B read as 8-bit codes and widened (half the bytes); with
// b_zp, B's zero points taken out at the end: acc -= b_zp[j] · a_sum[i].
template <int ROWS, bool kSigned>
QTK_AVX2 void ukernel_narrow_rows(int64_t kpairs, const int32_t* a, const uint8_t* b, const int32_t* b_zp,
                                  const int32_t* a_sum, int32_t* acc) {
  __m256i c[ROWS][2];
#pragma GCC unroll 6
  for (int i = 0; i < ROWS; ++i) c[i][0] = c[i][1] = _mm256_setzero_si256();
#pragma GCC unroll 2
  for (int64_t q = 0; q < kpairs; ++q) {
    const __m128i r0 = _mm_load_si128(reinterpret_cast<const __m128i*>(b));
    const __m128i r1 = _mm_load_si128(reinterpret_cast<const __m128i*>(b + 16));
    const __m256i b0 = kSigned ? _mm256_cvtepi8_epi16(r0) : _mm256_cvtepu8_epi16(r0);
    const __m256i b1 = kSigned ? _mm256_cvtepi8_epi16(r1) : _mm256_cvtepu8_epi16(r1);
#pragma GCC unroll 6
    for (int i = 0; i < ROWS; ++i) {
      const __m256i av = _mm256_set1_epi32(a[i]);
      c[i][0] = _mm256_add_epi32(c[i][0], _mm256_madd_epi16(av, b0));
      c[i][1] = _mm256_add_epi32(c[i][1], _mm256_madd_epi16(av, b1));
    }
    a += kQgemmMR;
    b += 2 * kQgemmNR;
  }
  if (b_zp) {
    const __m256i z0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b_zp));
    const __m256i z1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b_zp + 8));
#pragma GCC unroll 6
    for (int i = 0; i < ROWS; ++i) {
      const __m256i s = _mm256_set1_epi32(a_sum[i]);
      c[i][0] = _mm256_sub_epi32(c[i][0], _mm256_mullo_epi32(z0, s));
      c[i][1] = _mm256_sub_epi32(c[i][1], _mm256_mullo_epi32(z1, s));
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < ROWS; ++i) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(acc + i * kQgemmNR), c[i][0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(acc + i * kQgemmNR + 8), c[i][1]);
  }
}

template <bool kSigned>
QTK_AVX2 void ukernel_narrow(int rows, int64_t kpairs, const int32_t* a, const uint8_t* b, const int32_t* b_zp,
                             const int32_t* a_sum, int32_t* acc) {
  static_assert(kQgemmMR == 6, "one instance per row count");
  switch (rows) {
    case 1: ukernel_narrow_rows<1, kSigned>(kpairs, a, b, b_zp, a_sum, acc); break;
    case 2: ukernel_narrow_rows<2, kSigned>(kpairs, a, b, b_zp, a_sum, acc); break;
    case 3: ukernel_narrow_rows<3, kSigned>(kpairs, a, b, b_zp, a_sum, acc); break;
    case 4: ukernel_narrow_rows<4, kSigned>(kpairs, a, b, b_zp, a_sum, acc); break;
    case 5: ukernel_narrow_rows<5, kSigned>(kpairs, a, b, b_zp, a_sum, acc); break;
    default: ukernel_narrow_rows<6, kSigned>(kpairs, a, b, b_zp, a_sum, acc); break;
  }
}

// 16 codes widened to int16 (sign- or zero-extended).
template <bool kSigned>
QTK_AVX2 inline __m256i widen16(const uint8_t* p) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return kSigned ? _mm256_cvtepi8_epi16(bytes) : _mm256_cvtepu8_epi16(bytes);
}

// qgemm_expand_a_avx2: a tile's bytes in order are its int16 values in
// order, minus the zero point of row (j / 2) % MR: a pattern of period 12
// int16, three vectors per 48 (a tile is a multiple of 12 long; the last
// step reads and writes up to 36 past it, into the next tile or the slack).
template <bool kSigned>
QTK_AVX2 void expand_a(const QgemmNarrowA& a, int64_t t0, int64_t t1, int32_t* out) {
  static_assert(kQgemmMR == 6 && kQgemmExpandSlack >= 36, "a period of 12 int16, 48 a step");
  const int64_t len = a.kpairs * 2 * kQgemmMR;
  auto* dst = reinterpret_cast<int16_t*>(out);
  if (!a.any_zero_point) {  // the tiles are one run of widened codes
    const uint8_t* src = a.tile(t0);
    const int64_t n = (t1 - t0) * len;
    for (int64_t j = 0; j < n; j += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j), widen16<kSigned>(src + j));
    return;
  }
  for (int64_t t = t0; t < t1; ++t) {
    // Row i's zero point in both halves of a pair word, rows 0-5 three times.
    alignas(32) int32_t zw[3 * kQgemmMR];
    const int32_t* zp = a.zero_points.data() + t * kQgemmMR;
    for (int i = 0; i < 3 * kQgemmMR; ++i)
      zw[i] = static_cast<int32_t>((static_cast<uint32_t>(zp[i % kQgemmMR]) & 0xffff) * 0x10001u);
    const __m256i p0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(zw));
    const __m256i p1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(zw + 2));
    const __m256i p2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(zw + 4));
    const uint8_t* src = a.tile(t);
    int16_t* d = dst + (t - t0) * len;
    for (int64_t j = 0; j < len; j += 48) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + j), _mm256_sub_epi16(widen16<kSigned>(src + j), p0));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + j + 16),
                          _mm256_sub_epi16(widen16<kSigned>(src + j + 16), p1));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + j + 32),
                          _mm256_sub_epi16(widen16<kSigned>(src + j + 32), p2));
    }
  }
}

// int32 a + b, saturated (QLinearConv adds its bias in int64 and clamps).
QTK_AVX2 inline __m256i add_saturate_epi32(__m256i a, __m256i b) {
  const __m256i s = _mm256_add_epi32(a, b);
  const __m256i overflow = _mm256_srai_epi32(_mm256_and_si256(_mm256_xor_si256(a, s), _mm256_xor_si256(b, s)), 31);
  const __m256i limit = _mm256_xor_si256(_mm256_srai_epi32(a, 31), _mm256_set1_epi32(0x7fffffff));
  return _mm256_blendv_epi8(s, limit, overflow);
}

// The six requantization constants of qgemm_make_requant for 4 lanes.
struct Lanes4 {
  __m256i mult, add, shift, lo, hi, off;
};

QTK_AVX2 inline __m256i requant_half(__m256i v, const Lanes4& p) {
  __m256i u = _mm256_add_epi64(_mm256_mul_epi32(v, p.mult), p.add);
  u = _mm256_srlv_epi64(u, p.shift);
  u = _mm256_blendv_epi8(u, p.lo, _mm256_cmpgt_epi64(p.lo, u));
  u = _mm256_blendv_epi8(u, p.hi, _mm256_cmpgt_epi64(u, p.hi));
  return _mm256_add_epi64(u, p.off);
}

// 8 accumulators -> 8 codes (int32 lanes). even: channels of lanes 0,2,4,6.
QTK_AVX2 inline __m256i requant8(__m256i v, const Lanes4& even, const Lanes4& odd) {
  const __m256i e = requant_half(v, even);
  const __m256i o = requant_half(_mm256_srli_epi64(v, 32), odd);
  return _mm256_blend_epi32(e, _mm256_slli_epi64(o, 32), 0xAA);
}

QTK_AVX2 inline Lanes4 load_lanes(const int64_t* g) {
  return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g)),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 8)),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 16)),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 24)),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 32)),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 40))};
}

// The three constants of the 32-bit finish (QgemmRequant::below_one), and the
// code range relative to the zero point.
struct Finish32 {
  __m256i lo, hi, zp;
};

// When every multiplier is below 1: (u >>> n) - 2^(62-n) is the rescaled
// value and fits int32, so it is computed mod 2^32 in 32-bit lanes, plus
// `offset`: -2^(62-n) mod 2^32 per lane (with the zero point added in where
// the caller leaves the clamp to pack_codes).
QTK_AVX2 inline __m256i rescale8_below_one(__m256i v, const Lanes4& even, const Lanes4& odd, __m256i offset) {
  const __m256i e = _mm256_srlv_epi64(_mm256_add_epi64(_mm256_mul_epi32(v, even.mult), even.add), even.shift);
  const __m256i o =
      _mm256_srlv_epi64(_mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(v, 32), odd.mult), odd.add), odd.shift);
  return _mm256_add_epi32(_mm256_blend_epi32(e, _mm256_slli_epi64(o, 32), 0xAA), offset);
}

// requant8 when every multiplier is below 1: rescaled, clamped in 32-bit
// lanes relative to the zero point, then the zero point added.
QTK_AVX2 inline __m256i requant8_below_one(__m256i v, const Lanes4& even, const Lanes4& odd, __m256i offset,
                                           const Finish32& f) {
  const __m256i r = rescale8_below_one(v, even, odd, offset);
  return _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(r, f.lo), f.hi), f.zp);
}

// One channel's constants in every lane (a requant made for rows); the
// clamp constants only where not below one.
QTK_AVX2 inline Lanes4 broadcast_lanes(const QgemmRequant& r, int64_t ch) {
  const QgemmRequantRow& k = r.rows[static_cast<size_t>(ch)];
  Lanes4 p{_mm256_set1_epi64x(k.mult), _mm256_set1_epi64x(k.add), _mm256_set1_epi64x(k.shift), {}, {}, {}};
  if (!r.below_one) {
    const QgemmRequantRowClamp& c = r.row_clamps[static_cast<size_t>(ch)];
    p.lo = _mm256_set1_epi64x(c.lo);
    p.hi = _mm256_set1_epi64x(c.hi);
    p.off = _mm256_set1_epi64x(c.off);
  }
  return p;
}

// Two vectors of 8 codes (columns 0-7, 8-15) -> 16 bytes in column order.
// Both packs saturate (signed to int16 first), so together they clamp any
// int32 to the 8-bit type's range: codes already clamped pass unchanged.
QTK_AVX2 inline __m128i pack_codes(__m256i c0, __m256i c1, bool is_signed) {
  // packs work per 128-bit lane: words [0-3, 8-11 | 4-7, 12-15], bytes
  // repeat that; the dword permute restores 0-3, 4-7, 8-11, 12-15.
  const __m256i w = _mm256_packs_epi32(c0, c1);
  const __m256i bytes = is_signed ? _mm256_packs_epi16(w, w) : _mm256_packus_epi16(w, w);
  const __m256i ordered = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0));
  return _mm256_castsi256_si128(ordered);
}

// The first nr of 16 codes to dst.
QTK_AVX2 inline void store_codes(uint8_t* dst, __m128i bytes, int nr) {
  if (nr == kQgemmNR) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), bytes);
    return;
  }
  alignas(16) uint8_t t[kQgemmNR];
  _mm_store_si128(reinterpret_cast<__m128i*>(t), bytes);
  std::memcpy(dst, t, static_cast<size_t>(nr));
}

template <bool kSigned>
QTK_AVX2 void pack_a_tile_rows(const uint8_t* base, int64_t stride_i, int64_t m0, int rows, int64_t k,
                               const int32_t* zero_points, bool zp_per_row, int32_t* tile) {
  static_assert(kQgemmMR == 6, "the transpose below writes 6-row tiles");
  const uint8_t* row[kQgemmMR];
  int32_t zp[kQgemmMR];
  __m256i z[kQgemmMR];
  for (int i = 0; i < kQgemmMR; ++i) {
    row[i] = i < rows ? base + (m0 + i) * stride_i : nullptr;
    zp[i] = zero_points[zp_per_row && i < rows ? m0 + i : 0];
    z[i] = _mm256_set1_epi16(static_cast<int16_t>(zp[i]));
  }
  const int64_t blocks = k / 16;  // 16 k = 8 pairs per block
  for (int64_t qb = 0; qb < blocks; ++qb) {
    __m256i r[kQgemmMR];
    for (int i = 0; i < kQgemmMR; ++i) {
      if (i >= rows) {
        r[i] = _mm256_setzero_si256();
        continue;
      }
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row[i] + 16 * qb));
      r[i] = _mm256_sub_epi16(kSigned ? _mm256_cvtepi8_epi16(bytes) : _mm256_cvtepu8_epi16(bytes), z[i]);
    }
    // r[i] holds row i's pair words 0-7. Transpose to pair-major: per 128-bit
    // lane L, t01l has qwords (pair 4L, rows 0-1), (4L+1, rows 0-1), t01h
    // pairs 4L+2, 4L+3; combining with rows 2-3 gives rows 0-3 of each pair.
    const __m256i t01l = _mm256_unpacklo_epi32(r[0], r[1]), t01h = _mm256_unpackhi_epi32(r[0], r[1]);
    const __m256i t23l = _mm256_unpacklo_epi32(r[2], r[3]), t23h = _mm256_unpackhi_epi32(r[2], r[3]);
    const __m256i t45l = _mm256_unpacklo_epi32(r[4], r[5]), t45h = _mm256_unpackhi_epi32(r[4], r[5]);
    const __m256i q0 = _mm256_unpacklo_epi64(t01l, t23l), q1 = _mm256_unpackhi_epi64(t01l, t23l);
    const __m256i q2 = _mm256_unpacklo_epi64(t01h, t23h), q3 = _mm256_unpackhi_epi64(t01h, t23h);
    int32_t* out = tile + qb * 8 * kQgemmMR;
    auto store4 = [](int32_t* p, __m128i v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v); };
    store4(out + 0 * kQgemmMR, _mm256_castsi256_si128(q0));
    store4(out + 1 * kQgemmMR, _mm256_castsi256_si128(q1));
    store4(out + 2 * kQgemmMR, _mm256_castsi256_si128(q2));
    store4(out + 3 * kQgemmMR, _mm256_castsi256_si128(q3));
    store4(out + 4 * kQgemmMR, _mm256_extracti128_si256(q0, 1));
    store4(out + 5 * kQgemmMR, _mm256_extracti128_si256(q1, 1));
    store4(out + 6 * kQgemmMR, _mm256_extracti128_si256(q2, 1));
    store4(out + 7 * kQgemmMR, _mm256_extracti128_si256(q3, 1));
    const __m128i l0 = _mm256_castsi256_si128(t45l), l1 = _mm256_extracti128_si256(t45l, 1);
    const __m128i h0 = _mm256_castsi256_si128(t45h), h1 = _mm256_extracti128_si256(t45h, 1);
    auto lo = [](int32_t* p, __m128i v) { _mm_storel_epi64(reinterpret_cast<__m128i*>(p), v); };
    auto hi = [](int32_t* p, __m128i v) { _mm_storeh_pd(reinterpret_cast<double*>(p), _mm_castsi128_pd(v)); };
    lo(out + 0 * kQgemmMR + 4, l0);
    hi(out + 1 * kQgemmMR + 4, l0);
    lo(out + 2 * kQgemmMR + 4, h0);
    hi(out + 3 * kQgemmMR + 4, h0);
    lo(out + 4 * kQgemmMR + 4, l1);
    hi(out + 5 * kQgemmMR + 4, l1);
    lo(out + 6 * kQgemmMR + 4, h1);
    hi(out + 7 * kQgemmMR + 4, h1);
  }
  // The last k (fewer than 16): one word at a time.
  const int64_t kpairs = qgemm_kpairs(k);
  for (int64_t q = blocks * 8; q < kpairs; ++q)
    for (int i = 0; i < kQgemmMR; ++i) {
      int32_t lo = 0, hi = 0;
      if (i < rows) {
        lo = (kSigned ? static_cast<int8_t>(row[i][2 * q]) : row[i][2 * q]) - zp[i];
        if (2 * q + 1 < k) hi = (kSigned ? static_cast<int8_t>(row[i][2 * q + 1]) : row[i][2 * q + 1]) - zp[i];
      }
      tile[q * kQgemmMR + i] = static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint16_t>(lo)) |
                                                    (static_cast<uint32_t>(static_cast<uint16_t>(hi)) << 16));
    }
}

}  // namespace

QTK_AVX2 void qgemm_pack_a_tile_avx2(const QgemmCodes& a, int64_t m0, int rows, int64_t k,
                                     const int32_t* zero_points, bool zp_per_row, int32_t* tile) {
  if (a.stride_j != 1) return qgemm_pack_a_tile(a, m0, rows, k, zero_points, zp_per_row, tile);
  if (a.is_signed)
    pack_a_tile_rows<true>(static_cast<const uint8_t*>(a.data), a.stride_i, m0, rows, k, zero_points, zp_per_row, tile);
  else
    pack_a_tile_rows<false>(static_cast<const uint8_t*>(a.data), a.stride_i, m0, rows, k, zero_points, zp_per_row, tile);
}

QTK_AVX2 void qgemm_ukernel_few_avx2(int rows, int nr, int64_t kpairs, const int32_t* a, const int16_t* b,
                                     int32_t* acc) {
  static_assert(kQgemmMR == 6 && kQgemmNR == 16, "a k pair of the tile is 6 words, of the panel 32 int16");
  // The tile's 6 weight pairs of a k pair as lanes 0-5 (lanes 6-7 read on:
  // ignored), against each pixel's pair broadcast: one vpmaddwd per pixel.
  __m256i c[kQgemmFewLanes];
  for (int j = 0; j < kQgemmFewLanes; ++j) c[j] = _mm256_setzero_si256();
  for (int64_t q = 0; q < kpairs; ++q, a += kQgemmMR, b += 2 * kQgemmNR) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a));
#pragma GCC unroll 8
    for (int j = 0; j < kQgemmFewLanes; ++j) {
      if (j >= nr) break;
      int32_t word;
      std::memcpy(&word, b + 2 * j, sizeof(word));
      c[j] = _mm256_add_epi32(c[j], _mm256_madd_epi16(w, _mm256_set1_epi32(word)));
    }
  }
  for (int j = 0; j < nr; ++j) {
    alignas(32) int32_t lanes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), c[j]);
    for (int i = 0; i < rows; ++i) acc[i * kQgemmNR + j] = lanes[i];
  }
}

QTK_AVX2 void qgemm_ukernel_avx2(int rows, int64_t kpairs, const int32_t* a, const int16_t* b, int32_t* acc) {
  switch (rows) {
    case 1: ukernel_rows<1>(kpairs, a, b, acc); break;
    case 2: ukernel_rows<2>(kpairs, a, b, acc); break;
    case 3: ukernel_rows<3>(kpairs, a, b, acc); break;
    case 4: ukernel_rows<4>(kpairs, a, b, acc); break;
    case 5: ukernel_rows<5>(kpairs, a, b, acc); break;
    default: ukernel_rows<6>(kpairs, a, b, acc); break;
  }
}

QTK_AVX2 void qgemm_ukernel_narrow_avx2(int rows, int64_t kpairs, const int32_t* a, const uint8_t* b, bool b_signed,
                                        const int32_t* b_zp, const int32_t* a_sum, int32_t* acc) {
  if (b_signed) ukernel_narrow<true>(rows, kpairs, a, b, b_zp, a_sum, acc);
  else ukernel_narrow<false>(rows, kpairs, a, b, b_zp, a_sum, acc);
}

QTK_AVX2 void qgemm_tile_row_sums_avx2(int64_t kpairs, const int32_t* a, int32_t* a_sum) {
  // Four k pairs are 24 words: rows 0-5,0-1 | 2-5,0-3 | 4-5,0-5; vpmaddwd
  // by ones sums each word's two halves.
  static_assert(kQgemmMR == 6, "three vectors hold four k pairs");
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0;
  int64_t q = 0;
  for (; q + 4 <= kpairs; q += 4, a += 4 * kQgemmMR) {
    s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)), ones));
    s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 8)), ones));
    s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 16)), ones));
  }
  alignas(32) int32_t lanes[3 * 8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s0);
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes + 8), s1);
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes + 16), s2);
  for (int i = 0; i < kQgemmMR; ++i) a_sum[i] = 0;
  for (int l = 0; l < 24; ++l) a_sum[l % kQgemmMR] += lanes[l];
  for (; q < kpairs; ++q, a += kQgemmMR)
    for (int i = 0; i < kQgemmMR; ++i) {
      const uint32_t w = static_cast<uint32_t>(a[i]);
      a_sum[i] += static_cast<int16_t>(w & 0xffff) + static_cast<int16_t>(w >> 16);
    }
}

QTK_AVX2 void qgemm_expand_b_panel_avx2(const uint8_t* codes, int64_t kpairs, bool is_signed, const int32_t* zp,
                                        int16_t* out) {
  static_assert(kQgemmNR == 16, "a k pair is two vectors of 16 int16");
  // Element e of a k pair is column e / 2's: zero points doubled, in order.
  alignas(32) int16_t z[2 * kQgemmNR];
  for (int e = 0; e < 2 * kQgemmNR; ++e) z[e] = zp ? static_cast<int16_t>(zp[e / 2]) : 0;
  const __m256i z0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(z));
  const __m256i z1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(z + 16));
  for (int64_t q = 0; q < kpairs; ++q, codes += 2 * kQgemmNR, out += 2 * kQgemmNR) {
    const __m128i r0 = _mm_load_si128(reinterpret_cast<const __m128i*>(codes));
    const __m128i r1 = _mm_load_si128(reinterpret_cast<const __m128i*>(codes + 16));
    const __m256i b0 = is_signed ? _mm256_cvtepi8_epi16(r0) : _mm256_cvtepu8_epi16(r0);
    const __m256i b1 = is_signed ? _mm256_cvtepi8_epi16(r1) : _mm256_cvtepu8_epi16(r1);
    _mm256_store_si256(reinterpret_cast<__m256i*>(out), _mm256_sub_epi16(b0, z0));
    _mm256_store_si256(reinterpret_cast<__m256i*>(out + 16), _mm256_sub_epi16(b1, z1));
  }
}

QTK_AVX2 void qgemm_expand_a_avx2(const QgemmNarrowA& a, int64_t t0, int64_t t1, int32_t* out) {
  if (t1 <= t0) return;
  // The quad layout runs its own kernel on this tier (qgemm_conv_u8s8.h);
  // only a forced int16 path expands it.
  if (a.quads) return qgemm_expand_a_scalar(a, t0, t1, out);
  if (a.is_signed) expand_a<true>(a, t0, t1, out);
  else expand_a<false>(a, t0, t1, out);
}

namespace {

// The convs' common case (codes, one channel per row, every multiplier below
// 1, no bias or a plain per-row one), one instance per flag, with what it
// reads of `out` in locals: the byte stores may alias anything, so the
// general loop reloads `out` and its tables every row. Same arithmetic as
// the general loop. kPacksClamp: a small accumulator over the type's whole
// range, the packs clamp.
template <bool kPacksClamp, bool kBias, bool kSigned>
QTK_AVX2 void epilogue_codes_rows(const int32_t* acc, int mr, int nr, int64_t m0, int64_t n0, const QgemmOutput& out) {
  const QgemmRequant& r = *out.requant;
  const QgemmRequantRow* rows = r.rows.data() + m0;
  const Finish32 f{_mm256_set1_epi32(r.qmin - r.zero_point), _mm256_set1_epi32(r.qmax - r.zero_point),
                   _mm256_set1_epi32(r.zero_point)};
  const int32_t* bias = kBias ? out.bias + m0 * out.bias_rs : nullptr;
  const int64_t bias_rs = out.bias_rs, ldo = out.ldo;
  const uint32_t zero_point = static_cast<uint32_t>(r.zero_point);
  uint8_t* dst = static_cast<uint8_t*>(out.out) + m0 * ldo + n0;  // int8 and uint8 share the byte layout
  for (int i = 0; i < mr; ++i, dst += ldo) {
    __m256i v0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(acc + i * kQgemmNR));
    __m256i v1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(acc + i * kQgemmNR + 8));
    if constexpr (kBias) {
      const __m256i b = _mm256_set1_epi32(bias[i * bias_rs]);
      v0 = _mm256_add_epi32(v0, b);
      v1 = _mm256_add_epi32(v1, b);
    }
    const QgemmRequantRow& k = rows[i];
    const Lanes4 p{_mm256_set1_epi64x(k.mult), _mm256_set1_epi64x(k.add), _mm256_set1_epi64x(k.shift), {}, {}, {}};
    __m128i bytes;
    if constexpr (kPacksClamp) {
      const __m256i offset_zp = _mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(k.round_offset) + zero_point));
      bytes = pack_codes(rescale8_below_one(v0, p, p, offset_zp), rescale8_below_one(v1, p, p, offset_zp), kSigned);
    } else {
      const __m256i offset = _mm256_set1_epi32(k.round_offset);
      bytes = pack_codes(requant8_below_one(v0, p, p, offset, f), requant8_below_one(v1, p, p, offset, f), kSigned);
    }
    store_codes(dst, bytes, nr);
  }
}

// The matmuls' common case (codes, one channel per column, every multiplier
// below 1, no bias: the u8 x s8 driver folds one into its column
// corrections): the 16 columns' constants are loaded once per tile, not once
// per row. Same arithmetic as the general loop.
template <bool kPacksClamp, bool kSigned>
QTK_AVX2 void epilogue_codes_columns(const int32_t* acc, int mr, int nr, int64_t m0, int64_t n0,
                                     const QgemmOutput& out) {
  const QgemmRequant& r = *out.requant;
  const int64_t* g = &r.lanes[static_cast<size_t>((n0 / 8) * 48)];
  const Lanes4 e0 = load_lanes(g), o0 = load_lanes(g + 4), e1 = load_lanes(g + 48), o1 = load_lanes(g + 52);
  __m256i off0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&r.round_offset[static_cast<size_t>(n0)]));
  __m256i off1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&r.round_offset[static_cast<size_t>(n0 + 8)]));
  const Finish32 f{_mm256_set1_epi32(r.qmin - r.zero_point), _mm256_set1_epi32(r.qmax - r.zero_point),
                   _mm256_set1_epi32(r.zero_point)};
  if constexpr (kPacksClamp) {  // the zero point joins the rounding offset (mod 2^32, as in the row stage)
    off0 = _mm256_add_epi32(off0, f.zp);
    off1 = _mm256_add_epi32(off1, f.zp);
  }
  const int64_t ldo = out.ldo;
  uint8_t* dst = static_cast<uint8_t*>(out.out) + m0 * ldo + n0;  // int8 and uint8 share the byte layout
  for (int i = 0; i < mr; ++i, dst += ldo) {
    const __m256i v0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(acc + i * kQgemmNR));
    const __m256i v1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(acc + i * kQgemmNR + 8));
    __m128i bytes;
    if constexpr (kPacksClamp)
      bytes = pack_codes(rescale8_below_one(v0, e0, o0, off0), rescale8_below_one(v1, e1, o1, off1), kSigned);
    else
      bytes = pack_codes(requant8_below_one(v0, e0, o0, off0, f), requant8_below_one(v1, e1, o1, off1, f), kSigned);
    store_codes(dst, bytes, nr);
  }
}

// The instance for `out`, or null where the general loop is needed.
QgemmEpilogue conv_codes_epilogue(const QgemmOutput& out) {
  if (!out.channel_is_row || out.kind != QgemmOutputKind::kCodes || !out.requant->below_one) return nullptr;
  if (out.bias && (out.bias_cs != 0 || out.bias_saturates)) return nullptr;
  const QgemmRequant& r = *out.requant;
  const bool s = out.codes_signed;
  const bool packs = out.small_acc && r.qmin == (s ? -128 : 0) && r.qmax == (s ? 127 : 255);
  static constexpr QgemmEpilogue kTable[2][2][2] = {
      {{epilogue_codes_rows<false, false, false>, epilogue_codes_rows<false, false, true>},
       {epilogue_codes_rows<false, true, false>, epilogue_codes_rows<false, true, true>}},
      {{epilogue_codes_rows<true, false, false>, epilogue_codes_rows<true, false, true>},
       {epilogue_codes_rows<true, true, false>, epilogue_codes_rows<true, true, true>}}};
  return kTable[packs][out.bias != nullptr][s];
}

}  // namespace

QTK_AVX2 void qgemm_epilogue_avx2(const int32_t* acc, int mr, int nr, int64_t m0, int64_t n0,
                                  const QgemmOutput& out) {
  static_assert(kQgemmNR == 16, "the output stage handles 16 columns as two vectors");
  const bool by_row = out.channel_is_row;
  for (int i = 0; i < mr; ++i) {
    const int64_t m = m0 + i;
    __m256i v[2] = {_mm256_load_si256(reinterpret_cast<const __m256i*>(acc + i * kQgemmNR)),
                    _mm256_load_si256(reinterpret_cast<const __m256i*>(acc + i * kQgemmNR + 8))};
    if (out.bias) {
      const int32_t* bp = out.bias + m * out.bias_rs + n0 * out.bias_cs;
      for (int h = 0; h < 2; ++h) {
        const __m256i bv = out.bias_cs ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + 8 * h))
                                       : _mm256_set1_epi32(bp[0]);
        v[h] = out.bias_saturates ? add_saturate_epi32(v[h], bv) : _mm256_add_epi32(v[h], bv);
      }
    }
    const int64_t o = m * out.ldo + n0;
    switch (out.kind) {
      case QgemmOutputKind::kInt32: {
        int32_t* dst = static_cast<int32_t*>(out.out) + o;
        if (nr == kQgemmNR) {
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), v[0]);
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8), v[1]);
        } else {
          alignas(32) int32_t t[kQgemmNR];
          _mm256_store_si256(reinterpret_cast<__m256i*>(t), v[0]);
          _mm256_store_si256(reinterpret_cast<__m256i*>(t + 8), v[1]);
          std::memcpy(dst, t, static_cast<size_t>(nr) * sizeof(int32_t));
        }
        break;
      }
      case QgemmOutputKind::kFloat: {
        float* dst = static_cast<float*>(out.out) + o;
        __m256 f[2];
        for (int h = 0; h < 2; ++h) {
          const __m256 s = by_row ? _mm256_set1_ps(out.scale[m]) : _mm256_loadu_ps(out.scale + n0 + 8 * h);
          f[h] = _mm256_mul_ps(_mm256_cvtepi32_ps(v[h]), s);
        }
        if (nr == kQgemmNR) {
          _mm256_storeu_ps(dst, f[0]);
          _mm256_storeu_ps(dst + 8, f[1]);
        } else {
          alignas(32) float t[kQgemmNR];
          _mm256_store_ps(t, f[0]);
          _mm256_store_ps(t + 8, f[1]);
          std::memcpy(dst, t, static_cast<size_t>(nr) * sizeof(float));
        }
        break;
      }
      case QgemmOutputKind::kCodes: {
        const QgemmRequant& r = *out.requant;
        __m256i c[2];
        if (r.below_one) {
          const Finish32 f{_mm256_set1_epi32(r.qmin - r.zero_point), _mm256_set1_epi32(r.qmax - r.zero_point),
                           _mm256_set1_epi32(r.zero_point)};
          if (by_row) {
            const Lanes4 p = broadcast_lanes(r, m);
            const __m256i offset = _mm256_set1_epi32(r.rows[static_cast<size_t>(m)].round_offset);
            c[0] = requant8_below_one(v[0], p, p, offset, f);
            c[1] = requant8_below_one(v[1], p, p, offset, f);
          } else {
            for (int h = 0; h < 2; ++h) {
              const int64_t* g = &r.lanes[((n0 + 8 * h) / 8) * 48];
              const __m256i offset = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&r.round_offset[n0 + 8 * h]));
              c[h] = requant8_below_one(v[h], load_lanes(g), load_lanes(g + 4), offset, f);
            }
          }
        } else if (by_row) {
          const Lanes4 p = broadcast_lanes(r, m);
          c[0] = requant8(v[0], p, p);
          c[1] = requant8(v[1], p, p);
        } else {
          for (int h = 0; h < 2; ++h) {
            const int64_t* g = &r.lanes[((n0 + 8 * h) / 8) * 48];
            c[h] = requant8(v[h], load_lanes(g), load_lanes(g + 4));
          }
        }
        const __m128i bytes = pack_codes(c[0], c[1], out.codes_signed);
        store_codes(static_cast<uint8_t*>(out.out) + o, bytes, nr);  // int8 and uint8 share the byte layout
        break;
      }
    }
  }
}

QgemmEpilogue qgemm_epilogue_avx2_for(const QgemmOutput& out) {
  if (const QgemmEpilogue conv = conv_codes_epilogue(out)) return conv;
  if (out.channel_is_row || out.kind != QgemmOutputKind::kCodes || !out.requant->below_one || out.bias)
    return qgemm_epilogue_avx2;
  const QgemmRequant& r = *out.requant;
  const bool s = out.codes_signed;
  const bool packs = out.small_acc && r.qmin == (s ? -128 : 0) && r.qmax == (s ? 127 : 255);
  static constexpr QgemmEpilogue kTable[2][2] = {
      {epilogue_codes_columns<false, false>, epilogue_codes_columns<false, true>},
      {epilogue_codes_columns<true, false>, epilogue_codes_columns<true, true>}};
  return kTable[packs][s];
}

#else  // no x86: the dispatcher never picks these, but they must link.

void qgemm_pack_a_tile_avx2(const QgemmCodes& a, int64_t m0, int rows, int64_t k, const int32_t* zero_points,
                            bool zp_per_row, int32_t* tile) {
  qgemm_pack_a_tile(a, m0, rows, k, zero_points, zp_per_row, tile);
}

void qgemm_ukernel_avx2(int rows, int64_t kpairs, const int32_t* a, const int16_t* b, int32_t* acc) {
  qgemm_ukernel_scalar(rows, kpairs, a, b, acc);
}
void qgemm_ukernel_few_avx2(int rows, int nr, int64_t kpairs, const int32_t* a, const int16_t* b, int32_t* acc) {
  (void)nr;
  qgemm_ukernel_scalar(rows, kpairs, a, b, acc);
}
void qgemm_epilogue_avx2(const int32_t* acc, int mr, int nr, int64_t m0, int64_t n0, const QgemmOutput& out) {
  qgemm_epilogue_scalar(acc, mr, nr, m0, n0, out);
}
QgemmEpilogue qgemm_epilogue_avx2_for(const QgemmOutput&) { return qgemm_epilogue_avx2; }
void qgemm_ukernel_narrow_avx2(int rows, int64_t kpairs, const int32_t* a, const uint8_t* b, bool b_signed,
                               const int32_t* b_zp, const int32_t* a_sum, int32_t* acc) {
  // Never called without AVX2 (qgemm only reads the narrow copy on that path).
  (void)rows, (void)kpairs, (void)a, (void)b, (void)b_signed, (void)b_zp, (void)a_sum, (void)acc;
}
void qgemm_tile_row_sums_avx2(int64_t kpairs, const int32_t* a, int32_t* a_sum) {
  (void)kpairs, (void)a, (void)a_sum;  // as above
}
void qgemm_expand_b_panel_avx2(const uint8_t* codes, int64_t kpairs, bool is_signed, const int32_t* zp,
                               int16_t* out) {
  (void)codes, (void)kpairs, (void)is_signed, (void)zp, (void)out;  // as above
}
void qgemm_expand_a_avx2(const QgemmNarrowA& a, int64_t t0, int64_t t1, int32_t* out) {
  qgemm_expand_a_scalar(a, t0, t1, out);
}

#endif

}  // namespace qtk::rt::x86::detail
