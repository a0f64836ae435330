// DepthToSpace and SpaceToDepth: a reshape to 6-D, a transpose, a reshape
// back to 4-D, done as one strided copy.
#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/ref/tensor_ops_common.h"

namespace qtk::rt::ref {

namespace {

Expected<std::unique_ptr<Kernel>> make_depth_to_space(const KernelInit& init) {
  const int64_t b = init.node.attr_int("blocksize", 0);
  if (b <= 0 || b > (1 << 16)) return invalid_argument("DepthToSpace blocksize " + std::to_string(b) + " is invalid");
  // mode arrived in opset 11; before that only DCR existed.
  const std::string mode = init.opset >= 11 ? init.node.attr_string("mode", "DCR") : "DCR";
  if (mode != "DCR" && mode != "CRD") return invalid_argument("unknown DepthToSpace mode '" + mode + "'");
  return make_fn_kernel([=](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
    const Tensor& x = ctx.input(0);
    QTK_RETURN_IF_ERROR(expect_fixed_size(x.dtype()));
    if (x.rank() != 4) return invalid_argument("DepthToSpace input must be 4-D, got " + shape_to_string(x.shape()));
    const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
    if (c % (b * b) != 0)
      return invalid_argument("channels " + std::to_string(c) + " are not divisible by blocksize^2");
    const int64_t oc = c / (b * b);
    StridedView v;
    if (mode == "DCR") {
      // [n, b1, b2, oc, h, w] -> [n, oc, h, b1, w, b2]
      v = permuted_view({n, b, b, oc, h, w}, {0, 3, 4, 1, 5, 2});
    } else {
      // [n, oc, b1, b2, h, w] -> [n, oc, h, b1, w, b2]
      v = permuted_view({n, oc, b, b, h, w}, {0, 1, 4, 2, 5, 3});
    }
    QTK_ASSIGN_OR_RETURN(Tensor y, materialize(x, v, ctx.pool));
    ctx.outputs[0] = y.reshaped({n, oc, h * b, w * b});
    return Status::Ok();
  });
}

Expected<std::unique_ptr<Kernel>> make_space_to_depth(const KernelInit& init) {
  const int64_t b = init.node.attr_int("blocksize", 0);
  if (b <= 0 || b > (1 << 16)) return invalid_argument("SpaceToDepth blocksize " + std::to_string(b) + " is invalid");
  return make_fn_kernel([=](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
    const Tensor& x = ctx.input(0);
    QTK_RETURN_IF_ERROR(expect_fixed_size(x.dtype()));
    if (x.rank() != 4) return invalid_argument("SpaceToDepth input must be 4-D, got " + shape_to_string(x.shape()));
    const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
    if (h % b != 0 || w % b != 0)
      return invalid_argument("spatial shape " + shape_to_string(x.shape()) + " is not divisible by blocksize");
    // [n, c, h/b, b1, w/b, b2] -> [n, b1, b2, c, h/b, w/b]
    StridedView v = permuted_view({n, c, h / b, b, w / b, b}, {0, 3, 5, 1, 2, 4});
    QTK_ASSIGN_OR_RETURN(Tensor y, materialize(x, v, ctx.pool));
    ctx.outputs[0] = y.reshaped({n, c * b * b, h / b, w / b});
    return Status::Ok();
  });
}

}  // namespace

void register_space_depth_ops(OpRegistry& r) {
  r.add("DepthToSpace", make_depth_to_space);
  r.add("SpaceToDepth", make_space_to_depth);
}

}  // namespace qtk::rt::ref
