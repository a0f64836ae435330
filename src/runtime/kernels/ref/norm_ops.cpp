// Normalisation reference kernels: BatchNormalization (inference only),
// LayerNormalization, InstanceNormalization, LpNormalization and
// GroupNormalization. Statistics are computed in double (two passes: mean,
// then squared deviations) and the result is stored in the input's type.
#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/x86/row_stats.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk::rt {

namespace {

// Rows per task for rows of `row_elems` elements: about 16K elements, so a
// small tensor (a ViT's 17 tokens at batch 1) runs on one thread instead of
// paying to wake another (int8 vit_fm batch 1 on 2 threads: its 5
// LayerNorms took 0.016 ms against 0.007 on 1).
int64_t rows_grain(int64_t row_elems) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, row_elems)); }

using ref::expect_inputs;
using ref::normalize_axis;

// Calls f(T{}) for the float dtypes these kernels implement.
template <class F>
Status dispatch_float(DType dt, F&& f) {
  switch (dt) {
    case DType::kFloat32: f(float{}); return Status::Ok();
    case DType::kFloat64: f(double{}); return Status::Ok();
    default: return unsupported(std::string("dtype ") + dtype_name(dt) + " is not supported here (float, double only)");
  }
}

// Parameters of any float dtype, read once as doubles.
std::vector<double> as_doubles(const Tensor& t) {
  if (t.dtype() == DType::kFloat64) return std::vector<double>(t.data<double>(), t.data<double>() + t.numel());
  std::vector<float> f = t.to_float_vector();
  return std::vector<double>(f.begin(), f.end());
}

Status expect_numel(const Tensor& t, int64_t n, const char* what) {
  if (t.numel() != n)
    return invalid_argument(std::string(what) + " must have " + std::to_string(n) + " elements, got shape " +
                            shape_to_string(t.shape()));
  return Status::Ok();
}

// Mean and 1/sqrt(var + eps) of n values spaced `stride` apart.
template <class T>
void moments(const T* x, int64_t n, int64_t stride, double eps, double& mean, double& inv_std) {
  if constexpr (std::is_same_v<T, float>) {
    if (stride == 1) return x86::row_moments_f32(x, n, eps, mean, inv_std);  // the same sums, vectorized
  }
  // Σ f(x_i) in double as eight running sums (element i into sum i % 8)
  // added pairwise: independent chains, not one add's latency per element.
  auto sum8 = [&](auto f) {
    double part[8] = {};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      for (int k = 0; k < 8; ++k) part[k] += f(static_cast<double>(x[(i + k) * stride]));
    for (int k = 0; i < n; ++i, ++k) part[k] += f(static_cast<double>(x[i * stride]));
    return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  };
  const double s = sum8([](double v) { return v; });
  mean = n > 0 ? s / static_cast<double>(n) : 0.0;
  const double v = sum8([&](double xi) { return (xi - mean) * (xi - mean); });
  const double var = n > 0 ? v / static_cast<double>(n) : 0.0;
  inv_std = 1.0 / std::sqrt(var + eps);
}

// ---- BatchNormalization ----------------------------------------------------

Status run_batch_norm(double eps, KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(expect_inputs(ctx, 5));
  const Tensor& x = ctx.input(0);
  if (x.rank() < 2) return invalid_argument("X must have rank >= 2 (N x C x ...), got " + shape_to_string(x.shape()));
  const int64_t n = x.dim(0), c = x.dim(1);
  const int64_t inner = shape_numel(Shape(x.shape().begin() + 2, x.shape().end()));
  std::vector<double> p[4];
  const char* names[4] = {"scale", "B", "input_mean", "input_var"};
  // Parameters are per channel, or per (channel, position) for the spatial=0
  // form of opsets < 9.
  int64_t per = -1;
  for (int k = 0; k < 4; ++k) {
    const Tensor& t = ctx.input(k + 1);
    const int64_t want = t.numel() == c ? c : c * inner;
    QTK_RETURN_IF_ERROR(expect_numel(t, want, names[k]));
    if (per >= 0 && per != want) return invalid_argument("scale, B, mean and var must have the same shape");
    per = want;
    p[k] = as_doubles(t);
  }
  const bool per_channel = per == c;
  // y = x * a + b with a = scale / sqrt(var + eps), b = B - mean * a.
  std::vector<double> a(per), b(per);
  for (int64_t i = 0; i < per; ++i) {
    a[i] = p[0][i] / std::sqrt(p[3][i] + eps);
    b[i] = p[1][i] - p[2][i] * a[i];
  }
  Tensor y(x.dtype(), x.shape());
  QTK_RETURN_IF_ERROR(dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    ctx.pool->parallel_for(n * c, [&](int64_t b0, int64_t e0) {
      for (int64_t nc = b0; nc < e0; ++nc) {
        const int64_t ch = nc % c;
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t k = per_channel ? ch : ch * inner + i;
          yp[nc * inner + i] = static_cast<T>(static_cast<double>(xp[nc * inner + i]) * a[k] + b[k]);
        }
      }
    }, rows_grain(inner));
  }));
  ctx.outputs[0] = std::move(y);
  // Optional running-stat outputs of an inference-mode node: pass through.
  for (size_t o = 1; o < ctx.outputs.size(); ++o)
    ctx.outputs[o] = o <= 2 ? ctx.input(o + 2) : Tensor(x.dtype(), {c});
  return Status::Ok();
}

Expected<std::unique_ptr<Kernel>> make_batch_norm(const KernelInit& init) {
  const auto& node = init.node;
  if (init.opset >= 14) {
    if (node.attr_int("training_mode", 0) != 0)
      return unsupported("BatchNormalization with training_mode=1 is not supported (inference only)");
  } else {
    // Before opset 14 the extra outputs (running/saved statistics) exist only
    // in training.
    for (size_t o = 1; o < node.outputs.size(); ++o)
      if (!node.outputs[o].empty())
        return unsupported("BatchNormalization in training form (more than one output) is not supported");
  }
  const double eps = node.attr_float("epsilon", 1e-5f);
  return make_fn_kernel([eps](KernelContext& ctx) { return run_batch_norm(eps, ctx); });
}

// ---- LayerNormalization ----------------------------------------------------

struct LayerNormAttrs {
  int64_t axis;
  double eps;
  DType stash;
};

// Expands a parameter broadcastable to `inner` into |inner| doubles.
Expected<std::vector<double>> expand_to(const Tensor& t, const Shape& inner, const char* what) {
  auto bs = ref::broadcast_shapes(t.shape(), inner);
  if (!bs.ok() || *bs != inner)
    return invalid_argument(std::string(what) + " of shape " + shape_to_string(t.shape()) +
                            " does not broadcast to the normalized shape " + shape_to_string(inner));
  const auto src = as_doubles(t);
  const auto st = ref::broadcast_strides(t.shape(), inner);
  const int64_t n = shape_numel(inner);
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    int64_t rem = i, off = 0;
    for (size_t d = inner.size(); d-- > 0;) {
      off += (rem % inner[d]) * st[d];
      rem /= inner[d];
    }
    out[i] = src[off];
  }
  return out;
}

Status run_layer_norm(const LayerNormAttrs& a, KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(expect_inputs(ctx, 2));
  const Tensor& x = ctx.input(0);
  if (x.rank() == 0) return invalid_argument("X must have rank >= 1");
  QTK_ASSIGN_OR_RETURN(int axis, normalize_axis(a.axis, x.rank()));
  const Shape inner_shape(x.shape().begin() + axis, x.shape().end());
  const int64_t inner = shape_numel(inner_shape);
  const int64_t outer = shape_numel(Shape(x.shape().begin(), x.shape().begin() + axis));
  QTK_ASSIGN_OR_RETURN(std::vector<double> scale, expand_to(ctx.input(1), inner_shape, "Scale"));
  std::vector<double> bias;
  if (ctx.has_input(2)) {
    QTK_ASSIGN_OR_RETURN(bias, expand_to(ctx.input(2), inner_shape, "B"));
  }

  Shape stat_shape = x.shape();
  for (int d = axis; d < x.rank(); ++d) stat_shape[d] = 1;
  // y: every element written.
  Tensor y = Tensor::uninitialized(x.dtype(), x.shape()), mean_t(a.stash, stat_shape), inv_t(a.stash, stat_shape);
  QTK_RETURN_IF_ERROR(dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    ctx.pool->parallel_for(outer, [&](int64_t b0, int64_t e0) {
      for (int64_t o = b0; o < e0; ++o) {
        double mean, inv_std;
        moments(xp + o * inner, inner, 1, a.eps, mean, inv_std);
        if constexpr (std::is_same_v<T, float>) {
          x86::layer_norm_row_f32(xp + o * inner, inner, mean, inv_std, scale.data(),
                                  bias.empty() ? nullptr : bias.data(), yp + o * inner);
        } else {
          for (int64_t i = 0; i < inner; ++i) {
            double v = (static_cast<double>(xp[o * inner + i]) - mean) * inv_std * scale[i];
            if (!bias.empty()) v += bias[i];
            yp[o * inner + i] = static_cast<T>(v);
          }
        }
        if (a.stash == DType::kFloat64) {
          mean_t.data<double>()[o] = mean;
          inv_t.data<double>()[o] = inv_std;
        } else {
          mean_t.data<float>()[o] = static_cast<float>(mean);
          inv_t.data<float>()[o] = static_cast<float>(inv_std);
        }
      }
    }, rows_grain(inner));
  }));
  ctx.outputs[0] = std::move(y);
  if (ctx.outputs.size() > 1) ctx.outputs[1] = std::move(mean_t);
  if (ctx.outputs.size() > 2) ctx.outputs[2] = std::move(inv_t);
  return Status::Ok();
}

Expected<std::unique_ptr<Kernel>> make_layer_norm(const KernelInit& init) {
  LayerNormAttrs a{init.node.attr_int("axis", -1), init.node.attr_float("epsilon", 1e-5f), DType::kFloat32};
  const int64_t stash = init.node.attr_int("stash_type", 1);
  if (stash == static_cast<int64_t>(DType::kFloat64))
    a.stash = DType::kFloat64;
  else if (stash != static_cast<int64_t>(DType::kFloat32))
    return unsupported("LayerNormalization stash_type " + std::to_string(stash) + " (only float and double)");
  return make_fn_kernel([a](KernelContext& ctx) { return run_layer_norm(a, ctx); });
}

// ---- InstanceNormalization and GroupNormalization --------------------------

// Normalises x viewed as [N, G, M] (M contiguous values per group) and then
// applies per-channel scale/bias; `channel_of(g, m)` maps a position back to its
// channel. Instance norm is the case G = C.
struct GroupView {
  int64_t n, groups, per_group, channels, spatial;
};

Status run_group_norm(const GroupView& v, const std::vector<double>& scale, const std::vector<double>& bias,
                      double eps, const Tensor& x, KernelContext& ctx) {
  Tensor y(x.dtype(), x.shape());
  QTK_RETURN_IF_ERROR(dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    ctx.pool->parallel_for(v.n * v.groups, [&](int64_t b0, int64_t e0) {
      for (int64_t ng = b0; ng < e0; ++ng) {
        const int64_t g = ng % v.groups;
        const T* src = xp + ng * v.per_group;
        T* dst = yp + ng * v.per_group;
        double mean, inv_std;
        moments(src, v.per_group, 1, eps, mean, inv_std);
        for (int64_t m = 0; m < v.per_group; ++m) {
          const int64_t ch = g * (v.channels / v.groups) + m / v.spatial;
          dst[m] = static_cast<T>((static_cast<double>(src[m]) - mean) * inv_std * scale[ch] + bias[ch]);
        }
      }
    }, rows_grain(v.per_group));
  }));
  ctx.outputs[0] = std::move(y);
  return Status::Ok();
}

Status run_instance_norm(double eps, KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(expect_inputs(ctx, 3));
  const Tensor& x = ctx.input(0);
  if (x.rank() < 2) return invalid_argument("X must have rank >= 2 (N x C x ...), got " + shape_to_string(x.shape()));
  const int64_t n = x.dim(0), c = x.dim(1);
  const int64_t spatial = shape_numel(Shape(x.shape().begin() + 2, x.shape().end()));
  QTK_RETURN_IF_ERROR(expect_numel(ctx.input(1), c, "scale"));
  QTK_RETURN_IF_ERROR(expect_numel(ctx.input(2), c, "B"));
  if (n * c == 0 || spatial == 0) {
    ctx.outputs[0] = Tensor(x.dtype(), x.shape());
    return dispatch_float(x.dtype(), [](auto) {});
  }
  GroupView v{n, c, spatial, c, spatial};
  return run_group_norm(v, as_doubles(ctx.input(1)), as_doubles(ctx.input(2)), eps, x, ctx);
}

struct GroupNormAttrs {
  double eps;
  int64_t groups;
  bool per_channel_params;  // opset 21: scale/bias per channel; opset 18: per group
};

Status run_group_norm_op(const GroupNormAttrs& a, KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(expect_inputs(ctx, 3));
  const Tensor& x = ctx.input(0);
  if (x.rank() < 2) return invalid_argument("X must have rank >= 2 (N x C x ...), got " + shape_to_string(x.shape()));
  const int64_t n = x.dim(0), c = x.dim(1);
  if (a.groups <= 0 || c % a.groups != 0)
    return invalid_argument("num_groups " + std::to_string(a.groups) + " must divide the channel count " +
                            std::to_string(c));
  const int64_t spatial = shape_numel(Shape(x.shape().begin() + 2, x.shape().end()));
  const int64_t nparam = a.per_channel_params ? c : a.groups;
  QTK_RETURN_IF_ERROR(expect_numel(ctx.input(1), nparam, "scale"));
  QTK_RETURN_IF_ERROR(expect_numel(ctx.input(2), nparam, "bias"));
  std::vector<double> scale = as_doubles(ctx.input(1)), bias = as_doubles(ctx.input(2));
  if (!a.per_channel_params) {
    // Per-group parameters: repeat each over its channels.
    std::vector<double> s(c), b(c);
    for (int64_t ch = 0; ch < c; ++ch) {
      s[ch] = scale[ch / (c / a.groups)];
      b[ch] = bias[ch / (c / a.groups)];
    }
    scale.swap(s);
    bias.swap(b);
  }
  if (n * c == 0 || spatial == 0) {
    ctx.outputs[0] = Tensor(x.dtype(), x.shape());
    return dispatch_float(x.dtype(), [](auto) {});
  }
  GroupView v{n, a.groups, (c / a.groups) * spatial, c, spatial};
  return run_group_norm(v, scale, bias, a.eps, x, ctx);
}

// ---- LpNormalization -------------------------------------------------------

Status run_lp_norm(int64_t axis_attr, int64_t p, KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
  const Tensor& x = ctx.input(0);
  if (x.rank() == 0) return invalid_argument("input must have rank >= 1");
  QTK_ASSIGN_OR_RETURN(int axis, normalize_axis(axis_attr, x.rank()));
  const int64_t len = x.shape()[axis];
  const int64_t outer = shape_numel(Shape(x.shape().begin(), x.shape().begin() + axis));
  const int64_t inner = shape_numel(Shape(x.shape().begin() + axis + 1, x.shape().end()));
  Tensor y(x.dtype(), x.shape());
  QTK_RETURN_IF_ERROR(dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        const int64_t base = o * len * inner + i;
        double norm = 0;
        for (int64_t k = 0; k < len; ++k) {
          const double v = static_cast<double>(xp[base + k * inner]);
          norm += p == 1 ? std::fabs(v) : v * v;
        }
        if (p == 2) norm = std::sqrt(norm);
        // A zero vector stays zero rather than becoming NaN.
        for (int64_t k = 0; k < len; ++k)
          yp[base + k * inner] = norm == 0 ? T{0} : static_cast<T>(static_cast<double>(xp[base + k * inner]) / norm);
      }
  }));
  ctx.outputs[0] = std::move(y);
  return Status::Ok();
}

}  // namespace

void register_norm_ops(OpRegistry& r) {
  r.add("BatchNormalization", make_batch_norm);
  r.add("LayerNormalization", make_layer_norm, "", 17);
  r.add("InstanceNormalization", [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    const double eps = init.node.attr_float("epsilon", 1e-5f);
    return make_fn_kernel([eps](KernelContext& ctx) { return run_instance_norm(eps, ctx); });
  });
  r.add(
      "GroupNormalization",
      [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
        if (!init.node.has_attr("num_groups")) return invalid_argument("GroupNormalization needs num_groups");
        GroupNormAttrs a{init.node.attr_float("epsilon", 1e-5f), init.node.attr_int("num_groups", 0), init.opset >= 21};
        return make_fn_kernel([a](KernelContext& ctx) { return run_group_norm_op(a, ctx); });
      },
      "", 18);
  r.add("LpNormalization", [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    const int64_t axis = init.node.attr_int("axis", -1), p = init.node.attr_int("p", 2);
    if (p != 1 && p != 2) return invalid_argument("LpNormalization p must be 1 or 2, got " + std::to_string(p));
    return make_fn_kernel([axis, p](KernelContext& ctx) { return run_lp_norm(axis, p, ctx); });
  });
}

}  // namespace qtk::rt
