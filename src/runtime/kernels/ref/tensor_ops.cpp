// Data-movement ops: Concat, Split, Slice, Expand, Tile here; Gather/Scatter,
// Pad, DepthToSpace/SpaceToDepth and Resize/Upsample in the files named in
// tensor_ops_common.h. All of them move bytes, so they work for every
// fixed-size dtype.
#include <algorithm>
#include <cstring>
#include <limits>

#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/ref/tensor_ops_common.h"
#include "runtime/op_registry.h"

namespace qtk::rt {

namespace {

using ref::normalize_axis;

int64_t product(const Shape& s, int begin, int end) {
  int64_t p = 1;
  for (int d = begin; d < end; ++d) p *= s[static_cast<size_t>(d)];
  return p;
}

Expected<std::unique_ptr<Kernel>> make_concat(const KernelInit& init) {
  // Concat-1 made axis optional with default 1; from opset 4 it is required.
  if (init.opset >= 4 && !init.node.has_attr("axis")) return invalid_argument("Concat needs the axis attribute");
  const int64_t axis = init.node.attr_int("axis", 1);
  return make_fn_kernel([=](KernelContext& ctx) -> Status {
    if (ctx.num_inputs() == 0) return invalid_argument("Concat needs at least one input");
    QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, ctx.num_inputs()));
    const Tensor& first = ctx.input(0);
    QTK_RETURN_IF_ERROR(ref::expect_fixed_size(first.dtype()));
    if (first.rank() == 0) return invalid_argument("Concat inputs must have rank >= 1");
    QTK_ASSIGN_OR_RETURN(int a, normalize_axis(axis, first.rank()));
    Shape out_shape = first.shape();
    out_shape[static_cast<size_t>(a)] = 0;
    for (size_t i = 0; i < ctx.num_inputs(); ++i) {
      const Tensor& t = ctx.input(i);
      if (t.dtype() != first.dtype()) return invalid_argument("Concat inputs have different dtypes");
      bool ok = t.rank() == first.rank();
      for (int d = 0; ok && d < t.rank(); ++d) ok = d == a || t.dim(d) == first.dim(d);
      if (!ok)
        return invalid_argument("input " + std::to_string(i) + " has shape " + shape_to_string(t.shape()) +
                                ", incompatible with " + shape_to_string(first.shape()) + " on axis " +
                                std::to_string(a));
      out_shape[static_cast<size_t>(a)] += t.dim(a);
    }
    QTK_ASSIGN_OR_RETURN(Tensor out, ref::new_tensor(first.dtype(), out_shape));
    const size_t esize = dtype_size(first.dtype());
    const int64_t outer = product(out_shape, 0, a);
    const int64_t out_row = product(out_shape, a, first.rank()) * static_cast<int64_t>(esize);
    auto* dst = static_cast<std::byte*>(out.raw());
    int64_t col = 0;  // byte offset of this input inside an output row
    for (size_t i = 0; i < ctx.num_inputs(); ++i) {
      const Tensor& t = ctx.input(i);
      const int64_t row = product(t.shape(), a, t.rank()) * static_cast<int64_t>(esize);
      const auto* src = static_cast<const std::byte*>(t.raw());
      if (row > 0)
        for (int64_t o = 0; o < outer; ++o) std::memcpy(dst + o * out_row + col, src + o * row, static_cast<size_t>(row));
      col += row;
    }
    ctx.outputs[0] = std::move(out);
    return Status::Ok();
  });
}

// Chunk lengths for Split from (in order of precedence) the split input or
// attribute, the num_outputs attribute (opset 18), or the output count.
Expected<std::vector<int64_t>> split_lengths(int64_t dim, size_t outputs, const std::optional<std::vector<int64_t>>& split,
                                             int64_t num_outputs) {
  std::vector<int64_t> lengths;
  if (split) {
    lengths = *split;
    int64_t sum = 0;
    for (int64_t l : lengths) {
      if (l < 0 || l > dim) return invalid_argument("split length " + std::to_string(l) + " is out of range");
      sum += l;
    }
    if (sum != dim)
      return invalid_argument("split lengths sum to " + std::to_string(sum) + " but the axis has " +
                              std::to_string(dim));
  } else if (num_outputs > 0) {
    // Chunks of ceil(dim / n); the last one takes what is left.
    const int64_t chunk = (dim + num_outputs - 1) / num_outputs;
    for (int64_t i = 0; i < num_outputs; ++i) lengths.push_back(std::clamp(dim - i * chunk, int64_t{0}, chunk));
  } else {
    const int64_t n = static_cast<int64_t>(outputs);
    if (n == 0 || dim % n != 0)
      return invalid_argument("axis of length " + std::to_string(dim) + " does not split evenly into " +
                              std::to_string(n) + " outputs");
    lengths.assign(outputs, dim / n);
  }
  if (lengths.size() != outputs)
    return invalid_argument("split gives " + std::to_string(lengths.size()) + " chunks for " +
                            std::to_string(outputs) + " outputs");
  return lengths;
}

Expected<std::unique_ptr<Kernel>> make_split(const KernelInit& init) {
  const int64_t axis = init.node.attr_int("axis", 0);
  // Split-1 and Split-13+ read split from input 1; Split-2..12 from the attribute.
  const bool split_input = init.opset == 1 || init.opset >= 13;
  std::optional<std::vector<int64_t>> split_attr;
  if (init.node.has_attr("split")) split_attr = init.node.attr_ints("split");
  const int64_t num_outputs = init.opset >= 18 ? init.node.attr_int("num_outputs", 0) : 0;
  const size_t outputs = init.node.outputs.size();
  return make_fn_kernel([=](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, 1));
    const Tensor& x = ctx.input(0);
    QTK_RETURN_IF_ERROR(ref::expect_fixed_size(x.dtype()));
    if (x.rank() == 0) return invalid_argument("Split input must have rank >= 1");
    QTK_ASSIGN_OR_RETURN(int a, normalize_axis(axis, x.rank()));
    std::optional<std::vector<int64_t>> split = split_attr;
    if (split_input && ctx.has_input(1)) {
      QTK_ASSIGN_OR_RETURN(std::vector<int64_t> v, ref::read_int_values(ctx.input(1), "split"));
      split = std::move(v);
    }
    QTK_ASSIGN_OR_RETURN(std::vector<int64_t> lengths, split_lengths(x.dim(a), outputs, split, num_outputs));
    const size_t esize = dtype_size(x.dtype());
    const int64_t outer = product(x.shape(), 0, a);
    const int64_t inner = product(x.shape(), a + 1, x.rank()) * static_cast<int64_t>(esize);
    const int64_t in_row = x.dim(a) * inner;
    const auto* src = static_cast<const std::byte*>(x.raw());
    int64_t start = 0;
    for (size_t i = 0; i < outputs; ++i) {
      Shape s = x.shape();
      s[static_cast<size_t>(a)] = lengths[i];
      Tensor out(x.dtype(), s);
      const int64_t row = lengths[i] * inner;
      auto* dst = static_cast<std::byte*>(out.raw());
      if (row > 0)
        for (int64_t o = 0; o < outer; ++o)
          std::memcpy(dst + o * row, src + o * in_row + start * inner, static_cast<size_t>(row));
      start += lengths[i];
      ctx.outputs[i] = std::move(out);
    }
    return Status::Ok();
  });
}

// Slice parameters as given, before they are resolved against a shape.
struct SliceSpec {
  std::vector<int64_t> starts, ends, axes, steps;
};

// Builds the view of a slice, clamping starts/ends as the ONNX spec says
// (INT64_MAX / INT64_MIN ends included).
Expected<ref::StridedView> slice_view(const Shape& shape, const SliceSpec& spec) {
  const int r = static_cast<int>(shape.size());
  const size_t n = spec.starts.size();
  if (spec.ends.size() != n) return invalid_argument("starts and ends have different lengths");
  if (!spec.axes.empty() && spec.axes.size() != n) return invalid_argument("axes and starts have different lengths");
  if (!spec.steps.empty() && spec.steps.size() != n) return invalid_argument("steps and starts have different lengths");
  ref::StridedView v;
  v.shape = shape;
  v.strides = ref::contiguous_strides(shape);
  std::vector<bool> seen(static_cast<size_t>(r), false);
  for (size_t i = 0; i < n; ++i) {
    int a = static_cast<int>(i);
    if (!spec.axes.empty()) {
      QTK_ASSIGN_OR_RETURN(a, normalize_axis(spec.axes[i], r));
    } else if (a >= r) {
      return invalid_argument("more starts than the input has dimensions");
    }
    if (seen[static_cast<size_t>(a)]) return invalid_argument("axis " + std::to_string(a) + " is repeated");
    seen[static_cast<size_t>(a)] = true;
    int64_t step = spec.steps.empty() ? 1 : spec.steps[i];
    if (step == 0) return invalid_argument("slice step cannot be 0");
    const int64_t dim = shape[static_cast<size_t>(a)];
    // A step longer than the axis takes at most one element; clamping it
    // keeps the arithmetic below from overflowing.
    step = std::clamp(step, -dim - 1, dim + 1);
    // Clamp before adding dim so INT64_MIN/INT64_MAX cannot overflow.
    int64_t start = std::clamp(spec.starts[i], -dim - 1, dim + 1);
    int64_t end = std::clamp(spec.ends[i], -dim - 1, dim + 1);
    if (start < 0) start += dim;
    if (end < 0) end += dim;
    int64_t count;
    if (step > 0) {
      start = std::clamp(start, int64_t{0}, dim);
      end = std::clamp(end, int64_t{0}, dim);
      count = end > start ? (end - start - 1) / step + 1 : 0;
    } else {
      start = std::clamp(start, int64_t{0}, dim - 1);
      end = std::clamp(end, int64_t{-1}, dim - 1);
      count = start > end ? (start - end - 1) / (-step) + 1 : 0;
    }
    v.shape[static_cast<size_t>(a)] = count;
    if (count > 0) v.base += start * v.strides[static_cast<size_t>(a)];
    v.strides[static_cast<size_t>(a)] *= step;
  }
  return v;
}

Expected<std::unique_ptr<Kernel>> make_slice(const KernelInit& init) {
  // Slice-1 takes starts/ends/axes as attributes; from opset 10 they are inputs.
  const bool from_attrs = init.opset < 10;
  SliceSpec attr_spec;
  if (from_attrs) {
    if (!init.node.has_attr("starts") || !init.node.has_attr("ends"))
      return invalid_argument("Slice needs starts and ends attributes before opset 10");
    attr_spec.starts = init.node.attr_ints("starts");
    attr_spec.ends = init.node.attr_ints("ends");
    attr_spec.axes = init.node.attr_ints("axes");
  }
  return make_fn_kernel([=](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, from_attrs ? 1 : 3));
    const Tensor& x = ctx.input(0);
    QTK_RETURN_IF_ERROR(ref::expect_fixed_size(x.dtype()));
    SliceSpec spec = attr_spec;
    if (!from_attrs) {
      QTK_ASSIGN_OR_RETURN(spec.starts, ref::read_int_values(ctx.input(1), "starts"));
      QTK_ASSIGN_OR_RETURN(spec.ends, ref::read_int_values(ctx.input(2), "ends"));
      if (ctx.has_input(3)) {
        QTK_ASSIGN_OR_RETURN(spec.axes, ref::read_int_values(ctx.input(3), "axes"));
      }
      if (ctx.has_input(4)) {
        QTK_ASSIGN_OR_RETURN(spec.steps, ref::read_int_values(ctx.input(4), "steps"));
      }
    }
    QTK_ASSIGN_OR_RETURN(ref::StridedView v, slice_view(x.shape(), spec));
    QTK_ASSIGN_OR_RETURN(ctx.outputs[0], ref::materialize(x, v, ctx.pool));
    return Status::Ok();
  });
}

Expected<std::unique_ptr<Kernel>> make_expand(const KernelInit&) {
  return make_fn_kernel([](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, 2));
    const Tensor& x = ctx.input(0);
    QTK_RETURN_IF_ERROR(ref::expect_fixed_size(x.dtype()));
    if (ctx.input(1).rank() > 1) return invalid_argument("shape input must be 1-D");
    QTK_ASSIGN_OR_RETURN(std::vector<int64_t> want, ref::read_int_values(ctx.input(1), "shape"));
    for (int64_t d : want)
      if (d < 0) return invalid_argument("shape has a negative dimension " + std::to_string(d));
    // Bidirectional broadcast: the output may be larger than `shape` asks.
    QTK_ASSIGN_OR_RETURN(Shape out, ref::broadcast_shapes(x.shape(), want));
    ref::StridedView v{out, ref::broadcast_strides(x.shape(), out), 0};
    QTK_ASSIGN_OR_RETURN(ctx.outputs[0], ref::materialize(x, v, ctx.pool));
    return Status::Ok();
  });
}

// Tile as a strided view: the output, seen as [r0, d0, r1, d1, ...], reads
// the input with stride 0 on every repeat axis.
Expected<Tensor> tile(const Tensor& x, const std::vector<int64_t>& repeats, ThreadPool* pool) {
  const std::vector<int64_t> in_strides = ref::contiguous_strides(x.shape());
  ref::StridedView v;
  for (int d = 0; d < x.rank(); ++d) {
    v.shape.push_back(repeats[static_cast<size_t>(d)]);
    v.strides.push_back(0);
    v.shape.push_back(x.dim(d));
    v.strides.push_back(in_strides[static_cast<size_t>(d)]);
  }
  // materialize refuses shapes whose size overflows, so these products are safe.
  QTK_ASSIGN_OR_RETURN(Tensor t, ref::materialize(x, v, pool));
  Shape out;
  for (int d = 0; d < x.rank(); ++d) out.push_back(x.dim(d) * repeats[static_cast<size_t>(d)]);
  return t.reshaped(out);
}

Expected<std::unique_ptr<Kernel>> make_tile(const KernelInit& init) {
  // Tile-1 took (input, tiles, axis) scalars; from opset 6 a repeats vector.
  const bool tile_v1 = init.opset < 6;
  return make_fn_kernel([=](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, tile_v1 ? 3 : 2));
    const Tensor& x = ctx.input(0);
    QTK_RETURN_IF_ERROR(ref::expect_fixed_size(x.dtype()));
    std::vector<int64_t> repeats;
    if (tile_v1) {
      QTK_ASSIGN_OR_RETURN(std::vector<int64_t> tiles, ref::read_int_values(ctx.input(1), "tiles"));
      QTK_ASSIGN_OR_RETURN(std::vector<int64_t> axis, ref::read_int_values(ctx.input(2), "axis"));
      if (tiles.size() != 1 || axis.size() != 1) return invalid_argument("tiles and axis must be scalars");
      QTK_ASSIGN_OR_RETURN(int a, normalize_axis(axis[0], x.rank()));
      repeats.assign(static_cast<size_t>(x.rank()), 1);
      repeats[static_cast<size_t>(a)] = tiles[0];
    } else {
      QTK_ASSIGN_OR_RETURN(repeats, ref::read_int_values(ctx.input(1), "repeats"));
    }
    if (static_cast<int>(repeats.size()) != x.rank())
      return invalid_argument("repeats has " + std::to_string(repeats.size()) + " entries for rank " +
                              std::to_string(x.rank()));
    for (int64_t rep : repeats)
      if (rep < 0) return invalid_argument("repeats has a negative entry " + std::to_string(rep));
    QTK_ASSIGN_OR_RETURN(ctx.outputs[0], tile(x, repeats, ctx.pool));
    return Status::Ok();
  });
}

}  // namespace

void register_tensor_ops(OpRegistry& r) {
  r.add("Concat", make_concat);
  r.add("Split", make_split);
  r.add("Slice", make_slice);
  r.add("Expand", make_expand);
  r.add("Tile", make_tile);
  ref::register_gather_scatter_ops(r);
  ref::register_pad_ops(r);
  ref::register_space_depth_ops(r);
  ref::register_resize_ops(r);
}

}  // namespace qtk::rt
