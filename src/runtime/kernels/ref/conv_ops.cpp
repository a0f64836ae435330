// Conv and ConvTranspose (float32) over 1-D, 2-D and 3-D (and higher)
// spatial inputs, with groups, strides, dilations, pads and auto_pad.
//
// Conv is one implicit GEMM per (image, group) (or per few small images side
// by side, which share the columns lost to tile rounding): Y_g[Mg, P] = W_g[Mg, K] *
// col[K, P] + bias, with K = Cg * prod(kernel) and P = prod(output spatial),
// where col is never built: each image is copied into a zero-padded buffer,
// split by stride phase, of which col's rows are shifted views (im2col.h,
// x86/sconv_implicit_gemm.h). Constant weights are packed once, when the
// session is built; others once per run. A depthwise Conv (one input channel
// per group) is a direct window loop.
// ConvTranspose is the adjoint: col[Mg*k, Q] = W_g^T * X_g, then col2im.
//
// A session may have fused the Add and Relu / Clip that follow a Conv into
// it (rt::fuse_conv_epilogues, runtime/optimize.h): the kernel then adds
// input 3 and clamps while the output is still in registers, and pools a
// fused 2x2 MaxPool while the output is still in cache.
#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/ref/elementwise_common.h"
#include "runtime/kernels/ref/depthwise_plane.h"
#include "runtime/kernels/ref/im2col.h"
#include "runtime/kernels/ref/sgemm.h"
#include "runtime/kernels/x86/max_pool_2x2.h"
#include "runtime/kernels/x86/sconv_depthwise.h"
#include "runtime/kernels/x86/sconv_implicit_gemm.h"
#include "runtime/op_registry.h"
#include "runtime/optimize.h"
#include "runtime/thread_pool.h"

namespace qtk::rt {
namespace {

using namespace ref;

// Attributes common to Conv and ConvTranspose, read once by the factory.
struct ConvAttrs {
  AutoPad auto_pad = AutoPad::kNotSet;
  std::vector<int64_t> kernel_shape, strides, dilations, pads;
  int64_t group = 1;
  // ConvTranspose only.
  std::vector<int64_t> output_padding, output_shape;
  // Conv only: the fused epilogue (runtime/optimize.h), y = clamp(y + Z).
  bool add = false;  // input 3 (Z) is added
  bool clamp = false;
  float lo = 0.f, hi = 0.f;
  bool pool = false;  // then a 2x2 MaxPool, stride 2
};

Expected<ConvAttrs> read_conv_attrs(const ir::Node& node, bool transpose) {
  ConvAttrs a;
  QTK_ASSIGN_OR_RETURN(a.auto_pad, parse_auto_pad(node.attr_string("auto_pad", "NOTSET")));
  a.kernel_shape = node.attr_ints("kernel_shape");
  a.strides = node.attr_ints("strides");
  a.dilations = node.attr_ints("dilations");
  a.pads = node.attr_ints("pads");
  a.group = node.attr_int("group", 1);
  if (a.group < 1) return invalid_argument("group must be >= 1, got " + std::to_string(a.group));
  if (transpose) {
    a.output_padding = node.attr_ints("output_padding");
    a.output_shape = node.attr_ints("output_shape");
  } else {
    a.add = node.attr_int(kFusedAddAttr, 0) != 0;
    a.clamp = node.has_attr(kFusedMinAttr);
    a.lo = node.attr_float(kFusedMinAttr, 0.f);
    a.hi = node.attr_float(kFusedMaxAttr, 0.f);
    a.pool = node.attr_int(kFusedPoolAttr, 0) != 0;
    if (a.clamp != node.has_attr(kFusedMaxAttr))
      return invalid_argument(std::string("fused Conv needs both ") + kFusedMinAttr + " and " + kFusedMaxAttr);
  }
  return a;
}

// Per-thread column buffer, kept between runs so that repeated inferences do
// not pay for fresh pages each time (it holds the largest layer's columns).
// Null if the allocation fails.
float* column_scratch(int64_t floats) {
  thread_local AlignedFloats buf;
  return buf.get(floats);
}

// Per-thread home of a few images' Conv output before the fused MaxPool
// reads it back (still in cache) and writes a quarter of it.
float* pooled_conv_scratch(int64_t floats) {
  thread_local AlignedFloats buf;
  return buf.get(floats);
}

// The calling thread's padded-image buffer (im2col.h) and the plan whose
// layout it holds (0: none or unknown): the next image of the same plan then
// copies just its rows, the zeros around them being in place already.
struct PadScratch {
  AlignedFloats buf;
  int64_t capacity = 0;  // the most floats asked for: asking for more moves the buffer
  uint64_t layout_id = 0;
  float* get(int64_t floats) {
    if (floats > capacity) {
      capacity = floats;
      layout_id = 0;
    }
    float* p = buf.get(floats);
    if (p == nullptr) capacity = layout_id = 0;
    return p;
  }
};
PadScratch& pad_scratch() {
  thread_local PadScratch s;
  return s;
}

// The calling thread's packed weights (read by every task of the run).
float* weight_scratch(int64_t floats) {
  thread_local AlignedFloats buf;
  return buf.get(floats);
}

Status scratch_error(int64_t floats) {
  return internal_error("out of memory for a scratch buffer of " + std::to_string(floats) + " floats");
}

// Items per parallel task so that each task has enough multiply-adds to be
// worth waking a thread for.
int64_t work_grain(int64_t macs_per_item) {
  return std::max<int64_t>(1, (int64_t{1} << 17) / std::max<int64_t>(1, macs_per_item));
}

// The fused MaxPool on every plane of y [N, M, H, W], for the paths that
// write the Conv's whole output first.
Tensor max_pool_2x2_planes(const Tensor& y, ThreadPool* pool) {
  const int64_t h = y.dim(2), w = y.dim(3), planes = y.dim(0) * y.dim(1);
  Tensor out = Tensor::uninitialized(DType::kFloat32, {y.dim(0), y.dim(1), h / 2, w / 2});
  const float* src = y.data<float>();
  float* dst = out.data<float>();
  pool->parallel_for(planes, [&](int64_t b, int64_t e) {
    x86::max_pool_2x2_planes_f32(src + b * h * w, e - b, h, w, dst + b * (h / 2) * (w / 2));
  }, work_grain(h * w));
  return out;
}

// Runs fn(begin, end, inner_pool) over `tasks` independent (image, group)
// products of macs_per_task multiply-adds each. With enough tasks to keep
// every thread busy they are spread over the pool and each sgemm runs
// single-threaded (spreads says which); otherwise they run in turn and each
// sgemm gets the pool.
bool spreads(int64_t tasks, int threads) {
  return threads > 1 && (tasks >= 2 * threads || (tasks >= threads && tasks % threads == 0));
}
template <class F>
void run_tasks(ThreadPool* pool, int64_t tasks, int64_t macs_per_task, F&& fn) {
  if (spreads(tasks, pool != nullptr ? pool->size() : 1)) {
    pool->parallel_for(tasks, [&](int64_t b, int64_t e) { fn(b, e, nullptr); }, work_grain(macs_per_task));
  } else {
    fn(0, tasks, pool);
  }
}

Status check_float(const KernelContext& ctx, size_t i, const char* what) {
  if (ctx.input(i).dtype() != DType::kFloat32)
    return unsupported(std::string(what) + " of dtype " + dtype_name(ctx.input(i).dtype()) +
                       " (only float32 is implemented)");
  return Status::Ok();
}

Status check_bias(const KernelContext& ctx, int64_t channels) {
  if (!ctx.has_input(2)) return Status::Ok();
  QTK_RETURN_IF_ERROR(check_float(ctx, 2, "bias B"));
  const Tensor& b = ctx.input(2);
  if (b.rank() != 1 || b.dim(0) != channels)
    return invalid_argument("bias B has shape " + shape_to_string(b.shape()) + ", expected [" +
                            std::to_string(channels) + "]");
  return Status::Ok();
}

Status check_kernel_attr(const ConvAttrs& a, const Shape& kernel) {
  if (!a.kernel_shape.empty() && a.kernel_shape != kernel)
    return invalid_argument("kernel_shape " + shape_to_string(a.kernel_shape) +
                            " does not match the weight's spatial dims " + shape_to_string(kernel));
  return Status::Ok();
}

// Depthwise-style Conv (one input channel per group), 1-D or 2-D, as a
// direct window loop: out[m] = b[m] + sum_k x[c(m)] * w[m] (the order in
// ref/depthwise_plane.h); AVX-512 on the plane's interior when the path allows.
DepthwisePlane depthwise_view(const ConvGeometry& g) {
  const bool one_d = g.rank() == 1;
  const int last = g.rank() - 1;
  DepthwisePlane p;
  p.in_h = one_d ? 1 : g.in[0], p.in_w = g.in[last];
  p.out_h = one_d ? 1 : g.out[0], p.out_w = g.out[last];
  p.k_h = one_d ? 1 : g.kernel[0], p.k_w = g.kernel[last];
  p.s_h = one_d ? 1 : g.strides[0], p.s_w = g.strides[last];
  p.d_h = one_d ? 1 : g.dilations[0], p.d_w = g.dilations[last];
  p.p_h = one_d ? 0 : g.pads_begin[0], p.p_w = g.pads_begin[last];
  return p;
}

void depthwise_plane(const float* x, const float* w, float bias, const DepthwisePlane& p, bool avx512, float* y) {
  if (avx512) return x86::sconv_depthwise_plane_avx512(x, w, bias, p, y);  // same sums, vectorized
  depthwise_plane_reference(x, w, bias, p, y);
}

// X and W of Conv / ConvTranspose: float32, [N, C, spatial...], same rank.
Status check_conv_operands(KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(expect_inputs(ctx, 2));
  QTK_RETURN_IF_ERROR(check_float(ctx, 0, "input X"));
  QTK_RETURN_IF_ERROR(check_float(ctx, 1, "weight W"));
  const Tensor& X = ctx.input(0);
  const Tensor& W = ctx.input(1);
  if (X.rank() < 3)
    return invalid_argument("input X has shape " + shape_to_string(X.shape()) + ", expected [N, C, spatial...]");
  if (W.rank() != X.rank())
    return invalid_argument("weight W has shape " + shape_to_string(W.shape()) + ", expected rank " +
                            std::to_string(X.rank()) + " like X " + shape_to_string(X.shape()));
  return Status::Ok();
}

// Packs W [M, Cg, kernel...] for `groups` groups into dst.
void pack_conv_weights(const float* w, int64_t groups, int64_t mg, int64_t k, SgemmPath path, float* dst) {
  const int64_t per_group = x86::sconv_packed_weights_floats(mg, k, path);
  for (int64_t grp = 0; grp < groups; ++grp)
    x86::sconv_pack_weights(mg, k, w + grp * mg * k, dst + grp * per_group, path);
}

// The last micro-tile of a grid row reads up to NR - 1 floats past it.
static_assert(kPaddedImageSlack >= kSgemmMaxPackedBWidth, "padded-image slack must cover a micro-tile");

// What a run needs besides the weights, for one pair of X and W shapes: made
// on the first run with those shapes and kept (they rarely change).
struct ConvPlan {
  uint64_t id = 0;  // unique over the process (tags PadScratch contents)
  Shape key;  // X's shape, W's shape, the threads
  PaddedImage layout;  // layout.images images side by side
  std::vector<x86::SconvRun> runs;  // grid columns -> output positions
  std::vector<int64_t> tile_runs;
  std::vector<int64_t> k_bounds;  // x86::sconv_k_blocks of the layout's offsets
};

// Grid columns the micro-kernels compute for a grid of `cols`: whole tiles
// of nr, and a last tile of nr / 2 when that covers the rest.
int64_t computed_columns(int64_t cols, int64_t nr) {
  const int64_t rem = cols % nr;
  return cols - rem + (rem == 0 ? 0 : rem <= nr / 2 ? nr / 2 : nr);
}

// The layout for `batch` images of `groups` groups: small images are laid
// side by side, a divisor of the batch (up to 8) at a time, so that the
// columns lost to rounding the grid up to whole tiles are shared (a 7x7 image
// with pads 1 is a 55-column grid computed as 64; two side by side, 111 as
// 112). One image stays alone when that computes within 1% of the fewest
// columns per image; otherwise the most images within 1% of the fewest lie
// side by side (fewer, larger products: measured 7x7, 64 channels, batch 64:
// 2 images 1.33 ms, 4 or 8 1.25 ms), as long as the tasks still spread over
// the threads as they did image by image and the padded buffer stays within
// 512 KiB.
PaddedImage batch_layout(const ConvGeometry& g, int64_t cg, int64_t batch, int64_t groups, int threads, int64_t nr) {
  std::vector<std::pair<double, PaddedImage>> options;  // (columns per image, layout)
  PaddedImage one = padded_image_layout(g, cg, 1);
  const double alone = double(computed_columns(one.grid_cols, nr));
  double fewest = alone;
  const bool spread = spreads(batch * groups, threads);
  for (int64_t images = 2; images <= std::min<int64_t>(batch, 8); ++images) {
    if (batch % images != 0 || (spread && !spreads(batch / images * groups, threads))) continue;
    PaddedImage l = padded_image_layout(g, cg, images);
    if (l.images != images || l.floats(cg) > (int64_t{512} << 10) / int64_t(sizeof(float))) break;
    const double cost = double(computed_columns(l.grid_cols, nr)) / double(images);
    fewest = std::min(fewest, cost);
    options.emplace_back(cost, std::move(l));
  }
  if (alone <= 1.01 * fewest) return one;
  for (size_t i = options.size(); i-- > 0;)
    if (options[i].first <= 1.01 * fewest) return std::move(options[i].second);
  return one;  // not reached: some option has the fewest
}

// y_image: floats between two images of Y.
std::shared_ptr<const ConvPlan> make_conv_plan(Shape key, const ConvGeometry& g, int64_t cg, int64_t batch,
                                               int64_t groups, int threads, int64_t y_image, int64_t nr) {
  static std::atomic<uint64_t> next_id{1};
  auto plan = std::make_shared<ConvPlan>();
  plan->id = next_id.fetch_add(1, std::memory_order_relaxed);
  plan->key = std::move(key);
  plan->layout = batch_layout(g, cg, batch, groups, threads, nr);
  const PaddedImage& l = plan->layout;
  // Grid row q is output row q / images of image q % images.
  std::vector<int64_t> out_off(l.row_off.size());
  for (size_t q = 0; q < out_off.size(); ++q)
    out_off[q] = static_cast<int64_t>(q) % l.images * y_image + static_cast<int64_t>(q) / l.images * l.ow_n;
  x86::sconv_grid_runs(l.row_off, out_off, l.ow_n, l.grid_cols, nr, plan->runs, plan->tile_runs);
  x86::sconv_k_blocks(static_cast<int64_t>(l.k_off.size()), l.k_off.data(), nr, plan->k_bounds);
  return plan;
}

// The fused epilogue on n values of y (z: the addend, laid out like y, or
// null), in the order the separate Add and Clip / Relu would compute it.
void conv_epilogue(float* y, const float* z, int64_t n, bool clamp, float lo, float hi) {
  if (z != nullptr)
    for (int64_t i = 0; i < n; ++i) y[i] += z[i];
  if (clamp)
    for (int64_t i = 0; i < n; ++i) {
      const float v = y[i] < lo ? lo : y[i];
      y[i] = hi < v ? hi : v;
    }
}

class ConvKernel final : public Kernel {
 public:
  explicit ConvKernel(ConvAttrs attrs) : attrs_(std::move(attrs)), path_(sgemm_resolve_path(SgemmPath::kAuto)) {}

  // Packs a constant W once, so that runs skip it. Shapes that do not fit are
  // left to run(), which reports them. The packed copy is then the only one
  // run() reads: the executor may free W (KernelInit::release_constant).
  void prepack(const Tensor& w, const KernelInit& init) {
    const int64_t G = attrs_.group;
    if (w.dtype() != DType::kFloat32 || w.rank() < 3 || w.dim(0) % G != 0) return;
    if (w.dim(1) == 1 && G > 1 && w.rank() <= 4) return;  // depthwise: the direct loop reads W as is
    const int64_t mg = w.dim(0) / G, k = w.numel() / std::max<int64_t>(w.dim(0), 1);
    const int64_t per_group = x86::sconv_packed_weights_floats(mg, k, path_);
    float* dst = packed_.get(G * per_group);
    if (dst == nullptr) return;  // runs pack per call instead
    pack_conv_weights(w.data<float>(), G, mg, k, path_, dst);
    packed_data_ = dst;
    const uint64_t packed_bytes = static_cast<uint64_t>(G * per_group) * sizeof(float);
    if (init.release_constant && init.release_constant(1, packed_bytes)) w_is_constant_ = true;
    else packed_w_ = w;
  }

  Status run(KernelContext& ctx) override;

 private:
  ConvAttrs attrs_;
  SgemmPath path_;
  Tensor packed_w_;  // the W that packed_ holds (shares its storage)
  bool w_is_constant_ = false;  // W is always the packed constant (its storage may be gone)
  AlignedFloats packed_;
  const float* packed_data_ = nullptr;
  std::mutex plan_mu_;  // runs of one session may overlap
  std::shared_ptr<const ConvPlan> plan_;
};

Status ConvKernel::run(KernelContext& ctx) {
  const ConvAttrs& a = attrs_;
  QTK_RETURN_IF_ERROR(check_conv_operands(ctx));
  const Tensor& X = ctx.input(0);
  const Tensor& W = ctx.input(1);
  const int64_t N = X.dim(0), C = X.dim(1), M = W.dim(0), G = a.group;
  if (C % G != 0 || W.dim(1) * G != C || M % G != 0)
    return invalid_argument("X " + shape_to_string(X.shape()) + " and W " + shape_to_string(W.shape()) +
                            " do not fit group=" + std::to_string(G) +
                            " (need C = W.shape[1] * group and M divisible by group)");
  QTK_RETURN_IF_ERROR(check_bias(ctx, M));

  ConvGeometry g;
  g.in.assign(X.shape().begin() + 2, X.shape().end());
  g.kernel.assign(W.shape().begin() + 2, W.shape().end());
  QTK_RETURN_IF_ERROR(check_kernel_attr(a, g.kernel));
  QTK_RETURN_IF_ERROR(resolve_window_geometry(a.auto_pad, a.strides, a.dilations, a.pads, false, g));

  Shape y_shape = {N, M};
  y_shape.insert(y_shape.end(), g.out.begin(), g.out.end());
  if (a.pool && (g.rank() != 2 || g.out[0] < 2 || g.out[1] < 2))
    return invalid_argument("the fused MaxPool (2x2, stride 2) needs a 2-D Conv output of at least 2x2, got " +
                            shape_to_string(y_shape));
  // Every path below writes every element of Y; the implicit GEMM may take
  // the addend's storage for it instead (below), so each path allocates it.
  Tensor Y;
  float* y = nullptr;
  auto new_y = [&]() {
    Y = Tensor::uninitialized(DType::kFloat32, y_shape);
    y = Y.data<float>();
  };
  const int64_t Cg = C / G, Mg = M / G;
  const int64_t Q = g.in_size(), P = g.out_size(), K = Cg * g.kernel_size();
  const float* x = X.data<float>();
  const float* w = W.data<float>();
  const float* bias = ctx.has_input(2) ? ctx.input(2).data<float>() : nullptr;

  // The fused epilogue runs inside the product when the addend has Y's
  // shape; one that broadcasts is added (then clamped) afterwards.
  const float* z = nullptr;
  bool after = false;
  if (a.add) {
    if (!ctx.has_input(3)) return invalid_argument("fused Conv has no addend (input 3)");
    QTK_RETURN_IF_ERROR(check_float(ctx, 3, "fused addend"));
    if (ctx.input(3).shape() == y_shape) z = ctx.input(3).data<float>();
    else after = true;
  }
  const bool inline_clamp = a.clamp && !after;
  // The implicit GEMM pools each task's images while they are in cache;
  // every other path pools Y in finish().
  const bool pool_per_task = a.pool && G == 1 && !after;
  Tensor pooled;
  auto finish = [&]() -> Status {
    if (pooled.defined()) {
      ctx.outputs[0] = std::move(pooled);
      return Status::Ok();
    }
    Tensor result = Y;
    if (after) {
      auto add = [](float u, float v) { return u + v; };
      QTK_ASSIGN_OR_RETURN(result, (eval_binary<float, float, float>(Y, ctx.input(3), DType::kFloat32, ctx.pool, add)));
      conv_epilogue(result.data<float>(), nullptr, result.numel(), a.clamp, a.lo, a.hi);
    }
    if (a.pool) {
      if (result.rank() != 4)
        return invalid_argument("the fused MaxPool (2x2, stride 2) got a Conv output of shape " +
                                shape_to_string(result.shape()));
      result = max_pool_2x2_planes(result, ctx.pool);
    }
    ctx.outputs[0] = std::move(result);
    return Status::Ok();
  };

  if (N == 0 || M == 0 || P == 0) {
    new_y();
    return finish();
  }

  if (Cg == 1 && G > 1 && g.rank() <= 2) {
    new_y();
    const DepthwisePlane view = depthwise_view(g);
    const bool avx512 = path_ == SgemmPath::kAvx512 && x86::sconv_depthwise_avx512_supported();
    if (avx512 && Mg == 1 && x86::sconv_depthwise_prefers_channels(view, M)) {
      // Small planes: up to kChannels channels of one image per task, the
      // channels in the vectors.
      constexpr int64_t kChannels = 64;
      const int64_t chunks = (M + kChannels - 1) / kChannels;
      x86::SconvDepthwiseChannels prep;
      x86::sconv_depthwise_channels_prepare(w, bias, M, view, prep);
      ctx.pool->parallel_for(N * chunks, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
          const int64_t n = t / chunks, c0 = t % chunks * kChannels, cn = std::min(kChannels, M - c0);
          const int64_t at = (n * M + c0) * P;
          x86::sconv_depthwise_channels_avx512(prep, x + (n * C + c0) * Q, c0, cn, y + at);
          conv_epilogue(y + at, z != nullptr ? z + at : nullptr, cn * P, inline_clamp, a.lo, a.hi);
        }
      }, work_grain(kChannels * P * K));
      return finish();
    }
    ctx.pool->parallel_for(N * M, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t n = t / M, m = t % M, c = m / Mg;
        depthwise_plane(x + (n * C + c) * Q, w + m * K, bias ? bias[m] : 0.f, view, avx512, y + t * P);
        conv_epilogue(y + t * P, z != nullptr ? z + t * P : nullptr, P, inline_clamp, a.lo, a.hi);
      }
    }, work_grain(P * K));
    return finish();
  }

  // The weights: packed at session build when W is a constant, else now.
  const int64_t w_floats = x86::sconv_packed_weights_floats(Mg, K, path_);
  const float* packed_w = packed_data_;
  if (!w_is_constant_ && (!packed_w_.defined() || packed_w_.raw() != W.raw() || packed_w_.shape() != W.shape())) {
    float* scratch = weight_scratch(G * w_floats);
    if (scratch == nullptr) return scratch_error(G * w_floats);
    pack_conv_weights(w, G, Mg, K, path_, scratch);
    packed_w = scratch;
  }

  // Each (image, group), or a few small images of a group side by side
  // (batch_layout), is copied into a zero-padded, stride-phase-split
  // buffer whose shifted views are the GEMM's B operand (im2col.h,
  // x86/sconv_implicit_gemm.h); only the grid columns that are output
  // positions are stored.
  const int64_t nr = x86::sconv_tile(path_).nr;
  const int threads = ctx.pool != nullptr ? ctx.pool->size() : 1;
  Shape key = X.shape();
  key.insert(key.end(), W.shape().begin(), W.shape().end());
  key.push_back(threads);
  std::shared_ptr<const ConvPlan> plan;
  {
    std::lock_guard<std::mutex> lk(plan_mu_);
    if (plan_ != nullptr && plan_->key == key) plan = plan_;
  }
  if (plan == nullptr) {
    plan = make_conv_plan(std::move(key), g, Cg, N, G, threads, M * P, nr);
    std::lock_guard<std::mutex> lk(plan_mu_);
    plan_ = plan;
  }
  const PaddedImage& layout = plan->layout;
  const int64_t gemm_cols = layout.grid_cols, images = layout.images;
  const int64_t pad_floats = layout.floats(Cg);
  // With a fused pool each task's output goes to a scratch buffer, then
  // pooled. Else a residual nobody reads later takes the output: one block's
  // activations fewer alive (the join reads each addend value just before it
  // writes the sum there; summed over several K blocks, the first would
  // overwrite it).
  if (pool_per_task) {
    pooled = Tensor::uninitialized(DType::kFloat32, {N, M, g.out[0] / 2, g.out[1] / 2});
  } else if (z != nullptr && ctx.input_reusable(3) && plan->k_bounds.size() == 2) {
    Y = ctx.input(3);
    y = Y.data<float>();
  } else {
    new_y();
  }
  const int64_t pooled_plane = pool_per_task ? (g.out[0] / 2) * (g.out[1] / 2) : 0;

  std::atomic<bool> no_memory{false};
  run_tasks(ctx.pool, N / images * G, Mg * K * gemm_cols, [&](int64_t begin, int64_t end, ThreadPool* inner) {
    PadScratch& scratch = pad_scratch();
    float* pad = scratch.get(pad_floats);
    if (pad == nullptr) {
      no_memory = true;
      return;
    }
    // Group 1 here: the task's images' outputs are images * M planes in a row.
    float* task_y = pool_per_task ? pooled_conv_scratch(images * M * P) : nullptr;
    if (pool_per_task && task_y == nullptr) {
      no_memory = true;
      return;
    }
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / G * images, grp = t % G;  // images n, n + 1, ... side by side
      fill_padded_image(x + (n * C + grp * Cg) * Q, Cg, g, layout, pad, scratch.layout_id == plan->id, C * Q);
      scratch.layout_id = plan->id;
      const int64_t at = (n * M + grp * Mg) * P;
      x86::SconvOut out{pool_per_task ? task_y : y + at, P, plan->runs.data(), plan->tile_runs.data()};
      out.addend = z != nullptr ? z + at : nullptr;
      out.clamp = inline_clamp;
      out.lo = a.lo;
      out.hi = a.hi;
      x86::sconv_implicit_gemm(Mg, gemm_cols, K, packed_w + grp * w_floats, {pad, layout.k_off.data(), nr, &plan->k_bounds},
                               bias != nullptr ? bias + grp * Mg : nullptr, out, inner, path_);
      if (pool_per_task) {
        float* dst = pooled.data<float>() + n * M * pooled_plane;
        x86::max_pool_2x2_planes_f32(task_y, images * M, g.out[0], g.out[1], dst);
      }
    }
  });
  if (no_memory) return scratch_error(pad_floats + (pool_per_task ? images * M * P : 0));
  return finish();
}

// ONNX's rule for ConvTranspose pads from a total: SAME_UPPER puts the odd
// pad at the end, everything else at the start. Floor division as in ONNX's
// reference, so a negative total (output_shape larger than the natural
// output) leaves the extra rows at the end.
void split_total_pad(int64_t total, bool same_upper, int64_t& begin, int64_t& end) {
  const int64_t half = total >= 0 ? total / 2 : -((-total + 1) / 2);  // floor(total / 2)
  if (same_upper) {
    begin = half;
    end = total - half;
  } else {
    begin = total - half;
    end = half;
  }
}

Status run_conv_transpose(const ConvAttrs& a, KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(check_conv_operands(ctx));
  const Tensor& X = ctx.input(0);
  const Tensor& W = ctx.input(1);
  const int64_t N = X.dim(0), C = X.dim(1), G = a.group;
  if (W.dim(0) != C || C % G != 0)
    return invalid_argument("X " + shape_to_string(X.shape()) + " and W " + shape_to_string(W.shape()) +
                            " do not fit group=" + std::to_string(G) + " (need W.shape[0] = C, divisible by group)");
  const int64_t Cg = C / G, Mg = W.dim(1), M = Mg * G;
  QTK_RETURN_IF_ERROR(check_bias(ctx, M));

  const int d = X.rank() - 2;
  Shape in(X.shape().begin() + 2, X.shape().end());
  Shape kernel(W.shape().begin() + 2, W.shape().end());
  QTK_RETURN_IF_ERROR(check_kernel_attr(a, kernel));
  // Validate strides/dilations/pads with the common resolver on a dummy
  // forward geometry; the transposed output size is computed below.
  if (!a.dilations.empty() && static_cast<int>(a.dilations.size()) != d)
    return invalid_argument("dilations " + shape_to_string(a.dilations) + " must have " + std::to_string(d) +
                            " entries");
  ConvGeometry check;
  check.in.assign(d, 0);
  check.kernel = kernel;
  for (int i = 0; i < d; ++i) check.in[i] = (kernel[i] - 1) * (a.dilations.empty() ? 1 : a.dilations[i]) + 1;
  QTK_RETURN_IF_ERROR(resolve_window_geometry(AutoPad::kNotSet, a.strides, a.dilations, a.pads, false, check));
  Shape out_padding = a.output_padding.empty() ? Shape(d, 0) : a.output_padding;
  if (static_cast<int>(out_padding.size()) != d)
    return invalid_argument("output_padding " + shape_to_string(out_padding) + " must have " +
                            std::to_string(d) + " entries");
  Shape target;  // explicit output spatial shape, if any
  if (!a.output_shape.empty()) {
    const int given = static_cast<int>(a.output_shape.size());
    if (given == d)
      target = a.output_shape;
    else if (given == d + 2)  // [N, C, spatial...]
      target.assign(a.output_shape.begin() + 2, a.output_shape.end());
    else
      return invalid_argument("output_shape " + shape_to_string(a.output_shape) + " must have " +
                              std::to_string(d) + " entries");
  }

  // Col2im geometry: the "image" is Y's spatial shape, the columns X's.
  ConvGeometry g;
  g.kernel = kernel;
  g.strides = check.strides;
  g.dilations = check.dilations;
  g.out = in;
  g.in.assign(d, 0);
  g.pads_begin.assign(d, 0);
  g.pads_end.assign(d, 0);
  for (int i = 0; i < d; ++i) {
    if (out_padding[i] < 0)
      return invalid_argument("output_padding " + shape_to_string(out_padding) + " must not be negative");
    const int64_t full = g.strides[i] * (in[i] - 1) + out_padding[i] + (kernel[i] - 1) * g.dilations[i] + 1;
    const bool same = a.auto_pad == AutoPad::kSameUpper || a.auto_pad == AutoPad::kSameLower;
    if (!target.empty() || same) {
      g.in[i] = !target.empty() ? target[i] : in[i] * g.strides[i];
      split_total_pad(full - g.in[i], a.auto_pad == AutoPad::kSameUpper, g.pads_begin[i], g.pads_end[i]);
    } else {
      if (a.auto_pad == AutoPad::kNotSet && !a.pads.empty()) {
        g.pads_begin[i] = a.pads[i];
        g.pads_end[i] = a.pads[i + d];
      }
      g.in[i] = full - g.pads_begin[i] - g.pads_end[i];
    }
    if (g.in[i] < 0)
      return invalid_argument("output spatial dim " + std::to_string(i) + " would be " + std::to_string(g.in[i]) +
                              " (input " + shape_to_string(in) + ", kernel " + shape_to_string(kernel) + ", pads " +
                              shape_to_string(a.pads) + ")");
  }

  Shape y_shape = {N, M};
  y_shape.insert(y_shape.end(), g.in.begin(), g.in.end());
  Tensor Y(DType::kFloat32, y_shape);  // zeroed: col2im accumulates into it
  const int64_t Q = g.out_size(), P = g.in_size(), KK = Mg * g.kernel_size();
  const float* x = X.data<float>();
  const float* w = W.data<float>();
  const float* bias = ctx.has_input(2) ? ctx.input(2).data<float>() : nullptr;
  float* y = Y.data<float>();

  if (N > 0 && M > 0 && P > 0) {
    std::atomic<bool> no_memory{false};
    run_tasks(ctx.pool, N * G, KK * Q * Cg, [&](int64_t begin, int64_t end, ThreadPool* inner) {
      float* col = column_scratch(KK * Q);
      if (col == nullptr) {
        no_memory = true;
        return;
      }
      for (int64_t t = begin; t < end; ++t) {
        const int64_t n = t / G, grp = t % G;
        float* yg = y + (n * M + grp * Mg) * P;
        // col[Mg*k, Q] = W_g^T[Mg*k, Cg] * X_g[Cg, Q]; W_g is stored [Cg, Mg*k].
        sgemm(true, false, KK, Q, Cg, 1.f, w + grp * Cg * KK, KK, x + (n * C + grp * Cg) * Q, Q, 0.f, col, Q, inner);
        col2im(col, Mg, g, yg);
        if (bias != nullptr)
          for (int64_t m = 0; m < Mg; ++m) {
            const float bv = bias[grp * Mg + m];
            for (float* p = yg + m * P; p != yg + (m + 1) * P; ++p) *p += bv;
          }
      }
    });
    if (no_memory) return scratch_error(KK * Q);
  }
  ctx.outputs[0] = Y;
  return Status::Ok();
}

KernelFactory conv_factory(bool transpose) {
  return [transpose](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    QTK_ASSIGN_OR_RETURN(ConvAttrs attrs, read_conv_attrs(init.node, transpose));
    if (transpose)
      return make_fn_kernel([attrs](KernelContext& ctx) { return run_conv_transpose(attrs, ctx); });
    auto kernel = std::make_unique<ConvKernel>(std::move(attrs));
    if (init.constant_input) {
      if (const Tensor* w = init.constant_input(1)) kernel->prepack(*w, init);
    }
    return std::unique_ptr<Kernel>(std::move(kernel));
  };
}

}  // namespace

void register_conv_ops(OpRegistry& r) {
  r.add("Conv", conv_factory(false));
  r.add("ConvTranspose", conv_factory(true));
}

}  // namespace qtk::rt
