// Optimized 2-D QLinearConv and ConvInteger on the implicit-GEMM int8
// convolution (qgemm_conv.h). Constant weights are packed once at session
// build, with the requantization multipliers and the bias when those are
// constant too. Depthwise QLinearConvs go to the depthwise kernel
// (qdepthwise_conv.h) first. A 1-D conv (Conv1d: x [N, C, L], w [M, C/g, K])
// runs as the 2-D one of height 1 (same memory layout). Other cases
// (non-constant weights, 3-D, per-tensor parameters given per channel, zero
// points outside the data type, errors) run the reference kernel. Results
// equal the reference bit for bit, including the int32 saturation of acc + bias.
#include <atomic>
#include <cmath>
#include <optional>

#include "core/alloc_hook.h"
#include "quant/graph/qoperator_writer.h"
#include "quant/graph/residual_add_fusion.h"
#include "quant/schemes/fixed_point.h"
#include "runtime/kernels/ref/im2col.h"
#include "runtime/kernels/x86/qgemm_conv.h"
#include "runtime/kernels/x86/qlinear_x86_common.h"
#include "runtime/kernels/x86/qlinear_x86_ops.h"

namespace qtk::rt {
namespace x86 {
namespace {

std::atomic<uint64_t> g_reference_runs{0};  // QConvKernel runs handed to the reference kernel

// Input positions of the two ops: QLinearConv (x, x_scale, x_zp, w, w_scale,
// w_zp, y_scale, y_zp, B) and ConvInteger (x, w, x_zp, w_zp).
struct Inputs {
  size_t x, x_zp, w, w_zp;
};
constexpr Inputs kQLinear{0, 2, 3, 5};
constexpr Inputs kInteger{0, 2, 1, 3};

class QConvKernel final : public Kernel {
 public:
  QConvKernel(std::unique_ptr<Kernel> ref, bool qlinear) : ref_(std::move(ref)), qlinear_(qlinear), in_(qlinear ? kQLinear : kInteger) {}

  // false: not a conv this kernel takes.
  Expected<bool> prepare(const KernelInit& init) {
    const ir::Node& n = init.node;
    QTK_ASSIGN_OR_RETURN(auto_pad_, ref::parse_auto_pad(n.attr_string("auto_pad", "NOTSET")));
    strides_ = n.attr_ints("strides");
    dilations_ = n.attr_ints("dilations");
    pads_ = n.attr_ints("pads");
    group_ = n.attr_int("group", 1);
    out_min_ = n.attr_int(quant::kOutputMinAttr, INT32_MIN);
    out_max_ = n.attr_int(quant::kOutputMaxAttr, INT32_MAX);
    residual_add_ = n.attr_int(quant::kResidualAddAttr, 0) != 0;
    const Tensor* w = init.constant_input(in_.w);
    if (!w || (w->rank() != 4 && w->rank() != 3) || !is_8bit(w->dtype()) || group_ < 1) return false;
    if (node_has_input(init, in_.w_zp) && !init.constant_input(in_.w_zp)) return false;
    one_d_ = w->rank() == 3;
    if (one_d_ && !lift_1d_attributes()) return false;
    out_c_ = w->dim(0);
    if (out_c_ % group_ != 0) return false;
    cg_ = w->dim(1);
    kh_ = one_d_ ? 1 : w->dim(2);
    kw_ = w->dim(one_d_ ? 2 : 3);
    const auto zp = zero_point_codes(init.constant_input(in_.w_zp), w->dtype());
    if (!zp || (zp->size() != 1 && static_cast<int64_t>(zp->size()) != out_c_)) return false;
    const int64_t k = cg_ * kh_ * kw_;
    qconv_pack_weights({w->raw(), w->dtype() == DType::kInt8, k, 1}, out_c_, cg_, kh_, kw_, group_, *zp, weights_,
                       std::make_shared<const Tensor>(*w), QconvLayouts::kAutomatic);
    if (qlinear_) {
      const Tensor *xs = init.constant_input(1), *ws = init.constant_input(4), *ys = init.constant_input(6),
                   *yz = init.constant_input(7);
      if (xs && ws && ys && yz) requant_ = make_requant(*xs, *ws, *ys, *yz);
      if (node_has_input(init, 8)) {
        const Tensor* b = init.constant_input(8);
        if (b && b->dtype() == DType::kInt32 && b->numel() == out_c_) bias_.assign(b->data<int32_t>(), b->data<int32_t>() + out_c_);
      }
    }
    // The automatic path reads one layout, packed now: quad_groups on the
    // VNNI tier, the 8-bit tiles on the others. The codes can then go (the
    // session holds the weights once); the reference kernel, for the cases
    // the packed path does not take, gets them unpacked.
    const bool vnni = qgemm_resolve_path(QgemmPath::kAuto) == QgemmPath::kAvx512Vnni;
    from_quads_ = vnni && !weights_.quad_groups.empty();
    const bool packed = from_quads_ || (!vnni && weights_.narrow_packed());
    if (packed && init.release_constant &&
        init.release_constant(in_.w, from_quads_ ? quad_bytes() : qconv_narrow_bytes(weights_))) {
      qconv_release_source(weights_);
      w_dtype_ = w->dtype();
      w_shape_ = w->shape();
      released_ = true;
    }
    return true;
  }

  uint64_t quad_bytes() const {
    uint64_t n = 0;
    for (const auto* groups : {&weights_.quad_groups, &weights_.tap_quad_groups})
      for (const QgemmQuadA& q : *groups)
        n += static_cast<uint64_t>(q.tiles * q.kquads * kQgemmVnniMR) * 4 + (q.rowsum.size() + q.zero_point.size()) * 4;
    return n;
  }

  // The reference kernel, with the weights rebuilt when they were let go.
  Status run_reference(KernelContext& ctx) {
    g_reference_runs.fetch_add(1, std::memory_order_relaxed);
    if (!released_) return ref_->run(ctx);
    Tensor w;
    {
      core::ScopedAllocationHook unplanned(nullptr);  // scratch, not an output the run's plan knows
      w = Tensor::uninitialized(w_dtype_, w_shape_);
    }
    if (from_quads_) qconv_unpack_quad_weights(weights_, w_dtype_ == DType::kInt8, w.raw());
    else qconv_unpack_narrow_weights(weights_, w.raw());
    KernelContext c = ctx;
    c.inputs[in_.w] = &w;
    QTK_RETURN_IF_ERROR(ref_->run(c));
    ctx.outputs = std::move(c.outputs);
    return Status::Ok();
  }

  Status run(KernelContext& ctx) override {
    const size_t required = qlinear_ ? 8 : 2;
    for (size_t i = 0; i < required; ++i)
      if (!ctx.has_input(i)) return run_reference(ctx);
    const Tensor& x = ctx.input(in_.x);
    if (!is_8bit(x.dtype()) || x.rank() != (one_d_ ? 3 : 4) || x.dim(1) != cg_ * group_) return run_reference(ctx);
    const Tensor* xzp = optional_input(ctx, in_.x_zp);
    if (xzp && xzp->numel() > 1) return run_reference(ctx);
    const auto xz = zero_point_codes(xzp, x.dtype());
    if (!xz) return run_reference(ctx);

    ref::ConvGeometry geo;
    geo.in = {one_d_ ? 1 : x.dim(2), x.dim(x.rank() - 1)};
    geo.kernel = {kh_, kw_};
    if (!ref::resolve_window_geometry(auto_pad_, strides_, dilations_, pads_, false, geo).ok()) return run_reference(ctx);
    if (geo.pads_begin[0] < 0 || geo.pads_begin[1] < 0) return run_reference(ctx);
    QconvGeometry g;
    g.batch = x.dim(0);
    g.in_c = x.dim(1);
    g.in_h = geo.in[0];
    g.in_w = geo.in[1];
    g.out_c = out_c_;
    g.out_h = geo.out[0];
    g.out_w = geo.out[1];
    g.kernel_h = kh_;
    g.kernel_w = kw_;
    g.stride_h = geo.strides[0];
    g.stride_w = geo.strides[1];
    g.dilation_h = geo.dilations[0];
    g.dilation_w = geo.dilations[1];
    g.pad_top = geo.pads_begin[0];
    g.pad_left = geo.pads_begin[1];
    g.group = group_;

    QgemmOutput out;
    out.channel_is_row = true;
    out.ldo = g.out_h * g.out_w;
    std::optional<QgemmRequant> local;
    std::vector<int32_t> bias_local;
    DType out_type = DType::kInt32;
    if (qlinear_) {
      const QgemmRequant* r = requant_ ? &*requant_ : nullptr;
      if (!r) {
        local = make_requant(ctx.input(1), ctx.input(4), ctx.input(6), ctx.input(7));
        if (!local) return run_reference(ctx);
        r = &*local;
      }
      out_type = ctx.input(7).dtype();
      out.kind = QgemmOutputKind::kCodes;
      out.requant = r;
      out.codes_signed = out_type == DType::kInt8;
      if (ctx.has_input(8)) {
        const Tensor& b = ctx.input(8);
        if (b.dtype() != DType::kInt32 || b.numel() != out_c_) return run_reference(ctx);
        if (bias_.empty()) bias_local.assign(b.data<int32_t>(), b.data<int32_t>() + out_c_);
        out.bias = bias_.empty() ? bias_local.data() : bias_.data();
        out.bias_rs = 1;
        out.bias_cs = 0;
        out.bias_saturates = true;
      }
    }
    const Shape y_shape = one_d_ ? Shape{g.batch, out_c_, g.out_w} : Shape{g.batch, out_c_, g.out_h, g.out_w};
    QgemmResidualAdd residual;
    if (residual_add_) {
      if (!qlinear_ || !residual_params(ctx, out_type, y_shape, residual)) return run_reference(ctx);
      out.residual = &residual;
    }
    // A join fused into the output stage reads each residual code just
    // before it writes the output code at the same place, so a residual
    // nobody reads later can take the output: one block's activations fewer
    // alive. (Unfused, the alias would cost a copy: no gain.)
    Tensor y = residual_add_ && ctx.input_reusable(9) && qconv_fuses_residual(weights_, out)
                   ? ctx.input(9)
                   : Tensor::uninitialized(out_type, y_shape);  // every element written
    out.out = y.raw();
    qconv(g, x.raw(), x.dtype() == DType::kInt8, (*xz)[0], weights_, out, ctx.pool);
    ctx.outputs[0] = std::move(y);
    return Status::Ok();
  }

 private:
  // A 1-D conv's attributes as the 2-D conv of height 1 it runs as: stride
  // and dilation 1 and no padding along the height. false: malformed (the
  // reference kernel reports it).
  bool lift_1d_attributes() {
    if (strides_.size() > 1 || dilations_.size() > 1 || (!pads_.empty() && pads_.size() != 2)) return false;
    if (!strides_.empty()) strides_ = {1, strides_[0]};
    if (!dilations_.empty()) dilations_ = {1, dilations_[0]};
    if (!pads_.empty()) pads_ = {0, pads_[0], 0, pads_[1]};
    return true;
  }

  // The fused residual join's parameters (quant/graph/residual_add_fusion.h);
  // false leaves the node to the reference kernel (which reports bad input).
  static bool residual_params(const KernelContext& ctx, DType y_type, const Shape& y_shape, QgemmResidualAdd& r) {
    if (!ctx.has_input(9) || !ctx.has_input(10) || !ctx.has_input(12)) return false;
    const Tensor& codes = ctx.input(9);
    if (codes.dtype() != y_type || codes.shape() != y_shape) return false;
    for (size_t i : {11, 13})  // zero points of the output's type, as the unfused QLinearAdd takes them
      if (ctx.has_input(i) && (ctx.input(i).dtype() != y_type || ctx.input(i).numel() != 1)) return false;
    const double ys = ctx.input(6).get_as_double(0), rs = ctx.input(10).get_as_double(0),
                 cs = ctx.input(12).get_as_double(0);
    if (!(ys > 0 && rs > 0 && cs > 0) || !std::isfinite(ys / cs) || !std::isfinite(rs / cs)) return false;
    const auto m = quant::shared_shift_multipliers(ys / cs, rs / cs);
    if (!m) return false;
    const auto zp = [&](size_t i) { return ctx.has_input(i) ? static_cast<int32_t>(ctx.input(i).get_as_int64(0)) : 0; };
    r.codes = codes.raw();
    r.a_zp = zp(7), r.b_zp = zp(11), r.c_zp = zp(13);
    r.qmin = y_type == DType::kInt8 ? -128 : 0;
    r.qmax = y_type == DType::kInt8 ? 127 : 255;
    r.ma = m->ma, r.mb = m->mb, r.n = m->n;
    return true;
  }

  std::optional<QgemmRequant> make_requant(const Tensor& x_scale, const Tensor& w_scale, const Tensor& y_scale,
                                           const Tensor& y_zp) const {
    if (!is_8bit(y_zp.dtype()) || y_zp.numel() < 1 || x_scale.numel() < 1 || y_scale.numel() < 1) return std::nullopt;
    const std::vector<float> ws = w_scale.to_float_vector();
    if (ws.size() != 1 && static_cast<int64_t>(ws.size()) != out_c_) return std::nullopt;
    // As the reference: scales read as float, the ratio in double.
    const float xs = static_cast<float>(x_scale.get_as_double(0)), ys = static_cast<float>(y_scale.get_as_double(0));
    std::vector<quant::FixedPointMultiplier> mult;
    for (float s : ws) mult.push_back(quant::quantize_multiplier(static_cast<double>(xs) * s / ys));
    // The session's fused output clamp narrows the type's range (as the reference does).
    const int32_t lo = static_cast<int32_t>(std::max<int64_t>(qmin_of(y_zp.dtype()), out_min_));
    const int32_t hi = static_cast<int32_t>(std::min<int64_t>(qmax_of(y_zp.dtype()), out_max_));
    // Convs' output stages read a channel per row: the row tables only.
    return qgemm_make_requant(mult, out_c_, static_cast<int32_t>(y_zp.get_as_int64(0)), lo, hi, QgemmRequantFor::kRows);
  }

  std::unique_ptr<Kernel> ref_;
  bool qlinear_;
  Inputs in_;
  ref::AutoPad auto_pad_ = ref::AutoPad::kNotSet;
  std::vector<int64_t> strides_, dilations_, pads_;
  int64_t group_ = 1, out_c_ = 0, cg_ = 0, kh_ = 0, kw_ = 0;
  bool one_d_ = false;  // x [N, C, L], run as [N, C, 1, L]
  bool residual_add_ = false;
  int64_t out_min_ = INT32_MIN, out_max_ = INT32_MAX;
  QconvWeights weights_;
  std::optional<QgemmRequant> requant_;
  std::vector<int32_t> bias_;
  bool released_ = false;  // the executor may have freed W: rebuild it for the reference kernel
  bool from_quads_ = false;  // ... from the VNNI quads, else from the 8-bit tiles
  DType w_dtype_ = DType::kUndefined;
  Shape w_shape_;
};

Expected<std::unique_ptr<Kernel>> try_make_conv(const KernelInit& init, bool qlinear) {
  QTK_ASSIGN_OR_RETURN(auto ref, make_reference_kernel(init));
  auto k = std::make_unique<QConvKernel>(std::move(ref), qlinear);
  QTK_ASSIGN_OR_RETURN(bool taken, k->prepare(init));
  if (!taken) return std::unique_ptr<Kernel>();
  return std::unique_ptr<Kernel>(std::move(k));
}

}  // namespace

uint64_t qconv_reference_runs() { return g_reference_runs.load(std::memory_order_relaxed); }

Expected<std::unique_ptr<Kernel>> try_make_qlinear_conv_kernel(const KernelInit& init) { return try_make_conv(init, true); }
Expected<std::unique_ptr<Kernel>> try_make_conv_integer_kernel(const KernelInit& init) { return try_make_conv(init, false); }

}  // namespace x86
}  // namespace qtk::rt
