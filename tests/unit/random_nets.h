// What the random-net exactness tests share: the quantization settings they
// cycle through, and the check that the integer session's optimized kernels
// give the reference kernels' outputs bit for bit.
#pragma once

#include <gtest/gtest.h>

#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "qtk/quantize.h"
#include "qtk/session.h"
#include "test_models.h"

namespace qtk::testing {

// What a random net's builder keeps: the model it adds to, its random
// source, and a log of the net (printed when a check fails).
class RandomNetBuilder {
 protected:
  RandomNetBuilder(uint32_t seed, std::ostringstream& log) : rng_(seed), log_(log) {
    m_.opsets = {{"", 17}};
    m_.graph.inputs.push_back(float_info("x"));
  }
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  uint32_t next_seed() { return static_cast<uint32_t>(rng_()); }
  std::string name(const std::string& stem) { return stem + std::to_string(counter_++); }

  std::mt19937 rng_;
  std::ostringstream& log_;
  ir::Model m_;
  int counter_ = 0;
};

// A net's input sizes, drawn from its seed.
class RandomDims {
 public:
  explicit RandomDims(uint32_t seed) : rng_(seed) {}
  int64_t operator()(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

 private:
  std::mt19937 rng_;
};

inline constexpr int kRandomNetVariants = 7;

inline QuantConfig random_net_variant(int variant) {
  QuantConfig cfg;
  switch (variant % kRandomNetVariants) {
    case 1:  // per-tensor weights, symmetric int8 activations
      cfg.granularity = Granularity::kPerTensor;
      cfg.activation_format = quant::QFormat::kInt8;
      cfg.activation_symmetric = true;
      break;
    case 2:  // 7-bit weights: the AVX2 tier's u8 x s8 kernels
      cfg.weight_format = quant::QFormat::kInt7;
      break;
    case 3:  // 4-bit weights and activations in 8-bit containers: clamps fused into the ops
      cfg.weight_format = quant::QFormat::kInt4;
      cfg.activation_format = quant::QFormat::kUInt4;
      cfg.int4_types = false;
      cfg.method = WeightMethod::kRtn;
      break;
    case 4:  // asymmetric uint8 weights: zero points on both sides of the products
      cfg.weight_format = quant::QFormat::kUInt8;
      cfg.weight_symmetric = false;
      break;
    case 5:  // asymmetric int8 weights per tensor
      cfg.weight_symmetric = false;
      cfg.granularity = Granularity::kPerTensor;
      break;
    case 6:  // dynamic activations: ConvInteger / MatMulInteger on codes found at run time
      cfg.activations = ActivationMode::kDynamic;
      break;
    default: break;
  }
  // Every other round of the variants as QOperator nodes, which the session runs as written.
  if ((variant / kRandomNetVariants) % 2 == 1) cfg.format = ExportFormat::kQOperator;
  return cfg;
}

// Runs `quantized` on x in the integer session with reference kernels, then
// with optimized ones on 1 thread and on 3; every output must match bit for bit.
inline void expect_optimized_matches_reference(const ir::Model& quantized, const Tensor& x) {
  std::vector<std::vector<Tensor>> outputs;
  for (int run = 0; run < 3; ++run) {
    SessionOptions o;
    o.integer = true;
    o.reference_kernels = run == 0;
    o.threads = run == 2 ? 3 : 1;
    auto s = Session::create(quantized, o);
    ASSERT_TRUE(s.ok()) << s.status().message();
    auto y = (*s)->run(std::vector<Tensor>{x});
    ASSERT_TRUE(y.ok()) << y.status().message();
    outputs.push_back(std::move(*y));
  }
  for (int run = 1; run < 3; ++run)
    for (size_t i = 0; i < outputs[0].size(); ++i) {
      const std::string diff = first_difference(outputs[0][i], outputs[static_cast<size_t>(run)][i]);
      EXPECT_TRUE(diff.empty()) << (run == 1 ? "1 thread" : "3 threads") << ", output " << i << ": " << diff;
    }
}

// Quantizes `model` with variant `net`'s settings, calibrated on `calib`,
// and checks the integer session's kernels on x; `log` describes the net.
inline void expect_random_net_exact(const ir::Model& model, int net, std::ostringstream& log, const Tensor& calib,
                                    Tensor x) {
  if (net % 4 == 3) {  // NaN, infinities and values past int32 in every fifth input
    x = x.clone();     // the caller's storage stays as it was
    static const float kSpecial[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                                     -std::numeric_limits<float>::infinity(), 1e30f, -1e30f, 3e9f, -3e9f};
    for (int64_t i = 0; i < x.numel(); i += 5) x.data<float>()[i] = kSpecial[(i / 5) % 7];
    log << "; NaN/inf/huge inputs";
  }
  log << "; variant " << net % kRandomNetVariants << ((net / kRandomNetVariants) % 2 ? " QOperator" : " QDQ");
  SCOPED_TRACE(log.str());
  auto q = quantize(model, random_net_variant(net), CalibrationData{{calib}});
  ASSERT_TRUE(q.ok()) << q.status().message();
  expect_optimized_matches_reference(q->model, x);
}

}  // namespace qtk::testing
