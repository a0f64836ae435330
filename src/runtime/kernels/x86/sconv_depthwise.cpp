#include "runtime/kernels/x86/sconv_depthwise.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "core/cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
// This file is compiled with -ffp-contract=off (CMakeLists.txt): the product
// and the sum stay two roundings, as in the reference (the compiler would
// otherwise fuse _mm512_mul_ps + _mm512_add_ps where FMA is enabled).
#define QTK_DW512 __attribute__((target("avx512f")))
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC bug 105593, see qgemm_vnni_avx512.cpp
#endif

namespace qtk::rt::x86 {


#if defined(__x86_64__) || defined(__i386__)

bool sconv_depthwise_avx512_supported() { return cpu_has_avx512f(); }

// The padded extent that holds every window of every output (a depthwise
// plane's, or a channel-vector image's).
int64_t padded_rows(const DepthwisePlane& g) {
  return std::max(g.p_h + g.in_h, (g.out_h - 1) * g.s_h + (g.k_h - 1) * g.d_h + 1);
}
int64_t padded_cols(const DepthwisePlane& g) {
  return std::max(g.p_w + g.in_w, (g.out_w - 1) * g.s_w + (g.k_w - 1) * g.d_w + 1);
}

QTK_DW512 void sconv_depthwise_plane_avx512(const float* x, const float* w, float bias, const DepthwisePlane& g,
                                            float* y) {
  if (g.s_w > 2) return depthwise_plane_reference(x, w, bias, g, y);
  // The zero-padded plane: every window of every output lies inside, and a
  // row's last vector (up to 15 lanes past the row, twice that at stride 2)
  // reads into the next rows or the slack.
  const int64_t hp = padded_rows(g), wp = padded_cols(g);
  // Only the image's rectangle is written below, so the zeros around it
  // (and the slack) stay valid while a thread sees the same geometry: the
  // buffer is cleared only when the geometry changes, not once per plane.
  thread_local std::vector<float> buffer;
  thread_local std::array<int64_t, 6> geometry{};
  const std::array<int64_t, 6> key{hp, wp, g.p_h, g.p_w, g.in_h, g.in_w};
  if (key != geometry || buffer.empty()) {
    buffer.assign(static_cast<size_t>(hp * wp + 48), 0.f);
    geometry = key;
  }
  float* pad = buffer.data();
  for (int64_t r = 0; r < g.in_h; ++r)
    std::memcpy(pad + (r + g.p_h) * wp + g.p_w, x + r * g.in_w, static_cast<size_t>(g.in_w) * sizeof(float));
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512 vbias = _mm512_set1_ps(bias);
  if (g.s_h == 1 && g.s_w == 1 && g.out_w < 16) {
    // Narrow planes: outputs on the padded grid, v = oh * wp + ow, are one
    // contiguous run (each tap a fixed offset), so a vector spans rows; the
    // columns past out_w are computed and dropped.
    const int64_t virt = (g.out_h - 1) * wp + g.out_w;  // through the last real output: its taps end in the buffer
    thread_local std::vector<float> grid;
    grid.resize(static_cast<size_t>(virt + 16));
    for (int64_t v = 0; v < virt; v += 16) {
      __m512 acc = vbias;
      for (int64_t kh = 0; kh < g.k_h; ++kh)
        for (int64_t kw = 0; kw < g.k_w; ++kw) {
          const __m512 xv = _mm512_loadu_ps(pad + v + kh * g.d_h * wp + kw * g.d_w);
          acc = _mm512_add_ps(acc, _mm512_mul_ps(xv, _mm512_set1_ps(w[kh * g.k_w + kw])));
        }
      _mm512_storeu_ps(grid.data() + v, acc);
    }
    for (int64_t oh = 0; oh < g.out_h; ++oh)
      std::memcpy(y + oh * g.out_w, grid.data() + oh * wp, static_cast<size_t>(g.out_w) * sizeof(float));
    return;
  }
  for (int64_t oh = 0; oh < g.out_h; ++oh) {
    float* yr = y + oh * g.out_w;
    for (int64_t ow = 0; ow < g.out_w; ow += 16) {
      const int64_t lanes = std::min<int64_t>(16, g.out_w - ow);
      __m512 acc = vbias;
      for (int64_t kh = 0; kh < g.k_h; ++kh) {
        const float* row = pad + (oh * g.s_h + kh * g.d_h) * wp + ow * g.s_w;
        for (int64_t kw = 0; kw < g.k_w; ++kw) {
          const float* src = row + kw * g.d_w;
          const __m512 v = g.s_w == 1 ? _mm512_loadu_ps(src)
                                      : _mm512_permutex2var_ps(_mm512_loadu_ps(src), even, _mm512_loadu_ps(src + 16));
          acc = _mm512_add_ps(acc, _mm512_mul_ps(v, _mm512_set1_ps(w[kh * g.k_w + kw])));
        }
      }
      _mm512_mask_storeu_ps(yr + ow, static_cast<__mmask16>((1u << lanes) - 1), acc);
    }
  }
}

namespace {

// r[i][j] -> r[j][i] for a 16 x 16 block of floats in registers (unpack
// pairs, then quads, then 128-bit lanes twice).
QTK_DW512 inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    u[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  // u[4g + k] holds, per 128-bit lane l, rows 4g..4g+3 of column 4l + k.
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(u[i], u[4 + i], 0x88);
    t[4 + i] = _mm512_shuffle_f32x4(u[i], u[4 + i], 0xDD);
    t[8 + i] = _mm512_shuffle_f32x4(u[8 + i], u[12 + i], 0x88);
    t[12 + i] = _mm512_shuffle_f32x4(u[8 + i], u[12 + i], 0xDD);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
    r[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xDD);
    r[4 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0x88);
    r[12 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0xDD);
  }
}

}  // namespace

bool sconv_depthwise_prefers_channels(const DepthwisePlane& g, int64_t channels) {
  return channels >= 16 && g.out_w < 16 && g.s_w <= 2;
}

void sconv_depthwise_channels_prepare(const float* w, const float* bias, int64_t channels, const DepthwisePlane& g,
                                      SconvDepthwiseChannels& out) {
  const int64_t taps = g.k_h * g.k_w, cp = (channels + 15) / 16 * 16, wp = padded_cols(g);
  out.g = g;
  out.channels = channels;
  out.weights.assign(static_cast<size_t>((taps + 1) * cp), 0.f);
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t t = 0; t < taps; ++t) out.weights[static_cast<size_t>(t * cp + c)] = w[c * taps + t];
    out.weights[static_cast<size_t>(taps * cp + c)] = bias != nullptr ? bias[c] : 0.f;
  }
  out.first_tap.resize(static_cast<size_t>(g.out_h * g.out_w));
  for (int64_t oh = 0, p = 0; oh < g.out_h; ++oh)
    for (int64_t ow = 0; ow < g.out_w; ++ow, ++p) out.first_tap[static_cast<size_t>(p)] = oh * g.s_h * wp + ow * g.s_w;
  out.tap.resize(static_cast<size_t>(taps));
  for (int64_t kh = 0; kh < g.k_h; ++kh)
    for (int64_t kw = 0; kw < g.k_w; ++kw) out.tap[static_cast<size_t>(kh * g.k_w + kw)] = kh * g.d_h * wp + kw * g.d_w;
}

QTK_DW512 void sconv_depthwise_channels_avx512(const SconvDepthwiseChannels& prep, const float* x, int64_t c_begin,
                                               int64_t c_count, float* y) {
  const DepthwisePlane& g = prep.g;
  const int64_t hp = padded_rows(g), wp = padded_cols(g);
  const int64_t cp = (c_count + 15) / 16 * 16, taps = g.k_h * g.k_w;
  const int64_t wstride = (prep.channels + 15) / 16 * 16;  // prep.weights' row
  const int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
  // Padded input, position-major with the channels innermost: zeros around
  // the image (and in the channels past c_count) stay while the geometry
  // does; each call writes the image's rectangle.
  thread_local std::vector<float> padded, out;
  thread_local std::array<int64_t, 5> geometry{};
  const std::array<int64_t, 5> key{hp, wp, cp, g.p_h * 65536 + g.p_w, g.in_h * 65536 + g.in_w};
  if (key != geometry || padded.empty()) {
    padded.assign(static_cast<size_t>(hp * wp * cp), 0.f);
    geometry = key;
  }
  float* pad = padded.data();
  // 16 channels x 16 input positions at a time, transposed in registers.
  for (int64_t c0 = 0; c0 < c_count; c0 += 16)
    for (int64_t q0 = 0; q0 < in_plane; q0 += 16) {
      const int64_t qn = std::min<int64_t>(16, in_plane - q0);
      const __mmask16 cols = static_cast<__mmask16>((1u << qn) - 1);
      __m512 r[16];
      for (int i = 0; i < 16; ++i)
        r[i] = c0 + i < c_count ? _mm512_maskz_loadu_ps(cols, x + (c0 + i) * in_plane + q0) : _mm512_setzero_ps();
      transpose16(r);
      for (int64_t j = 0; j < qn; ++j) {
        const int64_t q = q0 + j, row = q / g.in_w, col = q % g.in_w;
        _mm512_storeu_ps(pad + ((row + g.p_h) * wp + col + g.p_w) * cp + c0, r[j]);
      }
    }
  out.resize(static_cast<size_t>(out_plane * cp));
  float* o = out.data();
  const int64_t* first = prep.first_tap.data();
  const int64_t* tap = prep.tap.data();
  // Per output position and 16 channels: bias, then + x * w tap by tap in
  // (kh, kw) order, product and sum rounded apart. Four positions at a time
  // keep four sums in flight.
  for (int64_t v = 0; v < cp / 16; ++v) {
    const float* wv = prep.weights.data() + c_begin + v * 16;
    const float* xv = pad + v * 16;
    const __m512 vb = _mm512_loadu_ps(wv + taps * wstride);
    int64_t p = 0;
    for (; p + 4 <= out_plane; p += 4) {
      const float* x0 = xv + first[p] * cp;
      const float* x1 = xv + first[p + 1] * cp;
      const float* x2 = xv + first[p + 2] * cp;
      const float* x3 = xv + first[p + 3] * cp;
      __m512 a0 = vb, a1 = vb, a2 = vb, a3 = vb;
      for (int64_t t = 0; t < taps; ++t) {
        const __m512 wk = _mm512_loadu_ps(wv + t * wstride);
        const int64_t off = tap[t] * cp;
        a0 = _mm512_add_ps(a0, _mm512_mul_ps(_mm512_loadu_ps(x0 + off), wk));
        a1 = _mm512_add_ps(a1, _mm512_mul_ps(_mm512_loadu_ps(x1 + off), wk));
        a2 = _mm512_add_ps(a2, _mm512_mul_ps(_mm512_loadu_ps(x2 + off), wk));
        a3 = _mm512_add_ps(a3, _mm512_mul_ps(_mm512_loadu_ps(x3 + off), wk));
      }
      _mm512_storeu_ps(o + p * cp + v * 16, a0);
      _mm512_storeu_ps(o + (p + 1) * cp + v * 16, a1);
      _mm512_storeu_ps(o + (p + 2) * cp + v * 16, a2);
      _mm512_storeu_ps(o + (p + 3) * cp + v * 16, a3);
    }
    for (; p < out_plane; ++p) {
      const float* x0 = xv + first[p] * cp;
      __m512 a0 = vb;
      for (int64_t t = 0; t < taps; ++t)
        a0 = _mm512_add_ps(a0, _mm512_mul_ps(_mm512_loadu_ps(x0 + tap[t] * cp), _mm512_loadu_ps(wv + t * wstride)));
      _mm512_storeu_ps(o + p * cp + v * 16, a0);
    }
  }
  // Back to planes: 16 positions x 16 channels at a time.
  for (int64_t c0 = 0; c0 < c_count; c0 += 16)
    for (int64_t p0 = 0; p0 < out_plane; p0 += 16) {
      const int64_t pn = std::min<int64_t>(16, out_plane - p0);
      __m512 r[16];
      for (int i = 0; i < 16; ++i) r[i] = i < pn ? _mm512_loadu_ps(o + (p0 + i) * cp + c0) : _mm512_setzero_ps();
      transpose16(r);
      const __mmask16 lanes = static_cast<__mmask16>((1u << pn) - 1);
      for (int64_t j = 0; j < 16 && c0 + j < c_count; ++j)
        _mm512_mask_storeu_ps(y + (c0 + j) * out_plane + p0, lanes, r[j]);
    }
}

#else

bool sconv_depthwise_prefers_channels(const DepthwisePlane&, int64_t) { return false; }
void sconv_depthwise_channels_prepare(const float* w, const float* bias, int64_t channels, const DepthwisePlane& g,
                                      SconvDepthwiseChannels& out) {
  out.g = g;
  out.channels = channels;
  out.weights.assign(w, w + channels * g.k_h * g.k_w);
  out.weights.insert(out.weights.end(), bias != nullptr ? bias : w, bias != nullptr ? bias + channels : w);
}
void sconv_depthwise_channels_avx512(const SconvDepthwiseChannels& prep, const float* x, int64_t c_begin,
                                     int64_t c_count, float* y) {
  const DepthwisePlane& g = prep.g;
  const int64_t taps = g.k_h * g.k_w, with_bias = static_cast<int64_t>(prep.weights.size()) > prep.channels * taps;
  for (int64_t c = 0; c < c_count; ++c)
    depthwise_plane_reference(x + c * g.in_h * g.in_w, prep.weights.data() + (c_begin + c) * taps,
                              with_bias ? prep.weights[static_cast<size_t>(prep.channels * taps + c_begin + c)] : 0.f,
                              g, y + c * g.out_h * g.out_w);
}

bool sconv_depthwise_avx512_supported() { return false; }
void sconv_depthwise_plane_avx512(const float* x, const float* w, float bias, const DepthwisePlane& g, float* y) {
  depthwise_plane_reference(x, w, bias, g, y);
}

#endif

}  // namespace qtk::rt::x86
