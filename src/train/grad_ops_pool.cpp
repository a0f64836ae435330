// 2-D MaxPool (the argmax is kept for backward), AveragePool and
// GlobalAveragePool.
#include <limits>

#include "train/conv_geometry.h"
#include "train/grad_op.h"

namespace qtk::train {
namespace {

Expected<Window2d> pool_window(const ir::Node& node, const Tensor& x) {
  if (x.rank() != 4) return unsupported(node_label(node) + ": training supports 2-D pooling (4-D input) only");
  const auto ks = node.attr_ints("kernel_shape");
  if (ks.size() != 2) return unsupported(node_label(node) + ": kernel_shape must have 2 values");
  return window_2d(node, x.dim(2), x.dim(3), ks[0], ks[1], node.attr_int("ceil_mode", 0) != 0);
}

Status maxpool_forward(ForwardContext& c) {
  QTK_RETURN_IF_ERROR(expect_float(c, 0));
  if (c.node.outputs.size() > 1 && !c.node.outputs[1].empty())
    return unsupported(node_label(c.node) + ": the Indices output is not supported for training");
  const Tensor& x = c.in[0];
  QTK_ASSIGN_OR_RETURN(Window2d w, pool_window(c.node, x));
  const int64_t planes = x.dim(0) * x.dim(1), ip = w.ih * w.iw, op = w.oh * w.ow;
  Tensor y = Tensor::uninitialized(DType::kFloat32, {x.dim(0), x.dim(1), w.oh, w.ow});
  Tensor arg = Tensor::uninitialized(DType::kInt32, y.shape());
  const float* px = x.data<float>();
  float* py = y.data<float>();
  int32_t* pa = arg.data<int32_t>();
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t oy = 0; oy < w.oh; ++oy)
      for (int64_t ox = 0; ox < w.ow; ++ox) {
        float best = -std::numeric_limits<float>::infinity();
        int32_t at = -1;
        for (int64_t ky = 0; ky < w.kh; ++ky) {
          const int64_t iy = oy * w.sh - w.pt + ky * w.dh;
          if (iy < 0 || iy >= w.ih) continue;
          for (int64_t kx = 0; kx < w.kw; ++kx) {
            const int64_t ix = ox * w.sw - w.pl + kx * w.dw;
            if (ix < 0 || ix >= w.iw) continue;
            const float v = px[p * ip + iy * w.iw + ix];
            if (at < 0 || v > best) {
              best = v;
              at = static_cast<int32_t>(iy * w.iw + ix);
            }
          }
        }
        py[p * op + oy * w.ow + ox] = best;
        pa[p * op + oy * w.ow + ox] = at;
      }
  c.out.assign(c.node.outputs.size(), Tensor());
  c.out[0] = y;
  c.saved = {arg};
  return Status::Ok();
}

Status maxpool_backward(BackwardContext& c) {
  if (!c.need[0]) return Status::Ok();
  const Tensor& x = c.in[0];
  const Tensor& g = c.dout[0];
  const int64_t planes = x.dim(0) * x.dim(1), ip = x.dim(2) * x.dim(3), op = g.dim(2) * g.dim(3);
  Tensor dx(DType::kFloat32, x.shape());
  const int32_t* pa = c.saved[0].data<int32_t>();
  const float* pg = g.data<float>();
  float* pd = dx.data<float>();
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t j = 0; j < op; ++j)
      if (pa[p * op + j] >= 0) pd[p * ip + pa[p * op + j]] += pg[p * op + j];
  c.din[0] = dx;
  return Status::Ok();
}

// Divisor of each output window: all taps, or only those inside the image.
template <class F>
void for_each_avg_window(const Window2d& w, bool include_pad, F f) {
  for (int64_t oy = 0; oy < w.oh; ++oy)
    for (int64_t ox = 0; ox < w.ow; ++ox) {
      const int64_t y0 = oy * w.sh - w.pt, x0 = ox * w.sw - w.pl;
      int64_t count = 0;
      for (int64_t ky = 0; ky < w.kh; ++ky)
        for (int64_t kx = 0; kx < w.kw; ++kx) {
          const int64_t iy = y0 + ky * w.dh, ix = x0 + kx * w.dw;
          const bool inside = iy >= 0 && iy < w.ih && ix >= 0 && ix < w.iw;
          // With count_include_pad, taps in the explicit pads count, not those
          // past them (a ceil_mode overhang).
          const bool in_pad = iy >= -w.pt && iy < w.ih + w.pb && ix >= -w.pl && ix < w.iw + w.pr;
          if (inside || (include_pad && in_pad)) ++count;
        }
      f(oy * w.ow + ox, y0, x0, count);
    }
}

Status avgpool_forward(ForwardContext& c) {
  QTK_RETURN_IF_ERROR(expect_float(c, 0));
  const Tensor& x = c.in[0];
  QTK_ASSIGN_OR_RETURN(Window2d w, pool_window(c.node, x));
  const bool include_pad = c.node.attr_int("count_include_pad", 0) != 0;
  const int64_t planes = x.dim(0) * x.dim(1), ip = w.ih * w.iw, op = w.oh * w.ow;
  Tensor y = Tensor::uninitialized(DType::kFloat32, {x.dim(0), x.dim(1), w.oh, w.ow});
  for (int64_t p = 0; p < planes; ++p) {
    const float* px = x.data<float>() + p * ip;
    float* py = y.data<float>() + p * op;
    for_each_avg_window(w, include_pad, [&](int64_t o, int64_t y0, int64_t x0, int64_t count) {
      float s = 0.f;
      for (int64_t ky = 0; ky < w.kh; ++ky)
        for (int64_t kx = 0; kx < w.kw; ++kx) {
          const int64_t iy = y0 + ky * w.dh, ix = x0 + kx * w.dw;
          if (iy >= 0 && iy < w.ih && ix >= 0 && ix < w.iw) s += px[iy * w.iw + ix];
        }
      py[o] = count ? s / static_cast<float>(count) : 0.f;
    });
  }
  c.out = {y};
  return Status::Ok();
}

Status avgpool_backward(BackwardContext& c) {
  if (!c.need[0]) return Status::Ok();
  const Tensor& x = c.in[0];
  QTK_ASSIGN_OR_RETURN(Window2d w, pool_window(c.node, x));
  const bool include_pad = c.node.attr_int("count_include_pad", 0) != 0;
  const int64_t planes = x.dim(0) * x.dim(1), ip = w.ih * w.iw, op = w.oh * w.ow;
  Tensor dx(DType::kFloat32, x.shape());
  for (int64_t p = 0; p < planes; ++p) {
    float* pd = dx.data<float>() + p * ip;
    const float* pg = c.dout[0].data<float>() + p * op;
    for_each_avg_window(w, include_pad, [&](int64_t o, int64_t y0, int64_t x0, int64_t count) {
      if (!count) return;
      const float gv = pg[o] / static_cast<float>(count);
      for (int64_t ky = 0; ky < w.kh; ++ky)
        for (int64_t kx = 0; kx < w.kw; ++kx) {
          const int64_t iy = y0 + ky * w.dh, ix = x0 + kx * w.dw;
          if (iy >= 0 && iy < w.ih && ix >= 0 && ix < w.iw) pd[iy * w.iw + ix] += gv;
        }
    });
  }
  c.din[0] = dx;
  return Status::Ok();
}

Status gap_forward(ForwardContext& c) {
  QTK_RETURN_IF_ERROR(expect_float(c, 0));
  const Tensor& x = c.in[0];
  if (x.rank() < 3) return invalid_argument(node_label(c.node) + ": input must have rank >= 3");
  const int64_t planes = x.dim(0) * x.dim(1), inner = x.numel() / planes;
  Shape s = x.shape();
  for (size_t i = 2; i < s.size(); ++i) s[i] = 1;
  Tensor y = Tensor::uninitialized(DType::kFloat32, s);
  for (int64_t p = 0; p < planes; ++p) {
    const float* px = x.data<float>() + p * inner;
    float acc = 0.f;
    for (int64_t j = 0; j < inner; ++j) acc += px[j];
    y.data<float>()[p] = acc / static_cast<float>(inner);
  }
  c.out = {y};
  return Status::Ok();
}

Status gap_backward(BackwardContext& c) {
  if (!c.need[0]) return Status::Ok();
  const Tensor& x = c.in[0];
  const int64_t planes = x.dim(0) * x.dim(1), inner = x.numel() / planes;
  Tensor dx = Tensor::uninitialized(DType::kFloat32, x.shape());
  for (int64_t p = 0; p < planes; ++p) {
    const float gv = c.dout[0].data<float>()[p] / static_cast<float>(inner);
    std::fill(dx.data<float>() + p * inner, dx.data<float>() + (p + 1) * inner, gv);
  }
  c.din[0] = dx;
  return Status::Ok();
}

}  // namespace

void register_pool_grad_ops(GradOpTable& t) {
  t.push_back({"MaxPool", {maxpool_forward, maxpool_backward}});
  t.push_back({"AveragePool", {avgpool_forward, avgpool_backward}});
  t.push_back({"GlobalAveragePool", {gap_forward, gap_backward}});
}

}  // namespace qtk::train
