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
  auto* dst = static_cast<uint8_t*>(b.raw());
  const int64_t k = packed.k, n = packed.n;
  if (qgemm_resolve_path(QgemmPath::kAuto) == QgemmPath::kAvx512Vnni) {
    // qgemm.cpp's QgemmPackedB::quads(): column j in panel j / NR at byte
    // 4 * (j % NR), k in quads of 4 rows; codes made signed (u8 - 128).
    const QgemmQuadB& q = packed.quads();
    const int shift = dtype_ == DType::kInt8 ? 0 : 128;
    const int64_t panel_len = q.kquads * 4 * kQgemmNR;
    for (int64_t j = 0; j < n; ++j) {
      const int8_t* col = q.codes.data() + (j / kQgemmNR) * panel_len + 4 * (j % kQgemmNR);
      for (int64_t kk = 0; kk < k; ++kk)
        dst[trans_b_ ? j * k + kk : kk * n + j] = static_cast<uint8_t>(col[(kk / 4) * 4 * kQgemmNR + kk % 4] + shift);
    }
  } else {
    qgemm_unpack_narrow_b(packed, trans_b_, dst);
  }
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
