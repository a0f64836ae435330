// CodeTable on AVX-512 VBMI: the 256-byte table in four registers, 64 codes
// per step as two vpermi2b lookups (codes 0-127 and 128-255, by the low
// seven bits) and a blend on the top bit. Same bytes as code_table_scalar.
#include <immintrin.h>

#include "core/cpu_features.h"
#include "runtime/code_tables.h"
#include "runtime/kernels/ref/code_table_op.h"
#include "runtime/op_registry.h"

#define QTK_VBMI __attribute__((target("avx512f,avx512bw,avx512vbmi")))

namespace qtk::rt {

namespace {
QTK_VBMI __m512i lookup64(__m512i t0, __m512i t1, __m512i t2, __m512i t3, __m512i u) {
  const __m512i lo = _mm512_permutex2var_epi8(t0, u, t1);
  const __m512i hi = _mm512_permutex2var_epi8(t2, u, t3);
  return _mm512_mask_blend_epi8(_mm512_movepi8_mask(u), lo, hi);
}
}  // namespace

QTK_VBMI void code_table_vbmi(const uint8_t* table, const uint8_t* x, uint8_t* y, int64_t n, uint8_t flip) {
  const __m512i t0 = _mm512_loadu_si512(table), t1 = _mm512_loadu_si512(table + 64);
  const __m512i t2 = _mm512_loadu_si512(table + 128), t3 = _mm512_loadu_si512(table + 192);
  const __m512i f = _mm512_set1_epi8(static_cast<char>(flip));
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512i u = _mm512_xor_si512(_mm512_loadu_si512(x + i), f);
    _mm512_storeu_si512(y + i, lookup64(t0, t1, t2, t3, u));
  }
  if (i < n) {
    const __mmask64 m = _cvtu64_mask64(~uint64_t{0} >> (64 - (n - i)));
    const __m512i u = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, x + i), f);
    _mm512_mask_storeu_epi8(y + i, m, lookup64(t0, t1, t2, t3, u));
  }
}

bool code_table_vbmi_supported() { return cpu_has_avx512_vbmi() && !env_flag_set("QTK_CODE_TABLE_SCALAR"); }

void register_x86_code_table_op(OpRegistry& r) {
  r.add(
      kCodeTableOp,
      [](const KernelInit& init) {
        return make_code_table_kernel(init, code_table_vbmi_supported() ? code_table_vbmi : code_table_scalar);
      },
      kCodeTableDomain);
}

}  // namespace qtk::rt
