// QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear: the reference
// semantics of docs/integer-semantics.md (round half to even, saturate).
#include <algorithm>
#include <cmath>

#include "quant/schemes/linear.h"
#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/ref/quant_params.h"
#include "runtime/op_registry.h"

namespace qtk::rt {

namespace {

// Q: the storage type; [lo, hi] the code range (narrower than Q for 4-bit
// types, which are held one value per byte).
template <class Q>
Tensor quantize_to(const Tensor& x, const ref::ScaleZp& sz, DType type = dtype_of<Q>,
                   double lo = std::numeric_limits<Q>::min(), double hi = std::numeric_limits<Q>::max()) {
  Tensor y(type, x.shape());
  const float* in = x.data<float>();
  Q* out = y.data<Q>();
  quant::for_each_stretch(sz.layout, x.numel(), [&](int64_t c, int64_t begin, int64_t end) {
    const float scale = sz.scale[c];
    const double zp = static_cast<double>(sz.zero_point[c]);
    for (int64_t i = begin; i < end; ++i) {
      const float v = std::nearbyint(in[i] / scale);
      const double q = std::isnan(v) ? zp : static_cast<double>(v) + zp;
      out[i] = static_cast<Q>(std::clamp(q, lo, hi));
    }
  });
  return y;
}

template <class Q>
void dequantize_from(const Tensor& x, const ref::ScaleZp& sz, Tensor& y) {
  const Q* in = x.data<Q>();
  float* out = y.data<float>();
  quant::for_each_stretch(sz.layout, x.numel(), [&](int64_t c, int64_t begin, int64_t end) {
    const float scale = sz.scale[c];
    const int64_t zp = sz.zero_point[c];
    for (int64_t i = begin; i < end; ++i) out[i] = static_cast<float>(static_cast<int64_t>(in[i]) - zp) * scale;
  });
}

Expected<std::unique_ptr<Kernel>> make_quantize(const KernelInit& init) {
  const int64_t axis = init.node.attr_int("axis", 1);
  const int64_t block = init.node.attr_int("block_size", 0);
  if (init.node.attr_int("output_dtype", 0) != 0) return unsupported("output_dtype attribute");
  return make_fn_kernel([axis, block](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, 2));
    const Tensor& x = ctx.input(0);
    QTK_RETURN_IF_ERROR(ref::expect_dtype(x, DType::kFloat32, "QuantizeLinear input"));
    const DType out = ctx.has_input(2) ? ctx.input(2).dtype() : DType::kUInt8;
    QTK_ASSIGN_OR_RETURN(auto sz, ref::read_scale_zp(x.shape(), ctx.input(1), ctx.has_input(2) ? ctx.inputs[2] : nullptr,
                                                     axis, block));
    switch (out) {
      case DType::kUInt8: ctx.outputs[0] = quantize_to<uint8_t>(x, sz); break;
      case DType::kInt8: ctx.outputs[0] = quantize_to<int8_t>(x, sz); break;
      case DType::kUInt16: ctx.outputs[0] = quantize_to<uint16_t>(x, sz); break;
      case DType::kInt16: ctx.outputs[0] = quantize_to<int16_t>(x, sz); break;
      case DType::kUInt4: ctx.outputs[0] = quantize_to<uint8_t>(x, sz, out, 0, 15); break;
      case DType::kInt4: ctx.outputs[0] = quantize_to<int8_t>(x, sz, out, -8, 7); break;
      default: return unsupported(std::string("QuantizeLinear to ") + dtype_name(out));
    }
    return Status::Ok();
  });
}

Expected<std::unique_ptr<Kernel>> make_dequantize(const KernelInit& init) {
  const int64_t axis = init.node.attr_int("axis", 1);
  const int64_t block = init.node.attr_int("block_size", 0);
  return make_fn_kernel([axis, block](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, 2));
    const Tensor& x = ctx.input(0);
    QTK_ASSIGN_OR_RETURN(auto sz, ref::read_scale_zp(x.shape(), ctx.input(1), ctx.has_input(2) ? ctx.inputs[2] : nullptr,
                                                     axis, block, /*zero_ok=*/true));
    Tensor y(DType::kFloat32, x.shape());
    switch (x.dtype()) {
      case DType::kUInt8: case DType::kUInt4: dequantize_from<uint8_t>(x, sz, y); break;
      case DType::kInt8: case DType::kInt4: dequantize_from<int8_t>(x, sz, y); break;
      case DType::kUInt16: dequantize_from<uint16_t>(x, sz, y); break;
      case DType::kInt16: dequantize_from<int16_t>(x, sz, y); break;
      case DType::kInt32: dequantize_from<int32_t>(x, sz, y); break;
      default: return unsupported(std::string("DequantizeLinear from ") + dtype_name(x.dtype()));
    }
    ctx.outputs[0] = std::move(y);
    return Status::Ok();
  });
}

// y = saturate(round(x / scale) + zp), uint8, with the range widened to 0.
Status dynamic_quantize(KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, 1));
  const Tensor& x = ctx.input(0);
  QTK_RETURN_IF_ERROR(ref::expect_dtype(x, DType::kFloat32, "DynamicQuantizeLinear input"));
  const float* in = x.data<float>();
  float lo = 0.f, hi = 0.f;
  for (int64_t i = 0; i < x.numel(); ++i) {
    if (std::isnan(in[i])) continue;
    lo = std::min(lo, in[i]);
    hi = std::max(hi, in[i]);
  }
  const float scale = (hi - lo) / 255.f;
  const float safe_scale = scale > 0.f && std::isfinite(scale) ? scale : 1.f;
  const float zpf = std::nearbyint(0.f - lo / safe_scale);
  const uint8_t zp = static_cast<uint8_t>(std::clamp(zpf, 0.f, 255.f));
  ref::ScaleZp sz{{safe_scale}, {zp}, {}};
  ctx.outputs[0] = quantize_to<uint8_t>(x, sz);
  ctx.outputs[1] = Tensor::scalar<float>(scale);
  ctx.outputs[2] = Tensor::scalar<uint8_t>(zp);
  return Status::Ok();
}

}  // namespace

void register_quant_ops(OpRegistry& r) {
  r.add("QuantizeLinear", make_quantize);
  r.add("DequantizeLinear", make_dequantize);
  r.add("DynamicQuantizeLinear", [](const KernelInit&) { return make_fn_kernel(dynamic_quantize); });
}

}  // namespace qtk::rt
