// com.microsoft MatMulNBits (block-quantized weight-only MatMul), registered
// with the com.microsoft family in qlinear_contrib_ops.cpp; the x86 kernel
// that keeps the codes packed is in kernels/x86/qnbits_ops.h.
//
// accuracy_level 4 (ORT: "A may be quantized to int8 with the same
// block_size") runs the int8 arithmetic of kernels/x86/qnbits.h, here as the
// plain reference; other levels (0 unset, 1 fp32, 2 fp16, 3 bf16) dequantize
// the weights and run the float GEMM. Level 4 with float zero points, or a
// block_size above kMatMulNBitsMaxInt8Block, also takes the float path.
#pragma once

#include <cstdint>
#include <memory>

#include "qtk/status.h"
#include "qtk/tensor.h"
#include "runtime/kernel.h"

namespace qtk::rt {
class OpRegistry;
void register_matmul_nbits_op(OpRegistry& r);

// Int8 block sums stay exact in int32 up to here: 255 · 127 · block < 2^31.
inline constexpr int64_t kMatMulNBitsMaxInt8Block = 16384;

struct MatMulNBitsAttrs {
  int64_t k = 0, n = 0, bits = 4, block = 0, accuracy_level = 0;
};
// The node's attributes, checked (K, N > 0, bits 2/4/8, block a power of two >= 16).
Expected<MatMulNBitsAttrs> read_matmul_nbits_attrs(const ir::Node& node);
// B [N, blocks, block·bits/8] uint8, scales [N·blocks] float32, zero points
// absent, uint8 [N · ceil(blocks·bits/8)] or float32 [N·blocks].
Status check_matmul_nbits_operands(const MatMulNBitsAttrs& a, const Tensor& b, const Tensor& scales, const Tensor* zp);
// Whether a node with these attributes and zero points (null: none) runs the
// int8 arithmetic.
bool matmul_nbits_int8_arithmetic(const MatMulNBitsAttrs& a, const Tensor* zp);

// The reference kernel (what OpRegistry::reference() registers).
Expected<std::unique_ptr<Kernel>> make_matmul_nbits_reference(const KernelInit& init);

// accuracy_level 4, one row block of A (len <= block values, the rest of the
// block's qa zero-filled by the caller): sa = max|a| / 127,
// qa = rint(clamp(a / sa, -127, 127)), asum = Σ qa; sa = 0 and qa = 0 for an
// all-zero block (or sa underflowing to 0), sa = NaN and qa = 0 when a value
// is not finite (the row's outputs become NaN, as in float).
void matmul_nbits_quantize_a_block(const float* a, int64_t len, int8_t* qa, float* sa, int32_t* asum);

// accuracy_level 4, plain: y [M, N] = A [M, K] · W (+ bias) in the arithmetic
// of kernels/x86/qnbits.h, straight from the MatMulNBits operands (b, scales,
// zero_points: null or packed uint8, bias: null or N values).
void matmul_nbits_int8_reference(const MatMulNBitsAttrs& at, int64_t m, const float* a, const uint8_t* b,
                                 const float* scales, const uint8_t* zero_points, const float* bias, float* y);

}  // namespace qtk::rt
