// The optimized com.microsoft MatMulNBits kernel: at accuracy_level 4, with
// B, scales (and uint8 zero points, if any) initializers, the weights stay
// packed at bits per weight (qnbits.h) and the product runs on the int8
// tiers; every other node gets the reference kernel (matmul_nbits.h), which
// computes the same numbers for level 4, bit for bit.
#pragma once

namespace qtk::rt {
class OpRegistry;
void register_x86_matmul_nbits_op(OpRegistry& r);
}  // namespace qtk::rt
