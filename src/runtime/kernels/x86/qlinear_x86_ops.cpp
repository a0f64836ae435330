// Optimized QLinearMatMul, MatMulInteger and com.microsoft QGemm on the int8
// GEMM (qgemm.h): a constant 2-D weight B is packed once when the session is
// built, and so are the requantization multipliers when the scales are
// constant. A QLinearMatMul whose B is an activation (attention's Q·Kᵀ and
// P·V) packs B per matrix at run time instead. Everything else (broadcast
// batch dimensions, per-row A zero points, out-of-range zero points, bad
// parameters) runs the reference kernel, which also reports every error.
// Results equal the reference bit for bit.
#include <optional>

#include "quant/schemes/fixed_point.h"
#include "runtime/kernels/x86/qgemm.h"
#include "runtime/kernels/x86/qdepthwise_conv.h"
#include "runtime/kernels/x86/qlinear_x86_common.h"
#include "runtime/kernels/x86/qlinear_x86_ops.h"
#include "runtime/kernels/x86/qlinear_x86_released_b.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk::rt {
namespace x86 {
namespace {

// A constant 2-D B packed for the GEMM; null when B is not one we take.
struct PackedWeight {
  Tensor source;  // the initializer (shared storage): packed reads its codes, until released
  QgemmPackedB packed;
  ReleasedB released;
  size_t input = 0;  // B's input index
  bool is_signed = false;
  int64_t k = 0, n = 0;
  std::vector<int32_t> zero_points;

  // The reference kernel, with B rebuilt when the session let it go.
  Status run_reference(Kernel& ref, KernelContext& ctx) const {
    if (!released.released()) return ref.run(ctx);
    return run_with_input(ref, ctx, input, released.unpack(packed));
  }
};

// B = input `input`, its zero point input `zp_input`.
std::unique_ptr<PackedWeight> pack_weight(const KernelInit& init, size_t input, size_t zp_input) {
  const Tensor* b = init.constant_input(input);
  const Tensor* zp = init.constant_input(zp_input);
  const bool zp_present = node_has_input(init, zp_input), trans_b = false;
  if (b == nullptr || b->rank() != 2 || !is_8bit(b->dtype())) return nullptr;
  if (zp_present && zp == nullptr) return nullptr;  // a zero point fed at run time
  auto w = std::make_unique<PackedWeight>();
  w->source = *b;
  w->is_signed = b->dtype() == DType::kInt8;
  w->k = trans_b ? b->dim(1) : b->dim(0);
  w->n = trans_b ? b->dim(0) : b->dim(1);
  auto z = zero_point_codes(zp, b->dtype());
  if (!z || (z->size() != 1 && static_cast<int64_t>(z->size()) != w->n)) return nullptr;
  w->zero_points = *z;
  const QgemmCodes codes{w->source.raw(), w->is_signed, trans_b ? 1 : w->n, trans_b ? w->k : 1};
  qgemm_pack_b(codes, w->k, w->n, w->zero_points, w->packed);
  w->input = input;
  w->released.release(init, input, *b, trans_b, w->packed, w->source);
  return w;
}

// Y = A · B for every row of A (leading dims kept) with input 0 as A and
// input 2 as A's zero point, into codes (requant set) or int32 (null). False
// when A is not one the GEMM takes; the caller then runs the reference.
bool run_packed_gemm(KernelContext& ctx, const PackedWeight& w, DType y_type, const QgemmRequant* requant) {
  const Tensor& a = ctx.input(0);
  if (!is_8bit(a.dtype()) || a.rank() < 1 || a.dim(-1) != w.k) return false;
  const Tensor* azp = optional_input(ctx, 2);
  if (azp && azp->numel() > 1) return false;  // per-row zero points
  const auto az = zero_point_codes(azp, a.dtype());
  if (!az) return false;
  Shape ys(a.shape().begin(), a.shape().end() - 1);
  ys.push_back(w.n);
  Tensor y = Tensor::uninitialized(y_type, ys);  // every element written
  QgemmOutput out;
  out.kind = requant ? QgemmOutputKind::kCodes : QgemmOutputKind::kInt32;
  out.requant = requant;
  out.codes_signed = y_type == DType::kInt8;
  out.out = y.raw();
  out.ldo = w.n;
  const int64_t rows = w.k == 0 ? shape_numel(ys) / std::max<int64_t>(w.n, 1) : a.numel() / w.k;
  qgemm(rows, {a.raw(), a.dtype() == DType::kInt8, w.k, 1}, (*az)[0], w.packed, out, ctx.pool);
  ctx.outputs[0] = std::move(y);
  return true;
}

// ---------------------------------------------------------------------------
// QLinearMatMul: a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp.

// QLinearMatMul's multipliers from the scales (as the reference computes
// them), for n output columns; b_scale per tensor or per column.
std::optional<QgemmRequant> matmul_requant(const Tensor& a_scale, const Tensor& b_scale, const Tensor& y_scale,
                                           const Tensor& y_zp, int64_t n) {
  if (!is_8bit(y_zp.dtype()) || y_zp.numel() < 1 || a_scale.numel() < 1 || y_scale.numel() < 1) return std::nullopt;
  const std::vector<float> bs = b_scale.to_float_vector();
  if (bs.size() != 1 && static_cast<int64_t>(bs.size()) != n) return std::nullopt;
  const float as = static_cast<float>(a_scale.get_as_double(0)), ys = static_cast<float>(y_scale.get_as_double(0));
  std::vector<quant::FixedPointMultiplier> mult;
  for (float s : bs) mult.push_back(quant::quantize_multiplier(static_cast<double>(as) * s / ys));
  return qgemm_make_requant(mult, n, static_cast<int32_t>(y_zp.get_as_int64(0)), qmin_of(y_zp.dtype()),
                            qmax_of(y_zp.dtype()), QgemmRequantFor::kColumns);
}

class QLinearMatMulKernel final : public Kernel {
 public:
  QLinearMatMulKernel(std::unique_ptr<Kernel> ref, std::unique_ptr<PackedWeight> w) : ref_(std::move(ref)), w_(std::move(w)) {}

  std::optional<QgemmRequant> requant(const Tensor& a_scale, const Tensor& b_scale, const Tensor& y_scale,
                                      const Tensor& y_zp) const {
    return matmul_requant(a_scale, b_scale, y_scale, y_zp, w_->n);
  }

  void prepare(const KernelInit& init) {
    const Tensor *as = init.constant_input(1), *bs = init.constant_input(4), *ys = init.constant_input(6),
                 *yz = init.constant_input(7);
    if (as && bs && ys && yz) cached_ = requant(*as, *bs, *ys, *yz);
  }

  Status run(KernelContext& ctx) override {
    for (size_t i : {0, 1, 3, 4, 6, 7})
      if (!ctx.has_input(i)) return w_->run_reference(*ref_, ctx);
    std::optional<QgemmRequant> local;
    const QgemmRequant* r = cached_ ? &*cached_ : nullptr;
    if (!r) {
      local = requant(ctx.input(1), ctx.input(4), ctx.input(6), ctx.input(7));
      if (!local) return w_->run_reference(*ref_, ctx);
      r = &*local;
    }
    if (!run_packed_gemm(ctx, *w_, ctx.input(7).dtype(), r)) return w_->run_reference(*ref_, ctx);
    return Status::Ok();
  }

 private:
  std::unique_ptr<Kernel> ref_;
  std::unique_ptr<PackedWeight> w_;
  std::optional<QgemmRequant> cached_;
};

}  // namespace

int64_t batched_matmul_grain(int64_t m, int64_t n, int64_t k) {
  // An eighth of qgemm's split threshold: whole matrices per thread share
  // no packed panel, so splitting them pays off before one GEMM's would.
  constexpr int64_t kMinMacsPerThread = detail::kQgemmMinParallelMacs / 8;
  const int64_t macs = std::max<int64_t>(m * n * std::max<int64_t>(k, 1), 1);
  return (kMinMacsPerThread + macs - 1) / macs;
}

namespace {

// QLinearMatMul with an activation B: A [..., M, K] · B [..., K, N], the
// same batch dimensions on both (no broadcasting), per-tensor parameters.
// Each matrix of B is packed where it is used; batches go to the threads
// (or, when there are fewer matrices than threads, each GEMM is split).
class QLinearBatchedMatMulKernel final : public Kernel {
 public:
  explicit QLinearBatchedMatMulKernel(std::unique_ptr<Kernel> ref) : ref_(std::move(ref)) {}

  Status run(KernelContext& ctx) override {
    for (size_t i = 0; i < 8; ++i)
      if (!ctx.has_input(i)) return ref_->run(ctx);
    const Tensor &a = ctx.input(0), &b = ctx.input(3);
    const int rank = a.rank();
    if (!is_8bit(a.dtype()) || !is_8bit(b.dtype()) || rank < 2 || b.rank() != rank || a.dim(-1) != b.dim(-2))
      return ref_->run(ctx);
    for (int d = 0; d + 2 < rank; ++d)
      if (a.dim(d) != b.dim(d)) return ref_->run(ctx);
    const Tensor *azp = optional_input(ctx, 2), *bzp = optional_input(ctx, 5);
    if ((azp && azp->numel() > 1) || (bzp && bzp->numel() > 1)) return ref_->run(ctx);
    for (size_t i : {1, 4, 6, 7})  // per tensor only
      if (ctx.input(i).numel() != 1) return ref_->run(ctx);
    const auto az = zero_point_codes(azp, a.dtype()), bz = zero_point_codes(bzp, b.dtype());
    if (!az || !bz || !scales_valid(ctx.input(1).to_float_vector()) || !scales_valid(ctx.input(4).to_float_vector()) ||
        !scales_valid(ctx.input(6).to_float_vector()))
      return ref_->run(ctx);
    const int64_t m = a.dim(-2), k = a.dim(-1), n = b.dim(-1);
    const auto r = matmul_requant(ctx.input(1), ctx.input(4), ctx.input(6), ctx.input(7), n);
    if (!r) return ref_->run(ctx);
    const DType y_type = ctx.input(7).dtype();
    Shape ys(a.shape().begin(), a.shape().end() - 1);
    ys.push_back(n);
    Tensor y = Tensor::uninitialized(y_type, ys);  // every element written
    const int64_t batches = shape_numel(ys) / std::max<int64_t>(m * n, 1);
    if (m * n == 0) {
      ctx.outputs[0] = std::move(y);
      return Status::Ok();
    }
    const auto* ap = static_cast<const uint8_t*>(a.raw());
    const auto* bp = static_cast<const uint8_t*>(b.raw());
    auto* yp = static_cast<uint8_t*>(y.raw());
    auto one = [&](int64_t i, ThreadPool* pool) {
      // One per thread, repacked per matrix: its buffers are reused.
      thread_local QgemmPackedB packed;
      qgemm_pack_b({bp + i * k * n, b.dtype() == DType::kInt8, n, 1}, k, n, *bz, packed, nullptr, /*per_call=*/true);
      QgemmOutput out;
      out.kind = QgemmOutputKind::kCodes;
      out.requant = &*r;
      out.codes_signed = y_type == DType::kInt8;
      out.out = yp + i * m * n;
      out.ldo = n;
      qgemm(m, {ap + i * m * k, a.dtype() == DType::kInt8, k, 1}, (*az)[0], packed, out, pool);
    };
    if (batches < ctx.pool->size()) {
      for (int64_t i = 0; i < batches; ++i) one(i, ctx.pool);
    } else {
      // Enough matrices per thread to pay for the hand-off: a short
      // sequence's attention heads are a few thousand multiply-adds each,
      // and splitting them cost more than they take.
      ctx.pool->parallel_for(
          batches,
          [&](int64_t i0, int64_t i1) {
            for (int64_t i = i0; i < i1; ++i) one(i, nullptr);
          },
          batched_matmul_grain(m, n, k));
    }
    ctx.outputs[0] = std::move(y);
    return Status::Ok();
  }

 private:
  std::unique_ptr<Kernel> ref_;
};

}  // namespace

Expected<std::unique_ptr<Kernel>> try_make_qlinear_matmul_kernel(const KernelInit& init) {
  auto w = pack_weight(init, 3, 5);
  if (!w) {
    if (init.constant_input(3)) return std::unique_ptr<Kernel>();  // a constant B the GEMM does not take
    QTK_ASSIGN_OR_RETURN(auto ref, make_reference_kernel(init));
    return std::unique_ptr<Kernel>(std::make_unique<QLinearBatchedMatMulKernel>(std::move(ref)));
  }
  QTK_ASSIGN_OR_RETURN(auto ref, make_reference_kernel(init));
  auto k = std::make_unique<QLinearMatMulKernel>(std::move(ref), std::move(w));
  k->prepare(init);
  return std::unique_ptr<Kernel>(std::move(k));
}

namespace {

// ---------------------------------------------------------------------------
// MatMulInteger: A, B, a_zero_point?, b_zero_point? -> int32.

class MatMulIntegerKernel final : public Kernel {
 public:
  MatMulIntegerKernel(std::unique_ptr<Kernel> ref, std::unique_ptr<PackedWeight> w) : ref_(std::move(ref)), w_(std::move(w)) {}

  Status run(KernelContext& ctx) override {
    if (!ctx.has_input(0) || !ctx.has_input(1)) return w_->run_reference(*ref_, ctx);
    if (!run_packed_gemm(ctx, *w_, DType::kInt32, nullptr)) return w_->run_reference(*ref_, ctx);
    return Status::Ok();
  }

 private:
  std::unique_ptr<Kernel> ref_;
  std::unique_ptr<PackedWeight> w_;
};

}  // namespace

Expected<std::unique_ptr<Kernel>> try_make_matmul_integer_kernel(const KernelInit& init) {
  auto w = pack_weight(init, 1, 3);
  if (!w) return std::unique_ptr<Kernel>();
  QTK_ASSIGN_OR_RETURN(auto ref, make_reference_kernel(init));
  return std::unique_ptr<Kernel>(std::make_unique<MatMulIntegerKernel>(std::move(ref), std::move(w)));
}

namespace {
using TryMake = Expected<std::unique_ptr<Kernel>> (*)(const KernelInit&);

// The first optimized kernel that takes the node, else the reference kernel.
KernelFactory first_of(std::vector<TryMake> candidates) {
  return [candidates](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    for (TryMake f : candidates) {
      QTK_ASSIGN_OR_RETURN(auto k, f(init));
      if (k) return k;
    }
    return make_reference_kernel(init);
  };
}
}  // namespace

}  // namespace x86

void register_x86_qlinear_ops(OpRegistry& r) {
  r.add("QLinearMatMul", x86::first_of({x86::try_make_qlinear_matmul_kernel}));
  r.add("MatMulInteger", x86::first_of({x86::try_make_matmul_integer_kernel}));
  r.add("QGemm", x86::first_of({x86::try_make_qgemm_kernel}), "com.microsoft");
  r.add("QLinearConv", x86::first_of({try_make_qdepthwise_conv_kernel, x86::try_make_qlinear_conv_kernel}));
  r.add("ConvInteger", x86::first_of({x86::try_make_conv_integer_kernel}));
}

}  // namespace qtk::rt
