// Shape ops: Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Shape, Size.
// Ops that only change the shape share the input's storage (tensors are
// immutable once produced); Transpose moves bytes, so it works for any dtype.
#include <algorithm>
#include <numeric>

#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/ref/tensor_ops_common.h"
#include "runtime/op_registry.h"

namespace qtk::rt {

namespace {

using ref::normalize_axis;

// Reshape's target shape: 0 copies the input dim (unless allowzero), -1 is
// inferred from the element count.
Expected<Shape> reshape_target(const Shape& in, const std::vector<int64_t>& spec, bool allowzero) {
  Shape out(spec.size());
  int infer = -1;
  int64_t known = 1;
  bool has_zero = false;
  for (size_t i = 0; i < spec.size(); ++i) {
    int64_t v = spec[i];
    if (v == -1) {
      if (infer >= 0) return invalid_argument("shape has more than one -1");
      infer = static_cast<int>(i);
      continue;
    }
    if (v < -1) return invalid_argument("shape has invalid dimension " + std::to_string(v));
    if (v == 0 && !allowzero) {
      if (i >= in.size())
        return invalid_argument("shape copies dimension " + std::to_string(i) + " (0) but the input has rank " +
                                std::to_string(in.size()));
      v = in[i];
    }
    has_zero |= v == 0;
    out[i] = v;
    if (__builtin_mul_overflow(known, v, &known)) return invalid_argument("shape " + shape_to_string(spec) + " is too large");
  }
  const int64_t total = shape_numel(in);
  if (infer >= 0) {
    if (allowzero && has_zero) return invalid_argument("shape has both -1 and 0 with allowzero=1");
    if (known == 0) {
      if (total != 0) return invalid_argument("cannot infer -1 for " + shape_to_string(in) + " with a 0 dimension");
      out[infer] = 0;
    } else {
      if (total % known != 0)
        return invalid_argument("cannot reshape " + shape_to_string(in) + " to " + shape_to_string(spec));
      out[infer] = total / known;
    }
  }
  if (shape_numel(out) != total)
    return invalid_argument("cannot reshape " + shape_to_string(in) + " (" + std::to_string(total) +
                            " elements) to " + shape_to_string(out));
  return out;
}

Expected<std::unique_ptr<Kernel>> make_reshape(const KernelInit& init) {
  // Reshape-1 took the shape as an attribute; from opset 5 it is an input.
  const bool shape_attr = init.opset < 5;
  std::vector<int64_t> attr_shape = init.node.attr_ints("shape");
  const bool allowzero = init.opset >= 14 && init.node.attr_int("allowzero", 0) != 0;
  return make_fn_kernel([=](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, shape_attr ? 1 : 2));
    std::vector<int64_t> spec = attr_shape;
    if (!shape_attr) {
      if (ctx.input(1).rank() != 1) return invalid_argument("shape input must be 1-D");
      QTK_ASSIGN_OR_RETURN(spec, ref::read_int_values(ctx.input(1), "shape"));
    }
    QTK_ASSIGN_OR_RETURN(Shape out, reshape_target(ctx.input(0).shape(), spec, allowzero));
    ctx.outputs[0] = ctx.input(0).reshaped(std::move(out));
    return Status::Ok();
  });
}

Expected<std::unique_ptr<Kernel>> make_flatten(const KernelInit& init) {
  const int64_t axis = init.node.attr_int("axis", 1);
  return make_fn_kernel([=](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, 1));
    const Tensor& x = ctx.input(0);
    const int r = x.rank();
    // axis may equal rank (everything goes into the first dimension).
    if (axis < -r || axis > r)
      return invalid_argument("axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(r));
    const int a = static_cast<int>(axis < 0 ? axis + r : axis);
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < r; ++d) (d < a ? outer : inner) *= x.dim(d);
    ctx.outputs[0] = x.reshaped({outer, inner});
    return Status::Ok();
  });
}

Expected<std::unique_ptr<Kernel>> make_transpose(const KernelInit& init) {
  const bool has_perm = init.node.has_attr("perm");
  const std::vector<int64_t> attr_perm = init.node.attr_ints("perm");
  return make_fn_kernel([=](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, 1));
    const Tensor& x = ctx.input(0);
    QTK_RETURN_IF_ERROR(ref::expect_fixed_size(x.dtype()));
    const int r = x.rank();
    std::vector<int64_t> perm = attr_perm;
    if (!has_perm) {
      perm.resize(static_cast<size_t>(r));
      for (int d = 0; d < r; ++d) perm[static_cast<size_t>(d)] = r - 1 - d;
    }
    if (static_cast<int>(perm.size()) != r)
      return invalid_argument("perm has " + std::to_string(perm.size()) + " entries for rank " + std::to_string(r));
    std::vector<bool> seen(static_cast<size_t>(r), false);
    for (int64_t& p : perm) {
      QTK_ASSIGN_OR_RETURN(int a, normalize_axis(p, r, "perm entry"));
      if (seen[static_cast<size_t>(a)]) return invalid_argument("perm is not a permutation");
      seen[static_cast<size_t>(a)] = true;
      p = a;
    }
    QTK_ASSIGN_OR_RETURN(ctx.outputs[0], ref::materialize(x, ref::permuted_view(x.shape(), perm), ctx.pool));
    return Status::Ok();
  });
}

// Axes from the attribute (before opset 13) or the optional input (from 13).
// *given is false when neither is there.
Status read_axes(const KernelContext& ctx, bool from_input, bool has_attr, const std::vector<int64_t>& attr,
                 bool* given, std::vector<int64_t>* axes) {
  *given = from_input ? ctx.has_input(1) : has_attr;
  if (!*given) return Status::Ok();
  if (!from_input) {
    *axes = attr;
    return Status::Ok();
  }
  QTK_ASSIGN_OR_RETURN(*axes, ref::read_int_values(ctx.input(1), "axes"));
  return Status::Ok();
}

Expected<std::unique_ptr<Kernel>> make_squeeze(const KernelInit& init) {
  const bool from_input = init.opset >= 13;
  const bool has_attr = init.node.has_attr("axes");
  const std::vector<int64_t> attr = init.node.attr_ints("axes");
  return make_fn_kernel([=](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, 1));
    const Tensor& x = ctx.input(0);
    bool given = false;
    std::vector<int64_t> axes;
    QTK_RETURN_IF_ERROR(read_axes(ctx, from_input, has_attr, attr, &given, &axes));
    std::vector<bool> drop(static_cast<size_t>(x.rank()), false);
    if (!given) {
      for (int d = 0; d < x.rank(); ++d) drop[static_cast<size_t>(d)] = x.dim(d) == 1;
    } else {
      for (int64_t a : axes) {
        QTK_ASSIGN_OR_RETURN(int d, normalize_axis(a, x.rank()));
        if (drop[static_cast<size_t>(d)]) return invalid_argument("axis " + std::to_string(a) + " is repeated");
        if (x.dim(d) != 1)
          return invalid_argument("cannot squeeze axis " + std::to_string(a) + " of shape " +
                                  shape_to_string(x.shape()));
        drop[static_cast<size_t>(d)] = true;
      }
    }
    Shape out;
    for (int d = 0; d < x.rank(); ++d)
      if (!drop[static_cast<size_t>(d)]) out.push_back(x.dim(d));
    ctx.outputs[0] = x.reshaped(std::move(out));
    return Status::Ok();
  });
}

Expected<std::unique_ptr<Kernel>> make_unsqueeze(const KernelInit& init) {
  const bool from_input = init.opset >= 13;
  const bool has_attr = init.node.has_attr("axes");
  const std::vector<int64_t> attr = init.node.attr_ints("axes");
  if (!from_input && !has_attr) return invalid_argument("Unsqueeze needs the axes attribute before opset 13");
  return make_fn_kernel([=](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, from_input ? 2 : 1));
    const Tensor& x = ctx.input(0);
    bool given = false;
    std::vector<int64_t> axes;
    QTK_RETURN_IF_ERROR(read_axes(ctx, from_input, has_attr, attr, &given, &axes));
    const int out_rank = x.rank() + static_cast<int>(axes.size());
    std::vector<bool> inserted(static_cast<size_t>(out_rank), false);
    for (int64_t a : axes) {
      QTK_ASSIGN_OR_RETURN(int d, normalize_axis(a, out_rank));
      if (inserted[static_cast<size_t>(d)]) return invalid_argument("axis " + std::to_string(a) + " is repeated");
      inserted[static_cast<size_t>(d)] = true;
    }
    Shape out;
    int next = 0;
    for (int d = 0; d < out_rank; ++d) out.push_back(inserted[static_cast<size_t>(d)] ? 1 : x.dim(next++));
    ctx.outputs[0] = x.reshaped(std::move(out));
    return Status::Ok();
  });
}

Expected<std::unique_ptr<Kernel>> make_shape(const KernelInit& init) {
  // start/end (opset 15) select a slice of the shape, clamped like Slice.
  const bool sliced = init.opset >= 15;
  const int64_t start = sliced ? init.node.attr_int("start", 0) : 0;
  const bool has_end = sliced && init.node.has_attr("end");
  const int64_t end = has_end ? init.node.attr_int("end", 0) : 0;
  return make_fn_kernel([=](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, 1));
    const Shape& s = ctx.input(0).shape();
    const int64_t r = static_cast<int64_t>(s.size());
    auto clamp = [r](int64_t v) { return std::clamp(v < 0 ? v + r : v, int64_t{0}, r); };
    const int64_t b = clamp(start), e = has_end ? clamp(end) : r;
    std::vector<int64_t> dims;
    for (int64_t i = b; i < e; ++i) dims.push_back(s[static_cast<size_t>(i)]);
    ctx.outputs[0] = Tensor::from_vector<int64_t>({static_cast<int64_t>(dims.size())}, dims);
    return Status::Ok();
  });
}

Expected<std::unique_ptr<Kernel>> make_size(const KernelInit&) {
  return make_fn_kernel([](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, 1));
    ctx.outputs[0] = Tensor::scalar<int64_t>(ctx.input(0).numel());
    return Status::Ok();
  });
}

}  // namespace

void register_shape_ops(OpRegistry& r) {
  r.add("Reshape", make_reshape);
  r.add("Flatten", make_flatten);
  r.add("Transpose", make_transpose);
  r.add("Squeeze", make_squeeze);
  r.add("Unsqueeze", make_unsqueeze);
  r.add("Shape", make_shape);
  r.add("Size", make_size);
}

}  // namespace qtk::rt
