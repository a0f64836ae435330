// Test helper: the fused residual join (QgemmResidualAdd) of a conv output
// stage from its zero points, code range and the pair of multipliers.
#pragma once

#include <cstdint>

#include "quant/schemes/fixed_point.h"
#include "runtime/kernels/x86/qgemm.h"

namespace qtk::rt::x86 {

inline QgemmResidualAdd residual_join(const void* codes, int32_t a_zp, int32_t b_zp, int32_t c_zp, int32_t qmin,
                                      int32_t qmax, const quant::SharedShiftMultipliers& m) {
  QgemmResidualAdd r;
  r.codes = codes;
  r.a_zp = a_zp, r.b_zp = b_zp, r.c_zp = c_zp;
  r.qmin = qmin, r.qmax = qmax;
  r.ma = m.ma, r.mb = m.mb, r.n = m.n;
  return r;
}

}  // namespace qtk::rt::x86
