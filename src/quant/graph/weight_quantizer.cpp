#include "quant/graph/weight_quantizer.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "quant/schemes/linear.h"

namespace qtk::quant {

namespace {

// Below 4 bits min/max ranges waste most levels on rare large weights (int2
// min/max: 0.196 top-1 on the MLP vs 0.80 with the search), so the search is
// always on there.
bool clip_search_on(const QuantConfig& c) { return c.weight_clip_search || traits(c.weight_format).bits < 4; }

// Weighted error of quantizing `vals` with range [lo, hi] under the config's mapping.
double group_error(const std::vector<float>& vals, const std::vector<float>& weights, float lo, float hi, QFormat f,
                   bool symmetric, Mapping mapping, QParams* out) {
  double err = 0;
  if (mapping == Mapping::kLog2) {
    const float s = qparams_log2_scale(lo, hi);
    for (size_t i = 0; i < vals.size(); ++i) {
      const float d = vals[i] - dequantize_value_log2(quantize_value_log2(vals[i], s, f), s, f);
      err += static_cast<double>(d) * d * weights[i];
    }
    if (out) *out = {s, 0};
    return err;
  }
  QParams p = qparams_linear(lo, hi, f, symmetric);
  for (size_t i = 0; i < vals.size(); ++i) {
    const float d = vals[i] - (quantize_value_linear(vals[i], p, f) - p.zero_point) * p.scale;
    err += static_cast<double>(d) * d * weights[i];
  }
  if (out) *out = p;
  return err;
}

}  // namespace

QParams choose_weight_params(const std::vector<float>& vals, const std::vector<float>& weights, QFormat f,
                             const QuantConfig& c) {
  float lo = 0.f, hi = 0.f;
  for (float v : vals) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  QParams best;
  double best_err = group_error(vals, weights, lo, hi, f, c.weight_symmetric, c.mapping, &best);
  if (!clip_search_on(c)) return best;
  // Shrink the range: rounding error falls, clipping error grows.
  for (int step = 1; step <= 60; ++step) {
    const float a = 1.f - 0.01f * static_cast<float>(step);
    QParams p;
    const double e = group_error(vals, weights, lo * a, hi * a, f, c.weight_symmetric, c.mapping, &p);
    if (e < best_err) {
      best_err = e;
      best = p;
    }
  }
  return best;
}

namespace {

std::string describe(const QuantConfig& c, const ParamLayout& layout, int axis, bool weighted) {
  std::string s = traits(c.weight_format).name;
  s += c.mapping == Mapping::kLog2 ? " log2" : (c.weight_symmetric ? " sym" : " asym");
  if (layout.count == 1) s += " per-tensor";
  else if (layout.block > 0) s += " per-group(" + std::to_string(layout.block) + ", axis " + std::to_string(axis) + ")";
  else s += " per-channel(axis " + std::to_string(axis) + ")";
  if (clip_search_on(c)) s += weighted ? " act-weighted-clip" : " mse-clip";
  return s;
}

}  // namespace

Expected<QuantizedWeight> quantize_weight(const Tensor& w, int channel_axis, int reduction_axis,
                                          const QuantConfig& config, const std::vector<float>* importance) {
  if (w.dtype() != DType::kFloat32) return unsupported(std::string("weights of dtype ") + dtype_name(w.dtype()));
  const QFormat f = config.weight_format;
  const auto& t = traits(f);
  if (config.mapping == Mapping::kLog2 && !t.is_signed)
    return invalid_argument(std::string("log2 mapping needs a signed format, not ") + t.name);
  QuantizedWeight q;
  const int rank = w.rank();
  switch (config.granularity) {
    case Granularity::kPerTensor: q.layout = ParamLayout::per_tensor(); break;
    case Granularity::kPerChannel:
      if (rank == 0) {
        q.layout = ParamLayout::per_tensor();
        break;
      }
      q.axis = channel_axis;
      q.layout = ParamLayout::per_axis(w.shape(), channel_axis);
      break;
    case Granularity::kPerGroup:
      if (config.group_size <= 0) return invalid_argument("group size must be positive");
      q.axis = reduction_axis;
      q.layout = ParamLayout::per_block(w.shape(), reduction_axis, config.group_size);
      break;
  }
  if (importance && (rank == 0 || static_cast<int64_t>(importance->size()) != w.dim(reduction_axis)))
    importance = nullptr;  // does not fit this weight: fall back to plain error
  const ParamLayout along_k = rank > 0 ? ParamLayout::per_axis(w.shape(), reduction_axis) : ParamLayout::per_tensor();
  // Gather each parameter group's values and their error weights.
  std::vector<std::vector<float>> groups(static_cast<size_t>(q.layout.count)), weights(groups.size());
  const float* wd = w.data<float>();
  for (int64_t i = 0; i < w.numel(); ++i) {
    const int64_t g = q.layout.index_of(i);
    groups[g].push_back(std::isfinite(wd[i]) ? wd[i] : 0.f);
    weights[g].push_back(importance ? (*importance)[along_k.index_of(i)] : 1.f);
  }
  std::vector<QParams> params(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) params[g] = choose_weight_params(groups[g], weights[g], f, config);

  const Shape pshape = q.layout.param_shape(w.shape(), q.axis);
  q.scale = Tensor(DType::kFloat32, pshape);
  q.zero_point = Tensor(t.container, pshape);
  for (size_t g = 0; g < params.size(); ++g) {
    q.scale.data<float>()[g] = params[g].scale;
    if (t.container == DType::kInt8) q.zero_point.data<int8_t>()[g] = static_cast<int8_t>(params[g].zero_point);
    else q.zero_point.data<uint8_t>()[g] = static_cast<uint8_t>(params[g].zero_point);
  }
  q.codes = Tensor(t.container, w.shape());
  q.dequantized = Tensor(DType::kFloat32, w.shape());
  float* dq = q.dequantized.data<float>();
  for (int64_t i = 0; i < w.numel(); ++i) {
    const QParams& p = params[q.layout.index_of(i)];
    const float v = std::isfinite(wd[i]) ? wd[i] : 0.f;
    int32_t code;
    if (config.mapping == Mapping::kLog2) {
      code = quantize_value_log2(v, p.scale, f);
      dq[i] = dequantize_value_log2(code, p.scale, f);
    } else {
      code = quantize_value_linear(v, p, f);
      dq[i] = static_cast<float>(code - p.zero_point) * p.scale;
    }
    if (t.container == DType::kInt8) q.codes.data<int8_t>()[i] = static_cast<int8_t>(code);
    else q.codes.data<uint8_t>()[i] = static_cast<uint8_t>(code);
  }
  q.sqnr_db = sqnr_db(wd, dq, w.numel());
  q.scheme = describe(config, q.layout, q.axis, importance != nullptr);
  return q;
}

}  // namespace qtk::quant
