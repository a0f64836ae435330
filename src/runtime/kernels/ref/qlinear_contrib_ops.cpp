// ONNX Runtime's quantized contrib ops (domain com.microsoft) that qtk's
// QOperator writer emits: QLinearAdd, QLinearMul, QLinearGlobalAveragePool,
// QGemm. Integer-only on the data path (docs/integer-semantics.md, section
// "com.microsoft contrib ops"): zero points are subtracted exactly, sums and
// products are exact integers, and one fixed-point rescale rounds the result.
// The only float arithmetic is QGemm's float output, which is by definition
// the dequantized accumulator.
#include <algorithm>
#include <cmath>
#include <limits>

#include "quant/schemes/fixed_point.h"
#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/ref/matmul_nbits.h"
#include "runtime/kernels/ref/qlinear_concat_ops.h"
#include "runtime/kernels/ref/quant_params.h"
#include "runtime/thread_pool.h"
#include "runtime/op_registry.h"

namespace qtk::rt {

namespace {

constexpr const char* kMsDomain = "com.microsoft";

int32_t qmin_of(DType t) { return t == DType::kUInt8 ? 0 : -128; }
int32_t qmax_of(DType t) { return t == DType::kUInt8 ? 255 : 127; }

Expected<double> scalar_scale(const KernelContext& ctx, size_t i, const char* what) {
  return ref::per_tensor_scale(ctx, i, what);
}
Expected<int32_t> scalar_zero_point(const KernelContext& ctx, size_t i, DType want, const char* what) {
  return ref::per_tensor_zero_point(ctx, i, want, what);
}

int32_t load_code(const Tensor& t, int64_t i) {
  return t.dtype() == DType::kUInt8 ? t.data<uint8_t>()[i] : t.data<int8_t>()[i];
}

void store_code(Tensor& t, int64_t i, int32_t v) {
  if (t.dtype() == DType::kUInt8) t.data<uint8_t>()[i] = static_cast<uint8_t>(v);
  else t.data<int8_t>()[i] = static_cast<int8_t>(v);
}

// Broadcast element-wise loop over two 8-bit tensors; f(da, db) -> output code,
// where da, db are the inputs minus their zero points.
template <class F>
Expected<Tensor> binary_codes(const Tensor& a, const Tensor& b, DType out_type, F f) {
  QTK_ASSIGN_OR_RETURN(Shape shape, ref::broadcast_shapes(a.shape(), b.shape()));
  Tensor y(out_type, shape);
  const auto sa = ref::broadcast_strides(a.shape(), shape), sb = ref::broadcast_strides(b.shape(), shape);
  const int r = static_cast<int>(shape.size());
  std::vector<int64_t> idx(r, 0);
  int64_t ia = 0, ib = 0;
  for (int64_t i = 0; i < y.numel(); ++i) {
    store_code(y, i, f(load_code(a, ia), load_code(b, ib)));
    for (int d = r - 1; d >= 0; --d) {  // odometer step, keeping both input offsets
      ++idx[d];
      ia += sa[d];
      ib += sb[d];
      if (idx[d] < shape[d]) break;
      ia -= sa[d] * shape[d];
      ib -= sb[d] * shape[d];
      idx[d] = 0;
    }
  }
  return y;
}

struct BinaryParams {
  double a_scale, b_scale, c_scale;
  int32_t a_zp, b_zp, c_zp;
  DType type;
};

// Inputs: A, A_scale, A_zero_point?, B, B_scale, B_zero_point?, C_scale, C_zero_point?.
Expected<BinaryParams> read_binary(const KernelContext& ctx) {
  if (!ctx.has_input(0) || !ctx.has_input(3)) return invalid_argument("inputs A and B are required");
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(3);
  if (!is_8bit(a.dtype())) return invalid_argument(std::string("A must be uint8 or int8, got ") + dtype_name(a.dtype()));
  if (b.dtype() != a.dtype())
    return invalid_argument(std::string("A and B must have one dtype, got ") + dtype_name(a.dtype()) + " and " +
                            dtype_name(b.dtype()));
  BinaryParams p;
  p.type = a.dtype();
  QTK_ASSIGN_OR_RETURN(p.a_scale, scalar_scale(ctx, 1, "A_scale"));
  QTK_ASSIGN_OR_RETURN(p.a_zp, scalar_zero_point(ctx, 2, p.type, "A_zero_point"));
  QTK_ASSIGN_OR_RETURN(p.b_scale, scalar_scale(ctx, 4, "B_scale"));
  QTK_ASSIGN_OR_RETURN(p.b_zp, scalar_zero_point(ctx, 5, p.type, "B_zero_point"));
  QTK_ASSIGN_OR_RETURN(p.c_scale, scalar_scale(ctx, 6, "C_scale"));
  QTK_ASSIGN_OR_RETURN(p.c_zp, scalar_zero_point(ctx, 7, p.type, "C_zero_point"));
  return p;
}

// C = round((sa·(a - za) + sb·(b - zb)) / sc) + zc, with both ratios on one
// fixed-point grid: ((a - za)·ma + (b - zb)·mb + 2^(n-1)) >> n.
Status qlinear_add(KernelContext& ctx) {
  QTK_ASSIGN_OR_RETURN(BinaryParams p, read_binary(ctx));
  const auto m = quant::shared_shift_multipliers(p.a_scale / p.c_scale, p.b_scale / p.c_scale);
  if (!m) return unsupported("input/output scale ratio of 2^30 or more");
  const int32_t lo = qmin_of(p.type), hi = qmax_of(p.type);
  QTK_ASSIGN_OR_RETURN(ctx.outputs[0], binary_codes(ctx.input(0), ctx.input(3), p.type, [&](int32_t a, int32_t b) {
    return quant::add_to_code(a - p.a_zp, b - p.b_zp, *m, p.c_zp, lo, hi);
  }));
  return Status::Ok();
}

// C = round(sa·sb/sc · (a - za)(b - zb)) + zc: an exact int32 product and the
// fixed-point requantization of QLinearConv.
Status qlinear_mul(KernelContext& ctx) {
  QTK_ASSIGN_OR_RETURN(BinaryParams p, read_binary(ctx));
  const auto mult = quant::quantize_multiplier(p.a_scale * p.b_scale / p.c_scale);
  const int32_t lo = qmin_of(p.type), hi = qmax_of(p.type);
  QTK_ASSIGN_OR_RETURN(ctx.outputs[0], binary_codes(ctx.input(0), ctx.input(3), p.type, [&](int32_t a, int32_t b) {
    return quant::requantize_to_code((a - p.a_zp) * (b - p.b_zp), mult, p.c_zp, lo, hi);
  }));
  return Status::Ok();
}

// Inputs: X, x_scale, x_zero_point?, y_scale, y_zero_point?; attribute
// channels_last. y = round(x_scale / (S · y_scale) · Σ(x - x_zp)) + y_zp
// over the S spatial positions of each (n, c).
Status qlinear_global_average_pool(KernelContext& ctx, bool channels_last) {
  QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, 1));
  const Tensor& x = ctx.input(0);
  if (!is_8bit(x.dtype())) return invalid_argument(std::string("X must be uint8 or int8, got ") + dtype_name(x.dtype()));
  if (x.rank() < 3) return invalid_argument("X has shape " + shape_to_string(x.shape()) + ", expected rank >= 3");
  QTK_ASSIGN_OR_RETURN(double xs, scalar_scale(ctx, 1, "x_scale"));
  QTK_ASSIGN_OR_RETURN(int32_t xz, scalar_zero_point(ctx, 2, x.dtype(), "x_zero_point"));
  QTK_ASSIGN_OR_RETURN(double ys, scalar_scale(ctx, 3, "y_scale"));
  QTK_ASSIGN_OR_RETURN(int32_t yz, scalar_zero_point(ctx, 4, x.dtype(), "y_zero_point"));
  const int64_t n = x.dim(0), c = channels_last ? x.dim(-1) : x.dim(1);
  const int64_t spatial = n * c == 0 ? 0 : x.numel() / (n * c);
  // Σ(x - x_zp) stays within int32 while S · 255 < 2^31.
  if (spatial > (int64_t{1} << 23)) return unsupported("more than 2^23 spatial positions");
  Shape ys_shape(x.rank(), 1);
  ys_shape[0] = n;
  ys_shape[channels_last ? x.rank() - 1 : 1] = c;
  Tensor y(x.dtype(), ys_shape);
  if (spatial == 0) {
    for (int64_t i = 0; i < y.numel(); ++i) store_code(y, i, yz);
    ctx.outputs[0] = y;
    return Status::Ok();
  }
  const auto mult = quant::quantize_multiplier(xs / (static_cast<double>(spatial) * ys));
  const int32_t lo = qmin_of(x.dtype()), hi = qmax_of(x.dtype());
  for (int64_t b = 0; b < n; ++b)
    for (int64_t ch = 0; ch < c; ++ch) {
      int32_t acc = 0;
      for (int64_t s = 0; s < spatial; ++s) {
        const int64_t i = channels_last ? (b * spatial + s) * c + ch : (b * c + ch) * spatial + s;
        acc += load_code(x, i) - xz;
      }
      store_code(y, b * c + ch, quant::requantize_to_code(acc, mult, yz, lo, hi));
    }
  ctx.outputs[0] = y;
  return Status::Ok();
}

struct QGemmAttrs {
  bool trans_a = false, trans_b = false;
  float alpha = 1.f;
};

// Inputs: A, a_scale, a_zero_point?, B, b_scale, b_zero_point?, C?, y_scale?,
// y_zero_point?. acc = Σ_k (A - a_zp)(B - b_zp[n]) + C (int32, C broadcast to
// [M, N]); without y_scale Y = float(acc) · (alpha · a_scale · b_scale[n]),
// with it Y is requantized by M[n] = alpha · a_scale · b_scale[n] / y_scale.
Status qgemm(KernelContext& ctx, const QGemmAttrs& at) {
  if (!ctx.has_input(0) || !ctx.has_input(3)) return invalid_argument("inputs A and B are required");
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(3);
  if (!is_8bit(a.dtype()) || !is_8bit(b.dtype()))
    return invalid_argument(std::string("A and B must be uint8 or int8, got ") + dtype_name(a.dtype()) + " and " +
                            dtype_name(b.dtype()));
  if (a.rank() != 2 || b.rank() != 2)
    return invalid_argument("A " + shape_to_string(a.shape()) + " and B " + shape_to_string(b.shape()) + " must be 2-D");
  const int64_t M = at.trans_a ? a.dim(1) : a.dim(0), K = at.trans_a ? a.dim(0) : a.dim(1);
  const int64_t Kb = at.trans_b ? b.dim(1) : b.dim(0), N = at.trans_b ? b.dim(0) : b.dim(1);
  if (K != Kb) return invalid_argument("inner dimensions differ: A " + shape_to_string(a.shape()) + ", B " +
                                       shape_to_string(b.shape()));
  QTK_ASSIGN_OR_RETURN(double as, scalar_scale(ctx, 1, "a_scale"));
  QTK_ASSIGN_OR_RETURN(int32_t az, scalar_zero_point(ctx, 2, a.dtype(), "a_zero_point"));
  if (!ctx.has_input(4) || ctx.input(4).dtype() != DType::kFloat32) return invalid_argument("b_scale must be float32");
  const std::vector<float> bs = ctx.input(4).to_float_vector();
  if (bs.size() != 1 && static_cast<int64_t>(bs.size()) != N)
    return invalid_argument("b_scale must have 1 or " + std::to_string(N) + " values");
  std::vector<int64_t> bz(bs.size(), 0);
  if (ctx.has_input(5)) {
    if (ctx.input(5).dtype() != b.dtype()) return invalid_argument("b_zero_point must have B's dtype");
    if (ctx.input(5).numel() != static_cast<int64_t>(bs.size()))
      return invalid_argument("b_zero_point must have as many values as b_scale");
    bz = ctx.input(5).to_int64_vector();
  }
  for (float s : bs)
    if (!(s > 0.f) || !std::isfinite(s)) return invalid_argument("b_scale must be positive and finite");
  // C broadcast to [M, N]: (), (1), (N), (1, N), (M, 1) or (M, N).
  const Tensor* c = ctx.has_input(6) ? ctx.inputs[6] : nullptr;
  int64_t c_row = 0, c_col = 0;  // element strides of C along M and N
  if (c) {
    QTK_RETURN_IF_ERROR(ref::expect_dtype(*c, DType::kInt32, "C"));
    if (c->rank() > 2) return invalid_argument("C must have rank <= 2");
    const int64_t cm = c->rank() == 2 ? c->dim(0) : 1, cn = c->rank() >= 1 ? c->dim(-1) : 1;
    if ((cm != 1 && cm != M) || (cn != 1 && cn != N))
      return invalid_argument("C " + shape_to_string(c->shape()) + " does not broadcast to [" + std::to_string(M) + "," +
                              std::to_string(N) + "]");
    c_row = cm == 1 ? 0 : cn;
    c_col = cn == 1 ? 0 : 1;
  }
  const bool quantized_out = ctx.has_input(7);
  DType out_type = DType::kFloat32;
  double ys = 1.0;
  int32_t yz = 0;
  if (quantized_out) {
    out_type = ctx.has_input(8) ? ctx.input(8).dtype() : a.dtype();
    if (!is_8bit(out_type)) return invalid_argument("y_zero_point must be uint8 or int8");
    QTK_ASSIGN_OR_RETURN(ys, scalar_scale(ctx, 7, "y_scale"));
    QTK_ASSIGN_OR_RETURN(yz, scalar_zero_point(ctx, 8, out_type, "y_zero_point"));
  }
  if (!(at.alpha > 0.f)) return unsupported("QGemm with alpha <= 0");

  Tensor y(out_type, {M, N});
  std::vector<quant::FixedPointMultiplier> mult;
  std::vector<float> out_scale;
  for (float s : bs) {
    if (quantized_out) mult.push_back(quant::quantize_multiplier(static_cast<double>(at.alpha) * as * s / ys));
    else out_scale.push_back(at.alpha * static_cast<float>(as) * s);
  }
  const int32_t lo = qmin_of(out_type), hi = qmax_of(out_type);
  const int64_t a_sm = at.trans_a ? 1 : K, a_sk = at.trans_a ? M : 1;
  const int64_t b_sk = at.trans_b ? 1 : N, b_sn = at.trans_b ? K : 1;
  ctx.pool->parallel_for(M, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      for (int64_t j = 0; j < N; ++j) {
        const size_t ch = bs.size() == 1 ? 0 : static_cast<size_t>(j);
        const int32_t bzj = static_cast<int32_t>(bz[ch]);
        int32_t acc = c ? c->data<int32_t>()[i * c_row + j * c_col] : 0;
        for (int64_t k = 0; k < K; ++k)
          acc += (load_code(a, i * a_sm + k * a_sk) - az) * (load_code(b, k * b_sk + j * b_sn) - bzj);
        if (quantized_out) store_code(y, i * N + j, quant::requantize_to_code(acc, mult[ch], yz, lo, hi));
        else y.data<float>()[i * N + j] = static_cast<float>(acc) * out_scale[ch];
      }
  });
  ctx.outputs[0] = y;
  return Status::Ok();
}

}  // namespace

void register_qlinear_contrib_ops(OpRegistry& r) {
  register_matmul_nbits_op(r);
  register_qlinear_concat_op(r);
  r.add("QLinearAdd", [](const KernelInit&) { return make_fn_kernel(qlinear_add); }, kMsDomain);
  r.add("QLinearMul", [](const KernelInit&) { return make_fn_kernel(qlinear_mul); }, kMsDomain);
  r.add("QLinearGlobalAveragePool",
        [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
          const bool channels_last = init.node.attr_int("channels_last", 0) != 0;
          return make_fn_kernel(
              [channels_last](KernelContext& ctx) { return qlinear_global_average_pool(ctx, channels_last); });
        },
        kMsDomain);
  r.add("QGemm",
        [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
          QGemmAttrs a;
          a.trans_a = init.node.attr_int("transA", 0) != 0;
          a.trans_b = init.node.attr_int("transB", 0) != 0;
          a.alpha = init.node.attr_float("alpha", 1.f);
          return make_fn_kernel([a](KernelContext& ctx) { return qgemm(ctx, a); });
        },
        kMsDomain);
}

}  // namespace qtk::rt
