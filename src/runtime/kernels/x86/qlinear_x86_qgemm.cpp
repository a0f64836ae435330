// Optimized com.microsoft QGemm on the int8 GEMM (qgemm.h). Semantics as the
// reference (qlinear_contrib_ops.cpp): acc = Σ (A - a_zp)(B - b_zp[n]) + C in
// int32 (C wraps in, it is not saturated), then either codes requantized with
// M[n] = alpha·a_scale·b_scale[n]/y_scale, or float(acc)·(alpha·a_scale·b_scale[n])
// with that scale product in float32. B, its scales and zero points must be
// constant (packed once); anything else runs the reference kernel.
#include <optional>

#include "core/alloc_hook.h"
#include "quant/schemes/fixed_point.h"
#include "runtime/kernels/x86/qgemm.h"
#include "runtime/kernels/x86/qlinear_x86_common.h"
#include "runtime/kernels/x86/qlinear_x86_ops.h"
#include "runtime/kernels/x86/qlinear_x86_released_b.h"

namespace qtk::rt {
namespace x86 {
namespace {

// A, a_scale, a_zero_point?, B, b_scale, b_zero_point?, C?, y_scale?, y_zero_point?
class QGemmKernel final : public Kernel {
 public:
  QGemmKernel(std::unique_ptr<Kernel> ref, bool trans_a, float alpha) : ref_(std::move(ref)), trans_a_(trans_a), alpha_(alpha) {}

  // false: not a case this kernel takes (the reference one runs instead).
  bool prepare(const KernelInit& init) {
    const bool trans_b = init.node.attr_int("transB", 0) != 0;
    const Tensor* b = init.constant_input(3);
    const Tensor* bs = init.constant_input(4);
    if (!b || !bs || b->rank() != 2 || !is_8bit(b->dtype()) || bs->dtype() != DType::kFloat32) return false;
    if (!(alpha_ > 0.f)) return false;
    k_ = trans_b ? b->dim(1) : b->dim(0);
    n_ = trans_b ? b->dim(0) : b->dim(1);
    b_scale_ = bs->to_float_vector();
    if ((b_scale_.size() != 1 && static_cast<int64_t>(b_scale_.size()) != n_) || !scales_valid(b_scale_)) return false;
    std::vector<int32_t> zp(b_scale_.size(), 0);
    if (node_has_input(init, 5)) {
      const Tensor* z = init.constant_input(5);
      if (!z || z->dtype() != b->dtype() || z->numel() != static_cast<int64_t>(b_scale_.size())) return false;
      auto codes = zero_point_codes(z, b->dtype());
      if (!codes) return false;
      zp = *codes;
    }
    // On the VNNI and AVX2 tiers the codes are let go below: when nothing
    // else needs them, the packing lets each packed panel's pages go as it
    // moves on. (Asked before b_source_ shares the storage: a second owner
    // keeps it.)
    const QgemmPath tier = qgemm_resolve_path(QgemmPath::kAuto);
    const bool vnni = tier == QgemmPath::kAvx512Vnni && init.release_constant;
    const bool narrow = tier == QgemmPath::kAvx2 && init.release_constant;
    void* consumable = (vnni || narrow) && init.consumable_constant ? init.consumable_constant(3) : nullptr;
    b_source_ = *b;  // shared storage: packed_ reads its codes
    qgemm_pack_b({b_source_.raw(), b->dtype() == DType::kInt8, trans_b ? 1 : n_, trans_b ? k_ : 1}, k_, n_, zp, packed_,
                 consumable);
    // qgemm then reads one layout (packed now): the codes can go.
    released_b_.release(init, 3, *b, trans_b, packed_, b_source_);
    quantized_out_ = node_has_input(init, 7);
    // Constant a_scale / y_scale / y_zero_point: the output stage once, now.
    const Tensor* as = init.constant_input(1);
    const Tensor* ys = init.constant_input(7);
    const Tensor* yz = init.constant_input(8);
    if (as && as->dtype() == DType::kFloat32 && as->numel() == 1 && scales_valid(as->to_float_vector())) {
      if (!quantized_out_) {
        scale_ = float_scales(as->data<float>()[0]);
        cached_a_scale_ = as->data<float>()[0];
      } else if (ys && yz && is_8bit(yz->dtype()) && yz->numel() == 1 && ys->dtype() == DType::kFloat32 &&
                 ys->numel() == 1 && scales_valid(ys->to_float_vector())) {
        requant_ = make_requant(as->data<float>()[0], ys->data<float>()[0], static_cast<int32_t>(yz->get_as_int64(0)),
                                yz->dtype());
        cached_a_scale_ = as->data<float>()[0];
        cached_y_scale_ = ys->data<float>()[0];
      }
    }
    return true;
  }

  // The reference kernel, with B rebuilt from the layout the tier packed
  // (the VNNI quads or the AVX2 tier's 8-bit panels) when it was let go.
  Status run_reference(KernelContext& ctx) {
    if (!released_b_.released()) return ref_->run(ctx);
    return run_with_input(*ref_, ctx, 3, released_b_.unpack(packed_));
  }

  // As the reference: M[n] = alpha·a_scale·b_scale[n]/y_scale in double.
  QgemmRequant make_requant(double as, double ys, int32_t yz, DType out_type) const {
    std::vector<quant::FixedPointMultiplier> mult;
    for (float s : b_scale_) mult.push_back(quant::quantize_multiplier(static_cast<double>(alpha_) * as * s / ys));
    return qgemm_make_requant(mult, n_, yz, qmin_of(out_type), qmax_of(out_type), QgemmRequantFor::kColumns);
  }

  // As the reference: alpha·a_scale·b_scale[n] in float, padded to whole panels.
  std::vector<float> float_scales(double as) const {
    const int64_t np = (n_ + kQgemmNR - 1) / kQgemmNR * kQgemmNR;
    std::vector<float> scale(static_cast<size_t>(np));
    for (int64_t j = 0; j < np; ++j)
      scale[static_cast<size_t>(j)] =
          alpha_ * static_cast<float>(as) * b_scale_[b_scale_.size() == 1 ? 0 : static_cast<size_t>(std::min(j, n_ - 1))];
    return scale;
  }

  Status run(KernelContext& ctx) override {
    if (!ctx.has_input(0) || !ctx.has_input(1) || !ctx.has_input(3)) return run_reference(ctx);
    const Tensor& a = ctx.input(0);
    if (!is_8bit(a.dtype()) || a.rank() != 2) return run_reference(ctx);
    const int64_t m = trans_a_ ? a.dim(1) : a.dim(0), k = trans_a_ ? a.dim(0) : a.dim(1);
    if (k != k_) return run_reference(ctx);
    const Tensor& a_scale = ctx.input(1);
    if (a_scale.dtype() != DType::kFloat32 || a_scale.numel() != 1 || !scales_valid(a_scale.to_float_vector()))
      return run_reference(ctx);
    const double as = a_scale.data<float>()[0];
    const Tensor* azp = optional_input(ctx, 2);
    if (azp && (azp->dtype() != a.dtype() || azp->numel() != 1)) return run_reference(ctx);
    const int32_t az = azp ? static_cast<int32_t>(azp->get_as_int64(0)) : 0;

    // C -> bias (m, n) = bias[m * rs + n * cs].
    const Tensor* c = optional_input(ctx, 6);
    QgemmOutput out;
    std::vector<int32_t> bias;
    if (c) {
      if (c->dtype() != DType::kInt32 || c->rank() > 2) return run_reference(ctx);
      const int64_t cm = c->rank() == 2 ? c->dim(0) : 1, cn = c->rank() >= 1 ? c->dim(-1) : 1;
      if ((cm != 1 && cm != m) || (cn != 1 && cn != n_)) return run_reference(ctx);
      const int32_t* cd = c->data<int32_t>();
      out.bias_saturates = false;
      if (cn == 1) {  // one value per row (or one in all): no padding needed
        out.bias = cd;
        out.bias_rs = cm == 1 ? 0 : 1;
        out.bias_cs = 0;
      } else {  // per column: rows padded to whole tiles
        const int64_t np = (n_ + kQgemmNR - 1) / kQgemmNR * kQgemmNR;
        bias.assign(static_cast<size_t>(cm * np), 0);
        for (int64_t i = 0; i < cm; ++i) std::copy(cd + i * n_, cd + (i + 1) * n_, bias.begin() + i * np);
        out.bias = bias.data();
        out.bias_rs = cm == 1 ? 0 : np;
        out.bias_cs = 1;
      }
    }

    DType out_type = DType::kFloat32;
    std::optional<QgemmRequant> requant;
    std::vector<float> scale;
    if (quantized_out_) {
      const Tensor* yzp = optional_input(ctx, 8);
      out_type = yzp ? yzp->dtype() : a.dtype();
      if (!is_8bit(out_type) || !ctx.has_input(7)) return run_reference(ctx);
      const Tensor& y_scale = ctx.input(7);
      if (y_scale.dtype() != DType::kFloat32 || y_scale.numel() != 1 || !scales_valid(y_scale.to_float_vector()))
        return run_reference(ctx);
      if (yzp && yzp->numel() != 1) return run_reference(ctx);
      const double ys = y_scale.data<float>()[0];
      const int32_t yz = yzp ? static_cast<int32_t>(yzp->get_as_int64(0)) : 0;
      const bool cached = requant_ && cached_a_scale_ == as && cached_y_scale_ == ys &&
                          requant_->zero_point == yz && requant_->qmin == qmin_of(out_type) &&
                          requant_->qmax == qmax_of(out_type);
      if (!cached) requant = make_requant(as, ys, yz, out_type);
      out.kind = QgemmOutputKind::kCodes;
      out.requant = requant ? &*requant : &*requant_;
      out.codes_signed = out_type == DType::kInt8;
    } else {
      if (scale_.empty() || cached_a_scale_ != as) scale = float_scales(as);
      out.kind = QgemmOutputKind::kFloat;
      out.scale = scale.empty() ? scale_.data() : scale.data();
    }
    Tensor y = Tensor::uninitialized(out_type, {m, n_});  // every element written
    out.out = y.raw();
    out.ldo = n_;
    const QgemmCodes codes{a.raw(), a.dtype() == DType::kInt8, trans_a_ ? 1 : k, trans_a_ ? m : 1};
    qgemm(m, codes, az, packed_, out, ctx.pool);
    ctx.outputs[0] = std::move(y);
    return Status::Ok();
  }

 private:
  std::unique_ptr<Kernel> ref_;
  bool trans_a_;
  float alpha_;
  int64_t k_ = 0, n_ = 0;
  std::vector<float> b_scale_;
  Tensor b_source_;
  ReleasedB released_b_;
  bool quantized_out_ = false;
  // The output stage prepared from constant scales (checked against the
  // run-time values before use).
  std::optional<QgemmRequant> requant_;
  std::vector<float> scale_;
  double cached_a_scale_ = 0, cached_y_scale_ = 0;
  QgemmPackedB packed_;
};

}  // namespace

Expected<std::unique_ptr<Kernel>> try_make_qgemm_kernel(const KernelInit& init) {
  QTK_ASSIGN_OR_RETURN(auto ref, make_reference_kernel(init));
  auto k = std::make_unique<QGemmKernel>(std::move(ref), init.node.attr_int("transA", 0) != 0,
                                         init.node.attr_float("alpha", 1.f));
  if (!k->prepare(init)) return std::unique_ptr<Kernel>();
  return std::unique_ptr<Kernel>(std::move(k));
}

}  // namespace x86
}  // namespace qtk::rt
