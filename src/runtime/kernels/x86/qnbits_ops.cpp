#include "runtime/kernels/x86/qnbits_ops.h"

#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/ref/matmul_nbits.h"
#include "runtime/kernels/x86/qnbits.h"
#include "runtime/op_registry.h"

namespace qtk::rt {

namespace {

class PackedMatMulNBitsKernel final : public Kernel {
 public:
  PackedMatMulNBitsKernel(MatMulNBitsAttrs a, std::unique_ptr<Kernel> reference) : a_(a), ref_(std::move(reference)) {}
  x86::QnbitsPacked& packed() { return w_; }

  Status run(KernelContext& ctx) override {
    // Anything unusual (types, shapes, g_idx, a bad bias) is the reference kernel's to report.
    if (ctx.num_inputs() < 3 || !ctx.has_input(0) || ctx.input(0).dtype() != DType::kFloat32 ||
        ctx.input(0).rank() < 1 || ctx.input(0).dim(-1) != a_.k || ctx.has_input(4))
      return ref_->run(ctx);
    const Tensor* bias = ctx.has_input(5) ? ctx.inputs[5] : nullptr;
    if (bias && (bias->dtype() != DType::kFloat32 || bias->numel() != a_.n)) return ref_->run(ctx);
    const Tensor& x = ctx.input(0);
    Shape ys = x.shape();
    ys.back() = a_.n;
    Tensor y(DType::kFloat32, ys);
    x86::qnbits_gemm(x.numel() / a_.k, x.data<float>(), w_, bias ? bias->data<float>() : nullptr, y.data<float>(),
                     ctx.pool);
    ctx.outputs[0] = std::move(y);
    return Status::Ok();
  }

 private:
  MatMulNBitsAttrs a_;
  std::unique_ptr<Kernel> ref_;
  x86::QnbitsPacked w_;
};

Expected<std::unique_ptr<Kernel>> make_matmul_nbits(const KernelInit& init) {
  // The reference kernel checks the attributes and constant operands first:
  // its errors are the node's errors.
  QTK_ASSIGN_OR_RETURN(auto ref, make_matmul_nbits_reference(init));
  QTK_ASSIGN_OR_RETURN(MatMulNBitsAttrs a, read_matmul_nbits_attrs(init.node));
  const Tensor* b = init.constant_input ? init.constant_input(1) : nullptr;
  const Tensor* s = init.constant_input ? init.constant_input(2) : nullptr;
  const bool has_zp = init.node.has_input(3);
  const Tensor* z = has_zp && init.constant_input ? init.constant_input(3) : nullptr;
  if (!b || !s || (has_zp && !z) || !matmul_nbits_int8_arithmetic(a, z) ||
      !check_matmul_nbits_operands(a, *b, *s, z).ok())
    return ref;
  auto k = std::make_unique<PackedMatMulNBitsKernel>(a, std::move(ref));
  x86::qnbits_pack(a.k, a.n, a.bits, a.block, b->data<uint8_t>(), s->data<float>(), z ? z->data<uint8_t>() : nullptr,
                   k->packed());
  return std::unique_ptr<Kernel>(std::move(k));
}

}  // namespace

void register_x86_matmul_nbits_op(OpRegistry& r) { r.add("MatMulNBits", make_matmul_nbits, "com.microsoft"); }

}  // namespace qtk::rt
