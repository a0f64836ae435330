// Pooling: MaxPool (with optional Indices), AveragePool, LpPool, their
// Global* forms, and MaxUnpool. 1-D to 3-D spatial inputs; the window loops
// treat every input as 3-D with leading trivial dims.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/ref/im2col.h"
#include "runtime/kernels/ref/max_pool_2x2.h"
#include "runtime/kernels/x86/max_pool_2x2.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk::rt {
namespace {

using namespace ref;

enum class PoolKind { kMax, kAverage, kLp };

// Planes per parallel task: enough window taps that waking a thread pays off.
int64_t planes_grain(int64_t taps_per_plane) {
  return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, taps_per_plane));
}

struct PoolAttrs {
  PoolKind kind = PoolKind::kMax;
  AutoPad auto_pad = AutoPad::kNotSet;
  std::vector<int64_t> kernel_shape, strides, dilations, pads;
  bool ceil_mode = false;
  bool count_include_pad = false;  // AveragePool
  int64_t storage_order = 0;       // MaxPool Indices: 0 row-major, 1 column-major
  double p = 2;                    // LpPool
};

// Per spatial dim, per output index: the taps [lo, hi) that land inside the
// input, and [plo, phi) that land inside input + pads (AveragePool's
// count_include_pad divisor).
struct DimTaps {
  int64_t in = 1, out = 1, s = 1, d = 1, p = 0;
  std::vector<int64_t> lo, hi, plo, phi;
};

// Taps j in [0, k) with lower <= start + j*d < upper, as a range [a, b).
void tap_range(int64_t start, int64_t k, int64_t d, int64_t lower, int64_t upper, int64_t& a, int64_t& b) {
  const int64_t first = start >= lower ? 0 : (lower - start + d - 1) / d;
  const int64_t last = upper - 1 - start < 0 ? 0 : (upper - 1 - start) / d + 1;
  a = std::min(first, k);
  b = std::clamp(last, a, k);
}

// The geometry as exactly 3 dims (D, H, W), padding the front with trivial ones.
Expected<std::vector<DimTaps>> window_taps(const ConvGeometry& g) {
  if (g.rank() > 3)
    return unsupported("pooling over " + std::to_string(g.rank()) + " spatial dims (implemented: 1 to 3)");
  std::vector<DimTaps> dims(3);
  for (int t = 0; t < 3; ++t) {
    const int i = t - (3 - g.rank());
    DimTaps& dt = dims[t];
    int64_t k = 1, pe = 0;
    if (i >= 0) {
      dt.in = g.in[i];
      dt.out = g.out[i];
      dt.s = g.strides[i];
      dt.d = g.dilations[i];
      dt.p = g.pads_begin[i];
      k = g.kernel[i];
      pe = g.pads_end[i];
    }
    dt.lo.resize(dt.out);
    dt.hi.resize(dt.out);
    dt.plo.resize(dt.out);
    dt.phi.resize(dt.out);
    for (int64_t o = 0; o < dt.out; ++o) {
      const int64_t start = o * dt.s - dt.p;
      tap_range(start, k, dt.d, 0, dt.in, dt.lo[o], dt.hi[o]);
      tap_range(start, k, dt.d, -dt.p, dt.in + pe, dt.plo[o], dt.phi[o]);
    }
  }
  return dims;
}

// LpPool's p: an int since opset 2, a float in opset 1.
Expected<double> read_lp_norm(const ir::Node& node) {
  const ir::Attribute* at = node.attr("p");
  const double p = at == nullptr ? 2.0 : at->type == ir::AttrType::kFloat ? at->f : static_cast<double>(at->i);
  if (!(p > 0)) return invalid_argument("p must be positive, got " + std::to_string(p));
  return p;
}

Status read_pool_attrs(const ir::Node& node, PoolKind kind, PoolAttrs& a) {
  a.kind = kind;
  QTK_ASSIGN_OR_RETURN(a.auto_pad, parse_auto_pad(node.attr_string("auto_pad", "NOTSET")));
  a.kernel_shape = node.attr_ints("kernel_shape");
  if (a.kernel_shape.empty()) return invalid_argument("attribute kernel_shape is required");
  a.strides = node.attr_ints("strides");
  a.dilations = node.attr_ints("dilations");
  a.pads = node.attr_ints("pads");
  a.ceil_mode = node.attr_int("ceil_mode", 0) != 0;
  a.count_include_pad = node.attr_int("count_include_pad", 0) != 0;
  a.storage_order = node.attr_int("storage_order", 0);
  if (a.storage_order != 0 && a.storage_order != 1)
    return invalid_argument("storage_order must be 0 or 1, got " + std::to_string(a.storage_order));
  QTK_ASSIGN_OR_RETURN(a.p, read_lp_norm(node));
  return Status::Ok();
}

// One (n, c) plane of a windowed pool. For each output row (od, oh) the input
// rows its windows read are gathered once; each output along W then folds
// taps [lo, hi) of those rows. idx (MaxPool Indices, kIndices only) gets the
// flat input index of the first maximum, offset by idx_base.
template <class T, PoolKind kKind, bool kIndices>
void pool_plane(const PoolAttrs& a, const std::vector<DimTaps>& dims, const T* x, T* __restrict y,
                int64_t* __restrict idx, int64_t idx_base) {
  const DimTaps &D = dims[0], &H = dims[1], &W = dims[2];
  const int64_t* wlo = W.lo.data();
  const int64_t* whi = W.hi.data();
  const int64_t OW = W.out, SW = W.s, DW = W.d, PW = W.p;
  std::vector<const T*> rows;
  std::vector<int64_t> row_d, row_h;  // (id, ih) of each gathered row, for Indices
  for (int64_t od = 0; od < D.out; ++od) {
    for (int64_t oh = 0; oh < H.out; ++oh) {
      rows.clear();
      row_d.clear();
      row_h.clear();
      for (int64_t jd = D.lo[od]; jd < D.hi[od]; ++jd) {
        const int64_t id = od * D.s - D.p + jd * D.d;
        for (int64_t jh = H.lo[oh]; jh < H.hi[oh]; ++jh) {
          const int64_t ih = oh * H.s - H.p + jh * H.d;
          rows.push_back(x + (id * H.in + ih) * W.in);
          if (kIndices) {
            row_d.push_back(id);
            row_h.push_back(ih);
          }
        }
      }
      const int64_t nrows = static_cast<int64_t>(rows.size());
      const int64_t padded_dh = (D.phi[od] - D.plo[od]) * (H.phi[oh] - H.plo[oh]);
      const int64_t out_row = (od * H.out + oh) * OW;
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t start = ow * SW - PW, lo = wlo[ow], hi = whi[ow];
        if constexpr (kKind == PoolKind::kMax) {
          T best = std::numeric_limits<T>::lowest();
          if constexpr (!kIndices) {
            for (int64_t r = 0; r < nrows; ++r) {
              const T* p = rows[r] + start;
              for (int64_t j = lo; j < hi; ++j) best = p[j * DW] > best ? p[j * DW] : best;  // NaN never wins
            }
          } else {
            int64_t best_r = -1, best_j = 0;
            for (int64_t r = 0; r < nrows; ++r) {
              const T* p = rows[r] + start;
              for (int64_t j = lo; j < hi; ++j)
                if (p[j * DW] > best || best_r < 0) {  // first maximum wins, as in ONNX Runtime
                  best = p[j * DW];
                  best_r = r;
                  best_j = j;
                }
            }
            int64_t at = -1;
            if (best_r >= 0) {
              const int64_t id = row_d[best_r], ih = row_h[best_r], iw = start + best_j * DW;
              at = idx_base + (a.storage_order == 0 ? (id * H.in + ih) * W.in + iw : id + ih * D.in + iw * D.in * H.in);
            }
            idx[out_row + ow] = at;
          }
          y[out_row + ow] = best;
        } else {
          double sum = 0;  // double: exact enough for any window size
          for (int64_t r = 0; r < nrows; ++r) {
            const T* p = rows[r] + start;
            for (int64_t j = lo; j < hi; ++j) {
              const double v = static_cast<double>(p[j * DW]);
              if constexpr (kKind == PoolKind::kAverage) sum += v;
              else sum += std::pow(std::fabs(v), a.p);
            }
          }
          if constexpr (kKind == PoolKind::kAverage) {
            const int64_t count = a.count_include_pad ? padded_dh * (W.phi[ow] - W.plo[ow]) : nrows * (hi - lo);
            y[out_row + ow] = static_cast<T>(sum / static_cast<double>(count));  // empty window: NaN
          } else {
            y[out_row + ow] = static_cast<T>(std::pow(sum, 1.0 / a.p));
          }
        }
      }
    }
  }
}

// The classic CNN pool (2x2 windows, stride 2, no pads or dilation, every
// window inside the image) without the generic tap bookkeeping: the same fold
// as pool_plane's (max_pool_2x2.h), so results equal it bit for bit.
bool is_plain_2x2_pool(const ConvGeometry& g) {
  if (g.rank() != 2) return false;
  for (int d = 0; d < 2; ++d)
    if (g.kernel[d] != 2 || g.strides[d] != 2 || g.dilations[d] != 1 || g.pads_begin[d] != 0 ||
        2 * g.out[d] > g.in[d])
      return false;
  return true;
}

Status run_pool(const PoolAttrs& a, KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
  const Tensor& X = ctx.input(0);
  const DType dt = X.dtype();
  const bool float_ok = dt == DType::kFloat32 || dt == DType::kFloat64;
  const bool int_ok = a.kind == PoolKind::kMax && (dt == DType::kInt8 || dt == DType::kUInt8);
  if (!float_ok && !int_ok)
    return unsupported(std::string("pooling on dtype ") + dtype_name(dt) +
                       (a.kind == PoolKind::kMax ? " (implemented: float32, float64, int8, uint8)"
                                                 : " (implemented: float32, float64)"));
  if (X.rank() < 3)
    return invalid_argument("input X has shape " + shape_to_string(X.shape()) + ", expected [N, C, spatial...]");
  ConvGeometry g;
  g.in.assign(X.shape().begin() + 2, X.shape().end());
  g.kernel = a.kernel_shape;
  QTK_RETURN_IF_ERROR(resolve_window_geometry(a.auto_pad, a.strides, a.dilations, a.pads, a.ceil_mode, g));
  QTK_ASSIGN_OR_RETURN(std::vector<DimTaps> dims, window_taps(g));

  Shape y_shape = {X.dim(0), X.dim(1)};
  y_shape.insert(y_shape.end(), g.out.begin(), g.out.end());
  Tensor Y = Tensor::uninitialized(dt, y_shape);  // every output is written
  const bool want_indices = a.kind == PoolKind::kMax && ctx.outputs.size() > 1;
  Tensor I = want_indices ? Tensor(DType::kInt64, y_shape) : Tensor();
  const int64_t planes = X.dim(0) * X.dim(1), in_plane = g.in_size(), out_plane = g.out_size();
  auto run_typed = [&](auto tag) {
    using T = decltype(tag);
    const T* x = X.data<T>();
    T* y = Y.data<T>();
    int64_t* idx = want_indices ? I.data<int64_t>() : nullptr;
    auto planes_with = [&](auto plane_fn) {
      ctx.pool->parallel_for(planes, [&](int64_t b, int64_t e) {
        for (int64_t pl = b; pl < e; ++pl)
          plane_fn(a, dims, x + pl * in_plane, y + pl * out_plane, idx ? idx + pl * out_plane : nullptr, pl * in_plane);
      }, planes_grain(out_plane * g.kernel_size()));
    };
    if (a.kind == PoolKind::kMax && !want_indices && is_plain_2x2_pool(g)) {
      ctx.pool->parallel_for(planes, [&](int64_t b, int64_t e) {
        if constexpr (std::is_same_v<T, float>) {
          x86::max_pool_2x2_planes_f32(x + b * in_plane, e - b, g.in[0], g.in[1], y + b * out_plane);
        } else {
          for (int64_t pl = b; pl < e; ++pl)
            max_pool_2x2_plane(g.in[0], g.in[1], x + pl * in_plane, y + pl * out_plane);
        }
      }, planes_grain(out_plane * 4));
    } else if (a.kind == PoolKind::kMax && want_indices) planes_with(pool_plane<T, PoolKind::kMax, true>);
    else if (a.kind == PoolKind::kMax) planes_with(pool_plane<T, PoolKind::kMax, false>);
    else if constexpr (std::is_floating_point_v<T>) {
      if (a.kind == PoolKind::kAverage) planes_with(pool_plane<T, PoolKind::kAverage, false>);
      else planes_with(pool_plane<T, PoolKind::kLp, false>);
    }
  };
  switch (dt) {
    case DType::kFloat32: run_typed(float{}); break;
    case DType::kFloat64: run_typed(double{}); break;
    case DType::kInt8: run_typed(int8_t{}); break;
    default: run_typed(uint8_t{}); break;
  }
  ctx.outputs[0] = Y;
  if (want_indices) ctx.outputs[1] = I;
  return Status::Ok();
}

KernelFactory pool_factory(PoolKind kind) {
  return [kind](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    PoolAttrs a;
    QTK_RETURN_IF_ERROR(read_pool_attrs(init.node, kind, a));
    return make_fn_kernel([a](KernelContext& ctx) { return run_pool(a, ctx); });
  };
}

// ---------------------------------------------------------------------------
// GlobalMaxPool / GlobalAveragePool / GlobalLpPool: one window over all of
// each plane; the output keeps the spatial rank with dims of 1.

template <class T>
T global_plane(PoolKind kind, double p, const T* x, int64_t n) {
  if (kind == PoolKind::kMax) {
    T best = n > 0 ? x[0] : std::numeric_limits<T>::lowest();
    for (int64_t i = 1; i < n; ++i) best = x[i] > best ? x[i] : best;
    return best;
  }
  double sum = 0;
  for (int64_t i = 0; i < n; ++i)
    sum += kind == PoolKind::kAverage ? static_cast<double>(x[i])
                                      : std::pow(std::fabs(static_cast<double>(x[i])), p);
  if (kind == PoolKind::kAverage) return static_cast<T>(sum / static_cast<double>(n));
  return static_cast<T>(std::pow(sum, 1.0 / p));
}

KernelFactory global_pool_factory(PoolKind kind) {
  return [kind](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    QTK_ASSIGN_OR_RETURN(const double p, read_lp_norm(init.node));
    return make_fn_kernel([kind, p](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
      const Tensor& X = ctx.input(0);
      if (X.dtype() != DType::kFloat32 && X.dtype() != DType::kFloat64)
        return unsupported(std::string("global pooling on dtype ") + dtype_name(X.dtype()) +
                           " (implemented: float32, float64)");
      if (X.rank() < 3)
        return invalid_argument("input X has shape " + shape_to_string(X.shape()) + ", expected [N, C, spatial...]");
      Shape y_shape(X.rank(), 1);
      y_shape[0] = X.dim(0);
      y_shape[1] = X.dim(1);
      Tensor Y(X.dtype(), y_shape);
      const int64_t planes = X.dim(0) * X.dim(1);
      const int64_t plane = planes > 0 ? X.numel() / planes : 0;
      auto run_typed = [&](auto tag) {
        using T = decltype(tag);
        const T* x = X.data<T>();
        T* y = Y.data<T>();
        ctx.pool->parallel_for(planes, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) y[i] = global_plane<T>(kind, p, x + i * plane, plane);
        }, planes_grain(plane));
      };
      if (X.dtype() == DType::kFloat32) run_typed(float{});
      else run_typed(double{});
      ctx.outputs[0] = Y;
      return Status::Ok();
    });
  };
}

// ---------------------------------------------------------------------------
// MaxUnpool: scatters X into a zero tensor at the flat positions in I (as
// MaxPool's Indices give them).

KernelFactory max_unpool_factory() {
  return [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    const std::vector<int64_t> kernel = init.node.attr_ints("kernel_shape");
    const std::vector<int64_t> strides = init.node.attr_ints("strides");
    const std::vector<int64_t> pads = init.node.attr_ints("pads");
    if (kernel.empty()) return invalid_argument("attribute kernel_shape is required");
    return make_fn_kernel([kernel, strides, pads](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 2));
      const Tensor& X = ctx.input(0);
      const Tensor& I = ctx.input(1);
      if (dtype_size(X.dtype()) == 0) return unsupported(std::string("MaxUnpool on dtype ") + dtype_name(X.dtype()));
      QTK_RETURN_IF_ERROR(expect_dtype(I, DType::kInt64, "indices I"));
      if (X.rank() < 3 || I.shape() != X.shape())
        return invalid_argument("X " + shape_to_string(X.shape()) + " must be [N, C, spatial...] and I " +
                                shape_to_string(I.shape()) + " the same shape");
      const int d = X.rank() - 2;
      if (static_cast<int>(kernel.size()) != d || (!strides.empty() && static_cast<int>(strides.size()) != d) ||
          (!pads.empty() && static_cast<int>(pads.size()) != 2 * d))
        return invalid_argument("kernel_shape/strides/pads do not match " + std::to_string(d) + " spatial dims");
      // Indices address the natural output shape; an explicit output_shape
      // (at least as large) extends it with zeros at the end of each dim, as
      // ONNX's tests and ONNX Runtime do.
      Shape natural = {X.dim(0), X.dim(1)};
      for (int i = 0; i < d; ++i) {
        const int64_t s = strides.empty() ? 1 : strides[i];
        const int64_t pb = pads.empty() ? 0 : pads[i], pe = pads.empty() ? 0 : pads[i + d];
        const int64_t o = (X.dim(i + 2) - 1) * s + kernel[i] - pb - pe;
        if (o < 0) return invalid_argument("computed output dim " + std::to_string(o) + " is negative");
        natural.push_back(o);
      }
      Shape y_shape = natural;
      if (ctx.has_input(2)) {
        y_shape = ctx.input(2).to_int64_vector();
        bool ok = static_cast<int>(y_shape.size()) == X.rank();
        for (size_t i = 0; ok && i < y_shape.size(); ++i)
          ok = i < 2 ? y_shape[i] == natural[i] : y_shape[i] >= natural[i];
        if (!ok)
          return invalid_argument("output_shape " + shape_to_string(y_shape) +
                                  " must be [N, C, spatial...] and at least " + shape_to_string(natural));
      }
      Tensor Y(X.dtype(), y_shape);
      const int64_t natural_numel = shape_numel(natural);
      const size_t es = dtype_size(X.dtype());
      const int64_t* idx = I.data<int64_t>();
      const auto* src = static_cast<const std::byte*>(X.raw());
      auto* dst = static_cast<std::byte*>(Y.raw());
      for (int64_t j = 0; j < X.numel(); ++j) {
        if (idx[j] < 0 || idx[j] >= natural_numel)
          return invalid_argument("index " + std::to_string(idx[j]) + " at position " + std::to_string(j) +
                                  " is outside the unpooled shape " + shape_to_string(natural));
        // Re-address the flat index from the natural shape into y_shape.
        int64_t r = idx[j], off = 0, stride = 1;
        for (size_t t = natural.size(); t-- > 0;) {
          off += (r % natural[t]) * stride;
          r /= natural[t];
          stride *= y_shape[t];
        }
        std::memcpy(dst + off * es, src + j * es, es);
      }
      ctx.outputs[0] = Y;
      return Status::Ok();
    });
  };
}

}  // namespace

void register_pool_ops(OpRegistry& r) {
  r.add("MaxPool", pool_factory(PoolKind::kMax));
  r.add("AveragePool", pool_factory(PoolKind::kAverage));
  r.add("LpPool", pool_factory(PoolKind::kLp));
  r.add("GlobalMaxPool", global_pool_factory(PoolKind::kMax));
  r.add("GlobalAveragePool", global_pool_factory(PoolKind::kAverage));
  r.add("GlobalLpPool", global_pool_factory(PoolKind::kLp));
  r.add("MaxUnpool", max_unpool_factory());
}

}  // namespace qtk::rt
