#include "quant/algos/weight_method.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "quant/algos/adaround.h"
#include "quant/algos/capture.h"
#include "quant/algos/gptq.h"
#include "quant/algos/refit.h"
#include "quant/algos/layer_inputs.h"
#include "quant/algos/layer_targets.h"
#include "quant/algos/weight_grid.h"
#include "runtime/kernels/ref/sgemm.h"
#include "runtime/thread_pool.h"

namespace qtk::quant {

namespace {

using namespace algos;

// Auto runs AdaRound on a layer when its optimizer steps cost at most this
// many multiply-adds (~10 s on 2 cores; every layer of the shared models
// fits), else GPTQ: a 4096 x 4096 layer would take minutes with AdaRound.
constexpr double kAutoAdaRoundBudget = 5e11;
// GPTQ skips layers whose Hessian would not fit: K x K floats per group.
constexpr int64_t kMaxHessianColumns = 8192;

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

// Rows AdaRound keeps per layer: up to 4096, fewer for wide layers (16 MiB of inputs).
int64_t adaround_rows(int64_t k) { return std::min<int64_t>(4096, std::max<int64_t>(256, (int64_t{1} << 22) / k)); }

class Runner {
 public:
  Runner(const ir::Model& model, const CalibrationData& calib, const QuantConfig& c, WeightMethod method,
         const std::map<std::string, std::vector<float>>& importance, QuantReport& report, int64_t samples,
         const InputQuantMap& input_quant)
      : model_(model), calib_(calib), c_(c), method_(method), importance_(importance), report_(report),
        samples_(samples), input_quant_(input_quant), pool_(c.threads) {}

  // formats: each target's weight format.
  Expected<AlgoWeights> run(std::vector<Target> targets, const std::vector<QFormat>& formats) {
    targets_ = std::move(targets);
    for (QFormat f : formats) {
      layer_cfg_.push_back(c_);
      layer_cfg_.back().weight_format = f;
      layer_cfg_.back().layer_precision.clear();
    }
    const bool ada = method_ != WeightMethod::kGptq;  // AdaRound, or auto (AdaRound first)
    float_mean_.resize(targets_.size());
    targets_y_.resize(targets_.size());
    float_ids_.resize(targets_.size());
    if (ada || c_.bias_correction || c_.gptq_refit) QTK_RETURN_IF_ERROR(float_pass());
    ir::Model qmodel = model_;
    int waves = 0;
    for (const auto& t : targets_) waves = std::max(waves, t.wave + 1);
    int64_t done = 0;
    const int64_t total = std::count_if(targets_.begin(), targets_.end(), [](const Target& t) { return t.wave >= 0; });
    for (int wave = 0; wave < waves; ++wave) {
      std::vector<size_t> idx;
      for (size_t i = 0; i < targets_.size(); ++i)
        if (targets_[i].wave == wave) idx.push_back(i);
      if (idx.empty()) continue;
      std::vector<LayerStats> stats;
      std::vector<std::string> inputs;
      for (size_t i : idx) {
        stats.emplace_back(targets_[i].geo, options(i, !ada), samples_);
        inputs.push_back(targets_[i].input);
      }
      // An input that does not fit its layer (a shape the geometry did not
      // foresee) costs that layer its method, not the whole run.
      std::vector<Status> bad(idx.size());
      QTK_RETURN_IF_ERROR(capture_tensors(qmodel, inputs, calib_, c_, [&](size_t k, const Tensor& x, int64_t s0) {
        if (!bad[k].ok()) return Status::Ok();
        auto iq = input_quant_.find(inputs[k]);
        bad[k] = iq == input_quant_.end() ? stats[k].add(x, s0, &pool_) : stats[k].add(fake_quant(x, iq->second), s0, &pool_);
        return Status::Ok();
      }));
      for (size_t k = 0; k < idx.size(); ++k) {
        const Target& t = targets_[idx[k]];
        const ir::Node& node = model_.graph.nodes[t.node];
        const auto t0 = std::chrono::steady_clock::now();
        auto r = !bad[k].ok() ? Expected<AlgoWeight>(bad[k]) : ada ? adaround(idx[k], stats[k]) : gptq(idx[k], stats[k]);
        stats[k] = LayerStats(t.geo, {}, 0);  // free the Hessian / rows now
        if (!r.ok()) {
          if (r.status().code() == ErrorCode::kInternal) return r.status().with_context(node.describe());
          // Auto rounds layers with too few rows for AdaRound to nearest as
          // documented, without a warning: nothing the user asked for failed.
          if (!quiet_fallback_)
            report_.warnings.push_back(node.describe() + ": " + r.status().message() + "; weight rounded to nearest");
          quiet_fallback_ = false;
        } else {
          r->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          qmodel.graph.set_initializer(t.weight, r->q.dequantized);
          if (!r->bias_delta.empty()) add_bias(qmodel, t.node, t.weight, r->bias_delta);
          results_[t.weight] = std::move(*r);
        }
        if (c_.progress) c_.progress(ada ? "adaround" : "gptq", ++done, total);
      }
    }
    return std::move(results_);
  }

 private:
  LayerStatsOptions options(size_t i, bool hessian) const {
    LayerStatsOptions o;
    o.hessian = hessian;
    o.keep_rows = method_ != WeightMethod::kGptq || c_.gptq_refit ? adaround_rows(targets_[i].geo.cols) : 0;
    o.salt = i;
    return o;
  }

  // One run of the float model: input means (bias correction) and, for
  // AdaRound, the float outputs W x of the kept rows (its targets).
  Status float_pass() {
    std::vector<LayerStats> stats;
    std::vector<std::string> inputs;
    std::vector<std::vector<std::vector<float>>> w(targets_.size());
    for (size_t i = 0; i < targets_.size(); ++i) {
      stats.emplace_back(targets_[i].geo, options(i, false), samples_);
      inputs.push_back(targets_[i].input);
      targets_y_[i].resize(static_cast<size_t>(targets_[i].geo.groups));
      if (method_ != WeightMethod::kGptq || c_.gptq_refit)
        for (int64_t g = 0; g < targets_[i].geo.groups; ++g)
          w[i].push_back(weight_matrix(*model_.graph.find_initializer(targets_[i].weight), targets_[i].geo, g));
    }
    std::vector<Status> bad(targets_.size());
    QTK_RETURN_IF_ERROR(capture_tensors(model_, inputs, calib_, c_, [&](size_t i, const Tensor& x, int64_t s0) {
      if (!bad[i].ok()) return Status::Ok();
      if (bad[i] = stats[i].add(x, s0, nullptr); !bad[i].ok()) return Status::Ok();
      const LayerGeometry& geo = targets_[i].geo;
      for (int64_t g = 0; g < geo.groups && !w[i].empty(); ++g) {
        auto& kept = stats[i].kept(g);
        const int64_t m = static_cast<int64_t>(kept.size()) / geo.cols;
        auto& y = targets_y_[i][g];
        y.resize(y.size() + static_cast<size_t>(m * geo.rows));
        if (m > 0)
          rt::ref::sgemm(false, true, m, geo.rows, geo.cols, 1.f, kept.data(), geo.cols, w[i][g].data(), geo.cols,
                         0.f, y.data() + y.size() - m * geo.rows, geo.rows, &pool_);
        kept.clear();
      }
      return Status::Ok();
    }));
    for (size_t i = 0; i < targets_.size(); ++i) {
      if (!bad[i].ok()) {  // left to rounding to nearest: no wave runs it
        report_.warnings.push_back(model_.graph.nodes[targets_[i].node].describe() + ": " + bad[i].message() +
                                   "; weight rounded to nearest");
        targets_[i].wave = -1;
        continue;
      }
      for (int64_t g = 0; g < targets_[i].geo.groups; ++g) float_mean_[i].push_back(stats[i].column_mean(g));
      float_ids_[i] = stats[i].kept_ids();
    }
    return Status::Ok();
  }

  // x quantized and dequantized as the exported model does before the layer.
  static Tensor fake_quant(const Tensor& x, const InputQuant& iq) {
    if (x.dtype() != DType::kFloat32) return x;
    Tensor y(DType::kFloat32, x.shape());
    const float* in = x.data<float>();
    float* out = y.data<float>();
    for (int64_t i = 0; i < x.numel(); ++i)
      out[i] = static_cast<float>(quantize_value_linear(in[i], iq.params, iq.format) - iq.params.zero_point) *
               iq.params.scale;
    return y;
  }

  // RTN result for the layer: layout, scheme and the scales the algorithms start from.
  Expected<QuantizedWeight> rtn(size_t i) const {
    const Target& t = targets_[i];
    const Tensor& w = *model_.graph.find_initializer(t.weight);
    auto imp = importance_.find(t.input);
    return quantize_weight(w, t.channel_axis, t.reduction_axis, layer_cfg_[i],
                           imp == importance_.end() ? nullptr : &imp->second);
  }

  // W E[x_float] - Wq E[x_quantized] per output channel (empty when not wanted).
  std::vector<float> bias_delta(size_t i, const LayerStats& stats, const QuantizedWeight& q) const {
    const Target& t = targets_[i];
    if (!c_.bias_correction || !has_plain_bias(model_.graph.nodes[t.node]) || float_mean_[i].empty()) return {};
    const Tensor& w = *model_.graph.find_initializer(t.weight);
    const LayerGeometry& geo = t.geo;
    std::vector<float> delta(static_cast<size_t>(geo.groups * geo.rows));
    for (int64_t g = 0; g < geo.groups; ++g) {
      const std::vector<float> mq = stats.column_mean(g);
      const std::vector<float>& mf = float_mean_[i][g];
      for (int64_t r = 0; r < geo.rows; ++r) {
        double d = 0.0;
        for (int64_t c = 0; c < geo.cols; ++c) {
          const int64_t at = geo.weight_index(g, r, c);
          const float wf = std::isfinite(w.data<float>()[at]) ? w.data<float>()[at] : 0.f;
          d += static_cast<double>(wf) * mf[c] - static_cast<double>(q.dequantized.data<float>()[at]) * mq[c];
        }
        delta[g * geo.rows + r] = static_cast<float>(d);
      }
    }
    return delta;
  }

  Expected<AlgoWeight> gptq(size_t i, LayerStats& stats) {
    const Target& t = targets_[i];
    const ir::Node& node = model_.graph.nodes[t.node];
    const Tensor& w = *model_.graph.find_initializer(t.weight);
    QTK_ASSIGN_OR_RETURN(QuantizedWeight q, rtn(i));
    std::vector<QParams> params = weight_params(q);
    std::vector<uint8_t> fitted(params.size(), 1);
    std::vector<int32_t> codes(static_cast<size_t>(w.numel())), codes_g;
    const LayerGeometry& geo = t.geo;
    // The Hessian from the pass, or (auto, after AdaRound declined) from the kept rows.
    const int64_t seen = stats.has_hessian() ? stats.hessian_rows() : stats.kept_rows();
    if (seen < geo.cols)
      report_.warnings.push_back(node.describe() + ": GPTQ Hessian from " + std::to_string(seen) +
                                 " input rows for " + std::to_string(geo.cols) +
                                 " columns is rank-deficient; damping keeps it invertible");
    GptqOptions opt;
    opt.act_order = c_.gptq_act_order;
    int raises = 0;
    double damp = 0.0;
    for (int64_t g = 0; g < geo.groups; ++g) {
      QTK_ASSIGN_OR_RETURN(MatrixGrid grid, matrix_grid(geo, g, w.shape(), q.layout));
      if (c_.granularity == Granularity::kPerGroup && !grid.params_shared_by_rows)
        for (int64_t p : grid.row_params) fitted[p] = 0;
      std::vector<float> wg = weight_matrix(w, geo, g);
      codes_g.assign(wg.size(), 0);
      // Aim at the float model's outputs, not at W times the inputs the
      // quantized layers before produce (see refit.h).
      if (c_.gptq_refit && stats.kept_rows() >= kAdaRoundMinRows && !targets_y_[i].empty() &&
          refit_to_float_outputs(wg.data(), geo.rows, geo.cols, stats.kept(g).data(), targets_y_[i][g].data(),
                                 stats.kept_rows(), kRefitRidge, &pool_)) {
        if (!grid.params_shared_by_rows)  // scales follow the refit weights
          for (int64_t p : grid.row_params) fitted[p] = 0;
      }
      std::vector<float> kept_h;
      if (!stats.has_hessian()) {
        kept_h.resize(static_cast<size_t>(geo.cols * geo.cols));
        rt::ref::sgemm(true, false, geo.cols, geo.cols, stats.kept_rows(), 1.f, stats.kept(g).data(), geo.cols,
                       stats.kept(g).data(), geo.cols, 0.f, kept_h.data(), geo.cols, &pool_);
      }
      auto info = gptq_quantize_matrix(wg.data(), stats.has_hessian() ? stats.hessian(g) : kept_h, grid, params,
                                       fitted, layer_cfg_[i], opt, codes_g.data(), &pool_);
      if (!info.ok()) return info.status();
      raises = std::max(raises, info->damp_raises);
      damp = std::max(damp, info->damp);
      for (int64_t r = 0; r < geo.rows; ++r)
        for (int64_t c = 0; c < geo.cols; ++c) codes[geo.weight_index(g, r, c)] = codes_g[r * geo.cols + c];
    }
    if (raises > 0)
      report_.warnings.push_back(node.describe() + ": GPTQ Hessian was not positive definite; damping raised " +
                                 std::to_string(raises) + "x to " + fixed(damp, 3));
    QTK_RETURN_IF_ERROR(store_codes(q, w, params, codes, layer_cfg_[i]));
    AlgoWeight a;
    a.method = "gptq";
    a.bias_delta = bias_delta(i, stats, q);
    a.q = std::move(q);
    return a;
  }

  Expected<AlgoWeight> adaround(size_t i, LayerStats& stats) {
    const Target& t = targets_[i];
    const Tensor& w = *model_.graph.find_initializer(t.weight);
    if (c_.mapping != Mapping::kLinear) return unsupported("AdaRound needs linear levels");
    const int64_t n = stats.kept_rows();
    quiet_fallback_ = n < kAdaRoundMinRows && method_ == WeightMethod::kAuto;
    if (n < kAdaRoundMinRows)
      return invalid_argument("AdaRound has " + std::to_string(n) + " input rows, fewer than " +
                              std::to_string(kAdaRoundMinRows));
    if (stats.kept_ids() != float_ids_[i]) return internal_error("float and quantized passes kept different rows");
    const LayerGeometry& geo = t.geo;
    // Auto: layers where AdaRound's steps would cost more than the budget
    // (wide layers seen on many rows) go to GPTQ, which is one pass.
    const double steps = static_cast<double>(c_.adaround_iterations) * static_cast<double>(geo.groups * geo.rows) *
                         static_cast<double>(geo.cols) * static_cast<double>(std::min<int64_t>(geo.cols, 2 * n));
    if (method_ == WeightMethod::kAuto && steps > kAutoAdaRoundBudget) {
      if (geo.cols > kMaxHessianColumns) return unsupported("layer too large for AdaRound and for GPTQ");
      return gptq(i, stats);
    }
    QTK_ASSIGN_OR_RETURN(QuantizedWeight q, rtn(i));
    const std::vector<QParams> params = weight_params(q);
    std::vector<int32_t> codes(static_cast<size_t>(w.numel()));
    AdaRoundOptions opt;
    opt.iterations = c_.adaround_iterations;
    std::vector<MatrixGrid> grids;
    for (int64_t g = 0; g < geo.groups; ++g) {
      QTK_ASSIGN_OR_RETURN(MatrixGrid grid, matrix_grid(geo, g, w.shape(), q.layout));
      grids.push_back(std::move(grid));
    }
    // One problem per group, on the kept rows: inputs X from the quantized
    // model, targets Y from the float one.
    std::vector<Status> status(static_cast<size_t>(geo.groups));
    auto solve = [&](int64_t g, rt::ThreadPool* pool) {
      const float* x = stats.kept(g).data();
      const float* y = targets_y_[i][g].data();
      ReconstructionData data{nullptr, nullptr, x, y, n};
      std::vector<float> gram, cross;
      if (2 * n >= geo.cols) {  // the Gram form is cheaper per step
        const float inv = 1.f / static_cast<float>(n);
        gram.resize(static_cast<size_t>(geo.cols * geo.cols));
        cross.resize(static_cast<size_t>(geo.rows * geo.cols));
        rt::ref::sgemm(true, false, geo.cols, geo.cols, n, inv, x, geo.cols, x, geo.cols, 0.f, gram.data(), geo.cols,
                       pool);
        rt::ref::sgemm(true, false, geo.rows, geo.cols, n, inv, y, geo.rows, x, geo.cols, 0.f, cross.data(), geo.cols,
                       pool);
        data = {gram.data(), cross.data(), nullptr, nullptr, n};
      }
      std::vector<float> wg = weight_matrix(w, geo, g);
      std::vector<int32_t> codes_g(wg.size());
      status[g] = adaround_matrix(wg.data(), grids[g], params, data, layer_cfg_[i], opt, codes_g.data(), pool);
      for (int64_t r = 0; r < geo.rows; ++r)
        for (int64_t c = 0; c < geo.cols; ++c) codes[geo.weight_index(g, r, c)] = codes_g[r * geo.cols + c];
    };
    if (geo.groups == 1) solve(0, &pool_);
    else pool_.parallel_for(geo.groups, [&](int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g) solve(g, nullptr);
    });
    for (const Status& st : status) QTK_RETURN_IF_ERROR(st);
    QTK_RETURN_IF_ERROR(store_codes(q, w, params, codes, layer_cfg_[i]));
    AlgoWeight a;
    a.method = "adaround";
    a.bias_delta = bias_delta(i, stats, q);
    a.q = std::move(q);
    return a;
  }

  const ir::Model& model_;
  const CalibrationData& calib_;
  const QuantConfig& c_;
  WeightMethod method_;
  const std::map<std::string, std::vector<float>>& importance_;
  QuantReport& report_;
  int64_t samples_;
  const InputQuantMap& input_quant_;
  std::vector<QuantConfig> layer_cfg_;  // per target: the config with its weight format
  rt::ThreadPool pool_;
  std::vector<Target> targets_;
  std::vector<std::vector<std::vector<float>>> float_mean_;  // [target][group] column means, float model
  std::vector<std::vector<std::vector<float>>> targets_y_;   // [target][group] AdaRound targets, kept rows x rows
  std::vector<std::vector<int64_t>> float_ids_;
  AlgoWeights results_;
  bool quiet_fallback_ = false;  // the last failure is auto's documented fallback
};

}  // namespace

Expected<AlgoWeights> run_weight_method(const ir::Model& model, const QuantPlan& plan, const CalibrationData& calib,
                                        const QuantConfig& config, WeightMethod method,
                                        const std::map<std::string, std::vector<float>>& importance,
                                        QuantReport& report, const InputQuantMap& input_quant) {
  if (method == WeightMethod::kRtn) return AlgoWeights{};
  auto samples = algos::calibration_samples(calib);
  if (!samples.ok())
    return invalid_argument(std::string(weight_method_name(method)) + " needs calibration data (" +
                            samples.status().message() + ")");
  std::vector<Target> targets = select_targets(model.graph, plan, method, kMaxHessianColumns, report);
  std::map<size_t, QFormat> format_of;
  for (const auto& use : plan.weights) format_of[use.node] = use.format;
  std::vector<Target> kept;
  std::vector<QFormat> formats;
  for (auto& t : targets) {
    const QFormat f = format_of.count(t.node) ? format_of[t.node] : config.weight_format;
    if (method == WeightMethod::kAuto && traits(f).bits >= kAutoRoundToNearestBits) continue;  // auto: RTN
    kept.push_back(std::move(t));
    formats.push_back(f);
  }
  if (kept.empty()) return AlgoWeights{};
  Runner runner(model, calib, config, method, importance, report, *samples, input_quant);
  return runner.run(std::move(kept), formats);
}

}  // namespace qtk::quant
