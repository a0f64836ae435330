// BiasRequantize on AVX-512: 16 codes of a row a step, each through the
// reference's float steps (convert, times the scale, plus the bias, divided
// by the output scale, rounded to nearest even), the same bits: this file
// is built without contraction into fused multiply-adds (CMakeLists.txt).
#include <immintrin.h>

#include "core/cpu_features.h"
#include "runtime/bias_requant_fusion.h"
#include "runtime/code_tables.h"
#include "runtime/kernels/ref/bias_requant_op.h"
#include "runtime/kernels/x86/bias_requant_x86.h"
#include "runtime/op_registry.h"

#define QTK_AVX512BW __attribute__((target("avx512f,avx512bw,avx512vl")))

namespace qtk::rt {

QTK_AVX512BW void bias_requant_avx512(const uint8_t* x, int64_t rows, int64_t n, const float* bias,
                                      const BiasRequantParams& p, uint8_t* y) {
  const __m512i xz = _mm512_set1_epi32(p.x_zero_point), yz = _mm512_set1_epi32(p.y_zero_point);
  const __m512 xs = _mm512_set1_ps(p.x_scale), ys = _mm512_set1_ps(p.y_scale);
  // The quantizer clamps v + zero point to [qmin, qmax]: v to [qmin - zp, qmax - zp] (integers: exact).
  const __m512 lo = _mm512_set1_ps(static_cast<float>(p.qmin - p.y_zero_point));
  const __m512 hi = _mm512_set1_ps(static_cast<float>(p.qmax - p.y_zero_point));
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* xr = x + r * n;
    uint8_t* yr = y + r * n;
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = n - j >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - j)) - 1);
      const __m128i c8 = _mm_maskz_loadu_epi8(m, xr + j);
      const __m512i c = p.x_signed ? _mm512_cvtepi8_epi32(c8) : _mm512_cvtepu8_epi32(c8);
      const __m512 d = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c, xz)), xs);
      const __m512 a = _mm512_add_ps(_mm512_maskz_loadu_ps(m, bias + j), d);
      const __m512 v = _mm512_roundscale_ps(_mm512_div_ps(a, ys), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);  // NaN: the zero point, as the reference
      const __m512 k = _mm512_mask_blend_ps(nan, _mm512_min_ps(_mm512_max_ps(v, lo), hi), _mm512_setzero_ps());
      const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(k), yz);
      _mm_mask_storeu_epi8(yr + j, m, _mm512_cvtepi32_epi8(q));  // within the 8-bit range: truncation is exact
    }
  }
}

void register_x86_bias_requant_op(OpRegistry& r) {
  r.add(
      kBiasRequantizeOp,
      [](const KernelInit& init) {
        const bool vector = cpu_has_avx512bw() && !env_flag_set("QTK_BIAS_REQUANT_SCALAR");
        return make_bias_requant_kernel(init, vector ? bias_requant_avx512 : bias_requant_scalar);
      },
      kCodeTableDomain);
}

}  // namespace qtk::rt
