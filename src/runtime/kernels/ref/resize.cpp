// Reference interpolation for Resize/Upsample. Every mode is separable: each
// output position along an axis reads a few input positions ("taps") with
// weights, so the n-D resize is a sequence of 1-D passes (one per axis that
// changes). Nearest mode has one tap of weight 1 and is done as a pure byte
// gather instead, so it works for every dtype.
#include "runtime/kernels/ref/resize.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <new>

#include "runtime/kernels/ref/tensor_ops_common.h"

namespace qtk::rt::ref {

namespace {

// How one axis is resampled: output position o reads input positions
// index[o * taps + k] with weight[o * taps + k], or, where outside[o] is set,
// is the extrapolation value.
struct AxisPlan {
  int64_t taps = 1;
  std::vector<int64_t> index;
  std::vector<double> weight;
  std::vector<uint8_t> outside;
};

// Maps output coordinate x to the input coordinate (the ONNX
// coordinate_transformation_mode formulas). `outside` is set when
// tf_crop_and_resize lands outside the input.
double original_coordinate(const ResizeParams& p, int axis, int rank, int64_t x_out, int64_t in, bool* outside) {
  const double x = static_cast<double>(x_out);
  const double scale = p.scales[static_cast<size_t>(axis)];
  const double length_in = static_cast<double>(in);
  const double length = scale * length_in;  // may be fractional, as in the ONNX reference
  *outside = false;
  switch (p.coord) {
    case ResizeCoordMode::kHalfPixel: return (x + 0.5) / scale - 0.5;
    case ResizeCoordMode::kHalfPixelSymmetric: {
      const double adjustment = static_cast<double>(p.out_shape[static_cast<size_t>(axis)]) / length;
      const double offset = length_in / 2 * (1 - adjustment);
      return offset + (x + 0.5) / scale - 0.5;
    }
    case ResizeCoordMode::kPytorchHalfPixel: return length == 1 ? -0.5 : (x + 0.5) / scale - 0.5;
    case ResizeCoordMode::kAlignCorners: return length == 1 ? 0.0 : x * (length_in - 1) / (length - 1);
    case ResizeCoordMode::kAsymmetric: return x / scale;
    case ResizeCoordMode::kTfHalfPixelForNn: return (x + 0.5) / scale;
    case ResizeCoordMode::kTfCropAndResize: {
      const double start = p.roi[static_cast<size_t>(axis)];
      const double end = p.roi[static_cast<size_t>(rank + axis)];
      // The ROI extent is a float difference in the reference; keep that rounding.
      const double extent = static_cast<float>(static_cast<float>(end) - static_cast<float>(start));
      double xo = length == 1 ? extent * (length_in - 1) / 2 : x * extent * (length_in - 1) / (length - 1);
      xo += start * (length_in - 1);
      *outside = xo < 0 || xo > length_in - 1;
      return xo;
    }
  }
  return x;
}

int64_t nearest_index(ResizeNearestMode mode, double x, double scale) {
  const double fl = std::floor(x);
  if (x == fl) return static_cast<int64_t>(fl);
  const double ratio = x - fl;
  switch (mode) {
    case ResizeNearestMode::kRoundPreferFloor: return static_cast<int64_t>(ratio <= 0.5 ? fl : fl + 1);
    case ResizeNearestMode::kRoundPreferCeil: return static_cast<int64_t>(ratio < 0.5 ? fl : fl + 1);
    case ResizeNearestMode::kFloor: return static_cast<int64_t>(fl);
    case ResizeNearestMode::kCeil: return static_cast<int64_t>(fl + 1);
    case ResizeNearestMode::kLegacy: return static_cast<int64_t>(scale < 1 ? fl + 1 : fl);
  }
  return static_cast<int64_t>(fl);
}

double cubic_kernel(double x, double a) {
  x = std::fabs(x);
  if (x <= 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
  return 0.0;
}

// Filter weights for the points base + first + k (k < weights.size()), where
// ratio = x - base lies in (0, 1] (the reference prefers the left pixel).
void filter_weights(const ResizeParams& p, double scale, double ratio, int64_t* first, std::vector<double>* w) {
  const double a = p.cubic_coeff_a;
  if (!p.antialias || scale >= 1) {
    if (p.mode == ResizeMode::kLinear) {
      *first = 0;
      *w = {1 - ratio, ratio};
    } else {
      *first = -1;
      *w = {cubic_kernel(ratio + 1, a), cubic_kernel(ratio, a), cubic_kernel(1 - ratio, a), cubic_kernel(2 - ratio, a)};
    }
    return;
  }
  // Antialiasing stretches the filter by 1/scale when shrinking.
  const double support = p.mode == ResizeMode::kLinear ? 1.0 : 2.0;
  *first = static_cast<int64_t>(std::floor(-support / scale)) + 1;
  const int64_t n = 2 - 2 * *first;
  w->assign(static_cast<size_t>(n), 0.0);
  double sum = 0;
  for (int64_t k = 0; k < n; ++k) {
    const double t = scale * (static_cast<double>(*first + k) - ratio);
    const double v = p.mode == ResizeMode::kLinear ? std::clamp(1 - std::fabs(t), 0.0, 1.0) : cubic_kernel(t, a);
    (*w)[static_cast<size_t>(k)] = v;
    sum += v;
  }
  for (double& v : *w) v /= sum;
}

AxisPlan plan_axis(const ResizeParams& p, int axis, int rank, int64_t in) {
  const int64_t out = p.out_shape[static_cast<size_t>(axis)];
  const double scale = p.scales[static_cast<size_t>(axis)];
  AxisPlan plan;
  plan.outside.assign(static_cast<size_t>(out), 0);
  std::vector<double> w;
  for (int64_t o = 0; o < out; ++o) {
    bool outside = false;
    const double x = original_coordinate(p, axis, rank, o, in, &outside);
    plan.outside[static_cast<size_t>(o)] = outside;
    if (p.mode == ResizeMode::kNearest) {
      plan.index.push_back(std::clamp<int64_t>(nearest_index(p.nearest, x, scale), 0, in - 1));
      plan.weight.push_back(1.0);
      continue;
    }
    const double base = std::ceil(x) - 1;
    int64_t first = 0;
    filter_weights(p, scale, x - base, &first, &w);
    plan.taps = static_cast<int64_t>(w.size());
    double kept = 0;
    for (size_t k = 0; k < w.size(); ++k) {
      const int64_t i = static_cast<int64_t>(base) + first + static_cast<int64_t>(k);
      // exclude_outside drops the taps that fall off the input, then renormalises.
      if (p.exclude_outside && (i < 0 || i >= in)) w[k] = 0;
      kept += w[k];
      plan.index.push_back(std::clamp<int64_t>(i, 0, in - 1));
    }
    for (double v : w) plan.weight.push_back(p.exclude_outside && kept != 0 ? v / kept : v);
  }
  return plan;
}

bool is_identity(const AxisPlan& plan, int64_t in, int64_t out) {
  if (in != out) return false;
  for (int64_t o = 0; o < out; ++o) {
    if (plan.outside[static_cast<size_t>(o)]) return false;
    for (int64_t k = 0; k < plan.taps; ++k) {
      const size_t t = static_cast<size_t>(o * plan.taps + k);
      const bool self = plan.index[t] == o;
      if (plan.weight[t] != 0 && !(self && plan.weight[t] == 1.0)) return false;
    }
  }
  return true;
}

// One 1-D pass over axis d of a double buffer of `shape`; returns the new buffer.
std::vector<double> apply_axis(const std::vector<double>& src, const Shape& shape, int d, const AxisPlan& plan,
                               int64_t out, double extrapolation, ThreadPool* pool) {
  int64_t outer = 1, inner = 1;
  for (int k = 0; k < d; ++k) outer *= shape[static_cast<size_t>(k)];
  for (size_t k = static_cast<size_t>(d) + 1; k < shape.size(); ++k) inner *= shape[k];
  const int64_t in = shape[static_cast<size_t>(d)];
  std::vector<double> dst(static_cast<size_t>(outer * out * inner));
  auto o_of = [out](int64_t row) { return row % out; };
  // The last axis (inner 1): one value per output position, its taps summed
  // in the same order from the same zero as below, so the same bits.
  auto last_axis = [&](int64_t begin, int64_t end) {
    const int64_t taps = plan.taps;
    for (int64_t row = begin; row < end;) {
      const int64_t ob = row / out, o_end = std::min(out, o_of(row) + (end - row));
      const double* xrow = src.data() + ob * in;
      for (int64_t o = o_of(row); o < o_end; ++o, ++row) {
        if (plan.outside[static_cast<size_t>(o)]) {
          dst[static_cast<size_t>(row)] = extrapolation;
          continue;
        }
        const double* w = plan.weight.data() + o * taps;
        const int64_t* idx = plan.index.data() + o * taps;
        double y = 0.0;
        for (int64_t k = 0; k < taps; ++k)
          if (w[k] != 0) y += w[k] * xrow[idx[k]];
        dst[static_cast<size_t>(row)] = y;
      }
    }
  };
  auto body = [&](int64_t begin, int64_t end) {
    if (inner == 1) return last_axis(begin, end);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t ob = row / out, o = row % out;
      double* y = dst.data() + row * inner;
      if (plan.outside[static_cast<size_t>(o)]) {
        std::fill(y, y + inner, extrapolation);
        continue;
      }
      std::fill(y, y + inner, 0.0);
      for (int64_t k = 0; k < plan.taps; ++k) {
        const size_t t = static_cast<size_t>(o * plan.taps + k);
        const double w = plan.weight[t];
        if (w == 0) continue;
        const double* xrow = src.data() + (ob * in + plan.index[t]) * inner;
        for (int64_t j = 0; j < inner; ++j) y[j] += w * xrow[j];
      }
    }
  };
  if (pool) pool->parallel_for(outer * out, body, std::max<int64_t>(1, 4096 / std::max<int64_t>(inner, 1)));
  else body(0, outer * out);
  return dst;
}

template <class T>
T round_to(double v) {
  if (std::isnan(v)) return T{0};
  v = std::round(v);
  if (v <= static_cast<double>(std::numeric_limits<T>::lowest())) return std::numeric_limits<T>::lowest();
  if (v >= static_cast<double>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
  return static_cast<T>(v);
}

Status store(const std::vector<double>& v, Tensor& out) {
  const size_t n = v.size();
  switch (out.dtype()) {
    case DType::kFloat32: for (size_t i = 0; i < n; ++i) out.data<float>()[i] = static_cast<float>(v[i]); break;
    case DType::kFloat64: for (size_t i = 0; i < n; ++i) out.data<double>()[i] = v[i]; break;
    case DType::kFloat16:
      for (size_t i = 0; i < n; ++i) out.data<uint16_t>()[i] = float_to_half(static_cast<float>(v[i]));
      break;
    case DType::kBFloat16:
      for (size_t i = 0; i < n; ++i) out.data<uint16_t>()[i] = float_to_bfloat16(static_cast<float>(v[i]));
      break;
    case DType::kInt8: for (size_t i = 0; i < n; ++i) out.data<int8_t>()[i] = round_to<int8_t>(v[i]); break;
    case DType::kUInt8: for (size_t i = 0; i < n; ++i) out.data<uint8_t>()[i] = round_to<uint8_t>(v[i]); break;
    case DType::kInt16: for (size_t i = 0; i < n; ++i) out.data<int16_t>()[i] = round_to<int16_t>(v[i]); break;
    case DType::kUInt16: for (size_t i = 0; i < n; ++i) out.data<uint16_t>()[i] = round_to<uint16_t>(v[i]); break;
    case DType::kInt32: for (size_t i = 0; i < n; ++i) out.data<int32_t>()[i] = round_to<int32_t>(v[i]); break;
    case DType::kUInt32: for (size_t i = 0; i < n; ++i) out.data<uint32_t>()[i] = round_to<uint32_t>(v[i]); break;
    case DType::kInt64: for (size_t i = 0; i < n; ++i) out.data<int64_t>()[i] = round_to<int64_t>(v[i]); break;
    case DType::kUInt64: for (size_t i = 0; i < n; ++i) out.data<uint64_t>()[i] = round_to<uint64_t>(v[i]); break;
    default:
      return unsupported(std::string("linear/cubic resize of dtype ") + dtype_name(out.dtype()) + " is not supported");
  }
  return Status::Ok();
}

Expected<Tensor> resize_impl(const Tensor& x, const ResizeParams& p, ThreadPool* pool) {
  QTK_RETURN_IF_ERROR(expect_fixed_size(x.dtype()));
  const int rank = x.rank();
  if (p.scales.size() != static_cast<size_t>(rank) || p.out_shape.size() != static_cast<size_t>(rank))
    return invalid_argument("resize needs one scale and one output size per input axis");
  if (p.coord == ResizeCoordMode::kTfCropAndResize && p.roi.size() != 2 * static_cast<size_t>(rank))
    return invalid_argument("tf_crop_and_resize needs an roi of " + std::to_string(2 * rank) + " values");
  for (int d = 0; d < rank; ++d)
    if (x.dim(d) == 0 && p.out_shape[static_cast<size_t>(d)] > 0)
      return invalid_argument("cannot resize an empty axis to a non-empty one");
  QTK_ASSIGN_OR_RETURN(Tensor out, new_tensor(x.dtype(), p.out_shape));
  if (out.numel() == 0) return out;
  for (int d = 0; d < rank; ++d) {
    const double s = p.scales[static_cast<size_t>(d)];
    if (!(s > 0) || !std::isfinite(s)) return invalid_argument("scale " + std::to_string(s) + " must be positive");
  }

  std::vector<AxisPlan> plans;
  for (int d = 0; d < rank; ++d) plans.push_back(plan_axis(p, d, rank, x.dim(d)));

  if (p.mode == ResizeMode::kNearest) {
    QTK_ASSIGN_OR_RETURN(std::vector<std::byte> fill, scalar_bytes(x.dtype(), p.extrapolation_value));
    std::vector<std::vector<int64_t>> maps(static_cast<size_t>(rank));
    for (int d = 0; d < rank; ++d) {
      auto& m = maps[static_cast<size_t>(d)];
      m = plans[static_cast<size_t>(d)].index;
      for (size_t o = 0; o < m.size(); ++o)
        if (plans[static_cast<size_t>(d)].outside[o]) m[o] = -1;
    }
    return copy_by_axis_maps(x, maps, fill, pool);
  }

  if (x.dtype() == DType::kBool) return unsupported("linear/cubic resize of bool is not supported");
  std::vector<double> buf(static_cast<size_t>(x.numel()));
  if (x.dtype() == DType::kFloat32)
    std::copy(x.data<float>(), x.data<float>() + x.numel(), buf.begin());
  else
    for (int64_t i = 0; i < x.numel(); ++i) buf[static_cast<size_t>(i)] = x.get_as_double(i);
  Shape shape = x.shape();
  for (int d = 0; d < rank; ++d) {
    const AxisPlan& plan = plans[static_cast<size_t>(d)];
    const int64_t o = p.out_shape[static_cast<size_t>(d)];
    if (is_identity(plan, shape[static_cast<size_t>(d)], o)) continue;
    buf = apply_axis(buf, shape, d, plan, o, p.extrapolation_value, pool);
    shape[static_cast<size_t>(d)] = o;
  }
  QTK_RETURN_IF_ERROR(store(buf, out));
  return out;
}

}  // namespace

Expected<Tensor> resize_ref(const Tensor& x, const ResizeParams& p, ThreadPool* pool) {
  // The double-precision work buffers are the one allocation new_tensor does not cover.
  try {
    return resize_impl(x, p, pool);
  } catch (const std::bad_alloc&) {
    return invalid_argument("out of memory resizing " + shape_to_string(x.shape()) + " to " +
                            shape_to_string(p.out_shape));
  }
}

}  // namespace qtk::rt::ref
