// Row functions of the quantized element-wise and pooling kernels
// (qelementwise_x86_ops.cpp, qelementwise_x86_maxpool.cpp): a scalar version
// that is the reference's formula, and an AVX2 version
// (qelementwise_x86_avx2.cpp) equal to it bit for bit. The AVX2 versions
// handle any n (their tails run the scalar code); call them only when
// avx2_supported().
#pragma once

#include <cstdint>
#include <memory>

#include "quant/schemes/fixed_point.h"
#include "runtime/kernels/x86/qelementwise_x86_ops.h"

namespace qtk::rt::qew {

bool avx2_supported();
bool use_avx2(Path p);  // resolves kAuto (and kAvx2 on a CPU without AVX2)

// The reference kernel of the node: what every kernel here runs for the
// cases it does not take, so results and error messages stay the reference's.
Expected<std::unique_ptr<Kernel>> reference_kernel(const KernelInit& init);

// MaxPool (qelementwise_x86_maxpool.cpp).
Expected<std::unique_ptr<Kernel>> make_max_pool_kernel(const KernelInit& init, bool avx2);

// QuantizeLinear per tensor, float32 -> 8-bit:
// y = saturate(round_half_even(x / scale) + zp), computed in float32 as the
// reference does; NaN -> zp.
struct QuantizeParams {
  float scale = 1.f;
  int32_t zero_point = 0;
  bool y_signed = false;
};
void quantize_scalar(const float* x, int64_t n, const QuantizeParams& p, void* y);
void quantize_avx2(const float* x, int64_t n, const QuantizeParams& p, void* y);

// DequantizeLinear per tensor, 8-bit -> float32: y = float(q - zp) * scale.
struct DequantizeParams {
  float scale = 1.f;
  int32_t zero_point = 0;
  bool x_signed = false;
};
void dequantize_scalar(const void* x, int64_t n, const DequantizeParams& p, float* y);
void dequantize_avx2(const void* x, int64_t n, const DequantizeParams& p, float* y);

// com.microsoft QLinearAdd (docs/integer-semantics.md):
//   c = clamp(((da * ma + db * mb + 2^(n-1)) >> n) + c_zp),  da = a - a_zp, db = b - b_zp.
// a_step / b_step: 1, or 0 for an input broadcast from one value.
struct AddParams {
  int32_t a_zp = 0, b_zp = 0, c_zp = 0;
  int64_t ma = 0, mb = 0;
  int n = 31;
  bool is_signed = false;  // inputs and output share one 8-bit type
};
void qadd_scalar(const void* a, int64_t a_step, const void* b, int64_t b_step, int64_t n, const AddParams& p,
                 void* c);
void qadd_avx2(const void* a, int64_t a_step, const void* b, int64_t b_step, int64_t n, const AddParams& p, void* c);

// com.microsoft QLinearMul: c = requantize_to_code(da * db, mult, c_zp).
struct MulParams {
  int32_t a_zp = 0, b_zp = 0, c_zp = 0;
  quant::FixedPointMultiplier mult;
  bool is_signed = false;
};
void qmul_scalar(const void* a, int64_t a_step, const void* b, int64_t b_step, int64_t n, const MulParams& p,
                 void* c);
void qmul_avx2(const void* a, int64_t a_step, const void* b, int64_t b_step, int64_t n, const MulParams& p, void* c);

// Sum of n 8-bit codes (exact; n < 2^23 keeps it in int32 range).
int64_t sum_codes_scalar(const void* x, bool is_signed, int64_t n);
int64_t sum_codes_avx2(const void* x, bool is_signed, int64_t n);

// One output row of a 2-D max pool over a padded, phase-split plane: for
// each window position t, taps[t][ow] is the input output ow reads there.
// y[ow] = max over t, for ow in [begin, end).
void max_row_scalar(const uint8_t* const* taps, int taps_n, int64_t begin, int64_t end, bool is_signed, uint8_t* y);
void max_row_avx2(const uint8_t* const* taps, int taps_n, int64_t end, bool is_signed, uint8_t* y);  // [0, end)
// 2x2 windows, stride 2, no padding (the classic CNN pool): y[i][j] = max of
// x[2i..2i+1][2j..2j+1] over out_h x out_w outputs. `v` is scratch for
// out_h * 2 * out_w bytes (the row pairs' vertical maxima).
void max_pool_2x2_scalar(const uint8_t* x, int64_t in_w, int64_t out_h, int64_t out_w, bool is_signed, uint8_t* v,
                         uint8_t* y);
void max_pool_2x2_avx2(const uint8_t* x, int64_t in_w, int64_t out_h, int64_t out_w, bool is_signed, uint8_t* v,
                       uint8_t* y);
// dst[i] = src[stride * i], i in [0, n): one phase of a row (stride >= 1).
void gather_phase_scalar(const uint8_t* src, int64_t stride, int64_t n, uint8_t* dst);
void gather_phase_avx2(const uint8_t* src, int64_t stride, int64_t n, uint8_t* dst);

}  // namespace qtk::rt::qew
