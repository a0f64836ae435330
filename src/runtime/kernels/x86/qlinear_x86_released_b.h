// A constant B that an integer GEMM kernel packed and let go of
// (KernelInit::release_constant): on the VNNI and AVX2 tiers qgemm reads one
// packed layout only, so the session then holds B once. The reference
// kernel, for the cases the packed path does not take, gets the codes back.
#pragma once

#include <cstddef>

#include "qtk/tensor.h"
#include "runtime/kernel.h"
#include "runtime/kernels/x86/qgemm.h"

namespace qtk::rt::x86 {

class ReleasedB {
 public:
  // Lets input `input` (B's codes, `b`, as packed into `packed`; trans_b: B
  // stored n x k) go when this tier reads one layout only and the session
  // agrees; then `source` (the kernel's handle on b's storage) is dropped.
  // False: B stays held (scalar tier, or a constant something else reads).
  bool release(const KernelInit& init, size_t input, const Tensor& b, bool trans_b, QgemmPackedB& packed,
               Tensor& source);
  bool released() const { return dtype_ != DType::kUndefined; }
  // B's codes rebuilt from the packed layout, in b's dtype and shape.
  Tensor unpack(const QgemmPackedB& packed) const;

 private:
  DType dtype_ = DType::kUndefined;
  Shape shape_;
  bool trans_b_ = false;
};

// Runs `ref` with input `input` replaced by `b` (outputs moved back to ctx).
Status run_with_input(Kernel& ref, KernelContext& ctx, size_t input, const Tensor& b);

}  // namespace qtk::rt::x86
