// Gather, GatherElements, ScatterElements (and the deprecated Scatter).
// Every index is checked against its axis before any byte moves, so a bad
// index is an error value, never an out-of-bounds read.
#include <cstring>

#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/ref/tensor_ops_common.h"

namespace qtk::rt::ref {

namespace {

// Indices as int64 with negatives wrapped; error if any is outside [-dim, dim).
Expected<std::vector<int64_t>> checked_indices(const Tensor& indices, int64_t dim) {
  QTK_ASSIGN_OR_RETURN(std::vector<int64_t> idx, read_int_values(indices, "indices"));
  for (int64_t& i : idx) {
    if (i < -dim || i >= dim)
      return invalid_argument("index " + std::to_string(i) + " is out of range for an axis of length " +
                              std::to_string(dim));
    if (i < 0) i += dim;
  }
  return idx;
}

Expected<std::unique_ptr<Kernel>> make_gather(const KernelInit& init) {
  const int64_t axis = init.node.attr_int("axis", 0);
  return make_fn_kernel([=](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(expect_inputs(ctx, 2));
    const Tensor& x = ctx.input(0);
    const Tensor& indices = ctx.input(1);
    QTK_RETURN_IF_ERROR(expect_fixed_size(x.dtype()));
    if (x.rank() == 0) return invalid_argument("Gather data must have rank >= 1");
    QTK_ASSIGN_OR_RETURN(int a, normalize_axis(axis, x.rank()));
    QTK_ASSIGN_OR_RETURN(std::vector<int64_t> idx, checked_indices(indices, x.dim(a)));
    // Output shape: data[:axis] + indices.shape + data[axis+1:].
    Shape out_shape(x.shape().begin(), x.shape().begin() + a);
    out_shape.insert(out_shape.end(), indices.shape().begin(), indices.shape().end());
    out_shape.insert(out_shape.end(), x.shape().begin() + a + 1, x.shape().end());
    QTK_ASSIGN_OR_RETURN(Tensor out, new_tensor(x.dtype(), out_shape));
    const size_t esize = dtype_size(x.dtype());
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < a; ++d) outer *= x.dim(d);
    for (int d = a + 1; d < x.rank(); ++d) inner *= x.dim(d);
    const size_t block = static_cast<size_t>(inner) * esize;
    const int64_t n = static_cast<int64_t>(idx.size());
    const auto* src = static_cast<const std::byte*>(x.raw());
    auto* dst = static_cast<std::byte*>(out.raw());
    if (block > 0 && n > 0) {
      ctx.pool->parallel_for(outer * n, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          const int64_t o = k / n, j = k % n;
          std::memcpy(dst + static_cast<size_t>(k) * block,
                      src + static_cast<size_t>(o * x.dim(a) + idx[static_cast<size_t>(j)]) * block, block);
        }
      }, std::max<int64_t>(1, 4096 / inner));
    }
    ctx.outputs[0] = std::move(out);
    return Status::Ok();
  });
}

// For GatherElements / ScatterElements: checks that indices has data's rank
// and fits inside data on every axis but `a`, then returns, for each element
// of indices, the flat offset into data it addresses.
Expected<std::vector<int64_t>> element_offsets(const Shape& data, const Tensor& indices, int a) {
  const int r = static_cast<int>(data.size());
  if (indices.rank() != r)
    return invalid_argument("indices has rank " + std::to_string(indices.rank()) + ", data has rank " +
                            std::to_string(r));
  for (int d = 0; d < r; ++d)
    if (d != a && indices.dim(d) > data[static_cast<size_t>(d)])
      return invalid_argument("indices shape " + shape_to_string(indices.shape()) + " does not fit data shape " +
                              shape_to_string(data));
  QTK_ASSIGN_OR_RETURN(std::vector<int64_t> idx, checked_indices(indices, data[static_cast<size_t>(a)]));
  const std::vector<int64_t> strides = contiguous_strides(data);
  std::vector<int64_t> pos(static_cast<size_t>(r), 0);
  for (size_t k = 0; k < idx.size(); ++k) {
    int64_t off = 0;
    for (int d = 0; d < r; ++d) off += (d == a ? idx[k] : pos[static_cast<size_t>(d)]) * strides[static_cast<size_t>(d)];
    idx[k] = off;
    for (int d = r - 1; d >= 0; --d) {
      if (++pos[static_cast<size_t>(d)] < indices.dim(d)) break;
      pos[static_cast<size_t>(d)] = 0;
    }
  }
  return idx;
}

Expected<std::unique_ptr<Kernel>> make_gather_elements(const KernelInit& init) {
  const int64_t axis = init.node.attr_int("axis", 0);
  return make_fn_kernel([=](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(expect_inputs(ctx, 2));
    const Tensor& x = ctx.input(0);
    QTK_RETURN_IF_ERROR(expect_fixed_size(x.dtype()));
    if (x.rank() == 0) return invalid_argument("GatherElements data must have rank >= 1");
    QTK_ASSIGN_OR_RETURN(int a, normalize_axis(axis, x.rank()));
    QTK_ASSIGN_OR_RETURN(std::vector<int64_t> offsets, element_offsets(x.shape(), ctx.input(1), a));
    Tensor out(x.dtype(), ctx.input(1).shape());
    const size_t esize = dtype_size(x.dtype());
    const auto* src = static_cast<const std::byte*>(x.raw());
    auto* dst = static_cast<std::byte*>(out.raw());
    for (size_t k = 0; k < offsets.size(); ++k)
      std::memcpy(dst + k * esize, src + static_cast<size_t>(offsets[k]) * esize, esize);
    ctx.outputs[0] = std::move(out);
    return Status::Ok();
  });
}

enum class Reduction { kNone, kAdd, kMul, kMax, kMin };

template <class T>
void scatter_reduce(T* out, const T* updates, const std::vector<int64_t>& offsets, Reduction red) {
  for (size_t k = 0; k < offsets.size(); ++k) {
    T& o = out[offsets[k]];
    const T u = updates[k];
    switch (red) {
      case Reduction::kAdd: o = static_cast<T>(o + u); break;
      case Reduction::kMul: o = static_cast<T>(o * u); break;
      case Reduction::kMax: o = o < u ? u : o; break;
      case Reduction::kMin: o = u < o ? u : o; break;
      case Reduction::kNone: o = u; break;
    }
  }
}

Expected<std::unique_ptr<Kernel>> make_scatter_elements(const KernelInit& init) {
  const int64_t axis = init.node.attr_int("axis", 0);
  // reduction: add/mul from opset 16, max/min from opset 18.
  const std::string reduction = init.opset >= 16 ? init.node.attr_string("reduction", "none") : "none";
  Reduction red;
  if (reduction == "none") red = Reduction::kNone;
  else if (reduction == "add") red = Reduction::kAdd;
  else if (reduction == "mul") red = Reduction::kMul;
  else if (reduction == "max" && init.opset >= 18) red = Reduction::kMax;
  else if (reduction == "min" && init.opset >= 18) red = Reduction::kMin;
  else return invalid_argument("unknown reduction '" + reduction + "'");
  return make_fn_kernel([=](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(expect_inputs(ctx, 3));
    const Tensor& x = ctx.input(0);
    const Tensor& updates = ctx.input(2);
    QTK_RETURN_IF_ERROR(expect_fixed_size(x.dtype()));
    if (x.rank() == 0) return invalid_argument("ScatterElements data must have rank >= 1");
    if (updates.dtype() != x.dtype()) return invalid_argument("updates and data have different dtypes");
    if (updates.shape() != ctx.input(1).shape())
      return invalid_argument("updates shape " + shape_to_string(updates.shape()) + " differs from indices shape " +
                              shape_to_string(ctx.input(1).shape()));
    QTK_ASSIGN_OR_RETURN(int a, normalize_axis(axis, x.rank()));
    QTK_ASSIGN_OR_RETURN(std::vector<int64_t> offsets, element_offsets(x.shape(), ctx.input(1), a));
    Tensor out = x.clone();
    if (red == Reduction::kNone) {
      // Later updates win when indices repeat, as in the ONNX reference.
      const size_t esize = dtype_size(x.dtype());
      const auto* src = static_cast<const std::byte*>(updates.raw());
      auto* dst = static_cast<std::byte*>(out.raw());
      for (size_t k = 0; k < offsets.size(); ++k)
        std::memcpy(dst + static_cast<size_t>(offsets[k]) * esize, src + k * esize, esize);
    } else {
      QTK_RETURN_IF_ERROR(dispatch_numeric(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        scatter_reduce<T>(out.data<T>(), updates.data<T>(), offsets, red);
      }));
    }
    ctx.outputs[0] = std::move(out);
    return Status::Ok();
  });
}

}  // namespace

void register_gather_scatter_ops(OpRegistry& r) {
  r.add("Gather", make_gather);
  r.add("GatherElements", make_gather_elements);
  r.add("ScatterElements", make_scatter_elements);
  // Scatter (opset 9-10) is ScatterElements without reduction.
  r.add("Scatter", make_scatter_elements);
}

}  // namespace qtk::rt::ref
