// 2-D Conv (groups, strides, dilations, pads) as im2col + SGEMM per image;
// images are split over the pool, each worker running single-threaded GEMMs
// and keeping its own weight-gradient accumulator. The weights are packed
// once per call, im2col writes straight into sgemm's packed-B layout, and
// the im2col buffers are per-thread scratch reused across calls. Stride-1
// convolutions (most of a ResNet) skip im2col's adjoints in backward: dX is
// the transposed convolution run forward, dW shifted dot products over the
// padded image (conv_weight_grad.h).
#include <algorithm>
#include <atomic>
#include <vector>

#include "runtime/kernels/ref/sgemm.h"
#include "train/conv_geometry.h"
#include "train/conv_stride1_pack.h"
#include "train/conv_weight_grad.h"
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
  thread_local rt::ref::AlignedFloats bufs[6];
  return bufs[which].get(floats);
}

// Forward GEMMs of one convolution: the weights [m, cg*kh*kw] packed once
// per call (sgemm's A layout, one block per group).
struct PackedWeights {
  rt::ref::AlignedFloats buf;
  float* data = nullptr;
  int64_t floats_per_group = 0;
};

bool pack_weights(const ConvDims& d, const float* w, SgemmPath path, PackedWeights& pw) {
  pw.floats_per_group = rt::ref::sgemm_packed_a_floats(d.mg, d.kk, path);
  pw.data = pw.buf.get(pw.floats_per_group * d.groups);
  if (pw.data == nullptr) return false;
  for (int64_t g = 0; g < d.groups; ++g)
    rt::ref::sgemm_pack_a(false, d.mg, d.kk, w + g * d.mg * d.kk, d.kk, pw.data + g * pw.floats_per_group, path);
  return true;
}

// Stride 1 on the AVX-512 path: im2col from the padded image by masked
// loads (conv_stride1_pack.h) instead of the generic row-by-row copy.
struct Stride1Forward {
  bool on = false;
  Stride1PackPlan plan;
  std::vector<int64_t> taps;  // of one group's channels
  int64_t plane = 0;          // floats of one padded channel
  int64_t slab = 1;           // slivers packed per GEMM call
};

Stride1Forward stride1_forward(const ConvDims& d) {
  Stride1Forward s;
  if (!stride1_pack_applies(d.w)) return s;
  s.on = true;
  s.plan = plan_stride1_pack(d.w);
  s.taps = tap_offsets(d.cg, d.w);
  s.plane = (d.w.pt + d.w.ih + d.w.pb) * (d.w.pl + d.w.iw + d.w.pr);
  // Slivers of K x 32 floats within 40 KiB (L1 is 48 KiB on Zen 4/5), at least one.
  s.slab = std::max<int64_t>(1, (int64_t{40} << 10) / (d.kk * kStride1PackWidth * 4));
  return s;
}

// y = conv(x) (+ bias) for images [b, e): each image's im2col is written
// straight into the packed-B layout (no separate packing pass), then one
// GEMM per group writes the output (no zero-fill first). Scratch: col holds
// one group's packed im2col; slot 5 the padded image (stride-1 path).
bool forward_images(const ConvDims& d, const PackedWeights& pw, const Stride1Forward& s1, const float* x,
                    const float* bias, float* y, int64_t b, int64_t e, float* col, SgemmPath path) {
  const int64_t nr = rt::ref::sgemm_packed_b_width(path);
  float* padded = s1.on ? scratch(5, padded_image_floats(d.c, d.w)) : nullptr;
  if (s1.on && padded == nullptr) return false;
  for (int64_t i = b; i < e; ++i) {
    if (s1.on) pad_image(x + i * d.c * d.w.ih * d.w.iw, d.c, d.w, padded);
    for (int64_t g = 0; g < d.groups; ++g) {
      float* out = y + (i * d.m + g * d.mg) * d.p;
      if (bias)
        for (int64_t o = 0; o < d.mg; ++o) std::fill(out + o * d.p, out + (o + 1) * d.p, bias[g * d.mg + o]);
      const float* a = pw.data + g * pw.floats_per_group;
      if (s1.on) {  // a slab of slivers at a time, packed and multiplied while in L1 (the same sums)
        for (int64_t s0 = 0; s0 < s1.plan.slivers; s0 += s1.slab) {
          const int64_t s_end = std::min(s1.plan.slivers, s0 + s1.slab), j0 = s0 * kStride1PackWidth;
          stride1_pack(s1.plan, padded + g * d.cg * s1.plane, s1.taps.data(), d.kk, s0, s_end, col);
          rt::ref::sgemm_packed(d.mg, std::min(d.p, s_end * kStride1PackWidth) - j0, d.kk, 1.f, a, col,
                                bias ? 1.f : 0.f, out + j0, d.p, nullptr, path);
        }
        continue;
      }
      im2col_2d_packed(x + (i * d.c + g * d.cg) * d.w.ih * d.w.iw, d.cg, d.w, nr, col);
      rt::ref::sgemm_packed(d.mg, d.p, d.kk, 1.f, a, col, bias ? 1.f : 0.f, out, d.p, nullptr, path);
    }
  }
  return true;
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
  const SgemmPath path = rt::ref::sgemm_resolve_path(SgemmPath::kAuto);
  PackedWeights pw;
  if (!pack_weights(d, wt.data<float>(), path, pw))
    return internal_error(node_label(c.node) + ": out of memory packing the weights");
  const int64_t b_floats = rt::ref::sgemm_packed_b_floats(d.kk, d.p, path);
  const Stride1Forward s1 = stride1_forward(d);
  std::atomic<bool> oom{false};
  parallel_chunks(c.pool, d.n, [&](int64_t, int64_t b, int64_t e) {
    float* col = scratch(0, b_floats);
    if (col == nullptr ||
        !forward_images(d, pw, s1, x.data<float>(), has_b ? c.in[2].data<float>() : nullptr, y.data<float>(), b, e,
                        col, path))
      oom = true;
  });
  if (oom) return internal_error(node_label(c.node) + ": out of memory for the im2col buffer");
  c.out = {y};
  return Status::Ok();
}

// A stride-1 convolution's input gradient is itself a stride-1 convolution:
// of dY, with the kernel flipped and its in/out channels swapped, padded by
// (k-1)*dilation - pad on each side. Run as a forward conv, it writes dX
// once, where im2col's adjoint (col2im) zero-fills dX and then scatters K
// partial sums into each element. Needs the new pads >= 0.
bool transposed_conv_applies(const Window2d& w) {
  const int64_t eh = (w.kh - 1) * w.dh, ew = (w.kw - 1) * w.dw;
  return direct_paths_enabled() && w.sh == 1 && w.sw == 1 && w.pt >= 0 && w.pb >= 0 && w.pl >= 0 && w.pr >= 0 &&
         w.pt <= eh && w.pb <= eh && w.pl <= ew && w.pr <= ew;
}

// The dX convolution of d (transposed_conv_applies), and its weights
// w'[g][ci][mo][ky][kx] = w[g*mg + mo][ci][kh-1-ky][kw-1-kx].
ConvDims transposed_dims(const ConvDims& d) {
  ConvDims t = d;
  t.c = d.m;
  t.m = d.c;
  t.cg = d.mg;
  t.mg = d.cg;
  t.kk = d.mg * d.w.kh * d.w.kw;
  t.p = d.w.ih * d.w.iw;
  const int64_t eh = (d.w.kh - 1) * d.w.dh, ew = (d.w.kw - 1) * d.w.dw;
  t.w.ih = d.w.oh;
  t.w.iw = d.w.ow;
  t.w.oh = d.w.ih;
  t.w.ow = d.w.iw;
  t.w.pt = eh - d.w.pt;
  t.w.pb = eh - d.w.pb;
  t.w.pl = ew - d.w.pl;
  t.w.pr = ew - d.w.pr;
  return t;
}

std::vector<float> transposed_weights(const ConvDims& d, const float* w) {
  const int64_t kh = d.w.kh, kw = d.w.kw, taps = kh * kw;
  std::vector<float> t(static_cast<size_t>(d.m * d.kk));
  for (int64_t g = 0; g < d.groups; ++g)
    for (int64_t ci = 0; ci < d.cg; ++ci)
      for (int64_t mo = 0; mo < d.mg; ++mo) {
        const float* src = w + ((g * d.mg + mo) * d.cg + ci) * taps;
        float* dst = t.data() + ((g * d.cg + ci) * d.mg + mo) * taps;
        for (int64_t k = 0; k < taps; ++k) dst[k] = src[taps - 1 - k];  // (ky, kx) -> (kh-1-ky, kw-1-kx)
      }
  return t;
}

Status conv_backward(BackwardContext& c) {
  const Tensor &x = c.in[0], &wt = c.in[1], &dy = c.dout[0];
  QTK_ASSIGN_OR_RETURN(ConvDims d, conv_dims(c.node, x, wt));
  const bool need_x = c.need[0], need_w = c.need[1], need_b = c.need.size() > 2 && c.need[2];
  Tensor dx, dw, db;
  if (need_x) dx = Tensor::uninitialized(DType::kFloat32, x.shape());
  const int64_t chunks = num_chunks(c.pool, d.n);
  std::vector<std::vector<float>> dw_part(need_w ? chunks : 0, std::vector<float>(static_cast<size_t>(wt.numel())));
  const float* px = x.data<float>();
  const float* pw = wt.data<float>();
  const float* pg = dy.data<float>();
  const SgemmPath path = rt::ref::sgemm_resolve_path(SgemmPath::kAuto);
  const int64_t nr = rt::ref::sgemm_packed_b_width(path);
  // dX: stride 1 as the transposed convolution (no col2im); otherwise
  // W_g^T packed once as A, each image's dY_g packed as B, col2im.
  const bool transposed_x = need_x && transposed_conv_applies(d.w);
  const ConvDims td = transposed_x ? transposed_dims(d) : d;
  PackedWeights tw;
  if (transposed_x && !pack_weights(td, transposed_weights(d, pw).data(), path, tw))
    return internal_error(node_label(c.node) + ": out of memory packing the weights");
  const Stride1Forward ts1 = transposed_x ? stride1_forward(td) : Stride1Forward();
  const bool col2im_x = need_x && !transposed_x;
  const int64_t at_floats = col2im_x ? rt::ref::sgemm_packed_a_floats(d.kk, d.mg, path) : 0;
  rt::ref::AlignedFloats packed_wt;
  float* pat = col2im_x ? packed_wt.get(at_floats * d.groups) : nullptr;
  if (col2im_x && pat == nullptr) return internal_error(node_label(c.node) + ": out of memory packing the weights");
  for (int64_t g = 0; col2im_x && g < d.groups; ++g)
    rt::ref::sgemm_pack_a(true, d.kk, d.mg, pw + g * d.mg * d.kk, d.kk, pat + g * at_floats, path);
  const int64_t image = d.c * d.w.ih * d.w.iw;
  // dW: stride 1 from shifted dot products over the padded image (no
  // im2col), several images per call (batch) while they fit in L2.
  const bool direct_w = need_w && direct_weight_grad_applies(d.w);
  const std::vector<int64_t> taps = direct_w ? tap_offsets(d.cg, d.w) : std::vector<int64_t>();
  const int64_t padded_plane = (d.w.pt + d.w.ih + d.w.pb) * (d.w.pl + d.w.iw + d.w.pr);
  const int64_t spread_len = spread_rows_floats(1, d.w);
  const int64_t x_image = padded_image_floats(d.c, d.w), dy_image = spread_rows_floats(d.m, d.w);
  // 512 KiB of them (half of Zen 4/5's L2): 4 resnet20 images at 28x28, where
  // 256 KiB (2 images) spent a tenth more in the dot kernel (perf shares).
  const int64_t batch = std::max<int64_t>(1, (int64_t{512} << 10) / (4 * (x_image + dy_image)));
  std::atomic<bool> oom{false};
  parallel_chunks(c.pool, d.n, [&](int64_t chunk, int64_t b, int64_t e) {
    const int64_t nb = std::min(batch, e - b);
    float* col = need_x ? scratch(0, transposed_x ? rt::ref::sgemm_packed_b_floats(td.kk, td.p, path) : d.kk * d.p)
                        : nullptr;
    float* dyp = col2im_x ? scratch(1, rt::ref::sgemm_packed_b_floats(d.mg, d.p, path)) : nullptr;
    float* colt = need_w && !direct_w ? scratch(2, rt::ref::sgemm_packed_b_floats(d.p, d.kk, path)) : nullptr;
    float* xpad = direct_w ? scratch(3, nb * x_image) : nullptr;
    float* dys = direct_w ? scratch(4, nb * dy_image) : nullptr;
    if ((need_x && col == nullptr) || (col2im_x && dyp == nullptr) || (need_w && !direct_w && colt == nullptr) ||
        (direct_w && (xpad == nullptr || dys == nullptr))) {
      oom = true;
      return;
    }
    for (int64_t i0 = b; i0 < e; i0 += nb) {
      const int64_t n_here = std::min(nb, e - i0);
      // dX of these images first: their dY is then still in cache for dW.
      if (transposed_x && !forward_images(td, tw, ts1, pg, nullptr, dx.data<float>(), i0, i0 + n_here, col, path)) {
        oom = true;
        return;
      }
      if (direct_w) {
        for (int64_t j = 0; j < n_here; ++j) {
          pad_image(px + (i0 + j) * image, d.c, d.w, xpad + j * x_image);
          spread_rows(pg + (i0 + j) * d.m * d.p, d.m, d.w, dys + j * dy_image);
        }
        for (int64_t g = 0; g < d.groups; ++g)
          shifted_dots(d.mg, d.kk, spread_len, n_here, dys + g * d.mg * spread_len, spread_len, dy_image,
                       xpad + g * d.cg * padded_plane, x_image, taps.data(), dw_part[chunk].data() + g * d.mg * d.kk,
                       d.kk);
      }
      for (int64_t i = i0; i < i0 + n_here; ++i) {
        if (col2im_x) std::fill(dx.data<float>() + i * image, dx.data<float>() + (i + 1) * image, 0.f);
        for (int64_t g = 0; g < d.groups; ++g) {
          const float* gy = pg + (i * d.m + g * d.mg) * d.p;
          if (need_w && !direct_w) {  // dW_g += dY_g col^T, col^T written packed
            im2col_2d_packed_t(px + i * image + g * d.cg * d.w.ih * d.w.iw, d.cg, d.w, nr, colt);
            rt::ref::sgemm_prepacked_b(false, d.mg, d.kk, d.p, 1.f, gy, d.p, colt, 1.f,
                                       dw_part[chunk].data() + g * d.mg * d.kk, d.kk, nullptr, path);
          }
          if (col2im_x) {  // dcol = W_g^T dY_g, scattered back
            rt::ref::sgemm_pack_b(false, d.mg, d.p, gy, d.p, dyp, path);
            rt::ref::sgemm_packed(d.kk, d.p, d.mg, 1.f, pat + g * at_floats, dyp, 0.f, col, d.p, nullptr, path);
            col2im_2d(col, d.cg, d.w, dx.data<float>() + i * image + g * d.cg * d.w.ih * d.w.iw);
          }
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
