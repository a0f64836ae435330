// com.microsoft MatMulNBits (block-quantized weight-only MatMul), registered
// with the com.microsoft family in qlinear_contrib_ops.cpp.
#pragma once

namespace qtk::rt {
class OpRegistry;
void register_matmul_nbits_op(OpRegistry& r);
}  // namespace qtk::rt
