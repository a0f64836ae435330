// Broadcasting arithmetic (Add, Sub, Mul, Div; Add may carry the Relu after
// it, ForwardContext::relu_after) and the pass-through ops (Identity,
// Dropout at inference semantics, Constant).
#include <algorithm>

#include "train/broadcast.h"
#include "train/conv_geometry.h"
#include "train/grad_op.h"

namespace qtk::train {
namespace {

// Integer arithmetic in shape chains (no gradient).
template <class F>
Status int64_binary(ForwardContext& c, F f) {
  const Tensor &a = c.in[0], &b = c.in[1];
  QTK_ASSIGN_OR_RETURN(Shape s, broadcast_shape(a.shape(), b.shape()));
  Tensor y(DType::kInt64, s);
  const auto oa = broadcast_offsets(a.shape(), s), ob = broadcast_offsets(b.shape(), s);
  for (int64_t i = 0; i < y.numel(); ++i) y.data<int64_t>()[i] = f(a.data<int64_t>()[oa[i]], b.data<int64_t>()[ob[i]]);
  c.out = {y};
  return Status::Ok();
}

template <class F>
Status binary_forward(ForwardContext& c, F f) {
  if (c.in.size() > 1 && c.in[0].defined() && c.in[1].defined() && c.in[0].dtype() == DType::kInt64 &&
      c.in[1].dtype() == DType::kInt64) {
    auto st = int64_binary(c, [f](int64_t a, int64_t b) {
      return static_cast<int64_t>(f(static_cast<float>(a), static_cast<float>(b)));
    });
    return st.with_context(node_label(c.node));
  }
  QTK_RETURN_IF_ERROR(expect_float(c, 0));
  QTK_RETURN_IF_ERROR(expect_float(c, 1));
  if (c.in[0].shape() == c.in[1].shape()) {  // residual adds: no broadcast, split over the pool
    Tensor y = Tensor::uninitialized(DType::kFloat32, c.in[0].shape());
    const float *as = c.in[0].data<float>(), *bs = c.in[1].data<float>();
    float* ys = y.data<float>();
    parallel_elements(c.pool, y.numel(), [&](int64_t b, int64_t e) {
      const float* __restrict pa = as;
      const float* __restrict pb = bs;
      float* __restrict py = ys;
      for (int64_t i = b; i < e; ++i) py[i] = f(pa[i], pb[i]);
    });
    c.out = {y};
    return Status::Ok();
  }
  auto y = broadcast_binary(c.in[0], c.in[1], f);
  if (!y.ok()) return y.status().with_context(node_label(c.node));
  c.out = {*y};
  return Status::Ok();
}

Status add_forward(ForwardContext& c) {
  if (c.relu_after)  // a residual Add and the Relu after it in one pass
    return binary_forward(c, [](float a, float b) {
      const float s = a + b;
      return s > 0.f ? s : 0.f;
    });
  return binary_forward(c, [](float a, float b) { return a + b; });
}
Status sub_forward(ForwardContext& c) { return binary_forward(c, [](float a, float b) { return a - b; }); }
Status mul_forward(ForwardContext& c) { return binary_forward(c, [](float a, float b) { return a * b; }); }
Status div_forward(ForwardContext& c) { return binary_forward(c, [](float a, float b) { return a / b; }); }

Tensor scaled(const Tensor& t, float s) {
  Tensor r = t.clone();
  float* p = r.data<float>();
  for (int64_t i = 0; i < r.numel(); ++i) p[i] *= s;
  return r;
}

// dout where the fused Relu's output y is positive (Relu's backward).
Tensor relu_masked(const Tensor& dout, const Tensor& y, rt::ThreadPool* pool) {
  Tensor d = Tensor::uninitialized(DType::kFloat32, dout.shape());
  const float *gs = dout.data<float>(), *ys = y.data<float>();
  float* ds = d.data<float>();
  parallel_elements(pool, d.numel(), [&](int64_t b, int64_t e) {
    const float* __restrict pg = gs;
    const float* __restrict py = ys;
    float* __restrict pd = ds;
    for (int64_t i = b; i < e; ++i) {
      const float gi = pg[i];  // loaded unconditionally: the loop becomes a vector select
      pd[i] = py[i] > 0.f ? gi : 0.f;
    }
  });
  return d;
}

Status add_backward(BackwardContext& c) {
  const Tensor g = c.relu_after ? relu_masked(c.dout[0], c.out[0], c.pool) : c.dout[0];
  if (c.need[0]) c.din[0] = reduce_to_shape(g, c.in[0].shape());
  if (c.need[1]) c.din[1] = reduce_to_shape(g, c.in[1].shape());
  return Status::Ok();
}

Status sub_backward(BackwardContext& c) {
  if (c.need[0]) c.din[0] = reduce_to_shape(c.dout[0], c.in[0].shape());
  if (c.need[1]) c.din[1] = scaled(reduce_to_shape(c.dout[0], c.in[1].shape()), -1.f);
  return Status::Ok();
}

Status mul_backward(BackwardContext& c) {
  const Tensor& g = c.dout[0];
  if (c.need[0]) {
    QTK_ASSIGN_OR_RETURN(Tensor t, broadcast_binary(g, c.in[1], [](float x, float y) { return x * y; }));
    c.din[0] = reduce_to_shape(t, c.in[0].shape());
  }
  if (c.need[1]) {
    QTK_ASSIGN_OR_RETURN(Tensor t, broadcast_binary(g, c.in[0], [](float x, float y) { return x * y; }));
    c.din[1] = reduce_to_shape(t, c.in[1].shape());
  }
  return Status::Ok();
}

Status div_backward(BackwardContext& c) {
  const Tensor& g = c.dout[0];
  if (c.need[0]) {
    QTK_ASSIGN_OR_RETURN(Tensor t, broadcast_binary(g, c.in[1], [](float x, float y) { return x / y; }));
    c.din[0] = reduce_to_shape(t, c.in[0].shape());
  }
  if (c.need[1]) {  // d(a/b)/db = -y / b
    QTK_ASSIGN_OR_RETURN(Tensor gy, broadcast_binary(g, c.out[0], [](float x, float y) { return x * y; }));
    QTK_ASSIGN_OR_RETURN(Tensor t, broadcast_binary(gy, c.in[1], [](float x, float y) { return -x / y; }));
    c.din[1] = reduce_to_shape(t, c.in[1].shape());
  }
  return Status::Ok();
}

Status identity_forward(ForwardContext& c) {
  if (c.in.empty() || !c.in[0].defined()) return invalid_argument(node_label(c.node) + ": input 0 is missing");
  c.out.assign(c.node.outputs.size(), Tensor());
  c.out[0] = c.in[0];
  if (c.out.size() > 1)  // Dropout's mask: all kept
    c.out[1] = Tensor::from_vector<bool>(c.in[0].shape(), std::vector<bool>(c.in[0].numel(), true));
  return Status::Ok();
}

Status identity_backward(BackwardContext& c) {
  if (c.need[0]) c.din[0] = c.dout[0];
  return Status::Ok();
}

Status constant_forward(ForwardContext& c) {
  const ir::Attribute* v = c.node.attr("value");
  if (v && v->type == ir::AttrType::kTensor) {
    c.out = {v->t};
    return Status::Ok();
  }
  if (const ir::Attribute* f = c.node.attr("value_float")) c.out = {Tensor::scalar<float>(f->f)};
  else if (const ir::Attribute* fs = c.node.attr("value_floats"))
    c.out = {Tensor::from_vector<float>({static_cast<int64_t>(fs->floats.size())}, fs->floats)};
  else if (const ir::Attribute* i = c.node.attr("value_int")) c.out = {Tensor::scalar<int64_t>(i->i)};
  else if (const ir::Attribute* is = c.node.attr("value_ints"))
    c.out = {Tensor::from_vector<int64_t>({static_cast<int64_t>(is->ints.size())}, is->ints)};
  else return unsupported(node_label(c.node) + ": only tensor, float(s) and int(s) values are supported");
  return Status::Ok();
}

// Cast between numeric types (Clip bounds and shape chains in exported
// models); the gradient passes through float -> float casts only.
Status cast_forward(ForwardContext& c) {
  if (c.in.empty() || !c.in[0].defined()) return invalid_argument(node_label(c.node) + ": input 0 is missing");
  const Tensor& x = c.in[0];
  const DType to = static_cast<DType>(c.node.attr_int("to", 0));
  if (to == x.dtype()) {
    c.out = {x};
    return Status::Ok();
  }
  Tensor y(to, x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = x.get_as_double(i);
    switch (to) {
      case DType::kFloat32: y.data<float>()[i] = static_cast<float>(v); break;
      case DType::kFloat64: y.data<double>()[i] = v; break;
      case DType::kInt64: y.data<int64_t>()[i] = static_cast<int64_t>(v); break;
      case DType::kInt32: y.data<int32_t>()[i] = static_cast<int32_t>(v); break;
      case DType::kBool: y.data<bool>()[i] = v != 0; break;
      default:
        return unsupported(node_label(c.node) + ": cast to " + dtype_name(to) + " is not supported for training");
    }
  }
  c.out = {y};
  return Status::Ok();
}

Status cast_backward(BackwardContext& c) {
  if (!c.need[0]) return Status::Ok();
  if (c.in[0].dtype() == DType::kFloat32 && c.out[0].dtype() == DType::kFloat32) c.din[0] = c.dout[0];
  else c.din[0] = Tensor(DType::kFloat32, c.in[0].shape());
  return Status::Ok();
}

Status shape_forward(ForwardContext& c) {
  if (c.in.empty() || !c.in[0].defined()) return invalid_argument(node_label(c.node) + ": input 0 is missing");
  const Shape& s = c.in[0].shape();
  const int64_t r = static_cast<int64_t>(s.size());
  int64_t start = c.node.attr_int("start", 0), end = c.node.attr_int("end", r);
  if (start < 0) start += r;
  if (end < 0) end += r;
  start = std::clamp<int64_t>(start, 0, r);
  end = std::clamp<int64_t>(end, start, r);
  c.out = {Tensor::from_vector<int64_t>({end - start}, std::vector<int64_t>(s.begin() + start, s.begin() + end))};
  return Status::Ok();
}

}  // namespace

void register_elementwise_grad_ops(GradOpTable& t) {
  t.push_back({"Add", {add_forward, add_backward, nullptr, nullptr, true}});
  t.push_back({"Sub", {sub_forward, sub_backward}});
  t.push_back({"Mul", {mul_forward, mul_backward}});
  t.push_back({"Div", {div_forward, div_backward}});
  t.push_back({"Identity", {identity_forward, identity_backward}});
  // Dropout runs at inference semantics (identity): fine-tuning here keeps the
  // model's function fixed rather than adding noise.
  t.push_back({"Dropout", {identity_forward, identity_backward, only_first_input_differentiable}});
  t.push_back({"Constant", {constant_forward, nullptr}});
  t.push_back({"Cast", {cast_forward, cast_backward}});
  t.push_back({"Shape", {shape_forward, nullptr}});
}

}  // namespace qtk::train
