// Broadcast and selection ops that exported transformers use around their
// shape chains and class tokens: Expand (gradient summed back), Where
// (gradient routed by the condition), Equal and ConstantOfShape (no gradient).
#include <cstring>

#include "train/broadcast.h"
#include "train/grad_op.h"

namespace qtk::train {
namespace {

// out[i] = in[offs[i]] for any dtype.
Tensor gather_elems(const Tensor& in, const Shape& s, const std::vector<int64_t>& offs) {
  Tensor y = Tensor::uninitialized(in.dtype(), s);
  const size_t es = dtype_size(in.dtype());
  const auto* src = static_cast<const std::byte*>(in.raw());
  auto* dst = static_cast<std::byte*>(y.raw());
  for (size_t i = 0; i < offs.size(); ++i) std::memcpy(dst + i * es, src + offs[i] * es, es);
  return y;
}

Status expand_forward(ForwardContext& c) {
  if (c.in.size() < 2 || !c.in[0].defined() || !c.in[1].defined())
    return invalid_argument(node_label(c.node) + ": Expand needs its input and a shape");
  const Tensor& x = c.in[0];
  auto s = broadcast_shape(x.shape(), c.in[1].to_int64_vector());
  if (!s.ok()) return s.status().with_context(node_label(c.node));
  c.out = {gather_elems(x, *s, broadcast_offsets(x.shape(), *s))};
  return Status::Ok();
}

Status expand_backward(BackwardContext& c) {
  if (c.need[0]) c.din[0] = reduce_to_shape(c.dout[0], c.in[0].shape());
  return Status::Ok();
}

bool where_differentiable(int i) { return i > 0; }

Status where_forward(ForwardContext& c) {
  if (c.in.size() < 3 || !c.in[0].defined() || !c.in[1].defined() || !c.in[2].defined())
    return invalid_argument(node_label(c.node) + ": Where needs three inputs");
  const Tensor &cond = c.in[0], &a = c.in[1], &b = c.in[2];
  if (cond.dtype() != DType::kBool || a.dtype() != b.dtype() || dtype_size(a.dtype()) == 0)
    return invalid_argument(node_label(c.node) + ": Where wants a bool condition and two inputs of one dtype");
  auto s1 = broadcast_shape(cond.shape(), a.shape());
  if (!s1.ok()) return s1.status().with_context(node_label(c.node));
  auto s = broadcast_shape(*s1, b.shape());
  if (!s.ok()) return s.status().with_context(node_label(c.node));
  const auto oc = broadcast_offsets(cond.shape(), *s), oa = broadcast_offsets(a.shape(), *s),
             ob = broadcast_offsets(b.shape(), *s);
  Tensor y = Tensor::uninitialized(a.dtype(), *s);
  const size_t es = dtype_size(a.dtype());
  for (size_t i = 0; i < oc.size(); ++i) {
    const bool take_a = cond.data<bool>()[oc[i]];
    std::memcpy(static_cast<std::byte*>(y.raw()) + i * es,
                static_cast<const std::byte*>((take_a ? a : b).raw()) + (take_a ? oa[i] : ob[i]) * es, es);
  }
  c.out = {y};
  return Status::Ok();
}

Status where_backward(BackwardContext& c) {
  const Tensor &cond = c.in[0], &g = c.dout[0];
  const auto oc = broadcast_offsets(cond.shape(), g.shape());
  for (int k = 1; k <= 2; ++k) {
    if (!c.need[k]) continue;
    Tensor masked(DType::kFloat32, g.shape());
    for (size_t i = 0; i < oc.size(); ++i)
      if (cond.data<bool>()[oc[i]] == (k == 1)) masked.data<float>()[i] = g.data<float>()[i];
    c.din[k] = reduce_to_shape(masked, c.in[k].shape());
  }
  return Status::Ok();
}

Status equal_forward(ForwardContext& c) {
  if (c.in.size() < 2 || !c.in[0].defined() || !c.in[1].defined())
    return invalid_argument(node_label(c.node) + ": Equal needs two inputs");
  const Tensor &a = c.in[0], &b = c.in[1];
  auto s = broadcast_shape(a.shape(), b.shape());
  if (!s.ok()) return s.status().with_context(node_label(c.node));
  const auto oa = broadcast_offsets(a.shape(), *s), ob = broadcast_offsets(b.shape(), *s);
  Tensor y(DType::kBool, *s);
  for (size_t i = 0; i < oa.size(); ++i) y.data<bool>()[i] = a.get_as_double(oa[i]) == b.get_as_double(ob[i]);
  c.out = {y};
  return Status::Ok();
}

Status constant_of_shape_forward(ForwardContext& c) {
  if (c.in.empty() || !c.in[0].defined()) return invalid_argument(node_label(c.node) + ": shape input is missing");
  const Shape s = c.in[0].to_int64_vector();
  const ir::Attribute* v = c.node.attr("value");
  const Tensor fill = v && v->type == ir::AttrType::kTensor ? v->t : Tensor::scalar<float>(0.f);
  if (fill.numel() != 1 || dtype_size(fill.dtype()) == 0)
    return invalid_argument(node_label(c.node) + ": value must hold one number");
  Tensor y = Tensor::uninitialized(fill.dtype(), s);
  const size_t es = dtype_size(fill.dtype());
  for (int64_t i = 0; i < y.numel(); ++i) std::memcpy(static_cast<std::byte*>(y.raw()) + i * es, fill.raw(), es);
  c.out = {y};
  return Status::Ok();
}

}  // namespace

void register_select_grad_ops(GradOpTable& t) {
  t.push_back({"Expand", {expand_forward, expand_backward, only_first_input_differentiable}});
  t.push_back({"Where", {where_forward, where_backward, where_differentiable}});
  t.push_back({"Equal", {equal_forward, nullptr}});
  t.push_back({"ConstantOfShape", {constant_of_shape_forward, nullptr}});
}

}  // namespace qtk::train
