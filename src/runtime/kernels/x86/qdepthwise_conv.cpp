// Depthwise QLinearConv: preparation (weights, requantization), the scalar
// plane, and the kernel that threads planes over the pool. See
// qdepthwise_conv.h; the AVX2 planes are in qdepthwise_conv_avx2.cpp, the
// AVX-512 ones in qdepthwise_conv_avx512.cpp.
#include "quant/graph/qoperator_writer.h"
#include "quant/graph/residual_add_fusion.h"
#include "runtime/kernels/x86/qdepthwise_conv.h"
#include "core/cpu_features.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/ref/im2col.h"
#include "runtime/kernels/x86/qdepthwise_conv_internal.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk::rt {

namespace qdw {

bool avx2_supported() { return cpu_has_avx2(); }
bool avx512_supported() { return cpu_has_avx512_vnni(); }

const char* path_name(Path p) {
  switch (p) {
    case Path::kAuto: return "auto";
    case Path::kScalar: return "scalar";
    case Path::kAvx2: return "avx2";
    case Path::kAvx512: return "avx512";
    case Path::kAvx512Channels: return "avx512-channels";
  }
  return "?";
}

namespace {

// The planes a kernel runs (for channels whose sums are proven not to wrap;
// the others take the scalar plane).
enum class Tier { kScalar, kAvx2, kAvx512 };

Tier resolve_tier(Path p) {
  if (p == Path::kScalar || !avx2_supported()) return Tier::kScalar;
  if (p == Path::kAvx2) return Tier::kAvx2;
  if (p == Path::kAvx512 || p == Path::kAvx512Channels) return avx512_supported() ? Tier::kAvx512 : Tier::kAvx2;
  static const bool forced_scalar = env_flag_set("QTK_QDW_SCALAR");
  static const bool no_avx512 = env_flag_set("QTK_QDW_NO_AVX512");
  if (forced_scalar) return Tier::kScalar;
  return avx512_supported() && !no_avx512 ? Tier::kAvx512 : Tier::kAvx2;
}

// When the AVX-512 tier runs the channels-last path.
enum class ChannelsMode { kNever, kRule, kAlways };

ChannelsMode resolve_channels_mode(Path p) {
  if (p == Path::kAvx512Channels) return ChannelsMode::kAlways;
  if (p != Path::kAuto) return ChannelsMode::kNever;
  static const ChannelsMode from_env = [] {
    const char* v = std::getenv("QTK_QDW_CHANNELS");
    if (v == nullptr || *v == '\0') return ChannelsMode::kRule;
    return std::strcmp(v, "0") == 0 ? ChannelsMode::kNever : ChannelsMode::kAlways;
  }();
  return from_env;
}

// Whether the channels-last path beats the per-plane ones, by a rule
// measured on 3x3 convs (batch 64, 1 thread, AVX-512 per-plane vs
// channels-last, minimum of 300 runs): its cost grows with the 16-channel
// blocks (lanes past C are wasted), the per-plane paths' with the channels,
// and their fixed costs per plane weigh less as planes grow. Channels-last
// was 5-9x faster on 4x4 / 7x7 planes of 64..128 channels, 2.4-3.3x on
// 14x14 of 16..64, 1.8x on 20x20, 1.5x on 24x24, 1.3x on 28x28 and 1.13x
// slower on 56x56 at stride 2 (28x28 out); with 8 channels (half the lanes)
// 1.3x faster on 14x14 and 2-4x on 7x7 / 4x4, with 4 about even on 7x7 and
// 1.8x slower on 14x14. (Beyond 24x24 the per-plane paths stay: one
// measured point at stride 1 only.)
bool channels_pays(const Geometry& g, int64_t channels) {
  const int64_t out_plane = g.out_h * g.out_w;
  const int64_t lanes = (channels + kChannelBlock - 1) / kChannelBlock * kChannelBlock;
  if (out_plane <= 256) return 2 * channels >= lanes;      // at least half the lanes used
  if (out_plane <= 576) return 4 * channels >= 3 * lanes;  // three quarters
  return false;
}

// The scalar plane reads a plain zero-padded, centred copy.
int64_t scalar_rows(const Geometry& g) { return (g.out_h - 1) * g.stride_h + (g.k_h - 1) * g.dil_h + 1; }
int64_t scalar_cols(const Geometry& g) { return (g.out_w - 1) * g.stride_w + (g.k_w - 1) * g.dil_w + 1; }

// Interior only; the padding is zeroed by PlaneScratch.
template <class T>
void build_plain_plane(const Geometry& g, const T* x, int32_t zp, int16_t* buf) {
  const int64_t rows = scalar_rows(g), cols = scalar_cols(g);
  const int64_t r_hi = std::min(g.pad_top + g.in_h, rows), c_hi = std::min(g.pad_left + g.in_w, cols);
  for (int64_t r = g.pad_top; r < r_hi; ++r)
    for (int64_t q = g.pad_left; q < c_hi; ++q)
      buf[r * cols + q] = static_cast<int16_t>(static_cast<int32_t>(x[(r - g.pad_top) * g.in_w + q - g.pad_left]) - zp);
}

}  // namespace

// The reference's arithmetic, step by step: an int32 sum of products (in
// uint32 so that a wrap is defined; the reference's sum wraps the same way),
// then acc + bias in int64 clamped to int32, then requantize_to_code.
void run_plane_scalar(const Geometry& g, const PlaneJob& job, PlaneScratch& ps) {
  const int64_t rows = scalar_rows(g), cols = scalar_cols(g);
  int16_t* scratch =
      ps.get({2, rows, cols, g.pad_top, g.pad_left, g.in_h, g.in_w, 0, 0, 0}, static_cast<size_t>(rows * cols));
  if (job.x_signed) build_plain_plane(g, static_cast<const int8_t*>(job.x), job.x_zero_point, scratch);
  else build_plain_plane(g, static_cast<const uint8_t*>(job.x), job.x_zero_point, scratch);
  const ChannelParams& p = *job.params;
  const int32_t qmin = job.y_signed ? -128 : 0, qmax = job.y_signed ? 127 : 255;
  const int64_t out_w = g.out_w, stride_w = g.stride_w, k_w = g.k_w;
  // One output row at a time: the tap loops run over a row of accumulators
  // (a loop the compiler vectorizes for stride 1).
  std::vector<uint32_t> acc(static_cast<size_t>(out_w));
  for (int64_t oh = 0; oh < g.out_h; ++oh) {
    std::fill(acc.begin(), acc.end(), 0u);
    for (int64_t kh = 0; kh < g.k_h; ++kh) {
      const int16_t* row = scratch + (oh * g.stride_h + kh * g.dil_h) * cols;
      for (int64_t kw = 0; kw < k_w; ++kw) {
        const int32_t w = job.w[kh * k_w + kw];
        const int16_t* src = row + kw * g.dil_w;
        uint32_t* a = acc.data();
        if (stride_w == 1) {
          for (int64_t ow = 0; ow < out_w; ++ow) a[ow] += static_cast<uint32_t>(src[ow] * w);
        } else {
          for (int64_t ow = 0; ow < out_w; ++ow) a[ow] += static_cast<uint32_t>(src[ow * stride_w] * w);
        }
      }
    }
    for (int64_t ow = 0; ow < out_w; ++ow) {
      const int64_t sum = static_cast<int64_t>(static_cast<int32_t>(acc[ow])) + p.bias;
      const int32_t clamped = static_cast<int32_t>(std::clamp<int64_t>(sum, INT32_MIN, INT32_MAX));
      const int32_t code = quant::requantize_to_code(clamped, p.mult, job.y_zero_point, qmin, qmax);
      const int64_t i = oh * out_w + ow;
      if (job.y_signed) static_cast<int8_t*>(job.y)[i] = static_cast<int8_t>(code);
      else static_cast<uint8_t*>(job.y)[i] = static_cast<uint8_t>(code);
    }
  }
}

namespace {

// Zero points this kernel takes: the 8-bit ranges (so x - x_zp and w - w_zp
// fit int16 with room to spare). Others go to the reference.
constexpr int64_t kMaxAbsZeroPoint = 255;

struct Attrs {
  ref::AutoPad auto_pad = ref::AutoPad::kNotSet;
  std::vector<int64_t> strides, dilations, pads;
};

// Everything that depends on the scales, zero points and bias.
struct RunParams {
  int32_t x_zero_point = 0, y_zero_point = 0;
  bool y_signed = false;
  std::vector<ChannelParams> channels;
};

struct Prepared {
  int64_t channels = 0, k_h = 0, k_w = 0;
  std::vector<int16_t> w;      // [C][k_h * k_w], minus the weight zero point
  std::vector<int64_t> w_abs;  // per channel: sum of |w - w_zp|, for overflow bounds
  // For the AVX-512 vpdpbusd planes, per channel whose w - w_zp fit int8
  // (PlaneJob::w_quads): [C][k_h * ceil(k_w / 4)], fits[ch], sum of w - w_zp.
  std::vector<int32_t> quads;
  std::vector<uint8_t> quads_fit;
  std::vector<int64_t> w_sum;
};

std::optional<int64_t> scalar_int(const Tensor* t) {
  if (t == nullptr || t->numel() < 1) return std::nullopt;
  return t->get_as_int64(0);
}

// Mirrors the reference's reading of the parameters; nullopt where the
// reference would report an error or compute something this kernel does not
// (it then runs the reference, which reports it).
std::optional<RunParams> prepare_params(const Prepared& pw, const Tensor& x_scale, const Tensor* x_zp,
                                        const Tensor& w_scale, const Tensor& y_scale, const Tensor& y_zp,
                                        const Tensor* bias) {
  if (x_scale.numel() < 1 || y_scale.numel() < 1 || y_zp.numel() < 1) return std::nullopt;
  if (y_zp.dtype() != DType::kUInt8 && y_zp.dtype() != DType::kInt8) return std::nullopt;
  RunParams rp;
  rp.y_signed = y_zp.dtype() == DType::kInt8;
  rp.y_zero_point = static_cast<int32_t>(y_zp.get_as_int64(0));
  const auto xzp = scalar_int(x_zp);
  if (!xzp || *xzp < -kMaxAbsZeroPoint || *xzp > kMaxAbsZeroPoint) return std::nullopt;
  rp.x_zero_point = static_cast<int32_t>(*xzp);
  const std::vector<float> ws = w_scale.to_float_vector();
  const int64_t c = pw.channels;
  if (ws.size() != 1 && static_cast<int64_t>(ws.size()) != c) return std::nullopt;
  if (bias && (bias->dtype() != DType::kInt32 || bias->numel() != c)) return std::nullopt;
  // The reference passes the scales through float before the double product.
  const float xs = static_cast<float>(x_scale.get_as_double(0)), ys = static_cast<float>(y_scale.get_as_double(0));
  // Largest |x - x_zp| over both 8-bit input types (x's type is known only at run time).
  const int64_t max_dx = std::max({std::abs(0 - *xzp), std::abs(255 - *xzp), std::abs(-128 - *xzp)});
  rp.channels.resize(static_cast<size_t>(c));
  for (int64_t ch = 0; ch < c; ++ch) {
    ChannelParams& p = rp.channels[ch];
    p.bias = bias ? bias->data<int32_t>()[ch] : 0;
    const float wsc = ws.size() == 1 ? ws[0] : ws[ch];
    p.mult = quant::quantize_multiplier(static_cast<double>(xs) * wsc / ys);
    const int n = std::clamp(31 - p.mult.shift, 1, 62);
    p.pre_shift = n >= 32 ? 0 : 32 - n;
    p.shift = n + p.pre_shift;
    // Every partial sum of the vector path is bounded by this; if it and its
    // left shift fit int32, nothing wraps or clamps and folding the bias in
    // first gives the reference's result.
    const int64_t bound = max_dx * pw.w_abs[ch] + std::abs(static_cast<int64_t>(p.bias));
    p.vector_exact = (bound << p.pre_shift) <= INT32_MAX;
  }
  return rp;
}

class QDepthwiseConvKernel final : public Kernel {
 public:
  QDepthwiseConvKernel(Prepared w, Attrs a, std::optional<RunParams> params, std::unique_ptr<Kernel> fallback,
                       Tier tier, ChannelsMode channels)
      : w_(std::move(w)), attrs_(std::move(a)), params_(std::move(params)), fallback_(std::move(fallback)),
        tier_(tier), channels_mode_(tier == Tier::kAvx512 ? channels : ChannelsMode::kNever) {
    // The channels-last blocks once, for both input types, when the
    // parameters are initializers.
    if (params_ && channels_mode_ != ChannelsMode::kNever)
      for (int s = 0; s < 2; ++s) channels_ok_[s] = prepare(*params_, s == 1, channels_[s]);
  }

  Status run(KernelContext& ctx) override {
    for (size_t i = 0; i < 8; ++i)  // all required, as in the reference (which reports a missing one)
      if (!ctx.has_input(i)) return fallback_->run(ctx);
    const Tensor& x = ctx.input(0);
    if (x.rank() != 4 || x.dim(1) != w_.channels || (x.dtype() != DType::kUInt8 && x.dtype() != DType::kInt8))
      return fallback_->run(ctx);
    std::optional<RunParams> computed;
    const RunParams* rp = params_ ? &*params_ : nullptr;
    if (rp == nullptr) {
      computed = prepare_params(w_, ctx.input(1), ctx.has_input(2) ? &ctx.input(2) : nullptr, ctx.input(4),
                                ctx.input(6), ctx.input(7), ctx.has_input(8) ? &ctx.input(8) : nullptr);
      if (!computed) return fallback_->run(ctx);
      rp = &*computed;
    }
    ref::ConvGeometry cg;
    cg.in = {x.dim(2), x.dim(3)};
    cg.kernel = {w_.k_h, w_.k_w};
    if (!ref::resolve_window_geometry(attrs_.auto_pad, attrs_.strides, attrs_.dilations, attrs_.pads, false, cg).ok())
      return fallback_->run(ctx);
    Geometry g;
    g.in_h = x.dim(2), g.in_w = x.dim(3), g.out_h = cg.out[0], g.out_w = cg.out[1];
    g.k_h = w_.k_h, g.k_w = w_.k_w;
    g.stride_h = cg.strides[0], g.stride_w = cg.strides[1], g.dil_h = cg.dilations[0], g.dil_w = cg.dilations[1];
    g.pad_top = cg.pads_begin[0], g.pad_left = cg.pads_begin[1];
    if (g.out_h <= 0 || g.out_w <= 0 || g.pad_top < 0 || g.pad_left < 0) return fallback_->run(ctx);

    const int64_t n = x.dim(0), c = w_.channels, ksz = w_.k_h * w_.k_w, kquads = w_.k_h * ((w_.k_w + 3) / 4);
    // Every element is written (each plane by exactly one task).
    Tensor y = Tensor::uninitialized(rp->y_signed ? DType::kInt8 : DType::kUInt8, {n, c, g.out_h, g.out_w});
    const auto* xb = static_cast<const uint8_t*>(x.raw());
    auto* yb = static_cast<uint8_t*>(y.raw());
    const int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
    const bool x_signed = x.dtype() == DType::kInt8;

    if (channels_mode_ != ChannelsMode::kNever && channels_geometry_ok(g) &&
        (channels_mode_ == ChannelsMode::kAlways || channels_pays(g, c))) {
      ChannelsPrepared computed_blocks;
      const ChannelsPrepared* cp = nullptr;
      if (params_) {
        if (channels_ok_[x_signed]) cp = &channels_[x_signed];
      } else if (prepare(*rp, x_signed, computed_blocks)) {
        cp = &computed_blocks;
      }
      if (cp != nullptr) {
        ChannelsJob job;
        job.g = &g;
        job.prep = cp;
        job.channels = c;
        job.x_zero_point = rp->x_zero_point;
        job.x_signed = x_signed;
        job.y_zero_point = rp->y_zero_point;
        job.y_signed = rp->y_signed;
        const int64_t blocks = (c + kChannelBlock - 1) / kChannelBlock;
        // The same ~512K multiply-adds per thread's share as below.
        const int64_t grain =
            std::max<int64_t>(1, (int64_t{1} << 19) / std::max<int64_t>(1, kChannelBlock * out_plane * ksz));
        ctx.pool->parallel_for(n * blocks, [&](int64_t begin, int64_t end) {
          thread_local PlaneScratch scratch;  // this path's buffers, kept between runs
          for (int64_t task = begin; task < end; ++task) {
            const int64_t img = task / blocks, blk = task % blocks;
            run_channels_avx512(job, xb + img * c * in_plane, yb + img * c * out_plane, blk, scratch);
          }
        }, grain);
        ctx.outputs[0] = std::move(y);
        return Status::Ok();
      }
    }
    // A thread's share at least ~512K multiply-adds (some microseconds):
    // below that waking a second thread costs more than it saves
    // (mobilenetv2_fm batch 1: its 3x3 depthwise convs, 0.25M multiply-adds,
    // took 7 us on 2 threads and 4 us on 1).
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 19) / std::max<int64_t>(1, out_plane * ksz));
    ctx.pool->parallel_for(n * c, [&](int64_t begin, int64_t end) {
      // One scratch plane per thread, kept between runs (grows to the largest).
      thread_local PlaneScratch scratch;
      for (int64_t task = begin; task < end; ++task) {
        const int64_t ch = task % c;
        PlaneJob job;
        job.x = xb + task * in_plane;
        job.x_signed = x_signed;
        job.x_zero_point = rp->x_zero_point;
        job.w = &w_.w[ch * ksz];
        if (w_.quads_fit[ch]) {
          job.w_quads = &w_.quads[ch * kquads];
          job.w_sum = w_.w_sum[ch];
          job.w_abs_sum = w_.w_abs[ch];
        }
        job.params = &rp->channels[ch];
        job.y_zero_point = rp->y_zero_point;
        job.y_signed = rp->y_signed;
        job.y = yb + task * out_plane;
        if (tier_ == Tier::kScalar || !job.params->vector_exact) run_plane_scalar(g, job, scratch);
        else if (tier_ == Tier::kAvx512) run_plane_avx512(g, job, scratch);
        else run_plane_avx2(g, job, scratch);
      }
    }, grain);
    ctx.outputs[0] = std::move(y);
    return Status::Ok();
  }

 private:
  bool prepare(const RunParams& rp, bool x_signed, ChannelsPrepared& out) const {
    return prepare_channels(w_.channels, w_.k_h, w_.k_w, w_.quads.data(), w_.quads_fit.data(), w_.w_sum.data(),
                            w_.w_abs.data(), rp.channels.data(), rp.x_zero_point, x_signed, out);
  }

  Prepared w_;
  Attrs attrs_;
  std::optional<RunParams> params_;  // when every parameter input is an initializer
  std::unique_ptr<Kernel> fallback_;
  Tier tier_;
  ChannelsMode channels_mode_;
  // With params_: the channels-last blocks for uint8 [0] and int8 [1] input,
  // and whether every channel can take that path.
  ChannelsPrepared channels_[2];
  bool channels_ok_[2] = {false, false};
};

// The reference QLinearConv kernel, for what this one hands on.
Expected<std::unique_ptr<Kernel>> make_reference(const KernelInit& init) {
  static const OpRegistry* reg = [] {
    auto* r = new OpRegistry;
    register_qlinear_ops(*r);
    return r;
  }();
  const KernelFactory* f = reg->find("", "QLinearConv", init.opset);
  if (f == nullptr) return internal_error("reference QLinearConv kernel is not registered");
  return (*f)(init);
}

}  // namespace

Expected<std::unique_ptr<Kernel>> try_make_kernel(const KernelInit& init, Path path) {
  const ir::Node& node = init.node;
  std::unique_ptr<Kernel> none;
  if (node.op_type != "QLinearConv" || !init.constant_input) return none;
  // A fused output clamp (4-bit codes) is left to the general conv kernel,
  // whose requantization takes the narrower range.
  if (node.has_attr(quant::kOutputMinAttr) || node.has_attr(quant::kOutputMaxAttr) ||
      node.has_attr(quant::kResidualAddAttr))
    return none;
  const Tensor* w = init.constant_input(3);
  if (w == nullptr || w->rank() != 4 || w->dim(1) != 1 || w->dim(0) < 1) return none;
  if (w->dtype() != DType::kUInt8 && w->dtype() != DType::kInt8) return none;
  const int64_t c = w->dim(0);
  if (node.attr_int("group", 1) != c) return none;
  if (!node.has_input(2) || !node.has_input(5)) return none;  // required: the reference reports it
  const Tensor* w_zp = init.constant_input(5);
  if (w_zp == nullptr) return none;  // weights cannot be centred once
  const std::vector<int64_t> wzp = w_zp->to_int64_vector();
  if (wzp.size() != 1 && static_cast<int64_t>(wzp.size()) != c) return none;
  for (int64_t z : wzp)
    if (z < -kMaxAbsZeroPoint || z > kMaxAbsZeroPoint) return none;

  Attrs a;
  auto ap = ref::parse_auto_pad(node.attr_string("auto_pad", "NOTSET"));
  if (!ap.ok()) return none;
  a.auto_pad = *ap;
  a.strides = node.attr_ints("strides");
  a.dilations = node.attr_ints("dilations");
  a.pads = node.attr_ints("pads");

  Prepared pw;
  pw.channels = c, pw.k_h = w->dim(2), pw.k_w = w->dim(3);
  if (pw.k_h < 1 || pw.k_w < 1) return none;
  const int64_t ksz = pw.k_h * pw.k_w;
  pw.w.resize(static_cast<size_t>(c * ksz));
  pw.w_abs.assign(static_cast<size_t>(c), 0);
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t k = 0; k < ksz; ++k) {
      const int64_t v = w->get_as_int64(ch * ksz + k) - wzp[wzp.size() == 1 ? 0 : ch];
      pw.w[ch * ksz + k] = static_cast<int16_t>(v);
      pw.w_abs[ch] += std::abs(v);
    }
  const int64_t kquads = pw.k_h * ((pw.k_w + 3) / 4);
  pw.quads.assign(static_cast<size_t>(c * kquads), 0);
  pw.quads_fit.assign(static_cast<size_t>(c), 0);
  pw.w_sum.assign(static_cast<size_t>(c), 0);
  for (int64_t ch = 0; ch < c; ++ch) {
    pw.quads_fit[ch] = int8_weight_quads(pw.k_h, pw.k_w, &pw.w[ch * ksz], &pw.quads[ch * kquads]);
    for (int64_t k = 0; k < ksz; ++k) pw.w_sum[ch] += pw.w[ch * ksz + k];
  }

  // Requantization once, when all its inputs are initializers.
  std::optional<RunParams> params;
  const auto constant = [&](size_t i) { return node.has_input(i) ? init.constant_input(i) : nullptr; };
  const bool all_constant =
      constant(1) && constant(2) && constant(4) && constant(6) && constant(7) && (!node.has_input(8) || constant(8));
  if (all_constant)
    params = prepare_params(pw, *constant(1), constant(2), *constant(4), *constant(6), *constant(7), constant(8));
  // (nullopt here: the parameters are prepared, or handed on, at each run.)

  QTK_ASSIGN_OR_RETURN(auto fallback, make_reference(init));
  return std::unique_ptr<Kernel>(new QDepthwiseConvKernel(std::move(pw), std::move(a), std::move(params),
                                                          std::move(fallback), resolve_tier(path),
                                                          resolve_channels_mode(path)));
}

}  // namespace qdw

Expected<std::unique_ptr<Kernel>> try_make_qdepthwise_conv_kernel(const KernelInit& init) {
  return qdw::try_make_kernel(init, qdw::Path::kAuto);
}

}  // namespace qtk::rt
