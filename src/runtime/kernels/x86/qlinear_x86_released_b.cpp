#include "runtime/kernels/x86/qlinear_x86_released_b.h"

#include "core/alloc_hook.h"

namespace qtk::rt::x86 {

bool ReleasedB::release(const KernelInit& init, size_t input, const Tensor& b, bool trans_b, QgemmPackedB& packed,
                        Tensor& source) {
  // The automatic tier is resolved once per process: it stays what it is.
  const QgemmPath tier = qgemm_resolve_path(QgemmPath::kAuto);
  if (!init.release_constant || (tier != QgemmPath::kAvx512Vnni && tier != QgemmPath::kAvx2)) return false;
  uint64_t bytes = packed.narrow_bytes();
  if (tier == QgemmPath::kAvx512Vnni) {
    const QgemmQuadB& q = packed.quads();  // packed now: the layout qgemm reads on this tier
    bytes = static_cast<uint64_t>(packed.panels * q.kquads * 4 * kQgemmNR) +
            (q.colsum.size() + q.zero_point.size()) * sizeof(int32_t);
  }
  if (!init.release_constant(input, bytes)) return false;
  dtype_ = b.dtype();
  shape_ = b.shape();
  trans_b_ = trans_b;
  source = Tensor();
  packed.source.data = nullptr;  // the other layouts can no longer be made (never on this tier)
  return true;
}

Tensor ReleasedB::unpack(const QgemmPackedB& packed) const {
  Tensor b;
  {
    core::ScopedAllocationHook unplanned(nullptr);  // scratch, not an output the run's plan knows
    b = Tensor::uninitialized(dtype_, shape_);
  }
  if (qgemm_resolve_path(QgemmPath::kAuto) == QgemmPath::kAvx512Vnni) qgemm_unpack_quads_b(packed, trans_b_, b.raw());
  else qgemm_unpack_narrow_b(packed, trans_b_, b.raw());
  return b;
}

Status run_with_input(Kernel& ref, KernelContext& ctx, size_t input, const Tensor& b) {
  KernelContext c = ctx;
  c.inputs[input] = &b;
  QTK_RETURN_IF_ERROR(ref.run(c));
  ctx.outputs = std::move(c.outputs);
  return Status::Ok();
}

}  // namespace qtk::rt::x86
