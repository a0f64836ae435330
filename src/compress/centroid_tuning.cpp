#include "compress/centroid_tuning.h"

#include <algorithm>

namespace qtk::compress {

Expected<CentroidTuner> CentroidTuner::create(train::TrainGraph& graph, const std::vector<WeightLayout>& layers) {
  CentroidTuner t;
  for (const WeightLayout& l : layers) {
    Layer layer;
    layer.name = l.name;
    for (auto& p : graph.params())
      if (p.name == l.name) layer.param = &p;
    if (!layer.param)
      return not_found("clustered weight '" + l.name + "' of " + l.node + " is not a trainable parameter");
    const float* w = layer.param->value.data<float>();
    const int64_t n = layer.param->value.numel();
    std::vector<float> values(w, w + n);
    std::sort(values.begin(), values.end());
    values.erase(std::unique(values.begin(), values.end()), values.end());
    if (values.size() > 256)
      return invalid_argument("weight '" + l.name + "' of " + l.node + " has " + std::to_string(values.size()) +
                              " distinct values; centroid fine-tuning needs clustered weights (at most 256)");
    layer.cluster.resize(static_cast<size_t>(n));
    layer.first.assign(values.size(), -1);
    for (int64_t i = 0; i < n; ++i) {
      const size_t c = static_cast<size_t>(std::lower_bound(values.begin(), values.end(), w[i]) - values.begin());
      layer.cluster[static_cast<size_t>(i)] = static_cast<uint8_t>(c);
      if (layer.first[c] < 0) layer.first[c] = i;
    }
    for (float v : values) layer.frozen.push_back(v == 0.f);
    layer.grad_sum.resize(values.size());
    t.layers_.push_back(std::move(layer));
  }
  return t;
}

Status CentroidTuner::before_step() {
  for (Layer& l : layers_) {
    float* g = l.param->grad.data<float>();
    const int64_t n = l.param->grad.numel();
    if (n != static_cast<int64_t>(l.cluster.size()))
      return internal_error("gradient of '" + l.name + "' changed size during centroid fine-tuning");
    std::fill(l.grad_sum.begin(), l.grad_sum.end(), 0.0);
    for (int64_t i = 0; i < n; ++i) l.grad_sum[l.cluster[static_cast<size_t>(i)]] += g[i];
    for (size_t c = 0; c < l.frozen.size(); ++c)
      if (l.frozen[c]) l.grad_sum[c] = 0.0;
    for (int64_t i = 0; i < n; ++i) g[i] = static_cast<float>(l.grad_sum[l.cluster[static_cast<size_t>(i)]]);
  }
  return Status::Ok();
}

Status CentroidTuner::after_step() {
  for (Layer& l : layers_) {
    float* w = l.param->value.data<float>();
    const int64_t n = l.param->value.numel();
    for (int64_t i = 0; i < n; ++i) {
      const uint8_t c = l.cluster[static_cast<size_t>(i)];
      w[i] = l.frozen[c] ? 0.f : w[l.first[c]];
    }
  }
  return Status::Ok();
}

std::vector<float> CentroidTuner::centroids(const std::string& name) const {
  for (const Layer& l : layers_)
    if (l.name == name) {
      std::vector<float> c;
      for (int64_t f : l.first) c.push_back(l.param->value.data<float>()[f]);
      return c;
    }
  return {};
}

}  // namespace qtk::compress
