#include "quant/algos/layer_inputs.h"

#include <algorithm>
#include <cmath>

#include "runtime/kernels/ref/sgemm.h"

namespace qtk::quant::algos {

namespace {

// Rows gathered at a time before one sgemm into the Hessian (bounds scratch).
constexpr int64_t kChunkRows = 2048;

// Hessian rows a layer with reduction length K gets by default: at least
// 4 K (a full-rank estimate), and as many more as ~2e9 multiply-adds allow
// (a 576-column Conv gets ~6,000 of its 400,000 rows; small layers all).
int64_t default_hessian_rows(int64_t k) {
  const double budget = 2e9 / std::max<double>(1.0, static_cast<double>(k) * static_cast<double>(k));
  return std::max<int64_t>(4 * k, static_cast<int64_t>(std::min(budget, 1e7)));
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// ONNX Conv attribute `name` as a 2-entry (H, W) array; a 1-D conv fills W.
bool conv_pair(const ir::Node& n, const char* name, int spatial, int64_t def, int64_t out[2]) {
  out[0] = out[1] = def;
  if (!n.has_attr(name)) return true;
  const auto v = n.attr_ints(name);
  if (static_cast<int>(v.size()) != spatial) return false;
  if (spatial == 1) out[1] = v[0];
  else out[0] = v[0], out[1] = v[1];
  return true;
}

}  // namespace

Expected<LayerGeometry> layer_geometry(const ir::Node& n, const Tensor& w) {
  LayerGeometry g;
  if (w.dtype() != DType::kFloat32) return unsupported("weight is not float32");
  if (n.op_type == "Conv") {
    if (w.rank() != 3 && w.rank() != 4) return unsupported("only 1-D and 2-D Conv");
    const int spatial = w.rank() - 2;
    g.conv = true;
    g.groups = n.attr_int("group", 1);
    if (g.groups < 1 || w.dim(0) % g.groups != 0) return invalid_argument("bad group attribute");
    g.rows = w.dim(0) / g.groups;
    g.in_channels = w.dim(1);
    g.kernel[0] = spatial == 2 ? w.dim(2) : 1;
    g.kernel[1] = w.dim(w.rank() - 1);
    g.cols = g.in_channels * g.kernel[0] * g.kernel[1];
    if (!conv_pair(n, "strides", spatial, 1, g.stride) || !conv_pair(n, "dilations", spatial, 1, g.dilation))
      return invalid_argument("strides/dilations do not match the kernel rank");
    if (n.has_attr("pads")) {
      const auto p = n.attr_ints("pads");
      if (static_cast<int>(p.size()) != 2 * spatial) return invalid_argument("pads do not match the kernel rank");
      for (int d = 0; d < spatial; ++d) {
        g.pad_begin[d + 2 - spatial] = p[d];
        g.pad_end[d + 2 - spatial] = p[d + spatial];
      }
    }
    g.auto_pad = n.attr_string("auto_pad", "");
    return g;
  }
  if (n.op_type == "Gemm") {
    if (n.attr_int("transA", 0) != 0) return unsupported("Gemm with transA=1");
    if (w.rank() != 2) return invalid_argument("Gemm weight is not 2-D");
    g.transposed = n.attr_int("transB", 0) == 0;
  } else if (n.op_type == "MatMul") {
    if (w.rank() != 2) return unsupported("MatMul weight of rank " + std::to_string(w.rank()) + " (2-D only)");
    g.transposed = true;
  } else {
    return unsupported(n.op_type);
  }
  g.rows = g.transposed ? w.dim(1) : w.dim(0);
  g.cols = g.transposed ? w.dim(0) : w.dim(1);
  return g;
}

Expected<LayerRows> LayerRows::make(const LayerGeometry& geo, const Tensor& x) {
  LayerRows r;
  r.geo_ = &geo;
  r.x_ = &x;
  if (x.dtype() != DType::kFloat32) return invalid_argument("layer input is not float32");
  if (!geo.conv) {
    if (x.rank() < 1 || x.dim(-1) != geo.cols)
      return invalid_argument("layer input " + shape_to_string(x.shape()) + " does not end in K=" +
                              std::to_string(geo.cols));
    const int64_t rows = geo.cols > 0 ? x.numel() / geo.cols : 0;
    r.samples_ = x.rank() >= 2 ? x.dim(0) : 1;
    r.per_sample_ = r.samples_ > 0 ? rows / r.samples_ : 0;
    return r;
  }
  const int spatial = x.rank() - 2;
  if ((spatial != 1 && spatial != 2) || x.dim(1) != geo.in_channels * geo.groups)
    return invalid_argument("Conv input " + shape_to_string(x.shape()) + " does not fit the weight");
  r.samples_ = x.dim(0);
  r.in_h_ = spatial == 2 ? x.dim(2) : 1;
  r.in_w_ = x.dim(-1);
  const int64_t in[2] = {r.in_h_, r.in_w_};
  int64_t out[2], pad[2];
  for (int d = 0; d < 2; ++d) {
    const int64_t span = (geo.kernel[d] - 1) * geo.dilation[d] + 1;
    if (geo.auto_pad == "SAME_UPPER" || geo.auto_pad == "SAME_LOWER") {
      out[d] = (in[d] + geo.stride[d] - 1) / geo.stride[d];
      const int64_t total = std::max<int64_t>(0, (out[d] - 1) * geo.stride[d] + span - in[d]);
      pad[d] = geo.auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
    } else {
      const bool valid = geo.auto_pad == "VALID";
      pad[d] = valid ? 0 : geo.pad_begin[d];
      const int64_t padded = in[d] + (valid ? 0 : geo.pad_begin[d] + geo.pad_end[d]);
      out[d] = padded >= span ? (padded - span) / geo.stride[d] + 1 : 0;
    }
  }
  r.out_h_ = out[0];
  r.out_w_ = out[1];
  r.pad_top_ = pad[0];
  r.pad_left_ = pad[1];
  r.per_sample_ = r.out_h_ * r.out_w_;
  return r;
}

void LayerRows::copy_row(int64_t g, int64_t local, float* out) const {
  const LayerGeometry& geo = *geo_;
  const float* x = x_->data<float>();
  if (!geo.conv) {
    const float* src = x + local * geo.cols;
    for (int64_t c = 0; c < geo.cols; ++c) out[c] = std::isfinite(src[c]) ? src[c] : 0.f;
    return;
  }
  const int64_t n = local / per_sample_, pos = local % per_sample_;
  const int64_t oy = pos / out_w_, ox = pos % out_w_;
  const int64_t kh = geo.kernel[0], kw = geo.kernel[1];
  const int64_t channels = geo.in_channels * geo.groups;
  for (int64_t c = 0; c < geo.in_channels; ++c) {
    const float* plane = x + ((n * channels + g * geo.in_channels + c) * in_h_) * in_w_;
    for (int64_t ky = 0; ky < kh; ++ky) {
      const int64_t iy = oy * geo.stride[0] - pad_top_ + ky * geo.dilation[0];
      for (int64_t kx = 0; kx < kw; ++kx) {
        const int64_t ix = ox * geo.stride[1] - pad_left_ + kx * geo.dilation[1];
        float v = 0.f;
        if (iy >= 0 && iy < in_h_ && ix >= 0 && ix < in_w_) v = plane[iy * in_w_ + ix];
        out[(c * kh + ky) * kw + kx] = std::isfinite(v) ? v : 0.f;
      }
    }
  }
}

bool row_selected(uint64_t id, double fraction, uint64_t salt) {
  if (fraction >= 1.0) return true;
  const uint64_t h = splitmix64(id ^ splitmix64(salt));
  return static_cast<double>(h >> 11) * 0x1.0p-53 < fraction;
}

LayerStats::LayerStats(const LayerGeometry& geo, const LayerStatsOptions& opt, int64_t total_samples)
    : geo_(geo), opt_(opt), total_samples_(total_samples) {
  const size_t groups = static_cast<size_t>(geo.groups);
  if (opt_.max_hessian_rows <= 0) opt_.max_hessian_rows = default_hessian_rows(geo.cols);
  if (opt_.hessian) hessian_.assign(groups, std::vector<float>(static_cast<size_t>(geo.cols * geo.cols), 0.f));
  kept_.resize(groups);
  col_sum_.assign(groups, std::vector<double>(static_cast<size_t>(geo.cols), 0.0));
}

Status LayerStats::add(const Tensor& x, int64_t sample0, rt::ThreadPool* pool) {
  QTK_ASSIGN_OR_RETURN(LayerRows rows, LayerRows::make(geo_, x));
  if (hessian_fraction_ < 0) {
    total_rows_ = rows.per_sample() * total_samples_;
    const double total = static_cast<double>(std::max<int64_t>(1, total_rows_));
    hessian_fraction_ = std::min(1.0, static_cast<double>(opt_.max_hessian_rows) / total);
    keep_fraction_ = std::min(1.0, static_cast<double>(opt_.keep_rows) / total);
  }
  const int64_t k = geo_.cols;
  const int64_t base = sample0 * rows.per_sample();
  // Statistics rows (Hessian and column means), gathered in chunks.
  std::vector<int64_t> chosen;
  for (int64_t r = 0; r < rows.count(); ++r)
    if (row_selected(static_cast<uint64_t>(base + r), hessian_fraction_, opt_.salt)) chosen.push_back(r);
  hessian_rows_ += static_cast<int64_t>(chosen.size());
  for (size_t start = 0; start < chosen.size(); start += kChunkRows) {
    const int64_t m = std::min<int64_t>(kChunkRows, static_cast<int64_t>(chosen.size() - start));
    scratch_.resize(static_cast<size_t>(m * k));
    for (int64_t g = 0; g < geo_.groups; ++g) {
      for (int64_t i = 0; i < m; ++i) rows.copy_row(g, chosen[start + i], scratch_.data() + i * k);
      auto& sum = col_sum_[g];
      for (int64_t i = 0; i < m; ++i)
        for (int64_t c = 0; c < k; ++c) sum[c] += scratch_[i * k + c];
      if (opt_.hessian)
        rt::ref::sgemm(true, false, k, k, m, 1.f, scratch_.data(), k, scratch_.data(), k, 1.f, hessian_[g].data(), k,
                       pool);
    }
  }
  if (opt_.keep_rows > 0) {
    for (int64_t r = 0; r < rows.count(); ++r) {
      if (!row_selected(static_cast<uint64_t>(base + r), keep_fraction_, opt_.salt + 1)) continue;
      kept_ids_.push_back(base + r);
      for (int64_t g = 0; g < geo_.groups; ++g) {
        auto& kept = kept_[g];
        kept.resize(kept.size() + static_cast<size_t>(k));
        rows.copy_row(g, r, kept.data() + kept.size() - k);
      }
    }
  }
  return Status::Ok();
}

std::vector<float> LayerStats::column_mean(int64_t g) const {
  std::vector<float> mean(static_cast<size_t>(geo_.cols), 0.f);
  if (hessian_rows_ == 0) return mean;
  for (int64_t c = 0; c < geo_.cols; ++c)
    mean[c] = static_cast<float>(col_sum_[g][c] / static_cast<double>(hessian_rows_));
  return mean;
}

}  // namespace qtk::quant::algos
