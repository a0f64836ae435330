#include "compress/weight_masks.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

namespace qtk::compress {

Status parse_prune_method(const std::string& text, PruneMethod& method, int64_t& n, int64_t& m) {
  if (text == "magnitude") {
    method = PruneMethod::kMagnitude;
    return Status::Ok();
  }
  if (text == "channels") {
    method = PruneMethod::kChannels;
    return Status::Ok();
  }
  long long a = 0, b = 0;
  char tail = 0;
  if (std::sscanf(text.c_str(), "%lld:%lld%c", &a, &b, &tail) == 2 && a > 0 && b > a && b <= 64) {
    method = PruneMethod::kNofM;
    n = a;
    m = b;
    return Status::Ok();
  }
  return invalid_argument("unknown pruning method '" + text + "' (known: magnitude, 2:4 or any N:M, channels)");
}

Status check_sparsity(double sparsity, const std::string& what) {
  if (!(sparsity >= 0.0 && sparsity < 1.0))
    return invalid_argument(what + " must be in [0, 1), got " + std::to_string(sparsity));
  return Status::Ok();
}

Mask magnitude_mask(const Tensor& w, double sparsity) {
  const int64_t count = w.numel();
  const int64_t prune = std::min<int64_t>(count, std::llround(sparsity * static_cast<double>(count)));
  Mask mask(static_cast<size_t>(count), 1);
  if (prune <= 0) return mask;
  const float* v = w.data<float>();
  std::vector<int64_t> idx(static_cast<size_t>(count));
  std::iota(idx.begin(), idx.end(), 0);
  auto smaller = [v](int64_t a, int64_t b) {
    const float fa = std::fabs(v[a]), fb = std::fabs(v[b]);
    return fa < fb || (fa == fb && a < b);
  };
  std::nth_element(idx.begin(), idx.begin() + (prune - 1), idx.end(), smaller);
  for (int64_t i = 0; i < prune; ++i) mask[static_cast<size_t>(idx[static_cast<size_t>(i)])] = 0;
  return mask;
}

Expected<Mask> n_of_m_mask(const Tensor& w, const WeightLayout& l, int64_t n, int64_t m) {
  if (l.reduce % m != 0)
    return invalid_argument(l.node + ": reduction length " + std::to_string(l.reduce) + " of '" + l.name +
                            "' is not a multiple of " + std::to_string(m));
  const float* v = w.data<float>();
  Mask mask(static_cast<size_t>(w.numel()), 0);
  std::vector<int64_t> group(static_cast<size_t>(m));
  for (int64_t o = 0; o < l.outputs; ++o)
    for (int64_t r0 = 0; r0 < l.reduce; r0 += m) {
      for (int64_t j = 0; j < m; ++j) group[static_cast<size_t>(j)] = l.index(o, r0 + j);
      std::stable_sort(group.begin(), group.end(),
                       [v](int64_t a, int64_t b) { return std::fabs(v[a]) > std::fabs(v[b]); });
      for (int64_t j = 0; j < n; ++j) mask[static_cast<size_t>(group[static_cast<size_t>(j)])] = 1;
    }
  return mask;
}

Expected<MaskSet> make_masks(const std::vector<WeightLayout>& layers,
                             const std::function<const Tensor*(const std::string&)>& value, const MaskOptions& o,
                             std::vector<std::string>* notes) {
  if (o.method == PruneMethod::kChannels)
    return invalid_argument("channel pruning removes channels; it has no element masks");
  QTK_RETURN_IF_ERROR(check_sparsity(o.sparsity));
  if (o.edge_sparsity >= 0) QTK_RETURN_IF_ERROR(check_sparsity(o.edge_sparsity, "first/last layer sparsity"));
  MaskSet masks;
  for (size_t i = 0; i < layers.size(); ++i) {
    const WeightLayout& l = layers[i];
    const Tensor* w = value(l.name);
    if (!w || w->dtype() != DType::kFloat32)
      return not_found(l.node + ": weight '" + l.name + "' has no float values to prune");
    if (w->numel() != l.outputs * l.reduce)
      return invalid_argument(l.node + ": weight '" + l.name + "' changed size");
    const bool edge = i == 0 || i + 1 == layers.size();
    if (o.method == PruneMethod::kNofM) {
      if (edge && o.edge_sparsity == 0) continue;
      auto mask = n_of_m_mask(*w, l, o.n, o.m);
      if (!mask.ok()) {
        if (notes) notes->push_back(mask.status().message() + "; layer left dense");
        continue;
      }
      masks[l.name] = std::move(*mask);
    } else {
      const double s = edge && o.edge_sparsity >= 0 ? o.edge_sparsity : o.sparsity;
      masks[l.name] = magnitude_mask(*w, s);
    }
  }
  return masks;
}

Status apply_mask(Tensor& w, const Mask& mask, const std::string& name) {
  if (w.dtype() != DType::kFloat32 || static_cast<size_t>(w.numel()) != mask.size())
    return invalid_argument("mask for '" + name + "' has " + std::to_string(mask.size()) + " entries, the weight " +
                            std::to_string(w.numel()));
  float* v = w.data<float>();
  for (size_t i = 0; i < mask.size(); ++i)
    if (!mask[i]) v[i] = 0.f;
  return Status::Ok();
}

Status apply_masks(ir::Graph& g, const MaskSet& masks) {
  for (const auto& [name, mask] : masks) {
    auto it = g.initializers.find(name);
    if (it == g.initializers.end()) return not_found("no initializer '" + name + "' to mask");
    Tensor w = it->second.clone();  // storage may be shared with other copies of the model
    QTK_RETURN_IF_ERROR(apply_mask(w, mask, name));
    it->second = std::move(w);
  }
  return Status::Ok();
}

int64_t count_nonzero(const Tensor& t) {
  int64_t nz = 0;
  if (t.dtype() == DType::kFloat32) {
    const float* v = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) nz += v[i] != 0.f;
    return nz;
  }
  for (int64_t i = 0; i < t.numel(); ++i) nz += t.get_as_double(i) != 0.0;
  return nz;
}

}  // namespace qtk::compress
