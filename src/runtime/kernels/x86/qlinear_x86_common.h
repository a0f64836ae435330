// Shared by the optimized integer op kernels (qlinear_x86_*.cpp): the
// reference kernel they fall back to, and reading constant parameters.
#pragma once

#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qtk/status.h"
#include "runtime/kernel.h"
#include "runtime/op_registry.h"

namespace qtk::rt::x86 {

// The reference kernel of this node. Optimized kernels run it for every case
// they do not take (shapes, types or parameters decided at run time), so
// results and error messages stay the reference's.
inline Expected<std::unique_ptr<Kernel>> make_reference_kernel(const KernelInit& init) {
  const KernelFactory* f = OpRegistry::reference().find(init.node.domain, init.node.op_type, init.opset);
  if (!f) return internal_error("no reference kernel for " + init.node.op_type);
  return (*f)(init);
}

inline bool node_has_input(const KernelInit& init, size_t i) {
  return i < init.node.inputs.size() && !init.node.inputs[i].empty();
}

inline int32_t qmin_of(DType t) { return t == DType::kUInt8 ? 0 : -128; }
inline int32_t qmax_of(DType t) { return t == DType::kUInt8 ? 255 : 127; }

// Zero points as int32 (absent: {0}); nullopt unless every value is a code of
// `data` (then x - zp is within ±255 and fits the GEMM's int16 operands, and a
// zero point can pad an image).
inline std::optional<std::vector<int32_t>> zero_point_codes(const Tensor* zp, DType data) {
  if (zp == nullptr || zp->numel() == 0) return std::vector<int32_t>{0};
  std::vector<int32_t> v;
  for (int64_t z : zp->to_int64_vector()) {
    if (z < qmin_of(data) || z > qmax_of(data)) return std::nullopt;
    v.push_back(static_cast<int32_t>(z));
  }
  return v;
}

// An optional input at run time (nullptr when absent).
inline const Tensor* optional_input(const KernelContext& ctx, size_t i) {
  return ctx.has_input(i) ? ctx.inputs[i] : nullptr;
}

// Every scale positive and finite (the reference kernels' requirement, or
// their error).
inline bool scales_valid(const std::vector<float>& s) {
  for (float v : s)
    if (!(v > 0.f) || !std::isfinite(v)) return false;
  return !s.empty();
}

}  // namespace qtk::rt::x86
