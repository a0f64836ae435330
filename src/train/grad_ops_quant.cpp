// Fake quantization for quantization-aware training: qtk.FakeQuant(x, scale,
// zero_point[, scale_base]) with attributes qmin, qmax, axis and block_size.
// With scale_base the step size is s = scale * scale_base: QAT trains scale
// as a relative factor starting at 1, so Adam's steps (about lr each, whatever
// the gradient's size) move every scale by the same fraction instead of by
// lr in absolute units, which would swamp an int8 weight scale of 1e-3.
//   forward   q = clamp(round_half_even(x / s) + zp, qmin, qmax), y = (q - zp) * s
//             (the arithmetic of QuantizeLinear -> DequantizeLinear, so an
//             exported QDQ model reproduces it);
//   backward  x: straight-through inside the range, zero where clamped;
//             scale: LSQ (Esser et al. 2020), dy/ds = round(x/s) - x/s inside,
//             (qmin - zp) or (qmax - zp) where clamped, times the gradient scale
//             g = 1 / sqrt(numel_per_scale * qmax) that keeps the scale's step
//             size comparable to the weights'; zero point: fixed (no gradient).
// Scale is one value (per tensor), one per channel along `axis` (shape [C]),
// or blocked (block_size > 0: x's shape with dim `axis` divided by it).
#include <cmath>

#include "train/fake_quant.h"
#include "train/grad_op.h"

namespace qtk::train {
namespace {

Expected<ScaleMap> scale_map(const ir::Node& n, const Tensor& x, const Tensor& s) {
  return make_scale_map(x.shape(), s.numel(), n.attr_int("axis", 1), n.attr_int("block_size", 0), node_label(n));
}

struct Params {
  ScaleMap map;
  float qmin, qmax;
  std::vector<float> zp;     // per scale
  std::vector<float> scale;  // effective step size per scale (floored at kMinScale)
  std::vector<float> base;   // scale_base (ones without it)
};

Expected<Params> params(const ir::Node& n, const std::vector<Tensor>& in) {
  if (in.size() < 2 || !in[0].defined() || !in[1].defined())
    return invalid_argument(node_label(n) + ": FakeQuant needs x and scale");
  if (in[0].dtype() != DType::kFloat32 || in[1].dtype() != DType::kFloat32)
    return unsupported(node_label(n) + ": x and scale must be float32");
  Params p;
  QTK_ASSIGN_OR_RETURN(p.map, scale_map(n, in[0], in[1]));
  p.qmin = static_cast<float>(n.attr_int("qmin", -128));
  p.qmax = static_cast<float>(n.attr_int("qmax", 127));
  if (!(p.qmin < p.qmax)) return invalid_argument(node_label(n) + ": needs qmin < qmax");
  p.zp.assign(in[1].numel(), 0.f);
  if (in.size() > 2 && in[2].defined()) {
    if (in[2].numel() != in[1].numel())
      return invalid_argument(node_label(n) + ": zero point and scale differ in size");
    const std::vector<float> z = in[2].to_float_vector();
    for (size_t i = 0; i < z.size(); ++i) p.zp[i] = z[i];
  }
  p.base.assign(in[1].numel(), 1.f);
  if (in.size() > 3 && in[3].defined()) {
    if (in[3].numel() != in[1].numel() || in[3].dtype() != DType::kFloat32)
      return invalid_argument(node_label(n) + ": scale_base must be float32 and the size of scale");
    p.base = in[3].to_float_vector();
  }
  p.scale.resize(p.base.size());
  const float* s = in[1].data<float>();
  for (size_t i = 0; i < p.scale.size(); ++i) p.scale[i] = std::max(s[i] * p.base[i], kMinScale);
  return p;
}

Status fake_quant_forward(ForwardContext& c) {
  QTK_ASSIGN_OR_RETURN(Params p, params(c.node, c.in));
  const Tensor& x = c.in[0];
  const float* s = p.scale.data();
  Tensor y = Tensor::uninitialized(DType::kFloat32, x.shape());
  const float* px = x.data<float>();
  float* py = y.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t k = p.map.index(i);
    const float sk = s[k];
    float q = std::nearbyint(px[i] / sk) + p.zp[k];
    q = std::min(std::max(q, p.qmin), p.qmax);
    py[i] = (q - p.zp[k]) * sk;
  }
  c.out = {y};
  return Status::Ok();
}

Status fake_quant_backward(BackwardContext& c) {
  QTK_ASSIGN_OR_RETURN(Params p, params(c.node, c.in));
  const Tensor& x = c.in[0];
  const float* px = x.data<float>();
  const float* s = p.scale.data();
  const float* dy = c.dout[0].data<float>();
  Tensor dx(DType::kFloat32, x.shape());
  std::vector<double> ds(c.in[1].numel(), 0.0);
  float* pdx = dx.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t k = p.map.index(i);
    const float sk = s[k];
    const float v = px[i] / sk;
    if (v + p.zp[k] < p.qmin) {
      ds[k] += dy[i] * (p.qmin - p.zp[k]);
    } else if (v + p.zp[k] > p.qmax) {
      ds[k] += dy[i] * (p.qmax - p.zp[k]);
    } else {
      pdx[i] = dy[i];
      ds[k] += dy[i] * (std::nearbyint(v) - v);
    }
  }
  if (c.need[0]) c.din[0] = dx;
  if (c.need[1]) {
    const double per_scale = static_cast<double>(x.numel()) / static_cast<double>(c.in[1].numel());
    const double g = 1.0 / std::sqrt(per_scale * std::max(1.f, p.qmax));
    Tensor dsc(DType::kFloat32, c.in[1].shape());
    for (size_t k = 0; k < ds.size(); ++k) dsc.data<float>()[k] = static_cast<float>(ds[k] * g * p.base[k]);
    c.din[1] = dsc;
  }
  return Status::Ok();
}

bool fake_quant_differentiable(int i) { return i < 2; }

}  // namespace

Expected<ScaleMap> make_scale_map(const Shape& x, int64_t scale_numel, int64_t axis, int64_t block,
                                  const std::string& label) {
  ScaleMap m;
  if (scale_numel == 1 && block <= 0) return m;
  m.per_tensor = false;
  const int64_t r = static_cast<int64_t>(x.size());
  if (axis < 0) axis += r;
  if (axis < 0 || axis >= r)
    return invalid_argument(label + ": axis out of range for a tensor of rank " + std::to_string(r));
  for (int64_t d = 0; d < axis; ++d) m.outer *= x[d];
  m.channels = x[axis];
  for (int64_t d = axis + 1; d < r; ++d) m.inner *= x[d];
  m.block = block;
  if (m.block > 0 && m.channels % m.block != 0) return unsupported(label + ": block_size must divide the axis length");
  const int64_t want = m.block > 0 ? m.outer * (m.channels / m.block) * m.inner : m.channels;
  if (scale_numel != want)
    return invalid_argument(label + ": scale has " + std::to_string(scale_numel) + " values, expected " +
                            std::to_string(want));
  return m;
}

void register_quant_grad_ops(GradOpTable& t) {
  t.push_back({kFakeQuantOp, {fake_quant_forward, fake_quant_backward, fake_quant_differentiable, nullptr}});
}

}  // namespace qtk::train
