#include "compress/weight_clustering.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

namespace qtk::compress {
namespace {

// Index of the nearest of the sorted centroids.
size_t nearest(const std::vector<float>& c, float v) {
  auto it = std::lower_bound(c.begin(), c.end(), v);
  if (it == c.begin()) return 0;
  if (it == c.end()) return c.size() - 1;
  const size_t hi = static_cast<size_t>(it - c.begin());
  return (v - c[hi - 1] <= c[hi] - v) ? hi - 1 : hi;
}

std::vector<float> init_centroids(const std::vector<float>& v, int64_t k, const ClusterOptions& o) {
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  std::vector<float> c;
  if (o.init == ClusterInit::kLinear) {
    for (int64_t i = 0; i < k; ++i)
      c.push_back(k == 1 ? 0.5f * (*lo + *hi) : *lo + (*hi - *lo) * static_cast<float>(i) / static_cast<float>(k - 1));
  } else {
    // k-means++: each next centroid drawn with probability ~ squared distance.
    std::mt19937_64 rng(o.seed);
    c.push_back(v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng)]);
    std::vector<double> d2(v.size());
    while (static_cast<int64_t>(c.size()) < k) {
      double total = 0;
      for (size_t i = 0; i < v.size(); ++i) {
        double best = 1e300;
        for (float x : c) best = std::min(best, static_cast<double>(v[i] - x) * (v[i] - x));
        d2[i] = best;
        total += best;
      }
      if (total <= 0) break;
      double r = std::uniform_real_distribution<double>(0, total)(rng);
      size_t pick = 0;
      for (; pick + 1 < v.size() && r > d2[pick]; ++pick) r -= d2[pick];
      c.push_back(v[pick]);
    }
  }
  std::sort(c.begin(), c.end());
  c.erase(std::unique(c.begin(), c.end()), c.end());
  return c;
}

}  // namespace

std::vector<float> kmeans_1d(const std::vector<float>& values, int64_t k, const ClusterOptions& o) {
  if (values.empty() || k <= 0) return {};
  std::vector<float> c = init_centroids(values, k, o);
  std::vector<double> sum(c.size());
  std::vector<int64_t> count(c.size());
  for (int it = 0; it < o.iterations; ++it) {
    std::fill(sum.begin(), sum.end(), 0.0);
    std::fill(count.begin(), count.end(), 0);
    for (float v : values) {
      const size_t j = nearest(c, v);
      sum[j] += v;
      ++count[j];
    }
    bool moved = false;
    for (size_t j = 0; j < c.size(); ++j) {
      if (count[j] == 0) continue;  // an empty cluster keeps its place
      const float m = static_cast<float>(sum[j] / static_cast<double>(count[j]));
      moved |= m != c[j];
      c[j] = m;
    }
    std::sort(c.begin(), c.end());
    if (!moved) break;
  }
  // Only centroids that own weights are shared values.
  std::vector<int64_t> used(c.size(), 0);
  for (float v : values) ++used[nearest(c, v)];
  std::vector<float> out;
  for (size_t j = 0; j < c.size(); ++j)
    if (used[j]) out.push_back(c[j]);
  return out;
}

Expected<std::vector<ClusteredLayer>> cluster_weights(ir::Graph& g, const ClusterOptions& o) {
  if (o.bits < 1 || o.bits > 8) return invalid_argument("cluster bits must be in 1..8, got " + std::to_string(o.bits));
  const int64_t k = int64_t{1} << o.bits;
  std::vector<ClusteredLayer> out;
  for (const WeightLayout& l : prunable_weights(g)) {
    Tensor w = g.find_initializer(l.name)->clone();
    float* v = w.data<float>();
    std::vector<float> nonzero;
    for (int64_t i = 0; i < w.numel(); ++i)
      if (v[i] != 0.f) nonzero.push_back(v[i]);
    const bool has_zero = static_cast<int64_t>(nonzero.size()) < w.numel();
    // Zero stays a shared value of its own, so pruned weights stay pruned.
    std::vector<float> c = kmeans_1d(nonzero, has_zero ? k - 1 : k, o);
    double err = 0;
    std::set<float> distinct;
    for (int64_t i = 0; i < w.numel(); ++i) {
      if (v[i] == 0.f && has_zero) {
        distinct.insert(0.f);
        continue;
      }
      const float q = c[nearest(c, v[i])];
      err += static_cast<double>(q - v[i]) * (q - v[i]);
      v[i] = q;
      distinct.insert(q);
    }
    out.push_back({l.name, static_cast<int64_t>(distinct.size()), std::sqrt(err / static_cast<double>(w.numel()))});
    g.set_initializer(l.name, std::move(w));
  }
  return out;
}

}  // namespace qtk::compress
