// What the weight algorithms see of a weighted node: its weight as matrices
// W_g [rows x cols] (one per Conv group: rows = the group's output channels,
// cols = its input channels x kernel positions; Gemm/MatMul: one group), and
// its input as rows x of the same length (Conv: one im2col patch per output
// position), so that the layer computes W_g x for every row.
//
// LayerStats accumulates, batch by batch and in bounded memory, what GPTQ
// and AdaRound need from those rows: the Hessian sum x x^T per group (K x K),
// the mean of every column, and a fixed random subset of rows (AdaRound's
// training set). Rows are picked by a hash of their global index, so two
// passes over the same data (float model, partly quantized model) pick the
// same rows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/status.h"
#include "qtk/tensor.h"

namespace qtk::rt {
class ThreadPool;
}

namespace qtk::quant::algos {

struct LayerGeometry {
  int64_t groups = 1;
  int64_t rows = 0;  // output channels per group
  int64_t cols = 0;  // reduction length K per group
  // Where W_g[r, c] lives in the weight tensor: [groups*rows, cols] row-major,
  // or [cols, rows] (Gemm transB=0, MatMul; one group).
  bool transposed = false;
  int64_t weight_index(int64_t g, int64_t r, int64_t c) const {
    return transposed ? c * rows + r : (g * rows + r) * cols + c;
  }
  // Conv: 1 or 2 spatial dims (a 1-D conv is a 2-D one of height 1).
  bool conv = false;
  int64_t in_channels = 0;  // per group
  int64_t kernel[2] = {1, 1}, stride[2] = {1, 1}, dilation[2] = {1, 1}, pad_begin[2] = {0, 0}, pad_end[2] = {0, 0};
  std::string auto_pad;  // "", "NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"
};

// The geometry of Conv (1-D/2-D, any group), Gemm (transA=0) and MatMul with
// a 2-D constant weight; an error saying why for anything else (the caller
// falls back to plain rounding for that layer).
Expected<LayerGeometry> layer_geometry(const ir::Node& node, const Tensor& weight);

// Input rows of one batch of the node's input tensor x. Row ids are global:
// sample0 * rows_per_sample + local row, so the same data gives the same ids.
class LayerRows {
 public:
  static Expected<LayerRows> make(const LayerGeometry& geo, const Tensor& x);
  int64_t count() const { return samples_ * per_sample_; }
  int64_t per_sample() const { return per_sample_; }
  // Copies row `local` (0 <= local < count()) of group g: cols floats.
  void copy_row(int64_t g, int64_t local, float* out) const;

 private:
  const LayerGeometry* geo_ = nullptr;
  const Tensor* x_ = nullptr;
  int64_t samples_ = 0, per_sample_ = 0;
  int64_t in_h_ = 1, in_w_ = 1, out_h_ = 1, out_w_ = 1, pad_top_ = 0, pad_left_ = 0;
};

// Whether row `id` belongs to a subset that keeps about `fraction` of all rows.
bool row_selected(uint64_t id, double fraction, uint64_t salt);

struct LayerStatsOptions {
  bool hessian = false;          // GPTQ
  int64_t max_hessian_rows = 0;  // 0: a budget from K (see layer_inputs.cpp)
  int64_t keep_rows = 0;         // AdaRound: rows kept per group (0: none)
  uint64_t salt = 0;             // row selection seed (per layer)
};

class LayerStats {
 public:
  LayerStats(const LayerGeometry& geo, const LayerStatsOptions& opt, int64_t total_samples);
  // Adds one batch of the layer's input (samples [sample0, sample0 + N)).
  Status add(const Tensor& x, int64_t sample0, rt::ThreadPool* pool);

  const LayerGeometry& geometry() const { return geo_; }
  // Sum of x x^T over the Hessian rows of group g (cols x cols), and their count.
  bool has_hessian() const { return !hessian_.empty(); }
  std::vector<float>& hessian(int64_t g) { return hessian_[g]; }
  int64_t hessian_rows() const { return hessian_rows_; }
  // Mean of each column over every row, per group (cols floats).
  std::vector<float> column_mean(int64_t g) const;
  // Kept rows of group g (kept_rows() x cols, row-major) and their global ids.
  std::vector<float>& kept(int64_t g) { return kept_[g]; }
  const std::vector<int64_t>& kept_ids() const { return kept_ids_; }
  int64_t kept_rows() const { return static_cast<int64_t>(kept_ids_.size()); }
  int64_t total_rows() const { return total_rows_; }

 private:
  LayerGeometry geo_;
  LayerStatsOptions opt_;
  int64_t total_samples_;
  double hessian_fraction_ = -1.0, keep_fraction_ = -1.0;  // set on the first batch
  std::vector<std::vector<float>> hessian_, kept_;
  std::vector<std::vector<double>> col_sum_;
  std::vector<int64_t> kept_ids_;
  int64_t hessian_rows_ = 0, total_rows_ = 0;
  std::vector<float> scratch_;
};

}  // namespace qtk::quant::algos
