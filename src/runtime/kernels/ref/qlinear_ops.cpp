// Integer convolution and matrix product: ConvInteger, MatMulInteger,
// QLinearConv, QLinearMatMul. Reference semantics (docs/integer-semantics.md):
// zero points are subtracted exactly, products accumulate in int32, and the
// QLinear ops requantize with a fixed-point multiplier (no float arithmetic on
// the data path).
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "quant/graph/qoperator_writer.h"
#include "quant/graph/residual_add_fusion.h"
#include "quant/schemes/fixed_point.h"
#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/ref/im2col.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk::rt {

namespace {

using quant::FixedPointMultiplier;

// Values of an 8-bit tensor minus a zero point, as int32.
Expected<std::vector<int32_t>> centered(const Tensor& t, const std::vector<int64_t>& zp, int64_t zp_inner,
                                        int64_t zp_axis_len, const char* what) {
  if (t.dtype() != DType::kUInt8 && t.dtype() != DType::kInt8)
    return invalid_argument(std::string(what) + " must be uint8 or int8, got " + dtype_name(t.dtype()));
  std::vector<int32_t> v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    const int64_t z = zp.size() == 1 ? zp[0] : zp[(i / zp_inner) % zp_axis_len];
    v[i] = static_cast<int32_t>(t.get_as_int64(i) - z);
  }
  return v;
}

std::vector<int64_t> zero_points(const KernelContext& ctx, size_t index) {
  if (!ctx.has_input(index)) return {0};
  auto v = ctx.input(index).to_int64_vector();
  return v.empty() ? std::vector<int64_t>{0} : v;
}

struct ConvAttrs {
  ref::AutoPad auto_pad = ref::AutoPad::kNotSet;
  std::vector<int64_t> strides, dilations, pads;
  int64_t group = 1;
  // The session's fused output clamp (quant::kOutputMinAttr/kOutputMaxAttr),
  // narrowing the output type's range.
  int32_t out_min = INT32_MIN, out_max = INT32_MAX;
  // The session's fused residual join (quant/graph/residual_add_fusion.h).
  bool residual_add = false;
};

Expected<ConvAttrs> read_conv_attrs(const ir::Node& n) {
  ConvAttrs a;
  QTK_ASSIGN_OR_RETURN(a.auto_pad, ref::parse_auto_pad(n.attr_string("auto_pad", "NOTSET")));
  a.strides = n.attr_ints("strides");
  a.dilations = n.attr_ints("dilations");
  a.pads = n.attr_ints("pads");
  a.group = n.attr_int("group", 1);
  if (a.group < 1) return invalid_argument("group must be >= 1");
  a.out_min = static_cast<int32_t>(std::clamp<int64_t>(n.attr_int(quant::kOutputMinAttr, INT32_MIN), INT32_MIN, INT32_MAX));
  a.out_max = static_cast<int32_t>(std::clamp<int64_t>(n.attr_int(quant::kOutputMaxAttr, INT32_MAX), INT32_MIN, INT32_MAX));
  a.residual_add = n.attr_int(quant::kResidualAddAttr, 0) != 0;
  return a;
}

// acc[n, m, o] = sum_{c in group, k} x[n, c, pos(o, k)] * w[m, c, k], int32.
Expected<Tensor> conv_int32(const Shape& xs, const std::vector<int32_t>& x, const Shape& ws,
                            const std::vector<int32_t>& w, const ConvAttrs& a, ThreadPool& pool) {
  if (xs.size() < 3 || ws.size() != xs.size())
    return invalid_argument("x " + shape_to_string(xs) + " and w " + shape_to_string(ws) + " ranks do not fit a conv");
  const int64_t n = xs[0], c = xs[1], m = ws[0], cg = ws[1];
  if (cg * a.group != c || m % a.group != 0)
    return invalid_argument("w " + shape_to_string(ws) + " does not match x channels " + std::to_string(c) +
                            " with group " + std::to_string(a.group));
  ref::ConvGeometry g;
  g.in.assign(xs.begin() + 2, xs.end());
  g.kernel.assign(ws.begin() + 2, ws.end());
  QTK_RETURN_IF_ERROR(ref::resolve_window_geometry(a.auto_pad, a.strides, a.dilations, a.pads, false, g));
  const int64_t osz = g.out_size(), ksz = g.kernel_size(), isz = g.in_size();
  // offset[k * osz + o]: flat input position read by output o, tap k; -1 in
  // padding. Tap-major so the inner loop walks outputs contiguously.
  std::vector<int64_t> offset(static_cast<size_t>(osz * ksz));
  const int r = g.rank();
  std::vector<int64_t> oc(r), kc(r);
  for (int64_t o = 0; o < osz; ++o) {
    int64_t rem = o;
    for (int d = r - 1; d >= 0; --d) { oc[d] = rem % g.out[d]; rem /= g.out[d]; }
    for (int64_t k = 0; k < ksz; ++k) {
      int64_t kr = k, pos = 0;
      bool inside = true;
      for (int d = r - 1; d >= 0; --d) { kc[d] = kr % g.kernel[d]; kr /= g.kernel[d]; }
      for (int d = 0; d < r; ++d) {
        const int64_t p = oc[d] * g.strides[d] - g.pads_begin[d] + kc[d] * g.dilations[d];
        if (p < 0 || p >= g.in[d]) { inside = false; break; }
        pos = pos * g.in[d] + p;
      }
      offset[k * osz + o] = inside ? pos : -1;
    }
  }
  Shape ys = {n, m};
  ys.insert(ys.end(), g.out.begin(), g.out.end());
  Tensor y(DType::kInt32, ys);
  int32_t* out = y.data<int32_t>();
  const int64_t m_per_group = m / a.group;
  // One task per (image, output channel); each owns its output plane.
  pool.parallel_for(n * m, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / m, oc_i = task % m;
      const int64_t grp = oc_i / m_per_group;
      int32_t* acc = out + (b * m + oc_i) * osz;
      for (int64_t ci = 0; ci < cg; ++ci) {
        const int32_t* xp = &x[((b * c) + grp * cg + ci) * isz];
        const int32_t* wp = &w[(oc_i * cg + ci) * ksz];
        for (int64_t k = 0; k < ksz; ++k) {
          const int32_t wv = wp[k];
          if (wv == 0) continue;
          const int64_t* off = &offset[k * osz];
          for (int64_t o = 0; o < osz; ++o)
            if (off[o] >= 0) acc[o] += xp[off[o]] * wv;
        }
      }
    }
  });
  return y;
}

// Batched int32 matmul with numpy broadcasting of batch dims.
Expected<Tensor> matmul_int32(const Shape& as, const std::vector<int32_t>& a, const Shape& bs,
                              const std::vector<int32_t>& b) {
  if (as.empty() || bs.empty()) return invalid_argument("MatMul operands must have rank >= 1");
  Shape a2 = as, b2 = bs;
  if (a2.size() == 1) a2.insert(a2.begin(), 1);
  if (b2.size() == 1) b2.push_back(1);
  const int64_t M = a2[a2.size() - 2], K = a2.back(), K2 = b2[b2.size() - 2], N = b2.back();
  if (K != K2) return invalid_argument("inner dimensions differ: " + shape_to_string(as) + " x " + shape_to_string(bs));
  Shape abatch(a2.begin(), a2.end() - 2), bbatch(b2.begin(), b2.end() - 2);
  QTK_ASSIGN_OR_RETURN(Shape batch, ref::broadcast_shapes(abatch, bbatch));
  const ref::BatchOffsets which = ref::broadcast_batch_offsets(abatch, bbatch, batch);
  Shape ys = batch;
  if (as.size() > 1) ys.push_back(M);
  if (bs.size() > 1) ys.push_back(N);
  Tensor y(DType::kInt32, ys);
  int32_t* out = y.data<int32_t>();
  const int64_t nb = shape_numel(batch);
  for (int64_t i = 0; i < nb; ++i) {
    const int32_t* ap = a.data() + which.a[i] * M * K;  // data(): an empty operand has no element to index
    const int32_t* bp = b.data() + which.b[i] * K * N;
    for (int64_t r = 0; r < M; ++r)
      for (int64_t col = 0; col < N; ++col) {
        int32_t acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += ap[r * K + k] * bp[k * N + col];
        out[(i * M + r) * N + col] = acc;
      }
  }
  return y;
}

// Requantizes int32 accumulators (+ bias) into the output's 8-bit type.
// channel(i) picks the multiplier for element i.
template <class ChannelOf>
Expected<Tensor> requantize(const Tensor& acc, const std::vector<int32_t>& bias, ChannelOf channel_of,
                            const std::vector<FixedPointMultiplier>& mult, int64_t y_zp, DType out_type,
                            int32_t out_min = INT32_MIN, int32_t out_max = INT32_MAX) {
  Tensor y(out_type, acc.shape());
  const int32_t qmin = std::max(out_type == DType::kUInt8 ? 0 : -128, out_min);
  const int32_t qmax = std::min(out_type == DType::kUInt8 ? 255 : 127, out_max);
  const int32_t* a = acc.data<int32_t>();
  for (int64_t i = 0; i < acc.numel(); ++i) {
    const int64_t c = channel_of(i);
    const int64_t sum = static_cast<int64_t>(a[i]) + (bias.empty() ? 0 : bias[c]);
    const int32_t clamped = static_cast<int32_t>(std::clamp<int64_t>(sum, INT32_MIN, INT32_MAX));
    const int32_t q = quant::requantize_to_code(clamped, mult[mult.size() == 1 ? 0 : c], static_cast<int32_t>(y_zp),
                                                qmin, qmax);
    if (out_type == DType::kUInt8) y.data<uint8_t>()[i] = static_cast<uint8_t>(q);
    else y.data<int8_t>()[i] = static_cast<int8_t>(q);
  }
  return y;
}

std::vector<FixedPointMultiplier> multipliers(float in_scale, const std::vector<float>& w_scale, float out_scale) {
  std::vector<FixedPointMultiplier> m;
  for (float ws : w_scale)
    m.push_back(quant::quantize_multiplier(static_cast<double>(in_scale) * ws / out_scale));
  return m;
}

Status conv_integer(KernelContext& ctx, const ConvAttrs& a) {
  QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, 2));
  const Tensor& x = ctx.input(0);
  const Tensor& w = ctx.input(1);
  QTK_ASSIGN_OR_RETURN(auto xc, centered(x, zero_points(ctx, 2), 1, 1, "x"));
  const int64_t inner = w.rank() > 0 ? w.numel() / std::max<int64_t>(w.dim(0), 1) : 1;
  auto wzp = zero_points(ctx, 3);
  QTK_ASSIGN_OR_RETURN(auto wc, centered(w, wzp, inner, w.rank() > 0 ? w.dim(0) : 1, "w"));
  QTK_ASSIGN_OR_RETURN(ctx.outputs[0], conv_int32(x.shape(), xc, w.shape(), wc, a, *ctx.pool));
  return Status::Ok();
}

template <class T>
void add_residual_codes(const quant::SharedShiftMultipliers& m, int32_t y_zp, int32_t r_zp, int32_t c_zp, const T* r,
                        T* y, int64_t n) {
  constexpr int32_t lo = std::is_signed_v<T> ? -128 : 0, hi = std::is_signed_v<T> ? 127 : 255;
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<T>(quant::add_to_code(y[i] - y_zp, r[i] - r_zp, m, c_zp, lo, hi));
}

// y = QLinearAdd(y, R) with the fused node's inputs 6, 7 (y) and 9..13.
Status add_residual(const KernelContext& ctx, Tensor& y) {
  if (!ctx.has_input(9) || !ctx.has_input(10) || !ctx.has_input(12))
    return invalid_argument("the fused residual add needs inputs 9 (R), 10 (R scale) and 12 (sum scale)");
  const Tensor& r = ctx.input(9);
  if (r.dtype() != y.dtype() || r.shape() != y.shape())
    return invalid_argument("residual " + shape_to_string(r.shape()) + " " + dtype_name(r.dtype()) +
                            " does not match the conv output " + shape_to_string(y.shape()) + " " +
                            dtype_name(y.dtype()));
  const double ys = ctx.input(6).get_as_double(0), rs = ctx.input(10).get_as_double(0),
               cs = ctx.input(12).get_as_double(0);
  if (!(ys > 0 && rs > 0 && cs > 0) || !std::isfinite(ys / cs) || !std::isfinite(rs / cs))
    return invalid_argument("fused residual add scales must be positive and finite");
  const auto m = quant::shared_shift_multipliers(ys / cs, rs / cs);
  if (!m) return unsupported("input/output scale ratio of 2^30 or more");
  const auto zp = [&](size_t i) { return ctx.has_input(i) ? static_cast<int32_t>(ctx.input(i).get_as_int64(0)) : 0; };
  if (y.dtype() == DType::kInt8)
    add_residual_codes(*m, zp(7), zp(11), zp(13), r.data<int8_t>(), y.data<int8_t>(), y.numel());
  else
    add_residual_codes(*m, zp(7), zp(11), zp(13), r.data<uint8_t>(), y.data<uint8_t>(), y.numel());
  return Status::Ok();
}

Status qlinear_conv(KernelContext& ctx, const ConvAttrs& a) {
  QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, 8));
  const Tensor& x = ctx.input(0);
  const Tensor& w = ctx.input(3);
  QTK_ASSIGN_OR_RETURN(auto xc, centered(x, zero_points(ctx, 2), 1, 1, "x"));
  const int64_t m = w.rank() > 0 ? w.dim(0) : 1;
  const int64_t inner = w.numel() / std::max<int64_t>(m, 1);
  auto wzp = zero_points(ctx, 5);
  if (wzp.size() != 1 && static_cast<int64_t>(wzp.size()) != m)
    return invalid_argument("w_zero_point must have 1 or " + std::to_string(m) + " values");
  QTK_ASSIGN_OR_RETURN(auto wc, centered(w, wzp, inner, m, "w"));
  auto ws = ctx.input(4).to_float_vector();
  if (ws.size() != 1 && static_cast<int64_t>(ws.size()) != m)
    return invalid_argument("w_scale must have 1 or " + std::to_string(m) + " values");
  QTK_ASSIGN_OR_RETURN(Tensor acc, conv_int32(x.shape(), xc, w.shape(), wc, a, *ctx.pool));
  std::vector<int32_t> bias;
  if (ctx.has_input(8)) {
    QTK_RETURN_IF_ERROR(ref::expect_dtype(ctx.input(8), DType::kInt32, "bias"));
    if (ctx.input(8).numel() != m) return invalid_argument("bias must have " + std::to_string(m) + " values");
    bias.assign(ctx.input(8).data<int32_t>(), ctx.input(8).data<int32_t>() + m);
  }
  const auto mult = multipliers(ctx.input(1).get_as_double(0), ws, ctx.input(6).get_as_double(0));
  const int64_t plane = acc.numel() / std::max<int64_t>(acc.dim(0) * m, 1);
  QTK_ASSIGN_OR_RETURN(ctx.outputs[0], requantize(acc, bias, [&](int64_t i) { return (i / plane) % m; }, mult,
                                                  ctx.input(7).get_as_int64(0), ctx.input(7).dtype(), a.out_min,
                                                  a.out_max));
  if (a.residual_add) QTK_RETURN_IF_ERROR(add_residual(ctx, ctx.outputs[0]));
  return Status::Ok();
}

Status matmul_integer(KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, 2));
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  // a_zero_point: scalar or per row (M); b_zero_point: scalar or per column (N).
  auto azp = zero_points(ctx, 2), bzp = zero_points(ctx, 3);
  const int64_t k = a.rank() > 0 ? a.dim(-1) : 1;
  const int64_t n = b.rank() > 0 ? b.dim(-1) : 1;
  const int64_t rows = a.rank() >= 2 ? a.dim(-2) : 1;
  QTK_ASSIGN_OR_RETURN(auto ac, centered(a, azp, k, azp.size() == 1 ? 1 : rows, "A"));
  QTK_ASSIGN_OR_RETURN(auto bc, centered(b, bzp, 1, bzp.size() == 1 ? 1 : n, "B"));
  QTK_ASSIGN_OR_RETURN(ctx.outputs[0], matmul_int32(a.shape(), ac, b.shape(), bc));
  return Status::Ok();
}

Status qlinear_matmul(KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, 8));
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(3);
  auto azp = zero_points(ctx, 2), bzp = zero_points(ctx, 5);
  const int64_t n = b.rank() > 0 ? b.dim(-1) : 1;
  if (azp.size() != 1) return unsupported("per-row a_zero_point in QLinearMatMul");
  QTK_ASSIGN_OR_RETURN(auto ac, centered(a, azp, 1, 1, "a"));
  QTK_ASSIGN_OR_RETURN(auto bc, centered(b, bzp, 1, bzp.size() == 1 ? 1 : n, "b"));
  QTK_ASSIGN_OR_RETURN(Tensor acc, matmul_int32(a.shape(), ac, b.shape(), bc));
  auto bs = ctx.input(4).to_float_vector();
  if (bs.size() != 1 && static_cast<int64_t>(bs.size()) != n)
    return invalid_argument("b_scale must have 1 or " + std::to_string(n) + " values");
  const auto mult = multipliers(ctx.input(1).get_as_double(0), bs, ctx.input(6).get_as_double(0));
  QTK_ASSIGN_OR_RETURN(ctx.outputs[0], requantize(acc, {}, [&](int64_t i) { return i % n; }, mult,
                                                  ctx.input(7).get_as_int64(0), ctx.input(7).dtype()));
  return Status::Ok();
}

template <Status (*Fn)(KernelContext&, const ConvAttrs&)>
Expected<std::unique_ptr<Kernel>> make_conv_kernel(const KernelInit& init) {
  QTK_ASSIGN_OR_RETURN(ConvAttrs a, read_conv_attrs(init.node));
  return make_fn_kernel([a](KernelContext& ctx) { return Fn(ctx, a); });
}

}  // namespace

void register_qlinear_ops(OpRegistry& r) {
  r.add("ConvInteger", make_conv_kernel<conv_integer>);
  r.add("QLinearConv", make_conv_kernel<qlinear_conv>);
  r.add("MatMulInteger", [](const KernelInit&) { return make_fn_kernel(matmul_integer); });
  r.add("QLinearMatMul", [](const KernelInit&) { return make_fn_kernel(qlinear_matmul); });
}

}  // namespace qtk::rt
