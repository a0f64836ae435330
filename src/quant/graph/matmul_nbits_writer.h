// Weight-only 4-bit MatMul / Gemm → ONNX Runtime's com.microsoft MatMulNBits.
//
// Pattern: A (float) × DQ(w_q, block-wise along the reduction axis, constant)
// in a MatMul (w [K, N]) or a Gemm (transA 0, alpha 1, beta 1, w [K, N] or
// [N, K] with transB, optional constant 1-D bias [N]). The codes must fit
// 4 bits (int4 / uint4 formats) and the block be a power of two >= 16.
//
// MatMulNBits stores B transposed, [N, k_blocks, block/2] bytes, two unsigned
// codes per byte low nibble first, scales [N * k_blocks] and, unless every
// zero point is 8 (its default), zero points packed the same way. Signed
// codes c with zero point z become c + 8 and z + 8: (c + 8) - (z + 8) = c - z,
// so the dequantized weights are identical.
#pragma once

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::quant {

// Rewrites m in place; returns how many nodes became MatMulNBits. Adds the
// com.microsoft opset import when it rewrote anything. accuracy_level: the
// nodes' attribute (0: left unset, float; 4: A quantized to int8 per block at
// run time, runtime/kernels/x86/qnbits.h).
Expected<int> weight_only_to_matmul_nbits(ir::Model& m, int64_t accuracy_level = 0);

}  // namespace qtk::quant
