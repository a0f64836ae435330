// Activation reference kernels: pointwise nonlinearities, Clip, PRelu, Gelu
// (also in the com.microsoft domain that ORT-exported transformers use) and
// the axis-wise Softmax / LogSoftmax / Hardmax.
#include <cmath>
#include <limits>
#include <optional>
#include <string>

#include "runtime/kernels/ref/approx_math.h"
#include "runtime/kernels/ref/elementwise_common.h"
#include "runtime/kernels/x86/softmax_rows.h"
#include "runtime/kernels/x86/vector_math.h"
#include "runtime/op_registry.h"

namespace qtk::rt {
namespace {

using namespace ref;

template <class F>
KernelFactory pointwise_float(const char* name, F f) {
  return [name, f](const KernelInit&) -> Expected<std::unique_ptr<Kernel>> {
    return make_fn_kernel([name, f](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
      return set_single_output(ctx, map_float(ctx.input(0), ctx.pool, name, f));
    });
  };
}

// Kernels whose function depends on float attributes: make(node) builds f.
template <class Make>
KernelFactory pointwise_float_attrs(const char* name, Make make) {
  return [name, make](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    auto f = make(init.node);
    return make_fn_kernel([name, f](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
      return set_single_output(ctx, map_float(ctx.input(0), ctx.pool, name, f));
    });
  };
}

template <class T> T sigmoid(T x) {
  // Split by sign so exp never overflows.
  if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}

template <class T> T softplus(T x) {
  // log(1 + e^x) without overflow for large x.
  return x > T(0) ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
}

template <class T> T gelu_erf(T x) {
  return static_cast<T>(0.5) * x * (T(1) + std::erf(x * static_cast<T>(0.70710678118654752440)));
}

template <class T> T gelu_tanh(T x) {
  const T k = static_cast<T>(0.79788456080286535588);  // sqrt(2/pi)
  return static_cast<T>(0.5) * x * (T(1) + std::tanh(k * (x + static_cast<T>(0.044715) * x * x * x)));
}

// ---------------------------------------------------------------------------
// Relu, Clip, Shrink, Erf take integer tensors too.

KernelFactory relu_factory() {
  return [](const KernelInit&) -> Expected<std::unique_ptr<Kernel>> {
    return make_fn_kernel([](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
      return set_single_output(ctx, map_numeric(ctx.input(0), ctx.pool, "Relu", [](auto x) {
                                 using T = decltype(x);
                                 return x < T(0) ? T(0) : x;  // NaN stays NaN
                               }));
    });
  };
}

KernelFactory shrink_factory() {
  return [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    const double lambd = init.node.attr_float("lambd", 0.5f), bias = init.node.attr_float("bias", 0.0f);
    return make_fn_kernel([lambd, bias](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
      return set_single_output(ctx, map_numeric(ctx.input(0), ctx.pool, "Shrink", [lambd, bias](auto x) {
                                 using T = decltype(x);
                                 // In double, then back with a range-safe cast for integers.
                                 auto back = [](double r) -> T {
                                   if constexpr (std::is_integral_v<T>) return float_to_integer<T>(r);
                                   else return static_cast<T>(r);
                                 };
                                 const double v = static_cast<double>(x);
                                 if (v < -lambd) return back(v + bias);
                                 if (v > lambd) return back(v - bias);
                                 return T(0);
                               }));
    });
  };
}

// float32 Erf: the fixed approximation of ref/approx_math.h (16 lanes at a
// time where the CPU has AVX-512, the same bits elsewhere); libm's erff is
// scalar and was a fifth of a ViT's run time.
Tensor erf_float32(const Tensor& x, ThreadPool* pool) {
  Tensor y = Tensor::uninitialized(DType::kFloat32, x.shape());  // every element written
  const float* in = x.data<float>();
  float* out = y.data<float>();
  parallel_range(pool, x.numel(), [&](int64_t b, int64_t e) { x86::erf_f32(in + b, out + b, e - b); });
  return y;
}

KernelFactory erf_factory() {
  return [](const KernelInit&) -> Expected<std::unique_ptr<Kernel>> {
    return make_fn_kernel([](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
      const Tensor& x = ctx.input(0);
      if (x.dtype() == DType::kFloat32) return set_single_output(ctx, erf_float32(x, ctx.pool));
      if (is_half_dtype(x.dtype()))
        return set_single_output(
            ctx, narrow_from_float(erf_float32(widen_half(x, ctx.pool), ctx.pool), x.dtype(), ctx.pool));
      return set_single_output(ctx, map_numeric(ctx.input(0), ctx.pool, "Erf", [](auto x) {
                                 using T = decltype(x);
                                 if constexpr (std::is_floating_point_v<T>) return std::erf(x);
                                 else return static_cast<T>(std::erf(static_cast<double>(x)));
                               }));
    });
  };
}

// Clip: opset < 11 reads min/max attributes (floats only); from opset 11 they
// are optional one-element inputs of the input's dtype. min > max gives max.
KernelFactory clip_factory() {
  return [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    const bool from_inputs = init.opset <= 0 || init.opset >= 11;
    std::optional<float> attr_min, attr_max;
    if (!from_inputs) {
      if (init.node.has_attr("min")) attr_min = init.node.attr_float("min", 0.f);
      if (init.node.has_attr("max")) attr_max = init.node.attr_float("max", 0.f);
    }
    return make_fn_kernel([from_inputs, attr_min, attr_max](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
      const Tensor& x0 = ctx.input(0);
      const DType dt = x0.dtype();
      if (!is_numeric_dtype(dt)) return invalid_argument(std::string("Clip takes a numeric tensor, got ") + dtype_name(dt));
      if (!from_inputs && !is_float_dtype(dt))
        return invalid_argument(std::string("Clip before opset 11 takes a float tensor, got ") + dtype_name(dt));
      Tensor bounds[2];
      for (int k = 0; k < 2; ++k) {
        if (!from_inputs || !ctx.has_input(1 + k)) continue;
        const Tensor& b = ctx.input(1 + k);
        if (b.dtype() != dt)
          return invalid_argument(std::string("Clip ") + (k ? "max" : "min") + " must be " + dtype_name(dt) + ", got " +
                                  dtype_name(b.dtype()));
        if (b.numel() != 1)
          return invalid_argument(std::string("Clip ") + (k ? "max" : "min") + " must have one element, has shape " +
                                  shape_to_string(b.shape()));
        bounds[k] = widen_half(b, ctx.pool);
      }
      const Tensor x = widen_half(x0, ctx.pool);
      auto clip = [&](auto tag) -> Expected<Tensor> {
        using T = decltype(tag);
        T lo = std::numeric_limits<T>::lowest(), hi = std::numeric_limits<T>::max();
        if (attr_min) lo = static_cast<T>(*attr_min);
        if (attr_max) hi = static_cast<T>(*attr_max);
        if (bounds[0].defined()) lo = bounds[0].data<T>()[0];
        if (bounds[1].defined()) hi = bounds[1].data<T>()[0];
        if constexpr (std::is_integral_v<T> && sizeof(T) == 1 && !std::is_same_v<T, bool>) {
          // 8-bit codes (the integer session's narrow-format clamps): one
          // plain loop the compiler turns into byte min/max.
          Tensor y = Tensor::uninitialized(x.dtype(), x.shape());
          const T* __restrict px = x.data<T>();
          T* __restrict py = y.data<T>();
          const int64_t n = x.numel();
          for (int64_t i = 0; i < n; ++i) {
            const T v = px[i] < lo ? lo : px[i];
            py[i] = hi < v ? hi : v;
          }
          return y;
        }
        return eval_unary<T, T>(x, x.dtype(), ctx.pool, [lo, hi](T v) {
          v = v < lo ? lo : v;
          return hi < v ? hi : v;
        });
      };
      QTK_ASSIGN_OR_RETURN(Tensor y, visit_numeric(x.dtype(), clip));
      return set_single_output(ctx, narrow_from_float(y, dt, ctx.pool));
    });
  };
}

// PRelu: slope broadcasts onto X (unidirectionally); the output has X's shape.
Status run_prelu(KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(expect_inputs(ctx, 2));
  const Tensor &x0 = ctx.input(0), &s0 = ctx.input(1);
  if (x0.dtype() != s0.dtype())
    return invalid_argument(std::string("PRelu X and slope must have the same dtype, got ") + dtype_name(x0.dtype()) +
                            " and " + dtype_name(s0.dtype()));
  const DType dt = x0.dtype();
  if (!is_numeric_dtype(dt)) return invalid_argument(std::string("PRelu takes numeric tensors, got ") + dtype_name(dt));
  const Tensor x = widen_half(x0, ctx.pool), s = widen_half(s0, ctx.pool);
  QTK_ASSIGN_OR_RETURN(BroadcastPlan<2> plan, make_broadcast_plan<2>({&x.shape(), &s.shape()}));
  if (plan.out_shape != x.shape())
    return invalid_argument("PRelu slope " + shape_to_string(s.shape()) + " does not broadcast to X " +
                            shape_to_string(x.shape()));
  auto prelu = [&](auto tag) -> Expected<Tensor> {
    using T = decltype(tag);
    auto mul = [](T a, T b) -> T {
      if constexpr (std::is_integral_v<T>) return wrap_mul(a, b);
      else return a * b;
    };
    Tensor out(x.dtype(), x.shape());
    binary_broadcast_loop(plan, x.data<T>(), s.data<T>(), out.data<T>(), ctx.pool,
                          [mul](T v, T k) { return v < T(0) ? mul(v, k) : v; });
    return out;
  };
  QTK_ASSIGN_OR_RETURN(Tensor y, visit_numeric(x.dtype(), prelu));
  return set_single_output(ctx, narrow_from_float(y, dt, ctx.pool));
}

// ---------------------------------------------------------------------------
// Gelu

enum class GeluMode { kErf, kTanh };

// X (+ bias, broadcast) for the com.microsoft fused forms; X alone otherwise.
Expected<Tensor> add_bias(const Tensor& x, const Tensor* bias, ThreadPool* pool) {
  if (bias == nullptr) return x;
  if (bias->dtype() != x.dtype())
    return invalid_argument(std::string("bias must be ") + dtype_name(x.dtype()) + ", got " + dtype_name(bias->dtype()));
  const Tensor a = widen_half(x, pool), b = widen_half(*bias, pool);
  auto add = [&](auto tag) -> Expected<Tensor> {
    using T = decltype(tag);
    return eval_binary<T, T, T>(a, b, a.dtype(), pool, [](T u, T v) { return u + v; });
  };
  QTK_ASSIGN_OR_RETURN(Tensor sum, visit_float(a.dtype(), add));
  return narrow_from_float(sum, x.dtype(), pool);
}

// with_bias: input 1 is an (optional) bias added first (FastGelu, BiasGelu).
KernelFactory gelu_factory(std::optional<GeluMode> fixed_mode, bool with_bias) {
  return [fixed_mode, with_bias](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    GeluMode mode = GeluMode::kErf;
    if (fixed_mode) {
      mode = *fixed_mode;
    } else {
      const std::string a = init.node.attr_string("approximate", "none");
      if (a == "tanh") mode = GeluMode::kTanh;
      else if (a != "none") return invalid_argument("Gelu approximate must be 'none' or 'tanh', got '" + a + "'");
    }
    return make_fn_kernel([mode, with_bias](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
      const Tensor* bias = with_bias && ctx.has_input(1) ? ctx.inputs[1] : nullptr;
      QTK_ASSIGN_OR_RETURN(Tensor x, add_bias(ctx.input(0), bias, ctx.pool));
      if (mode == GeluMode::kTanh)
        return set_single_output(ctx, map_float(x, ctx.pool, "Gelu", [](auto v) { return gelu_tanh(v); }));
      return set_single_output(ctx, map_float(x, ctx.pool, "Gelu", [](auto v) { return gelu_erf(v); }));
    });
  };
}

// ---------------------------------------------------------------------------
// Softmax, LogSoftmax, Hardmax. The input is viewed as [outer, n, inner] with
// n the reduced axis; before opset 13 the input is coerced to 2-D at `axis`
// (n = product of dims from axis on, inner = 1).

enum class SoftKind { kSoftmax, kLogSoftmax, kHardmax };

// float32 Softmax takes exp from ref/approx_math.h (rows: vectorized, the
// same bits); LogSoftmax and float64 keep libm.
template <class T>
T softmax_exp(T v, SoftKind kind) {
  if constexpr (std::is_same_v<T, float>) {
    if (kind == SoftKind::kSoftmax) return approx::exp_f32(v);
  }
  return std::exp(v);
}

template <class T>
void softmax_rows(const T* x, T* y, int64_t rows, int64_t n, SoftKind kind, ThreadPool* pool) {
  parallel_range(
      pool, rows,
      [&](int64_t b, int64_t e) {
        if constexpr (std::is_same_v<T, float>) {
          if (kind == SoftKind::kSoftmax) return x86::softmax_rows_f32(x + b * n, y + b * n, e - b, n);
        }
        for (int64_t r = b; r < e; ++r) {
          const T* xr = x + r * n;
          T* yr = y + r * n;
          T mx = xr[0];
          int64_t arg = 0;
          for (int64_t j = 1; j < n; ++j)
            if (xr[j] > mx) { mx = xr[j]; arg = j; }  // strict: the first maximum wins
          if (kind == SoftKind::kHardmax) {
            yr[arg] = T(1);  // the output starts zeroed
            continue;
          }
          double sum = 0;
          for (int64_t j = 0; j < n; ++j) {
            const T ex = std::exp(xr[j] - mx);
            if (kind == SoftKind::kSoftmax) yr[j] = ex;
            sum += ex;
          }
          if (kind == SoftKind::kSoftmax) {
            const T inv = static_cast<T>(1.0 / sum);
            for (int64_t j = 0; j < n; ++j) yr[j] *= inv;
          } else {
            const T shift = static_cast<T>(mx + static_cast<T>(std::log(sum)));
            for (int64_t j = 0; j < n; ++j) yr[j] = xr[j] - shift;
          }
        }
      },
      std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(n, 1)));
}

// inner > 1: columns of one [n, inner] block are processed side by side so
// every pass reads memory contiguously.
template <class T>
void softmax_strided(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, SoftKind kind, ThreadPool* pool) {
  parallel_range(
      pool, outer * inner,
      [&](int64_t b, int64_t e) {
        std::vector<T> mx;
        std::vector<double> sum;
        std::vector<int64_t> arg;
        for (int64_t q = b; q < e;) {
          const int64_t o = q / inner, i0 = q % inner;
          const int64_t m = std::min(inner - i0, e - q);
          const T* xb = x + o * n * inner + i0;
          T* yb = y + o * n * inner + i0;
          mx.assign(xb, xb + m);
          arg.assign(m, 0);
          for (int64_t j = 1; j < n; ++j)
            for (int64_t i = 0; i < m; ++i)
              if (xb[j * inner + i] > mx[i]) { mx[i] = xb[j * inner + i]; arg[i] = j; }
          if (kind == SoftKind::kHardmax) {
            for (int64_t i = 0; i < m; ++i) yb[arg[i] * inner + i] = T(1);
          } else {
            sum.assign(m, 0.0);
            for (int64_t j = 0; j < n; ++j)
              for (int64_t i = 0; i < m; ++i) {
                const T ex = softmax_exp(xb[j * inner + i] - mx[i], kind);
                if (kind == SoftKind::kSoftmax) yb[j * inner + i] = ex;
                sum[i] += ex;
              }
            if (kind == SoftKind::kSoftmax) {
              for (int64_t i = 0; i < m; ++i) sum[i] = 1.0 / sum[i];
              for (int64_t j = 0; j < n; ++j)
                for (int64_t i = 0; i < m; ++i) yb[j * inner + i] *= static_cast<T>(sum[i]);
            } else {
              for (int64_t i = 0; i < m; ++i) sum[i] = static_cast<double>(mx[i]) + std::log(sum[i]);
              for (int64_t j = 0; j < n; ++j)
                for (int64_t i = 0; i < m; ++i) yb[j * inner + i] = static_cast<T>(xb[j * inner + i] - sum[i]);
            }
          }
          q += m;
        }
      },
      std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(n, 1)));
}

KernelFactory softmax_factory(SoftKind kind, const char* name) {
  return [kind, name](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    const bool coerce_2d = init.opset > 0 && init.opset < 13;
    const int64_t axis = init.node.attr_int("axis", coerce_2d ? 1 : -1);
    return make_fn_kernel([kind, name, coerce_2d, axis](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
      const Tensor& x0 = ctx.input(0);
      const DType dt = x0.dtype();
      if (!is_float_dtype(dt)) return invalid_argument(std::string(name) + " takes a float tensor, got " + dtype_name(dt));
      if (x0.rank() == 0) return invalid_argument(std::string(name) + " needs a tensor of rank >= 1");
      // Opset < 13 allows axis == rank (coerced to [N, 1]).
      const int rank = x0.rank();
      int ax;
      if (coerce_2d && axis == rank) {
        ax = rank;
      } else {
        QTK_ASSIGN_OR_RETURN(ax, normalize_axis(axis, rank));
      }
      const Shape& s = x0.shape();
      int64_t outer = 1, n = 1, inner = 1;
      for (int d = 0; d < ax; ++d) outer *= s[d];
      if (coerce_2d) {
        for (int d = ax; d < rank; ++d) n *= s[d];
      } else {
        n = s[ax];
        for (int d = ax + 1; d < rank; ++d) inner *= s[d];
      }
      const Tensor x = widen_half(x0, ctx.pool);
      // Hardmax writes only the ones: its output starts zeroed; the others
      // write every element.
      Tensor y = kind == SoftKind::kHardmax ? Tensor(x.dtype(), x.shape())
                                            : Tensor::uninitialized(x.dtype(), x.shape());
      if (x.numel() > 0) {
        Status st = visit_float(x.dtype(), [&](auto tag) -> Status {
          using T = decltype(tag);
          if (inner == 1) softmax_rows(x.data<T>(), y.data<T>(), outer, n, kind, ctx.pool);
          else softmax_strided(x.data<T>(), y.data<T>(), outer, n, inner, kind, ctx.pool);
          return Status::Ok();
        });
        QTK_RETURN_IF_ERROR(st);
      }
      return set_single_output(ctx, narrow_from_float(y, dt, ctx.pool));
    });
  };
}

}  // namespace

void register_activation_ops(OpRegistry& r) {
  r.add("Relu", relu_factory());
  r.add("LeakyRelu", pointwise_float_attrs("LeakyRelu", [](const ir::Node& n) {
    const double alpha = n.attr_float("alpha", 0.01f);
    return [alpha](auto x) {
      using T = decltype(x);
      return x < T(0) ? static_cast<T>(alpha * x) : x;
    };
  }));
  r.add("PRelu", [](const KernelInit&) -> Expected<std::unique_ptr<Kernel>> { return make_fn_kernel(run_prelu); });
  r.add("Elu", pointwise_float_attrs("Elu", [](const ir::Node& n) {
    const double alpha = n.attr_float("alpha", 1.0f);
    return [alpha](auto x) {
      using T = decltype(x);
      return x < T(0) ? static_cast<T>(alpha * std::expm1(x)) : x;
    };
  }));
  r.add("Selu", pointwise_float_attrs("Selu", [](const ir::Node& n) {
    const double alpha = n.attr_float("alpha", 1.67326319217681884765625f);
    const double gamma = n.attr_float("gamma", 1.05070102214813232421875f);
    return [alpha, gamma](auto x) {
      using T = decltype(x);
      return x > T(0) ? static_cast<T>(gamma * x) : static_cast<T>(gamma * alpha * std::expm1(x));
    };
  }));
  r.add("Celu", pointwise_float_attrs("Celu", [](const ir::Node& n) {
    const double alpha = n.attr_float("alpha", 1.0f);
    return [alpha](auto x) {
      using T = decltype(x);
      // max(0, x) + min(0, alpha * (exp(x / alpha) - 1))
      return x > T(0) ? x : static_cast<T>(alpha * std::expm1(static_cast<double>(x) / alpha));
    };
  }));
  r.add("ThresholdedRelu", pointwise_float_attrs("ThresholdedRelu", [](const ir::Node& n) {
    const double alpha = n.attr_float("alpha", 1.0f);
    return [alpha](auto x) {
      using T = decltype(x);
      return static_cast<double>(x) > alpha ? x : T(0);
    };
  }));
  r.add("Clip", clip_factory());
  r.add("Shrink", shrink_factory());
  r.add("Sigmoid", pointwise_float("Sigmoid", [](auto x) { return sigmoid(x); }));
  r.add("HardSigmoid", pointwise_float_attrs("HardSigmoid", [](const ir::Node& n) {
    const double alpha = n.attr_float("alpha", 0.2f), beta = n.attr_float("beta", 0.5f);
    return [alpha, beta](auto x) {
      using T = decltype(x);
      return static_cast<T>(std::max(0.0, std::min(1.0, alpha * x + beta)));
    };
  }));
  r.add("HardSwish", pointwise_float("HardSwish", [](auto x) {
    using T = decltype(x);
    return static_cast<T>(x * std::max(T(0), std::min(T(1), x / T(6) + T(0.5))));
  }));
  r.add("Tanh", pointwise_float("Tanh", [](auto x) { return std::tanh(x); }));
  r.add("Erf", erf_factory());
  r.add("Softplus", pointwise_float("Softplus", [](auto x) { return softplus(x); }));
  r.add("Softsign", pointwise_float("Softsign", [](auto x) {
    using T = decltype(x);
    return x / (T(1) + std::abs(x));
  }));
  r.add("Mish", pointwise_float("Mish", [](auto x) { return x * std::tanh(softplus(x)); }));

  r.add("Gelu", gelu_factory(std::nullopt, false), "", 20);
  // ORT contrib ops: Gelu is exact, FastGelu the tanh form with an optional
  // bias, BiasGelu exact with a bias.
  r.add("Gelu", gelu_factory(GeluMode::kErf, false), "com.microsoft");
  r.add("FastGelu", gelu_factory(GeluMode::kTanh, true), "com.microsoft");
  r.add("BiasGelu", gelu_factory(GeluMode::kErf, true), "com.microsoft");

  r.add("Softmax", softmax_factory(SoftKind::kSoftmax, "Softmax"));
  r.add("LogSoftmax", softmax_factory(SoftKind::kLogSoftmax, "LogSoftmax"));
  r.add("Hardmax", softmax_factory(SoftKind::kHardmax, "Hardmax"));
}

}  // namespace qtk::rt
