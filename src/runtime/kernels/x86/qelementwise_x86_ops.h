// Optimized kernels for the 8-bit element-wise and pooling ops of integer
// sessions: QuantizeLinear / DequantizeLinear (per tensor, float32 <-> 8-bit),
// MaxPool on 8-bit 2-D images, and the com.microsoft QLinearAdd, QLinearMul
// (same shapes, one scalar side, or one side of the other's leading dims
// followed by 1s: a gate [N, C, 1, 1] on [N, C, H, W]) and
// QLinearGlobalAveragePool (NCHW).
// AVX2 when the CPU has it, else their scalar twins; every other case
// (types, layouts, broadcasts, per-axis parameters, bad parameters and their
// errors) runs the reference kernel. Results equal the reference bit for bit.
#pragma once

#include <memory>

#include "qtk/status.h"
#include "runtime/kernel.h"

namespace qtk::rt {

class OpRegistry;

// Adds the kernels above on top of the reference ones (same op, domain and
// since_version, so they replace them).
void register_x86_qelementwise_ops(OpRegistry& r);

namespace qew {

enum class Path {
  kAuto,    // AVX2 when the CPU has it, unless QTK_QEW_SCALAR=1 is set
  kScalar,  // portable C++
  kAvx2,    // AVX2; falls back to scalar on CPUs without it
};

const char* path_name(Path p);

// This file's kernel for the node (one of the ops above), with a forced path
// (tests, benchmarks).
Expected<std::unique_ptr<Kernel>> make_kernel(const KernelInit& init, Path path);

// Whether QLinearAdd / QLinearMul with inputs of these shapes run here rather
// than on the reference kernel (tests).
bool binary_shapes_taken(const Shape& a, const Shape& b);

}  // namespace qew

}  // namespace qtk::rt
