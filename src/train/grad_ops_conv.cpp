// 2-D Conv (groups, strides, dilations, pads) as im2col + SGEMM per image;
// images are split over the pool, each worker running single-threaded GEMMs
// and keeping its own weight-gradient accumulator. The weights are packed
// once per call, im2col writes straight into sgemm's packed-B layout, and
// the im2col buffers are per-thread scratch reused across calls.
#include <algorithm>
#include <atomic>
#include <vector>

#include "runtime/kernels/ref/sgemm.h"
#include "train/conv_geometry.h"
#include "train/grad_op.h"

namespace qtk::train {
namespace {

using rt::ref::SgemmPath;

struct ConvDims {
  int64_t n, c, m, groups, cg, mg, kk, p;
  Window2d w;
};

Expected<ConvDims> conv_dims(const ir::Node& node, const Tensor& x, const Tensor& wt) {
  if (x.rank() != 4 || wt.rank() != 4)
    return unsupported(node_label(node) + ": training supports 2-D Conv (4-D input and weight), got " +
                       shape_to_string(x.shape()) + " and " + shape_to_string(wt.shape()));
  ConvDims d;
  d.n = x.dim(0);
  d.c = x.dim(1);
  d.m = wt.dim(0);
  d.groups = node.attr_int("group", 1);
  if (d.groups < 1 || d.c % d.groups || d.m % d.groups || wt.dim(1) * d.groups != d.c)
    return invalid_argument(node_label(node) + ": input " + shape_to_string(x.shape()) + ", weight " +
                            shape_to_string(wt.shape()) + " and group " + std::to_string(d.groups) + " disagree");
  const auto ks = node.attr_ints("kernel_shape", {wt.dim(2), wt.dim(3)});
  if (ks.size() != 2 || ks[0] != wt.dim(2) || ks[1] != wt.dim(3))
    return invalid_argument(node_label(node) + ": kernel_shape disagrees with the weight");
  QTK_ASSIGN_OR_RETURN(d.w, window_2d(node, x.dim(2), x.dim(3), wt.dim(2), wt.dim(3), false));
  d.cg = d.c / d.groups;
  d.mg = d.m / d.groups;
  d.kk = d.cg * wt.dim(2) * wt.dim(3);
  d.p = d.w.oh * d.w.ow;
  return d;
}

// Per-thread scratch kept between calls (pool workers live as long as the
// pool), so a step neither allocates nor page-faults its im2col buffers.
float* scratch(int which, int64_t floats) {
  thread_local rt::ref::AlignedFloats bufs[3];
  return bufs[which].get(floats);
}

Status conv_forward(ForwardContext& c) {
  QTK_RETURN_IF_ERROR(expect_float(c, 0));
  QTK_RETURN_IF_ERROR(expect_float(c, 1));
  const Tensor &x = c.in[0], &wt = c.in[1];
  QTK_ASSIGN_OR_RETURN(ConvDims d, conv_dims(c.node, x, wt));
  const bool has_b = c.in.size() > 2 && c.in[2].defined();
  if (has_b && c.in[2].numel() != d.m)
    return invalid_argument(node_label(c.node) + ": bias has " + std::to_string(c.in[2].numel()) + " values, want " +
                            std::to_string(d.m));
  Tensor y = Tensor::uninitialized(DType::kFloat32, {d.n, d.m, d.w.oh, d.w.ow});
  const float* px = x.data<float>();
  const float* pw = wt.data<float>();
  const float* pb = has_b ? c.in[2].data<float>() : nullptr;
  float* py = y.data<float>();
  // Weights packed once for all images; each image's im2col is written
  // straight into the packed-B layout (no separate packing pass).
  const SgemmPath path = rt::ref::sgemm_resolve_path(SgemmPath::kAuto);
  const int64_t nr = rt::ref::sgemm_packed_b_width(path);
  const int64_t a_floats = rt::ref::sgemm_packed_a_floats(d.mg, d.kk, path);
  rt::ref::AlignedFloats packed_w;
  float* pa = packed_w.get(a_floats * d.groups);
  if (pa == nullptr) return internal_error(node_label(c.node) + ": out of memory packing the weights");
  for (int64_t g = 0; g < d.groups; ++g) rt::ref::sgemm_pack_a(false, d.mg, d.kk, pw + g * d.mg * d.kk, d.kk, pa + g * a_floats, path);
  const int64_t b_floats = rt::ref::sgemm_packed_b_floats(d.kk, d.p, path);
  std::atomic<bool> oom{false};
  parallel_chunks(c.pool, d.n, [&](int64_t, int64_t b, int64_t e) {
    float* col = scratch(0, b_floats);
    if (col == nullptr) {
      oom = true;
      return;
    }
    for (int64_t i = b; i < e; ++i)
      for (int64_t g = 0; g < d.groups; ++g) {
        im2col_2d_packed(px + (i * d.c + g * d.cg) * d.w.ih * d.w.iw, d.cg, d.w, nr, col);
        float* out = py + (i * d.m + g * d.mg) * d.p;
        if (pb)
          for (int64_t o = 0; o < d.mg; ++o) std::fill(out + o * d.p, out + (o + 1) * d.p, pb[g * d.mg + o]);
        rt::ref::sgemm_packed(d.mg, d.p, d.kk, 1.f, pa + g * a_floats, col, pb ? 1.f : 0.f, out, d.p, nullptr, path);
      }
  });
  if (oom) return internal_error(node_label(c.node) + ": out of memory for the im2col buffer");
  c.out = {y};
  return Status::Ok();
}

Status conv_backward(BackwardContext& c) {
  const Tensor &x = c.in[0], &wt = c.in[1], &dy = c.dout[0];
  QTK_ASSIGN_OR_RETURN(ConvDims d, conv_dims(c.node, x, wt));
  const bool need_x = c.need[0], need_w = c.need[1], need_b = c.need.size() > 2 && c.need[2];
  Tensor dx, dw, db;
  // Each worker zeroes its own images' slices before col2im adds into them.
  if (need_x) dx = Tensor::uninitialized(DType::kFloat32, x.shape());
  const int64_t chunks = num_chunks(c.pool, d.n);
  std::vector<std::vector<float>> dw_part(need_w ? chunks : 0, std::vector<float>(static_cast<size_t>(wt.numel())));
  const float* px = x.data<float>();
  const float* pw = wt.data<float>();
  const float* pg = dy.data<float>();
  // dX: W_g^T packed once as A; each image's dY_g is packed as B.
  const SgemmPath path = rt::ref::sgemm_resolve_path(SgemmPath::kAuto);
  const int64_t nr = rt::ref::sgemm_packed_b_width(path);
  const int64_t at_floats = need_x ? rt::ref::sgemm_packed_a_floats(d.kk, d.mg, path) : 0;
  rt::ref::AlignedFloats packed_wt;
  float* pat = need_x ? packed_wt.get(at_floats * d.groups) : nullptr;
  if (need_x && pat == nullptr) return internal_error(node_label(c.node) + ": out of memory packing the weights");
  for (int64_t g = 0; need_x && g < d.groups; ++g)
    rt::ref::sgemm_pack_a(true, d.kk, d.mg, pw + g * d.mg * d.kk, d.kk, pat + g * at_floats, path);
  const int64_t image = d.c * d.w.ih * d.w.iw;
  std::atomic<bool> oom{false};
  parallel_chunks(c.pool, d.n, [&](int64_t chunk, int64_t b, int64_t e) {
    float* col = need_x ? scratch(0, d.kk * d.p) : nullptr;
    float* dyp = need_x ? scratch(1, rt::ref::sgemm_packed_b_floats(d.mg, d.p, path)) : nullptr;
    float* colt = need_w ? scratch(2, rt::ref::sgemm_packed_b_floats(d.p, d.kk, path)) : nullptr;
    if ((need_x && (col == nullptr || dyp == nullptr)) || (need_w && colt == nullptr)) {
      oom = true;
      return;
    }
    for (int64_t i = b; i < e; ++i) {
      if (need_x) std::fill(dx.data<float>() + i * image, dx.data<float>() + (i + 1) * image, 0.f);
      for (int64_t g = 0; g < d.groups; ++g) {
        const float* gy = pg + (i * d.m + g * d.mg) * d.p;
        if (need_w) {  // dW_g += dY_g col^T, col^T written packed
          im2col_2d_packed_t(px + i * image + g * d.cg * d.w.ih * d.w.iw, d.cg, d.w, nr, colt);
          rt::ref::sgemm_prepacked_b(false, d.mg, d.kk, d.p, 1.f, gy, d.p, colt, 1.f,
                                     dw_part[chunk].data() + g * d.mg * d.kk, d.kk, nullptr, path);
        }
        if (need_x) {  // dcol = W_g^T dY_g, scattered back
          rt::ref::sgemm_pack_b(false, d.mg, d.p, gy, d.p, dyp, path);
          rt::ref::sgemm_packed(d.kk, d.p, d.mg, 1.f, pat + g * at_floats, dyp, 0.f, col, d.p, nullptr, path);
          col2im_2d(col, d.cg, d.w, dx.data<float>() + i * image + g * d.cg * d.w.ih * d.w.iw);
        }
      }
    }
  });
  if (oom) return internal_error(node_label(c.node) + ": out of memory for the im2col buffer");
  if (need_x) c.din[0] = dx;
  if (need_w) {
    dw = Tensor::uninitialized(DType::kFloat32, wt.shape());
    float* p = dw.data<float>();
    std::copy(dw_part[0].begin(), dw_part[0].end(), p);
    for (size_t k = 1; k < dw_part.size(); ++k)
      for (int64_t j = 0; j < wt.numel(); ++j) p[j] += dw_part[k][j];
    c.din[1] = dw;
  }
  if (need_b) {
    db = Tensor(DType::kFloat32, c.in[2].shape());
    float* p = db.data<float>();
    for (int64_t i = 0; i < d.n; ++i)
      for (int64_t o = 0; o < d.m; ++o) {
        const float* gy = pg + (i * d.m + o) * d.p;
        float s = 0.f;
        for (int64_t j = 0; j < d.p; ++j) s += gy[j];
        p[o] += s;
      }
    c.din[2] = db;
  }
  return Status::Ok();
}

}  // namespace

void register_conv_grad_ops(GradOpTable& t) { t.push_back({"Conv", {conv_forward, conv_backward}}); }

}  // namespace qtk::train
