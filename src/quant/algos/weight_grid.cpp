#include "quant/algos/weight_grid.h"

#include <cmath>
#include <map>

namespace qtk::quant::algos {

Expected<MatrixGrid> matrix_grid(const LayerGeometry& geo, int64_t g, const Shape& weight_shape,
                                 const ParamLayout& layout) {
  (void)weight_shape;
  MatrixGrid grid;
  grid.rows = geo.rows;
  grid.cols = geo.cols;
  grid.col_group.resize(static_cast<size_t>(geo.cols));
  std::map<int64_t, int32_t> local;  // parameter of row 0 -> group within the row
  std::vector<int64_t> first_param;
  for (int64_t c = 0; c < geo.cols; ++c) {
    const int64_t p = layout.index_of(geo.weight_index(g, 0, c));
    auto [it, added] = local.emplace(p, static_cast<int32_t>(local.size()));
    if (added) {
      grid.members.emplace_back();
      first_param.push_back(c);
    }
    grid.col_group[c] = it->second;
    grid.members[it->second].push_back(static_cast<int32_t>(c));
  }
  grid.groups_per_row = static_cast<int64_t>(grid.members.size());
  grid.row_params.resize(static_cast<size_t>(geo.rows * grid.groups_per_row));
  std::map<int64_t, int64_t> row_of_param;
  for (int64_t r = 0; r < geo.rows; ++r) {
    for (int64_t k = 0; k < grid.groups_per_row; ++k) {
      const int64_t p = layout.index_of(geo.weight_index(g, r, first_param[k]));
      grid.row_params[r * grid.groups_per_row + k] = p;
      auto [it, added] = row_of_param.emplace(p, r);
      if (!added && it->second != r) grid.params_shared_by_rows = true;
    }
    for (int64_t c = 0; c < geo.cols; ++c)
      if (layout.index_of(geo.weight_index(g, r, c)) != grid.param(r, c))
        return internal_error("weight parameter layout does not split rows into the same column groups");
  }
  return grid;
}

int32_t quantize_code(float v, const QParams& p, const QuantConfig& c) {
  return c.mapping == Mapping::kLog2 ? quantize_value_log2(v, p.scale, c.weight_format)
                                     : quantize_value_linear(v, p, c.weight_format);
}

float dequantize_code(int32_t code, const QParams& p, const QuantConfig& c) {
  return c.mapping == Mapping::kLog2 ? dequantize_value_log2(code, p.scale, c.weight_format)
                                     : static_cast<float>(code - p.zero_point) * p.scale;
}

std::vector<QParams> weight_params(const QuantizedWeight& q) {
  const auto s = q.scale.to_float_vector();
  const auto z = q.zero_point.to_int64_vector();
  std::vector<QParams> p(s.size());
  for (size_t i = 0; i < s.size(); ++i) p[i] = {s[i], static_cast<int32_t>(z[i])};
  return p;
}

Status store_codes(QuantizedWeight& q, const Tensor& w, const std::vector<QParams>& params,
                   const std::vector<int32_t>& codes, const QuantConfig& c) {
  const auto& t = traits(c.weight_format);
  if (static_cast<int64_t>(params.size()) != q.scale.numel() || static_cast<int64_t>(codes.size()) != w.numel())
    return internal_error("algorithm result does not match the weight's shape");
  for (size_t i = 0; i < params.size(); ++i) {
    const QParams& p = params[i];
    if (!std::isfinite(p.scale) || !(p.scale > 0.f))
      return internal_error("weight scale " + std::to_string(i) + " is " + std::to_string(p.scale));
    q.scale.data<float>()[i] = p.scale;
    if (t.container == DType::kInt8) q.zero_point.data<int8_t>()[i] = static_cast<int8_t>(p.zero_point);
    else q.zero_point.data<uint8_t>()[i] = static_cast<uint8_t>(p.zero_point);
  }
  float* dq = q.dequantized.data<float>();
  for (int64_t i = 0; i < w.numel(); ++i) {
    const int32_t code = codes[i];
    if (code < t.qmin || code > t.qmax) return internal_error("code out of the format's range");
    if (t.container == DType::kInt8) q.codes.data<int8_t>()[i] = static_cast<int8_t>(code);
    else q.codes.data<uint8_t>()[i] = static_cast<uint8_t>(code);
    dq[i] = dequantize_code(code, params[q.layout.index_of(i)], c);
    if (!std::isfinite(dq[i])) return internal_error("dequantized weight " + std::to_string(i) + " is not finite");
  }
  q.sqnr_db = sqnr_db(w.data<float>(), dq, w.numel());
  return Status::Ok();
}

}  // namespace qtk::quant::algos
