// Data movement: Flatten, Reshape, Squeeze, Unsqueeze (views: the gradient is
// reshaped back), Transpose, Concat, Slice and Gather (gradients scattered
// back to where the data came from).
#include <algorithm>
#include <cstring>

#include "train/broadcast.h"
#include "train/grad_op.h"

namespace qtk::train {
namespace {

// Forwards here move elements of any dtype (shape chains carry int64);
// gradients flow through float tensors only.
Status expect_known_dtype(const ForwardContext& c, size_t i) {
  if (i >= c.in.size() || !c.in[i].defined())
    return invalid_argument(node_label(c.node) + ": required input " + std::to_string(i) + " is missing");
  if (dtype_size(c.in[i].dtype()) == 0)
    return unsupported(node_label(c.node) + ": dtype " + dtype_name(c.in[i].dtype()) + " is not supported");
  return Status::Ok();
}

inline void copy_elems(const Tensor& src, int64_t si, Tensor& dst, int64_t di, int64_t count) {
  const size_t es = dtype_size(src.dtype());
  std::memcpy(static_cast<std::byte*>(dst.raw()) + di * es, static_cast<const std::byte*>(src.raw()) + si * es,
              static_cast<size_t>(count) * es);
}

Expected<int64_t> norm_axis(const ir::Node& node, int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= rank)
    return invalid_argument(node_label(node) + ": axis " + std::to_string(axis) + " out of range for rank " +
                            std::to_string(rank));
  return axis < 0 ? axis + rank : axis;
}

Status view_backward(BackwardContext& c) {
  if (c.need[0]) c.din[0] = c.dout[0].reshaped(c.in[0].shape());
  return Status::Ok();
}

Status flatten_forward(ForwardContext& c) {
  const Tensor& x = c.in[0];
  QTK_ASSIGN_OR_RETURN(int64_t axis, norm_axis(c.node, c.node.attr_int("axis", 1), x.rank() + 1));
  int64_t outer = 1;
  for (int64_t i = 0; i < axis; ++i) outer *= x.dim(static_cast<int>(i));
  c.out = {x.reshaped({outer, outer ? x.numel() / outer : 0})};
  return Status::Ok();
}

Status reshape_forward(ForwardContext& c) {
  const Tensor& x = c.in[0];
  if (c.in.size() < 2 || !c.in[1].defined()) return invalid_argument(node_label(c.node) + ": shape input is missing");
  std::vector<int64_t> s = c.in[1].to_int64_vector();
  const bool allow_zero = c.node.attr_int("allowzero", 0) != 0;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == 0 && !allow_zero) {
      if (static_cast<int>(i) >= x.rank()) return invalid_argument(node_label(c.node) + ": 0 past the input's rank");
      s[i] = x.dim(static_cast<int>(i));
    }
    if (s[i] == -1) {
      if (infer >= 0) return invalid_argument(node_label(c.node) + ": more than one -1 in the shape");
      infer = static_cast<int64_t>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) s[infer] = known ? x.numel() / known : 0;
  if (shape_numel(s) != x.numel())
    return invalid_argument(node_label(c.node) + ": cannot reshape " + shape_to_string(x.shape()) + " to " +
                            shape_to_string(s));
  c.out = {x.reshaped(s)};
  return Status::Ok();
}

// Squeeze / Unsqueeze: axes from the attribute (opset < 13) or input 1.
std::vector<int64_t> axes_of(const ForwardContext& c) {
  if (c.in.size() > 1 && c.in[1].defined()) return c.in[1].to_int64_vector();
  return c.node.attr_ints("axes");
}

Status squeeze_forward(ForwardContext& c) {
  const Tensor& x = c.in[0];
  std::vector<int64_t> axes = axes_of(c);
  std::vector<bool> drop(x.rank(), false);
  if (axes.empty())
    for (int i = 0; i < x.rank(); ++i) drop[i] = x.dim(i) == 1;
  for (int64_t a : axes) {
    QTK_ASSIGN_OR_RETURN(int64_t ax, norm_axis(c.node, a, x.rank()));
    if (x.dim(static_cast<int>(ax)) != 1) return invalid_argument(node_label(c.node) + ": squeezed dim is not 1");
    drop[ax] = true;
  }
  Shape s;
  for (int i = 0; i < x.rank(); ++i)
    if (!drop[i]) s.push_back(x.dim(i));
  c.out = {x.reshaped(s)};
  return Status::Ok();
}

Status unsqueeze_forward(ForwardContext& c) {
  const Tensor& x = c.in[0];
  std::vector<int64_t> axes = axes_of(c);
  const int64_t r = x.rank() + static_cast<int64_t>(axes.size());
  std::vector<bool> ins(r, false);
  for (int64_t a : axes) {
    QTK_ASSIGN_OR_RETURN(int64_t ax, norm_axis(c.node, a, r));
    ins[ax] = true;
  }
  Shape s;
  int src = 0;
  for (int64_t i = 0; i < r; ++i) s.push_back(ins[i] ? 1 : x.dim(src++));
  c.out = {x.reshaped(s)};
  return Status::Ok();
}

// Offsets into `in` (shape `in_shape`) of every element of its transpose by `perm`.
std::vector<int64_t> transpose_offsets(const Shape& in_shape, const std::vector<int64_t>& perm) {
  const size_t r = in_shape.size();
  std::vector<int64_t> in_stride(r, 1);
  for (size_t i = r; i-- > 1;) in_stride[i - 1] = in_stride[i] * in_shape[i];
  Shape out(r);
  std::vector<int64_t> stride(r);
  for (size_t i = 0; i < r; ++i) {
    out[i] = in_shape[perm[i]];
    stride[i] = in_stride[perm[i]];
  }
  const int64_t n = shape_numel(in_shape);
  std::vector<int64_t> offs(n);
  std::vector<int64_t> idx(r, 0);
  int64_t cur = 0;
  for (int64_t i = 0; i < n; ++i) {
    offs[i] = cur;
    for (size_t d = r; d-- > 0;) {
      ++idx[d];
      cur += stride[d];
      if (idx[d] < out[d]) break;
      cur -= stride[d] * out[d];
      idx[d] = 0;
    }
  }
  return offs;
}

Expected<std::vector<int64_t>> perm_of(const ir::Node& node, int rank) {
  std::vector<int64_t> perm = node.attr_ints("perm");
  if (perm.empty())
    for (int i = rank; i-- > 0;) perm.push_back(i);
  std::vector<int64_t> sorted = perm;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < rank; ++i)
    if (static_cast<int>(sorted.size()) != rank || sorted[i] != i)
      return invalid_argument(node_label(node) + ": perm is not a permutation of the input's dims");
  return perm;
}

Status transpose_forward(ForwardContext& c) {
  QTK_RETURN_IF_ERROR(expect_known_dtype(c, 0));
  const Tensor& x = c.in[0];
  QTK_ASSIGN_OR_RETURN(auto perm, perm_of(c.node, x.rank()));
  Shape s(x.rank());
  for (int i = 0; i < x.rank(); ++i) s[i] = x.dim(static_cast<int>(perm[i]));
  Tensor y = Tensor::uninitialized(x.dtype(), s);
  const auto offs = transpose_offsets(x.shape(), perm);
  if (x.dtype() == DType::kFloat32)
    for (int64_t i = 0; i < x.numel(); ++i) y.data<float>()[i] = x.data<float>()[offs[i]];
  else
    for (int64_t i = 0; i < x.numel(); ++i) copy_elems(x, offs[i], y, i, 1);
  c.out = {y};
  return Status::Ok();
}

Status transpose_backward(BackwardContext& c) {
  if (!c.need[0]) return Status::Ok();
  QTK_ASSIGN_OR_RETURN(auto perm, perm_of(c.node, c.in[0].rank()));
  const auto offs = transpose_offsets(c.in[0].shape(), perm);
  Tensor dx = Tensor::uninitialized(DType::kFloat32, c.in[0].shape());
  for (int64_t i = 0; i < dx.numel(); ++i) dx.data<float>()[offs[i]] = c.dout[0].data<float>()[i];
  c.din[0] = dx;
  return Status::Ok();
}

Status concat_forward(ForwardContext& c) {
  if (c.in.empty()) return invalid_argument(node_label(c.node) + ": no inputs");
  for (size_t i = 0; i < c.in.size(); ++i) {
    QTK_RETURN_IF_ERROR(expect_known_dtype(c, i));
    if (c.in[i].dtype() != c.in[0].dtype()) return invalid_argument(node_label(c.node) + ": inputs differ in dtype");
  }
  const Tensor& x0 = c.in[0];
  QTK_ASSIGN_OR_RETURN(int64_t axis, norm_axis(c.node, c.node.attr_int("axis", 0), x0.rank()));
  Shape s = x0.shape();
  s[axis] = 0;
  for (const Tensor& t : c.in) {
    Shape a = t.shape(), b = x0.shape();
    a[axis] = b[axis] = 0;
    if (a != b) return invalid_argument(node_label(c.node) + ": input shapes disagree off the concat axis");
    s[axis] += t.dim(static_cast<int>(axis));
  }
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < axis; ++i) outer *= s[i];
  for (size_t i = axis + 1; i < s.size(); ++i) inner *= s[i];
  Tensor y = Tensor::uninitialized(x0.dtype(), s);
  int64_t off = 0;
  for (const Tensor& t : c.in) {
    const int64_t len = t.dim(static_cast<int>(axis)) * inner;
    for (int64_t o = 0; o < outer; ++o) copy_elems(t, o * len, y, o * s[axis] * inner + off, len);
    off += len;
  }
  c.out = {y};
  return Status::Ok();
}

Status concat_backward(BackwardContext& c) {
  const Shape& s = c.out[0].shape();
  const int64_t axis = c.node.attr_int("axis", 0) < 0 ? c.node.attr_int("axis", 0) + static_cast<int64_t>(s.size())
                                                      : c.node.attr_int("axis", 0);
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < axis; ++i) outer *= s[i];
  for (size_t i = axis + 1; i < s.size(); ++i) inner *= s[i];
  int64_t off = 0;
  for (size_t k = 0; k < c.in.size(); ++k) {
    const int64_t len = c.in[k].dim(static_cast<int>(axis)) * inner;
    if (c.need[k]) {
      Tensor d = Tensor::uninitialized(DType::kFloat32, c.in[k].shape());
      const float* g = c.dout[0].data<float>();
      for (int64_t o = 0; o < outer; ++o)
        std::copy(g + o * s[axis] * inner + off, g + o * s[axis] * inner + off + len, d.data<float>() + o * len);
      c.din[k] = d;
    }
    off += len;
  }
  return Status::Ok();
}

// Slice: for each output element, its offset in the input.
Expected<std::pair<Shape, std::vector<int64_t>>> slice_map(const ir::Node& node, const std::vector<Tensor>& in) {
  const Tensor& x = in[0];
  std::vector<int64_t> starts, ends, axes, steps;
  if (in.size() > 2 && in[1].defined() && in[2].defined()) {
    starts = in[1].to_int64_vector();
    ends = in[2].to_int64_vector();
    if (in.size() > 3 && in[3].defined()) axes = in[3].to_int64_vector();
    if (in.size() > 4 && in[4].defined()) steps = in[4].to_int64_vector();
  } else {
    starts = node.attr_ints("starts");
    ends = node.attr_ints("ends");
    axes = node.attr_ints("axes");
  }
  if (starts.size() != ends.size()) return invalid_argument(node_label(node) + ": starts and ends differ in length");
  if (axes.empty())
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  if (steps.empty()) steps.assign(starts.size(), 1);
  const int r = x.rank();
  std::vector<int64_t> b(r, 0), st(r, 1);
  Shape out = x.shape();
  for (size_t i = 0; i < starts.size(); ++i) {
    QTK_ASSIGN_OR_RETURN(int64_t a, norm_axis(node, axes[i], r));
    const int64_t dim = x.dim(static_cast<int>(a)), step = steps[i];
    if (step == 0) return invalid_argument(node_label(node) + ": step 0");
    int64_t s0 = starts[i] < 0 ? starts[i] + dim : starts[i], e0 = ends[i] < 0 ? ends[i] + dim : ends[i];
    if (step > 0) {
      s0 = std::clamp<int64_t>(s0, 0, dim);
      e0 = std::clamp<int64_t>(e0, 0, dim);
      out[a] = e0 > s0 ? (e0 - s0 + step - 1) / step : 0;
    } else {
      s0 = std::clamp<int64_t>(s0, 0, dim - 1);
      e0 = std::clamp<int64_t>(e0, -1, dim - 1);
      out[a] = s0 > e0 ? (s0 - e0 - step - 1) / -step : 0;
    }
    b[a] = s0;
    st[a] = step;
  }
  std::vector<int64_t> in_stride(r, 1);
  for (int i = r; i-- > 1;) in_stride[i - 1] = in_stride[i] * x.dim(i);
  const int64_t n = shape_numel(out);
  std::vector<int64_t> offs(n);
  std::vector<int64_t> idx(r, 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t o = 0;
    for (int d = 0; d < r; ++d) o += (b[d] + idx[d] * st[d]) * in_stride[d];
    offs[i] = o;
    for (int d = r; d-- > 0;) {
      if (++idx[d] < out[d]) break;
      idx[d] = 0;
    }
  }
  return std::make_pair(out, offs);
}

Status slice_forward(ForwardContext& c) {
  QTK_RETURN_IF_ERROR(expect_known_dtype(c, 0));
  QTK_ASSIGN_OR_RETURN(auto m, slice_map(c.node, c.in));
  Tensor y = Tensor::uninitialized(c.in[0].dtype(), m.first);
  for (size_t i = 0; i < m.second.size(); ++i) copy_elems(c.in[0], m.second[i], y, static_cast<int64_t>(i), 1);
  c.out = {y};
  return Status::Ok();
}

Status slice_backward(BackwardContext& c) {
  if (!c.need[0]) return Status::Ok();
  QTK_ASSIGN_OR_RETURN(auto m, slice_map(c.node, c.in));
  Tensor dx(DType::kFloat32, c.in[0].shape());
  for (size_t i = 0; i < m.second.size(); ++i) dx.data<float>()[m.second[i]] += c.dout[0].data<float>()[i];
  c.din[0] = dx;
  return Status::Ok();
}

struct GatherDims {
  int64_t outer = 1, dim = 0, inner = 1;
  Shape out;
  std::vector<int64_t> idx;
};

Expected<GatherDims> gather_dims(const ir::Node& node, const Tensor& x, const Tensor& ind) {
  if (ind.dtype() != DType::kInt64 && ind.dtype() != DType::kInt32)
    return invalid_argument(node_label(node) + ": indices must be int32 or int64");
  QTK_ASSIGN_OR_RETURN(int64_t axis, norm_axis(node, node.attr_int("axis", 0), x.rank()));
  GatherDims g;
  g.dim = x.dim(static_cast<int>(axis));
  for (int64_t i = 0; i < axis; ++i) g.outer *= x.dim(static_cast<int>(i));
  for (int i = static_cast<int>(axis) + 1; i < x.rank(); ++i) g.inner *= x.dim(i);
  g.out.assign(x.shape().begin(), x.shape().begin() + axis);
  g.out.insert(g.out.end(), ind.shape().begin(), ind.shape().end());
  g.out.insert(g.out.end(), x.shape().begin() + axis + 1, x.shape().end());
  g.idx = ind.to_int64_vector();
  for (int64_t& v : g.idx) {
    if (v < -g.dim || v >= g.dim)
      return invalid_argument(node_label(node) + ": index " + std::to_string(v) + " out of range for dim " +
                              std::to_string(g.dim));
    if (v < 0) v += g.dim;
  }
  return g;
}

Status gather_forward(ForwardContext& c) {
  QTK_RETURN_IF_ERROR(expect_known_dtype(c, 0));
  if (c.in.size() < 2 || !c.in[1].defined()) return invalid_argument(node_label(c.node) + ": indices missing");
  QTK_ASSIGN_OR_RETURN(GatherDims g, gather_dims(c.node, c.in[0], c.in[1]));
  Tensor y = Tensor::uninitialized(c.in[0].dtype(), g.out);
  const int64_t k = static_cast<int64_t>(g.idx.size());
  for (int64_t o = 0; o < g.outer; ++o)
    for (int64_t j = 0; j < k; ++j) copy_elems(c.in[0], (o * g.dim + g.idx[j]) * g.inner, y, (o * k + j) * g.inner, g.inner);
  c.out = {y};
  return Status::Ok();
}

Status gather_backward(BackwardContext& c) {
  if (!c.need[0]) return Status::Ok();
  QTK_ASSIGN_OR_RETURN(GatherDims g, gather_dims(c.node, c.in[0], c.in[1]));
  Tensor dx(DType::kFloat32, c.in[0].shape());
  const int64_t k = static_cast<int64_t>(g.idx.size());
  const float* pg = c.dout[0].data<float>();
  float* pd = dx.data<float>();
  for (int64_t o = 0; o < g.outer; ++o)
    for (int64_t j = 0; j < k; ++j)
      for (int64_t t = 0; t < g.inner; ++t) pd[(o * g.dim + g.idx[j]) * g.inner + t] += pg[(o * k + j) * g.inner + t];
  c.din[0] = dx;
  return Status::Ok();
}

}  // namespace

void register_shape_grad_ops(GradOpTable& t) {
  t.push_back({"Flatten", {flatten_forward, view_backward}});
  t.push_back({"Reshape", {reshape_forward, view_backward, only_first_input_differentiable}});
  t.push_back({"Squeeze", {squeeze_forward, view_backward, only_first_input_differentiable}});
  t.push_back({"Unsqueeze", {unsqueeze_forward, view_backward, only_first_input_differentiable}});
  t.push_back({"Transpose", {transpose_forward, transpose_backward}});
  t.push_back({"Concat", {concat_forward, concat_backward}});
  t.push_back({"Slice", {slice_forward, slice_backward, only_first_input_differentiable}});
  t.push_back({"Gather", {gather_forward, gather_backward, only_first_input_differentiable}});
}

}  // namespace qtk::train
