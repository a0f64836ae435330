// com.microsoft QLinearConcat (ONNX Runtime's signature): inputs Y_scale,
// Y_zero_point, then one (X, X_scale, X_zero_point) triple per tensor;
// attribute axis. Every X and Y share one 8-bit type and per-tensor
// parameters.
//
// Each input code c becomes Q(DQ(c)) under Y's parameters, exactly as the
// QDQ graph DQ → Concat → Q computes it in float:
//   clamp(nearbyint(float(c - x_zp) · x_scale / y_scale) + y_zp).
// A code has 256 values, so each input's map is a 256-entry table made per
// run (the data path is a lookup, or a copy when the table is the identity,
// the common case of inputs quantized like their output).
#include "runtime/kernels/ref/qlinear_concat_ops.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/ref/quant_params.h"
#include "runtime/op_registry.h"

namespace qtk::rt {

namespace {

using Table = std::array<uint8_t, 256>;

Expected<float> concat_scale(const KernelContext& ctx, size_t i, const std::string& what) {
  QTK_ASSIGN_OR_RETURN(const double v, ref::per_tensor_scale(ctx, i, what));
  return static_cast<float>(v);  // a float32 value: exact
}

Expected<int32_t> concat_zero_point(const KernelContext& ctx, size_t i, DType want, const std::string& what) {
  return ref::per_tensor_zero_point(ctx, i, want, what, /*required=*/true);
}

// Byte b (the code's storage) -> output byte; false when it is the identity.
bool make_table(DType type, float xs, int32_t xz, float ys, int32_t yz, Table& t) {
  const bool is_signed = type == DType::kInt8;
  const int32_t lo = is_signed ? -128 : 0, hi = is_signed ? 127 : 255;
  bool identity = true;
  for (int b = 0; b < 256; ++b) {
    const int32_t c = is_signed ? static_cast<int8_t>(b) : b;
    const float v = static_cast<float>(c - xz) * xs;  // DequantizeLinear
    const float q = std::nearbyint(v / ys);           // QuantizeLinear
    const int32_t y = static_cast<int32_t>(std::clamp(static_cast<double>(q) + yz, double{lo}, double{hi}));
    t[static_cast<size_t>(b)] = static_cast<uint8_t>(y);
    identity = identity && t[static_cast<size_t>(b)] == b;
  }
  return !identity;
}

Status qlinear_concat(KernelContext& ctx, int64_t axis_attr) {
  const size_t n = ctx.num_inputs();
  if (n < 5 || (n - 2) % 3 != 0)
    return invalid_argument("QLinearConcat takes Y_scale, Y_zero_point and (X, X_scale, X_zero_point) triples; got " +
                            std::to_string(n) + " inputs");
  if (!ctx.has_input(1)) return invalid_argument("Y_zero_point is missing");
  const DType type = ctx.input(1).dtype();
  if (type != DType::kUInt8 && type != DType::kInt8)
    return invalid_argument(std::string("Y_zero_point must be uint8 or int8, got ") + dtype_name(type));
  QTK_ASSIGN_OR_RETURN(const float ys, concat_scale(ctx, 0, "Y_scale"));
  QTK_ASSIGN_OR_RETURN(const int32_t yz, concat_zero_point(ctx, 1, type, "Y_zero_point"));
  const size_t count = (n - 2) / 3;
  for (size_t k = 0; k < count; ++k)
    if (!ctx.has_input(2 + 3 * k)) return invalid_argument("input X_" + std::to_string(k) + " is missing");
  const Tensor& first = ctx.input(2);
  const int rank = first.rank();
  if (rank == 0) return invalid_argument("QLinearConcat inputs must have rank >= 1");
  QTK_ASSIGN_OR_RETURN(const int axis, ref::normalize_axis(axis_attr, rank));
  Shape out_shape = first.shape();
  out_shape[axis] = 0;
  std::vector<Table> tables(count);
  std::vector<char> mapped(count, 0);
  for (size_t k = 0; k < count; ++k) {
    const std::string name = "X_" + std::to_string(k);
    const Tensor& x = ctx.input(2 + 3 * k);
    if (x.dtype() != type) return invalid_argument(name + " must be " + dtype_name(type) + ", got " + dtype_name(x.dtype()));
    if (x.rank() != rank)
      return invalid_argument(name + " " + shape_to_string(x.shape()) + " must have rank " + std::to_string(rank));
    for (int d = 0; d < rank; ++d)
      if (d != axis && x.dim(d) != first.dim(d))
        return invalid_argument(name + " " + shape_to_string(x.shape()) + " does not match X_0 " +
                                shape_to_string(first.shape()) + " outside axis " + std::to_string(axis));
    QTK_ASSIGN_OR_RETURN(const float xs, concat_scale(ctx, 3 + 3 * k, name + "_scale"));
    QTK_ASSIGN_OR_RETURN(const int32_t xz, concat_zero_point(ctx, 4 + 3 * k, type, name + "_zero_point"));
    mapped[k] = make_table(type, xs, xz, ys, yz, tables[k]);
    out_shape[axis] += x.dim(axis);
  }
  Tensor y = Tensor::uninitialized(type, out_shape);  // every byte written below
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < axis; ++d) outer *= out_shape[d];
  for (int d = axis + 1; d < rank; ++d) inner *= out_shape[d];
  const int64_t out_block = out_shape[axis] * inner;
  auto* out = static_cast<uint8_t*>(y.raw());
  int64_t offset = 0;
  for (size_t k = 0; k < count; ++k) {
    const Tensor& x = ctx.input(2 + 3 * k);
    const int64_t block = x.dim(axis) * inner;
    const auto* in = static_cast<const uint8_t*>(x.raw());
    for (int64_t o = 0; o < outer; ++o) {
      const uint8_t* src = in + o * block;
      uint8_t* dst = out + o * out_block + offset;
      if (!mapped[k]) {
        if (block > 0) std::memcpy(dst, src, static_cast<size_t>(block));
      } else {
        for (int64_t i = 0; i < block; ++i) dst[i] = tables[k][src[i]];
      }
    }
    offset += block;
  }
  ctx.outputs[0] = std::move(y);
  return Status::Ok();
}

}  // namespace

void register_qlinear_concat_op(OpRegistry& r) {
  r.add("QLinearConcat",
        [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
          if (!init.node.has_attr("axis")) return invalid_argument("QLinearConcat needs the axis attribute");
          const int64_t axis = init.node.attr_int("axis", 0);
          return make_fn_kernel([axis](KernelContext& ctx) { return qlinear_concat(ctx, axis); });
        },
        "com.microsoft");
}

}  // namespace qtk::rt
