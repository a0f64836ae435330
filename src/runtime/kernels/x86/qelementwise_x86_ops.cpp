// QuantizeLinear, DequantizeLinear and the com.microsoft QLinearAdd,
// QLinearMul and QLinearGlobalAveragePool kernels of qelementwise_x86_ops.h:
// parameter checks (anything unusual runs the reference kernel), threading,
// and the scalar rows, which are the reference's formulas.
#include "runtime/kernels/x86/qelementwise_x86_ops.h"
#include "core/cpu_features.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/x86/qelementwise_x86_internal.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk::rt {

namespace qew {

bool avx2_supported() { return cpu_has_avx2_fma(); }

bool use_avx2(Path p) {
  if (p == Path::kScalar || !avx2_supported()) return false;
  if (p == Path::kAvx2) return true;
  static const bool forced_scalar = env_flag_set("QTK_QEW_SCALAR");
  return !forced_scalar;
}

const char* path_name(Path p) {
  switch (p) {
    case Path::kAuto: return "auto";
    case Path::kScalar: return "scalar";
    case Path::kAvx2: return "avx2";
  }
  return "?";
}

Expected<std::unique_ptr<Kernel>> reference_kernel(const KernelInit& init) {
  static const OpRegistry* reg = [] {
    auto* r = new OpRegistry;
    register_quant_ops(*r);
    register_pool_ops(*r);
    register_qlinear_contrib_ops(*r);
    return r;
  }();
  const KernelFactory* f = reg->find(init.node.domain, init.node.op_type, init.opset);
  if (f == nullptr) return internal_error("no reference kernel for " + init.node.op_type);
  return (*f)(init);
}

// ---------------------------------------------------------------------------
// Scalar rows.

namespace {
inline int32_t code_at(const void* p, int64_t i, bool is_signed) {
  return is_signed ? static_cast<const int8_t*>(p)[i] : static_cast<const uint8_t*>(p)[i];
}
inline void put_code(void* p, int64_t i, int32_t v, bool is_signed) {
  if (is_signed) static_cast<int8_t*>(p)[i] = static_cast<int8_t>(v);
  else static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(v);
}
}  // namespace

void quantize_scalar(const float* x, int64_t n, const QuantizeParams& p, void* y) {
  const double lo = p.y_signed ? -128 : 0, hi = p.y_signed ? 127 : 255;
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::nearbyint(x[i] / p.scale);
    const double q = std::isnan(v) ? p.zero_point : static_cast<double>(v) + p.zero_point;
    put_code(y, i, static_cast<int32_t>(std::clamp(q, lo, hi)), p.y_signed);
  }
}

void dequantize_scalar(const void* x, int64_t n, const DequantizeParams& p, float* y) {
  for (int64_t i = 0; i < n; ++i)
    y[i] = static_cast<float>(static_cast<int64_t>(code_at(x, i, p.x_signed)) - p.zero_point) * p.scale;
}

void qadd_scalar(const void* a, int64_t a_step, const void* b, int64_t b_step, int64_t n, const AddParams& p,
                 void* c) {
  const int64_t half = int64_t{1} << (p.n - 1);
  const int64_t lo = p.is_signed ? -128 : 0, hi = p.is_signed ? 127 : 255;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t acc = static_cast<int64_t>(code_at(a, i * a_step, p.is_signed) - p.a_zp) * p.ma +
                        static_cast<int64_t>(code_at(b, i * b_step, p.is_signed) - p.b_zp) * p.mb;
    put_code(c, i, static_cast<int32_t>(std::clamp<int64_t>(((acc + half) >> p.n) + p.c_zp, lo, hi)), p.is_signed);
  }
}

void qmul_scalar(const void* a, int64_t a_step, const void* b, int64_t b_step, int64_t n, const MulParams& p,
                 void* c) {
  const int32_t lo = p.is_signed ? -128 : 0, hi = p.is_signed ? 127 : 255;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t prod = (code_at(a, i * a_step, p.is_signed) - p.a_zp) * (code_at(b, i * b_step, p.is_signed) - p.b_zp);
    put_code(c, i, quant::requantize_to_code(prod, p.mult, p.c_zp, lo, hi), p.is_signed);
  }
}

int64_t sum_codes_scalar(const void* x, bool is_signed, int64_t n) {
  int64_t s = 0;
  for (int64_t i = 0; i < n; ++i) s += code_at(x, i, is_signed);
  return s;
}

// ---------------------------------------------------------------------------
// Kernels.

namespace {

constexpr const char* kMsDomain = "com.microsoft";
constexpr int64_t kGrain = 16384;  // elements per task: enough to pay for waking a thread

// [0, n) in kGrain chunks (multiples of 32, the vector rows' step) over the pool.
template <class F>
void for_chunks(ThreadPool& pool, int64_t n, F&& f) {
  const int64_t chunks = (n + kGrain - 1) / kGrain;
  pool.parallel_for(chunks, [&](int64_t c0, int64_t c1) { f(c0 * kGrain, std::min(n, c1 * kGrain)); });
}

// A per-tensor float32 scale that the reference accepts as such (one value,
// positive and finite for the contrib ops, non-zero for Q/DQ).
std::optional<float> one_scale(const Tensor& s, bool positive) {
  if (s.dtype() != DType::kFloat32 || s.numel() != 1) return std::nullopt;
  const float v = s.data<float>()[0];
  if (positive ? !(v > 0.f && std::isfinite(v)) : !(v > 0.f || v < 0.f)) return std::nullopt;
  return v;
}

// A per-tensor zero point of dtype `type` (0 when absent); nullopt otherwise.
std::optional<int32_t> one_zero_point(const KernelContext& ctx, size_t i, DType type) {
  if (!ctx.has_input(i)) return 0;
  const Tensor& z = ctx.input(i);
  if (z.dtype() != type || z.numel() != 1) return std::nullopt;
  return static_cast<int32_t>(z.get_as_int64(0));
}

// Runs `fast` (returns false when the case is not one it takes), else the
// reference kernel.
class FastOrReference final : public Kernel {
 public:
  using Fast = std::function<Expected<bool>(KernelContext&)>;
  FastOrReference(Fast fast, std::unique_ptr<Kernel> ref) : fast_(std::move(fast)), ref_(std::move(ref)) {}
  Status run(KernelContext& ctx) override {
    QTK_ASSIGN_OR_RETURN(bool done, fast_(ctx));
    return done ? Status::Ok() : ref_->run(ctx);
  }

 private:
  Fast fast_;
  std::unique_ptr<Kernel> ref_;
};

Expected<bool> run_quantize(KernelContext& ctx, int64_t block, bool avx2) {
  if (block > 0 || !ctx.has_input(0) || !ctx.has_input(1)) return false;
  const Tensor& x = ctx.input(0);
  const DType out = ctx.has_input(2) ? ctx.input(2).dtype() : DType::kUInt8;
  if (x.dtype() != DType::kFloat32 || !is_8bit(out)) return false;
  const auto scale = one_scale(ctx.input(1), false);
  const auto zp = one_zero_point(ctx, 2, out);
  if (!scale || !zp) return false;
  const QuantizeParams p{*scale, *zp, out == DType::kInt8};
  Tensor y = Tensor::uninitialized(out, x.shape());
  const float* in = x.data<float>();
  auto* o = static_cast<uint8_t*>(y.raw());
  for_chunks(*ctx.pool, x.numel(), [&](int64_t b, int64_t e) {
    if (avx2) quantize_avx2(in + b, e - b, p, o + b);
    else quantize_scalar(in + b, e - b, p, o + b);
  });
  ctx.outputs[0] = std::move(y);
  return true;
}

Expected<bool> run_dequantize(KernelContext& ctx, int64_t block, bool avx2) {
  if (block > 0 || !ctx.has_input(0) || !ctx.has_input(1)) return false;
  const Tensor& x = ctx.input(0);
  if (!is_8bit(x.dtype())) return false;
  const auto scale = one_scale(ctx.input(1), false);
  const auto zp = one_zero_point(ctx, 2, x.dtype());
  if (!scale || !zp) return false;
  const DequantizeParams p{*scale, *zp, x.dtype() == DType::kInt8};
  Tensor y = Tensor::uninitialized(DType::kFloat32, x.shape());
  const auto* in = static_cast<const uint8_t*>(x.raw());
  float* o = y.data<float>();
  for_chunks(*ctx.pool, x.numel(), [&](int64_t b, int64_t e) {
    if (avx2) dequantize_avx2(in + b, e - b, p, o + b);
    else dequantize_scalar(in + b, e - b, p, o + b);
  });
  ctx.outputs[0] = std::move(y);
  return true;
}

// Elements of `full` each code of `part` covers when part's shape is full's
// leading dims followed by 1s (the same rank once padded on the left); 0 when
// it is not.
int64_t repeat_length(const Shape& part, const Shape& full) {
  if (part.size() > full.size()) return 0;
  Shape p(full.size() - part.size(), 1);
  p.insert(p.end(), part.begin(), part.end());
  size_t last = p.size();
  while (last > 0 && p[last - 1] == 1) --last;
  int64_t inner = 1;
  for (size_t i = 0; i < p.size(); ++i) {
    if (i < last && p[i] != full[i]) return 0;
    if (i >= last) inner *= full[i];
  }
  return inner;
}

// Below this many elements per repeated code, a call of the vector loop per
// code costs more than the reference's broadcast (review: 2 elements ran
// 0.8x the reference, 8 about 1.0-1.3x, 31 1.3-1.6x, 196 15x).
constexpr int64_t kMinRepeat = 16;

// How the kernels walk a and b for the broadcast output shape r: both in
// step, one a scalar, or one repeated over trailing elements; nullopt when
// the reference kernel broadcasts instead. The kernel and
// binary_shapes_taken both ask this.
struct Walk {
  int64_t a_step = 1, b_step = 1;
  // > 0: one side's codes each repeat over `inner` consecutive outputs (a
  // squeeze-excitation gate [N, C, 1, 1] times [N, C, H, W]); a_repeats says which.
  int64_t inner = 0;
  bool a_repeats = false;
};
std::optional<Walk> walk_of(const Shape& a, const Shape& b, const Shape& r) {
  const int64_t an = shape_numel(a), bn = shape_numel(b), rn = shape_numel(r);
  // A side that broadcasts to r with as many elements differs from r only
  // by 1s ([C,H,W] against [1,C,H,W]): its codes are r's, in r's order.
  const bool a_full = an == rn, b_full = bn == rn;
  Walk w;
  if (a_full && b_full) return w;
  if (a_full && bn == 1) return w.b_step = 0, w;
  if (b_full && an == 1) return w.a_step = 0, w;
  if (a_full && (w.inner = repeat_length(b, r)) >= kMinRepeat) return w.b_step = 0, w;
  if (b_full && (w.inner = repeat_length(a, r)) >= kMinRepeat) return w.a_step = 0, w.a_repeats = true, w;
  return std::nullopt;
}

// Inputs A, A_scale, A_zp?, B, B_scale, B_zp?, C_scale, C_zp? as the
// reference reads them; nullopt for anything it would reject or that is not
// a same-shape / one-scalar-side / one-side-repeated pair.
struct Binary {
  double a_scale, b_scale, c_scale;
  int32_t a_zp, b_zp, c_zp;
  DType type;
  int64_t n;
  Shape shape;
  Walk walk;
};

std::optional<Binary> read_binary(const KernelContext& ctx) {
  for (size_t i : {0, 1, 3, 4, 6})
    if (!ctx.has_input(i)) return std::nullopt;
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(3);
  if (!is_8bit(a.dtype()) || b.dtype() != a.dtype()) return std::nullopt;
  Binary r;
  r.type = a.dtype();
  const auto as = one_scale(ctx.input(1), true), bs = one_scale(ctx.input(4), true), cs = one_scale(ctx.input(6), true);
  const auto az = one_zero_point(ctx, 2, r.type), bz = one_zero_point(ctx, 5, r.type), cz = one_zero_point(ctx, 7, r.type);
  if (!as || !bs || !cs || !az || !bz || !cz) return std::nullopt;
  r.a_scale = *as, r.b_scale = *bs, r.c_scale = *cs, r.a_zp = *az, r.b_zp = *bz, r.c_zp = *cz;
  auto shape = ref::broadcast_shapes(a.shape(), b.shape());
  if (!shape.ok()) return std::nullopt;
  r.shape = *shape;
  r.n = shape_numel(r.shape);
  const auto walk = walk_of(a.shape(), b.shape(), r.shape);
  if (!walk) return std::nullopt;
  r.walk = *walk;
  return r;
}

// The reference's shared power-of-two grid for the two ratios.
std::optional<AddParams> add_params(const Binary& in) {
  const auto m = quant::shared_shift_multipliers(in.a_scale / in.c_scale, in.b_scale / in.c_scale);
  if (!m) return std::nullopt;  // the reference's "ratio of 2^30 or more" error
  AddParams p;
  p.a_zp = in.a_zp, p.b_zp = in.b_zp, p.c_zp = in.c_zp, p.is_signed = in.type == DType::kInt8;
  p.ma = m->ma, p.mb = m->mb, p.n = m->n;
  return p;
}

template <bool kAdd>
Expected<bool> run_binary(KernelContext& ctx, bool avx2) {
  const auto in = read_binary(ctx);
  if (!in) return false;
  AddParams ap;
  MulParams mp;
  if constexpr (kAdd) {
    const auto p = add_params(*in);
    if (!p) return false;
    ap = *p;
  } else {
    mp.a_zp = in->a_zp, mp.b_zp = in->b_zp, mp.c_zp = in->c_zp, mp.is_signed = in->type == DType::kInt8;
    mp.mult = quant::quantize_multiplier(in->a_scale * in->b_scale / in->c_scale);
  }
  Tensor c = Tensor::uninitialized(in->type, in->shape);
  const auto* a = static_cast<const uint8_t*>(ctx.input(0).raw());
  const auto* b = static_cast<const uint8_t*>(ctx.input(3).raw());
  auto* o = static_cast<uint8_t*>(c.raw());
  auto span = [&](const uint8_t* pa, int64_t as, const uint8_t* pb, int64_t bs, int64_t len, uint8_t* out) {
    if constexpr (kAdd) {
      if (avx2) qadd_avx2(pa, as, pb, bs, len, ap, out);
      else qadd_scalar(pa, as, pb, bs, len, ap, out);
    } else {
      if (avx2) qmul_avx2(pa, as, pb, bs, len, mp, out);
      else qmul_scalar(pa, as, pb, bs, len, mp, out);
    }
  };
  const Walk& w = in->walk;
  if (w.inner > 0) {  // each repeated code against a run of `inner` codes
    const int64_t inner = w.inner;
    ctx.pool->parallel_for(in->n / inner, [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) {
        if (w.a_repeats) span(a + j, 0, b + j * inner, 1, inner, o + j * inner);
        else span(a + j * inner, 1, b + j, 0, inner, o + j * inner);
      }
    }, std::max<int64_t>(1, kGrain / inner));
  } else {
    for_chunks(*ctx.pool, in->n, [&](int64_t s, int64_t e) {
      span(a + s * w.a_step, w.a_step, b + s * w.b_step, w.b_step, e - s, o + s);
    });
  }
  ctx.outputs[0] = std::move(c);
  return true;
}

// NCHW only (channels_last = 0); S = H*W*... positions per (n, c) plane.
Expected<bool> run_global_average_pool(KernelContext& ctx, bool channels_last, bool avx2) {
  if (channels_last || !ctx.has_input(0) || !ctx.has_input(1) || !ctx.has_input(3)) return false;
  const Tensor& x = ctx.input(0);
  if (!is_8bit(x.dtype()) || x.rank() < 3) return false;
  const auto xs = one_scale(ctx.input(1), true), ys = one_scale(ctx.input(3), true);
  const auto xz = one_zero_point(ctx, 2, x.dtype()), yz = one_zero_point(ctx, 4, x.dtype());
  if (!xs || !ys || !xz || !yz) return false;
  const int64_t planes = x.dim(0) * x.dim(1);
  if (planes == 0) return false;
  const int64_t spatial = x.numel() / planes;
  if (spatial == 0 || spatial > (int64_t{1} << 23)) return false;
  const auto mult = quant::quantize_multiplier(static_cast<double>(*xs) / (static_cast<double>(spatial) * *ys));
  const bool is_signed = x.dtype() == DType::kInt8;
  const int32_t lo = is_signed ? -128 : 0, hi = is_signed ? 127 : 255;
  Shape y_shape(x.rank(), 1);
  y_shape[0] = x.dim(0);
  y_shape[1] = x.dim(1);
  Tensor y = Tensor::uninitialized(x.dtype(), y_shape);
  const auto* in = static_cast<const uint8_t*>(x.raw());
  auto* o = static_cast<uint8_t*>(y.raw());
  ctx.pool->parallel_for(planes, [&](int64_t b, int64_t e) {
    for (int64_t pl = b; pl < e; ++pl) {
      const uint8_t* plane = in + pl * spatial;
      const int64_t sum = avx2 ? sum_codes_avx2(plane, is_signed, spatial) : sum_codes_scalar(plane, is_signed, spatial);
      const int32_t acc = static_cast<int32_t>(sum - static_cast<int64_t>(*xz) * spatial);  // |acc| < 2^31
      put_code(o, pl, quant::requantize_to_code(acc, mult, *yz, lo, hi), is_signed);
    }
  }, std::max<int64_t>(1, kGrain / spatial));
  ctx.outputs[0] = std::move(y);
  return true;
}

}  // namespace

bool binary_shapes_taken(const Shape& a, const Shape& b) {
  auto shape = ref::broadcast_shapes(a, b);
  if (!shape.ok()) return false;
  return walk_of(a, b, *shape).has_value();
}

Expected<std::unique_ptr<Kernel>> make_kernel(const KernelInit& init, Path path) {
  const ir::Node& node = init.node;
  const bool avx2 = use_avx2(path);
  const bool ms = node.domain == kMsDomain;
  if (!ms && node.op_type == "MaxPool") return make_max_pool_kernel(init, avx2);
  QTK_ASSIGN_OR_RETURN(auto ref, reference_kernel(init));  // also reports bad attributes
  FastOrReference::Fast fast;
  if (!ms && node.op_type == "QuantizeLinear") {
    const int64_t block = node.attr_int("block_size", 0);
    fast = [block, avx2](KernelContext& ctx) { return run_quantize(ctx, block, avx2); };
  } else if (!ms && node.op_type == "DequantizeLinear") {
    const int64_t block = node.attr_int("block_size", 0);
    fast = [block, avx2](KernelContext& ctx) { return run_dequantize(ctx, block, avx2); };
  } else if (ms && node.op_type == "QLinearAdd") {
    fast = [avx2](KernelContext& ctx) { return run_binary<true>(ctx, avx2); };
  } else if (ms && node.op_type == "QLinearMul") {
    fast = [avx2](KernelContext& ctx) { return run_binary<false>(ctx, avx2); };
  } else if (ms && node.op_type == "QLinearGlobalAveragePool") {
    const bool channels_last = node.attr_int("channels_last", 0) != 0;
    fast = [channels_last, avx2](KernelContext& ctx) { return run_global_average_pool(ctx, channels_last, avx2); };
  } else {
    return ref;
  }
  return std::unique_ptr<Kernel>(new FastOrReference(std::move(fast), std::move(ref)));
}

}  // namespace qew

void register_x86_qelementwise_ops(OpRegistry& r) {
  auto factory = [](const KernelInit& init) { return qew::make_kernel(init, qew::Path::kAuto); };
  r.add("QuantizeLinear", factory);
  r.add("DequantizeLinear", factory);
  r.add("MaxPool", factory);
  r.add("QLinearAdd", factory, "com.microsoft");
  r.add("QLinearMul", factory, "com.microsoft");
  r.add("QLinearGlobalAveragePool", factory, "com.microsoft");
}

}  // namespace qtk::rt
