// MaxPool on 8-bit 2-D images (uint8 / int8, any kernel, stride, dilation,
// pads, auto_pad, ceil_mode; no Indices output). Each (n, c) plane is copied
// into a padded buffer whose padding holds the type's lowest code (it never
// wins a max, and a window entirely in the padding yields that code, as in
// the reference), each row split into `stride_w` phases (column
// stride_w * i + phase) so that every window tap of a row of outputs is one
// contiguous run of bytes. The max over taps is then 32 outputs per
// instruction with AVX2. Other shapes, types and Indices run the reference.
#include <algorithm>
#include <cstring>
#include <vector>

#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/ref/im2col.h"
#include "runtime/kernels/x86/qelementwise_x86_internal.h"
#include "runtime/thread_pool.h"

namespace qtk::rt::qew {

void max_row_scalar(const uint8_t* const* taps, int taps_n, int64_t begin, int64_t end, bool is_signed, uint8_t* y) {
  for (int64_t ow = begin; ow < end; ++ow) {
    uint8_t best = taps[0][ow];
    for (int t = 1; t < taps_n; ++t) {
      const uint8_t v = taps[t][ow];
      const bool greater = is_signed ? static_cast<int8_t>(v) > static_cast<int8_t>(best) : v > best;
      best = greater ? v : best;
    }
    y[ow] = best;
  }
}

void max_pool_2x2_scalar(const uint8_t* x, int64_t in_w, int64_t out_h, int64_t out_w, bool is_signed, uint8_t* v,
                         uint8_t* y) {
  (void)v;
  for (int64_t i = 0; i < out_h; ++i) {
    const uint8_t* taps[4] = {x + 2 * i * in_w, x + 2 * i * in_w + 1, x + (2 * i + 1) * in_w, x + (2 * i + 1) * in_w + 1};
    for (int64_t j = 0; j < out_w; ++j) {
      const uint8_t* at[4] = {taps[0] + 2 * j, taps[1] + 2 * j, taps[2] + 2 * j, taps[3] + 2 * j};
      max_row_scalar(at, 4, 0, 1, is_signed, y + i * out_w + j);
    }
  }
}

void gather_phase_scalar(const uint8_t* src, int64_t stride, int64_t n, uint8_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[stride * i];
}

namespace {

struct PoolAttrs {
  ref::AutoPad auto_pad = ref::AutoPad::kNotSet;
  std::vector<int64_t> kernel_shape, strides, dilations, pads;
  bool ceil_mode = false;
};

// Padded rows of one plane: `rows` rows of `phases` runs of phase_len bytes.
struct Layout {
  int64_t rows = 0, phases = 1, phase_len = 0, row_stride = 0;
};

class MaxPoolKernel final : public Kernel {
 public:
  MaxPoolKernel(PoolAttrs a, std::unique_ptr<Kernel> ref, bool avx2)
      : a_(std::move(a)), ref_(std::move(ref)), avx2_(avx2) {}

  Status run(KernelContext& ctx) override {
    if (ctx.outputs.size() != 1 || !ctx.has_input(0)) return ref_->run(ctx);
    const Tensor& x = ctx.input(0);
    if ((x.dtype() != DType::kUInt8 && x.dtype() != DType::kInt8) || x.rank() != 4 || a_.kernel_shape.size() != 2)
      return ref_->run(ctx);
    ref::ConvGeometry g;
    g.in = {x.dim(2), x.dim(3)};
    g.kernel = a_.kernel_shape;
    if (!ref::resolve_window_geometry(a_.auto_pad, a_.strides, a_.dilations, a_.pads, a_.ceil_mode, g).ok())
      return ref_->run(ctx);
    const int64_t oh_n = g.out[0], ow_n = g.out[1], kh_n = g.kernel[0], kw_n = g.kernel[1];
    if (oh_n <= 0 || ow_n <= 0 || g.pads_begin[0] < 0 || g.pads_begin[1] < 0 || kh_n * kw_n > 1024)
      return ref_->run(ctx);
    Layout l;
    l.rows = (oh_n - 1) * g.strides[0] + (kh_n - 1) * g.dilations[0] + 1;
    l.phases = g.strides[1];
    l.phase_len = ow_n + ((kw_n - 1) * g.dilations[1]) / l.phases + 1;
    l.row_stride = l.phases * l.phase_len;
    // Tap t of output (oh, ow): buffer row oh * stride_h + kh * dil_h, phase
    // (kw * dil_w) % stride_w, index ow + (kw * dil_w) / stride_w.
    std::vector<int64_t> tap_off;
    for (int64_t kh = 0; kh < kh_n; ++kh)
      for (int64_t kw = 0; kw < kw_n; ++kw) {
        const int64_t col = kw * g.dilations[1];
        tap_off.push_back(kh * g.dilations[0] * l.row_stride + (col % l.phases) * l.phase_len + col / l.phases);
      }

    const bool is_signed = x.dtype() == DType::kInt8;
    Tensor y = Tensor::uninitialized(x.dtype(), {x.dim(0), x.dim(1), oh_n, ow_n});
    const int64_t planes = x.dim(0) * x.dim(1), in_plane = g.in[0] * g.in[1], out_plane = oh_n * ow_n;
    const auto* in = static_cast<const uint8_t*>(x.raw());
    auto* out = static_cast<uint8_t*>(y.raw());
    // Planes per task: ~64K outputs, a few microseconds (a smaller pool was slower than one thread at batch 1).
    const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, out_plane));
    if (is_2x2_stride_2(g)) {  // no padding buffer needed
      ctx.pool->parallel_for(planes, [&](int64_t b, int64_t e) {
        std::vector<uint8_t> rows(static_cast<size_t>(2 * out_plane));
        for (int64_t pl = b; pl < e; ++pl) {
          if (avx2_) max_pool_2x2_avx2(in + pl * in_plane, g.in[1], oh_n, ow_n, is_signed, rows.data(), out + pl * out_plane);
          else max_pool_2x2_scalar(in + pl * in_plane, g.in[1], oh_n, ow_n, is_signed, rows.data(), out + pl * out_plane);
        }
      }, grain);
      ctx.outputs[0] = std::move(y);
      return Status::Ok();
    }
    ctx.pool->parallel_for(planes, [&](int64_t b, int64_t e) {
      std::vector<uint8_t> buf(static_cast<size_t>(l.rows * l.row_stride));
      std::vector<const uint8_t*> taps(tap_off.size());
      for (int64_t pl = b; pl < e; ++pl) {
        fill_plane(g, l, in + pl * in_plane, is_signed, buf.data());
        uint8_t* yp = out + pl * out_plane;
        for (int64_t oh = 0; oh < oh_n; ++oh) {
          const uint8_t* row = buf.data() + oh * g.strides[0] * l.row_stride;
          for (size_t t = 0; t < taps.size(); ++t) taps[t] = row + tap_off[t];
          const int tn = static_cast<int>(taps.size());
          if (avx2_) max_row_avx2(taps.data(), tn, ow_n, is_signed, yp + oh * ow_n);
          else max_row_scalar(taps.data(), tn, 0, ow_n, is_signed, yp + oh * ow_n);
        }
      }
    }, grain);
    ctx.outputs[0] = std::move(y);
    return Status::Ok();
  }

 private:
  // Every window inside the image, none overlapping: 2x2, stride 2, no pads,
  // no dilation, and no ceil_mode window past the end.
  static bool is_2x2_stride_2(const ref::ConvGeometry& g) {
    for (int d = 0; d < 2; ++d)
      if (g.kernel[d] != 2 || g.strides[d] != 2 || g.dilations[d] != 1 || g.pads_begin[d] != 0 || 2 * g.out[d] > g.in[d])
        return false;
    return true;
  }

  // Padded, phase-split copy of one plane; padding = the lowest code.
  void fill_plane(const ref::ConvGeometry& g, const Layout& l, const uint8_t* x, bool is_signed, uint8_t* buf) const {
    const uint8_t lowest = is_signed ? 0x80 : 0x00;
    const int64_t in_h = g.in[0], in_w = g.in[1], pad_top = g.pads_begin[0], pad_left = g.pads_begin[1];
    for (int64_t r = 0; r < l.rows; ++r) {
      uint8_t* dst = buf + r * l.row_stride;
      const int64_t ir = r - pad_top;
      if (ir < 0 || ir >= in_h) {
        std::memset(dst, lowest, static_cast<size_t>(l.row_stride));
        continue;
      }
      const uint8_t* src = x + ir * in_w;
      for (int64_t p = 0; p < l.phases; ++p) {
        uint8_t* d = dst + p * l.phase_len;
        // Phase index i reads input column phases * i + p - pad_left; those
        // inside [0, in_w) form the run [i0, i1).
        const int64_t first = p - pad_left;  // input column of i = 0
        const int64_t i0 = std::clamp<int64_t>(first >= 0 ? 0 : (-first + l.phases - 1) / l.phases, 0, l.phase_len);
        const int64_t i1 =
            std::clamp<int64_t>(in_w - first <= 0 ? 0 : (in_w - first + l.phases - 1) / l.phases, i0, l.phase_len);
        std::memset(d, lowest, static_cast<size_t>(i0));
        if (i1 > i0) {
          const uint8_t* s = src + first + l.phases * i0;
          if (avx2_) gather_phase_avx2(s, l.phases, i1 - i0, d + i0);
          else gather_phase_scalar(s, l.phases, i1 - i0, d + i0);
        }
        std::memset(d + i1, lowest, static_cast<size_t>(l.phase_len - i1));
      }
    }
  }

  PoolAttrs a_;
  std::unique_ptr<Kernel> ref_;
  bool avx2_;
};

}  // namespace

Expected<std::unique_ptr<Kernel>> make_max_pool_kernel(const KernelInit& init, bool avx2) {
  QTK_ASSIGN_OR_RETURN(auto ref, reference_kernel(init));  // reports bad attributes
  const ir::Node& n = init.node;
  PoolAttrs a;
  auto ap = ref::parse_auto_pad(n.attr_string("auto_pad", "NOTSET"));
  if (!ap.ok() || n.attr_int("storage_order", 0) != 0) return ref;
  a.auto_pad = *ap;
  a.kernel_shape = n.attr_ints("kernel_shape");
  a.strides = n.attr_ints("strides");
  a.dilations = n.attr_ints("dilations");
  a.pads = n.attr_ints("pads");
  a.ceil_mode = n.attr_int("ceil_mode", 0) != 0;
  return std::unique_ptr<Kernel>(new MaxPoolKernel(std::move(a), std::move(ref), avx2));
}

}  // namespace qtk::rt::qew
