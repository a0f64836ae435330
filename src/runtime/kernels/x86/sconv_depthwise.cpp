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
#endif

namespace qtk::rt::x86 {


#if defined(__x86_64__) || defined(__i386__)

bool sconv_depthwise_avx512_supported() { return cpu_has_avx512f(); }

QTK_DW512 void sconv_depthwise_plane_avx512(const float* x, const float* w, float bias, const DepthwisePlane& g,
                                            float* y) {
  if (g.s_w > 2) return depthwise_plane_reference(x, w, bias, g, y);
  // The zero-padded plane: every window of every output lies inside, and a
  // row's last vector (up to 15 lanes past the row, twice that at stride 2)
  // reads into the next rows or the slack.
  const int64_t hp = std::max(g.p_h + g.in_h, (g.out_h - 1) * g.s_h + (g.k_h - 1) * g.d_h + 1);
  const int64_t wp = std::max(g.p_w + g.in_w, (g.out_w - 1) * g.s_w + (g.k_w - 1) * g.d_w + 1);
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

#else

bool sconv_depthwise_avx512_supported() { return false; }
void sconv_depthwise_plane_avx512(const float* x, const float* w, float bias, const DepthwisePlane& g, float* y) {
  depthwise_plane_reference(x, w, bias, g, y);
}

#endif

}  // namespace qtk::rt::x86
