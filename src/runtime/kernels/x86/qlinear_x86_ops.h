// Optimized integer op kernels on the int8 GEMM (qgemm.h, qgemm_conv.h).
// Each try_make_* returns the optimized kernel for a node, or a null pointer
// when the node is not a case it takes at build time (weights not constant,
// not 2-D, zero points outside the data type, ...); register_x86_qlinear_ops
// then registers the reference kernel's behaviour for it. A returned kernel
// still hands cases it only sees at run time (shapes, types, run-time
// parameters, and every error) to the reference kernel, so results and error
// messages are the reference's, bit for bit.
#pragma once

#include <memory>

#include "qtk/status.h"
#include "runtime/kernel.h"

namespace qtk::rt::x86 {

Expected<std::unique_ptr<Kernel>> try_make_qlinear_matmul_kernel(const KernelInit& init);
Expected<std::unique_ptr<Kernel>> try_make_matmul_integer_kernel(const KernelInit& init);
Expected<std::unique_ptr<Kernel>> try_make_qgemm_kernel(const KernelInit& init);  // com.microsoft QGemm
// Batches of a QLinearMatMul with an activation B (M x K x N each) that
// each thread takes at least: 2^18 multiply-adds, so small attention
// products stay on one thread.
int64_t batched_matmul_grain(int64_t m, int64_t n, int64_t k);
// 1-D and 2-D QLinearConv / ConvInteger (the caller tries the depthwise kernel first).
Expected<std::unique_ptr<Kernel>> try_make_qlinear_conv_kernel(const KernelInit& init);
Expected<std::unique_ptr<Kernel>> try_make_conv_integer_kernel(const KernelInit& init);
// How many runs of those kernels fell back to the reference kernel in this process (for tests).
uint64_t qconv_reference_runs();

}  // namespace qtk::rt::x86
