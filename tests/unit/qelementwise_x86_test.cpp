// The optimized 8-bit element-wise and pooling kernels
// (src/runtime/kernels/x86/qelementwise_x86_*) against the reference kernels,
// bit for bit, on random shapes, types, zero points and scales (with the
// edge cases of each formula), on the scalar and the AVX2 path, 1 and 2
// threads. Kernels are called directly (factory + KernelContext).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "runtime/kernels/x86/qelementwise_x86_ops.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk {
namespace {

using rt::qew::Path;

struct Case {
  ir::Node node;
  int64_t opset = 19;
  std::vector<Tensor> inputs;  // undefined = absent optional input
  size_t outputs = 1;
  std::string text;
};

Expected<std::vector<Tensor>> run(rt::Kernel& k, const Case& c, rt::ThreadPool& pool) {
  rt::KernelContext ctx;
  for (const Tensor& t : c.inputs) ctx.inputs.push_back(t.defined() ? &t : nullptr);
  ctx.outputs.resize(c.outputs);
  ctx.pool = &pool;
  QTK_RETURN_IF_ERROR(k.run(ctx));
  return ctx.outputs;
}

rt::KernelInit init_of(const Case& c) {
  rt::KernelInit init{c.node, c.opset, nullptr, nullptr};
  init.constant_input = [](size_t) -> const Tensor* { return nullptr; };
  return init;
}

std::unique_ptr<rt::Kernel> reference(const rt::KernelInit& init) {
  rt::OpRegistry r;
  rt::register_quant_ops(r);
  rt::register_pool_ops(r);
  rt::register_qlinear_contrib_ops(r);
  const rt::KernelFactory* f = r.find(init.node.domain, init.node.op_type, init.opset);
  if (f == nullptr) return nullptr;
  auto k = (*f)(init);
  return k.ok() ? std::move(*k) : nullptr;
}

// Same outputs, bit for bit (float outputs compared as bit patterns).
void expect_same(const Tensor& got, const Tensor& want) {
  ASSERT_EQ(got.dtype(), want.dtype());
  ASSERT_EQ(got.shape(), want.shape());
  ASSERT_EQ(got.nbytes(), want.nbytes());
  const auto* g = static_cast<const uint8_t*>(got.raw());
  const auto* w = static_cast<const uint8_t*>(want.raw());
  const size_t es = dtype_size(want.dtype());
  for (size_t i = 0; i < want.nbytes(); ++i)
    ASSERT_EQ(g[i], w[i]) << "element " << i / es << " of " << shape_to_string(want.shape()) << ": got "
                          << got.get_as_double(static_cast<int64_t>(i / es)) << ", want "
                          << want.get_as_double(static_cast<int64_t>(i / es));
}

// Runs the case on the reference and on this file's kernel (both paths, 1
// and 2 threads); both succeed with equal outputs or both fail.
void check(const Case& c) {
  const rt::KernelInit init = init_of(c);
  auto ref = reference(init);
  ASSERT_NE(ref, nullptr) << "no reference kernel";
  rt::ThreadPool pool1(1), pool2(2);
  auto want = run(*ref, c, pool1);
  for (Path path : {Path::kScalar, Path::kAvx2})
    for (rt::ThreadPool* pool : {&pool1, &pool2}) {
      SCOPED_TRACE(std::string("path ") + rt::qew::path_name(path) + " threads " + std::to_string(pool->size()));
      auto k = rt::qew::make_kernel(init, path);
      ASSERT_TRUE(k.ok()) << k.status().message();
      auto got = run(**k, c, *pool);
      ASSERT_EQ(got.ok(), want.ok()) << (got.ok() ? want.status().message() : got.status().message());
      if (!want.ok()) {
        EXPECT_EQ(got.status().message(), want.status().message());
        continue;
      }
      ASSERT_EQ(got->size(), want->size());
      for (size_t i = 0; i < want->size(); ++i) {
        expect_same((*got)[i], (*want)[i]);
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
}

int pick(std::mt19937& rng, int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

Tensor codes(bool is_signed, Shape s, std::mt19937& rng) {
  Tensor t(is_signed ? DType::kInt8 : DType::kUInt8, std::move(s));
  for (int64_t i = 0; i < t.numel(); ++i) static_cast<uint8_t*>(t.raw())[i] = static_cast<uint8_t>(rng());
  return t;
}

Tensor code_scalar(bool is_signed, std::mt19937& rng) { return codes(is_signed, {}, rng); }

Shape random_shape(std::mt19937& rng, int max_rank = 4) {
  Shape s;
  const int rank = pick(rng, 1, max_rank);
  const int64_t sizes[] = {1, 2, 3, 5, 7, 8, 16, 31, 32, 33, 64, 100};
  for (int d = 0; d < rank; ++d) s.push_back(sizes[pick(rng, 0, 11)]);
  while (shape_numel(s) > 20000) s[pick(rng, 0, rank - 1)] = 1;
  // Sometimes a long first dim: several threading chunks and vector tails.
  if (pick(rng, 0, 4) == 0) s[0] = std::max<int64_t>(1, pick(rng, 300, 70000) / (shape_numel(s) / s[0]));
  return s;
}

ir::Node node_of(const std::string& op, const std::string& domain, size_t inputs, std::vector<ir::Attribute> attrs = {},
                 size_t outputs = 1) {
  ir::Node n;
  n.name = "n";
  n.op_type = op;
  n.domain = domain;
  for (size_t i = 0; i < inputs; ++i) n.inputs.push_back("i" + std::to_string(i));
  for (size_t i = 0; i < outputs; ++i) n.outputs.push_back("o" + std::to_string(i));
  n.attrs = std::move(attrs);
  return n;
}

TEST(QElementwiseX86, QuantizeLinearMatchesReference) {
  const uint32_t seed = 101;
  std::mt19937 rng(seed);
  for (int i = 0; i < 60; ++i) {
    Case c;
    const bool is_signed = pick(rng, 0, 1), has_zp = pick(rng, 0, 3) != 0;
    const Shape s = random_shape(rng);
    Tensor x(DType::kFloat32, s);
    // Power-of-two scales make exact ties (k + 0.5) frequent; others are arbitrary.
    float scale = pick(rng, 0, 2) == 0 ? std::ldexp(1.f, pick(rng, -8, 2))
                                        : std::uniform_real_distribution<float>(1e-4f, 2.f)(rng);
    if (pick(rng, 0, 9) == 0) scale = -scale;
    const float special[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                             -std::numeric_limits<float>::infinity(), -0.f, 1e30f, -1e30f, 1e-40f, 3e9f};
    for (int64_t k = 0; k < x.numel(); ++k) {
      const int kind = pick(rng, 0, 19);
      float v = kind == 0 ? special[pick(rng, 0, 7)]
                          : kind < 6 ? (static_cast<float>(pick(rng, -300, 300)) + 0.5f) * scale
                                     : std::uniform_real_distribution<float>(-200.f, 200.f)(rng) * scale;
      x.data<float>()[k] = v;
    }
    c.inputs = {x, Tensor::scalar(scale)};
    if (has_zp) c.inputs.push_back(code_scalar(is_signed, rng));
    c.node = node_of("QuantizeLinear", "", c.inputs.size());
    std::ostringstream os;
    os << "seed " << seed << " case " << i << " x " << shape_to_string(s) << " scale " << scale << " zp "
       << (has_zp ? std::to_string(c.inputs[2].get_as_int64(0)) + (is_signed ? " s8" : " u8") : "absent");
    SCOPED_TRACE(os.str());
    check(c);
    if (HasFatalFailure()) return;
  }
}

TEST(QElementwiseX86, DequantizeLinearMatchesReference) {
  const uint32_t seed = 202;
  std::mt19937 rng(seed);
  for (int i = 0; i < 40; ++i) {
    Case c;
    const bool is_signed = pick(rng, 0, 1), has_zp = pick(rng, 0, 3) != 0;
    const Shape s = random_shape(rng);
    c.inputs = {codes(is_signed, s, rng), Tensor::scalar(std::uniform_real_distribution<float>(-3.f, 3.f)(rng))};
    if (has_zp) c.inputs.push_back(code_scalar(is_signed, rng));
    c.node = node_of("DequantizeLinear", "", c.inputs.size());
    SCOPED_TRACE("seed " + std::to_string(seed) + " case " + std::to_string(i) + " x " + shape_to_string(s));
    check(c);
    if (HasFatalFailure()) return;
  }
}

// QLinearAdd / QLinearMul: same shapes, one scalar side, a real broadcast
// (reference path), and scale ratios that reach every branch of the formulas.
void binary_cases(const std::string& op, uint32_t seed) {
  std::mt19937 rng(seed);
  int repeats_here = 0;  // cases the x86 kernel runs as repeated codes (not the reference)
  int padded_here = 0;   // cases with one side's shape padded by leading 1s, run as same-shape
  for (int i = 0; i < 80; ++i) {
    Case c;
    const bool is_signed = pick(rng, 0, 1);
    const Shape s = random_shape(rng);
    Shape sa = s, sb = s;
    const int form = pick(rng, 0, 6);
    if (form == 0) sb = {};
    if (form == 1) sa = {1};
    if (form == 2) sb = {s.back()};  // broadcast along the last axis: the reference's case
    if (form == 6) {                 // [1, C, H, W] against [C, H, W], either side
      Shape& side = pick(rng, 0, 1) ? sa : sb;
      side.insert(side.begin(), 1);
      padded_here += rt::qew::binary_shapes_taken(sa, sb);
    }
    if (form == 3 || form == 4) {    // leading dims then 1s: each code repeats (squeeze-excitation gates)
      Shape g = s;
      for (size_t d = static_cast<size_t>(pick(rng, 0, static_cast<int>(s.size()) - 1)); d < g.size(); ++d) g[d] = 1;
      (form == 3 ? sb : sa) = g;
      repeats_here += g != s && shape_numel(g) > 1 && rt::qew::binary_shapes_taken(sa, sb);
    }
    // Ratios of input to output scale: typical, tiny (rounding shift > 46)
    // and large (shift < 15 for Add, < 17 for Mul).
    const double ratios[] = {0.3, 0.7, 1.0, 1.6, 3.0, 1e-14, 5e-8, 4e4, 7e5, 1e9};
    const float c_scale = std::uniform_real_distribution<float>(0.01f, 0.1f)(rng);
    const float a_scale = static_cast<float>(c_scale * ratios[pick(rng, 0, 9)] * (pick(rng, 0, 2) ? 1.0 : 0.37));
    const float b_scale = static_cast<float>(c_scale * ratios[pick(rng, 0, 4)]);
    c.inputs = {codes(is_signed, sa, rng), Tensor::scalar(a_scale), code_scalar(is_signed, rng),
                codes(is_signed, sb, rng), Tensor::scalar(b_scale), code_scalar(is_signed, rng),
                Tensor::scalar(c_scale), code_scalar(is_signed, rng)};
    if (pick(rng, 0, 5) == 0) c.inputs[2] = Tensor();  // absent zero points are 0
    if (pick(rng, 0, 5) == 0) c.inputs[7] = Tensor();
    c.node = node_of(op, "com.microsoft", 8);
    c.opset = 1;
    std::ostringstream os;
    os << op << " seed " << seed << " case " << i << " a " << shape_to_string(sa) << " b " << shape_to_string(sb)
       << (is_signed ? " s8" : " u8") << " scales " << a_scale << " " << b_scale << " " << c_scale;
    SCOPED_TRACE(os.str());
    check(c);
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_GE(repeats_here, 4) << "too few repeated-code cases reach the x86 path";
  EXPECT_GE(padded_here, 4) << "too few leading-1 cases reach the x86 path";
}

// A squeeze-excitation gate [N, C, 1, 1] times the features [N, C, H, W]
// (either side, or as [C, 1, 1]) runs here: the reference kernel's broadcast
// took 0.29 ms of a 0.23 ms-float SE net's integer run.
TEST(QElementwiseX86, RepeatedCodesRunHere) {
  EXPECT_TRUE(rt::qew::binary_shapes_taken({8, 16, 14, 14}, {8, 16, 1, 1}));
  EXPECT_TRUE(rt::qew::binary_shapes_taken({8, 16, 1, 1}, {8, 16, 14, 14}));
  EXPECT_TRUE(rt::qew::binary_shapes_taken({1, 16, 14, 14}, {16, 1, 1}));
  EXPECT_TRUE(rt::qew::binary_shapes_taken({4, 5}, {4, 5}));
  EXPECT_TRUE(rt::qew::binary_shapes_taken({4, 5}, {}));
  EXPECT_TRUE(rt::qew::binary_shapes_taken({1, 16, 14, 14}, {16, 14, 14}));   // leading 1s only
  EXPECT_TRUE(rt::qew::binary_shapes_taken({5}, {1, 1, 5}));
  EXPECT_FALSE(rt::qew::binary_shapes_taken({16, 1, 14}, {1, 16, 14}));  // same count, a real broadcast
  EXPECT_FALSE(rt::qew::binary_shapes_taken({8, 16, 14, 14}, {1, 16, 1, 1}));  // a leading broadcast: reference
  EXPECT_FALSE(rt::qew::binary_shapes_taken({8, 16, 14, 14}, {14}));
  EXPECT_FALSE(rt::qew::binary_shapes_taken({8, 1, 14}, {8, 16, 1}));
  // Too few elements per repeated code: a vector call each costs more than the reference.
  EXPECT_FALSE(rt::qew::binary_shapes_taken({8, 16, 1, 2}, {8, 16, 1, 1}));
  EXPECT_TRUE(rt::qew::binary_shapes_taken({8, 16, 1, 16}, {8, 16, 1, 1}));
}

TEST(QElementwiseX86, QLinearAddMatchesReference) { binary_cases("QLinearAdd", 303); }
TEST(QElementwiseX86, QLinearMulMatchesReference) { binary_cases("QLinearMul", 404); }

TEST(QElementwiseX86, QLinearGlobalAveragePoolMatchesReference) {
  const uint32_t seed = 505;
  std::mt19937 rng(seed);
  for (int i = 0; i < 40; ++i) {
    Case c;
    const bool is_signed = pick(rng, 0, 1), channels_last = pick(rng, 0, 4) == 0;
    const int64_t hw[][2] = {{1, 1}, {7, 7}, {8, 8}, {3, 11}, {28, 28}, {1, 33}, {64, 70}};
    const int w = pick(rng, 0, 6);
    const Shape s = {pick(rng, 1, 3), pick(rng, 1, 17), hw[w][0], hw[w][1]};
    c.inputs = {codes(is_signed, s, rng), Tensor::scalar(std::uniform_real_distribution<float>(0.01f, 0.1f)(rng)),
                code_scalar(is_signed, rng), Tensor::scalar(std::uniform_real_distribution<float>(0.005f, 0.1f)(rng)),
                code_scalar(is_signed, rng)};
    c.node = node_of("QLinearGlobalAveragePool", "com.microsoft", 5, {ir::attr_int("channels_last", channels_last)});
    c.opset = 1;
    SCOPED_TRACE("seed " + std::to_string(seed) + " case " + std::to_string(i) + " x " + shape_to_string(s) +
                 (channels_last ? " channels_last" : ""));
    check(c);
    if (HasFatalFailure()) return;
  }
}

TEST(QElementwiseX86, MaxPoolMatchesReference) {
  const uint32_t seed = 606;
  std::mt19937 rng(seed);
  for (int i = 0; i < 80; ++i) {
    Case c;
    const bool is_signed = pick(rng, 0, 1);
    const int64_t kh = pick(rng, 1, 4), kw = pick(rng, 1, 4), sh = pick(rng, 1, 3), sw = pick(rng, 1, 3);
    const int64_t dh = pick(rng, 0, 4) == 0 ? 2 : 1, dw = pick(rng, 0, 4) == 0 ? 2 : 1;
    const int64_t h = pick(rng, static_cast<int>((kh - 1) * dh + 1), 40), w = pick(rng, static_cast<int>((kw - 1) * dw + 1), 80);
    const Shape s = {pick(rng, 1, 2), pick(rng, 1, 5), h, w};
    std::vector<ir::Attribute> attrs = {ir::attr_ints("kernel_shape", {kh, kw}), ir::attr_ints("strides", {sh, sw}),
                                        ir::attr_ints("dilations", {dh, dw})};
    std::ostringstream os;
    os << "seed " << seed << " case " << i << " x " << shape_to_string(s) << (is_signed ? " s8" : " u8") << " k " << kh
       << "x" << kw << " s " << sh << "," << sw << " d " << dh << "," << dw;
    const int pad_mode = pick(rng, 0, 4);
    if (pad_mode == 0) {
      attrs.push_back(ir::attr_string("auto_pad", pick(rng, 0, 1) ? "SAME_UPPER" : "SAME_LOWER"));
      os << " auto_pad SAME";
    } else if (pad_mode <= 2) {
      const int64_t pt = pick(rng, 0, static_cast<int>(kh - 1)), pl = pick(rng, 0, static_cast<int>(kw - 1));
      const int64_t pb = pick(rng, 0, static_cast<int>(kh - 1)), pr = pick(rng, 0, static_cast<int>(kw - 1));
      attrs.push_back(ir::attr_ints("pads", {pt, pl, pb, pr}));
      os << " pads " << pt << "," << pl << "," << pb << "," << pr;
    }
    if (pick(rng, 0, 3) == 0 && pad_mode != 0) {
      attrs.push_back(ir::attr_int("ceil_mode", 1));
      os << " ceil_mode";
    }
    c.inputs = {codes(is_signed, s, rng)};
    c.node = node_of("MaxPool", "", 1, attrs);
    SCOPED_TRACE(os.str());
    check(c);
    if (HasFatalFailure()) return;
  }
}

// The 2x2 / stride-2 fast path: small planes (one vector spans rows), odd
// sizes (last row / column dropped), wide rows, ceil_mode (generic path).
TEST(QElementwiseX86, MaxPool2x2Stride2MatchesReference) {
  const uint32_t seed = 616;
  std::mt19937 rng(seed);
  const int64_t sizes[][2] = {{28, 28}, {14, 14}, {7, 7}, {2, 2}, {3, 5}, {4, 9}, {9, 33}, {16, 64}, {5, 130}, {56, 56}};
  for (int i = 0; i < 40; ++i) {
    Case c;
    const bool is_signed = pick(rng, 0, 1);
    const auto& hw = sizes[i % 10];
    const Shape s = {pick(rng, 1, 3), pick(rng, 1, 9), hw[0], hw[1]};
    std::vector<ir::Attribute> attrs = {ir::attr_ints("kernel_shape", {2, 2}), ir::attr_ints("strides", {2, 2})};
    const int mode = pick(rng, 0, 3);
    if (mode == 1) attrs.push_back(ir::attr_int("ceil_mode", 1));
    if (mode == 2) attrs.push_back(ir::attr_string("auto_pad", "SAME_UPPER"));
    if (mode == 3) attrs.push_back(ir::attr_ints("pads", {0, 0, 0, 0}));
    c.inputs = {codes(is_signed, s, rng)};
    c.node = node_of("MaxPool", "", 1, attrs);
    SCOPED_TRACE("seed " + std::to_string(seed) + " case " + std::to_string(i) + " x " + shape_to_string(s) +
                 (is_signed ? " s8" : " u8") + " mode " + std::to_string(mode));
    check(c);
    if (HasFatalFailure()) return;
  }
}

// Cases the kernels hand to the reference: float MaxPool, MaxPool with
// Indices, per-axis QuantizeLinear, bad parameters (the reference's error).
TEST(QElementwiseX86, ReferenceCasesAndErrors) {
  std::mt19937 rng(707);
  {
    Case c;
    Tensor x(DType::kFloat32, {1, 2, 9, 9});
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = std::uniform_real_distribution<float>(-1, 1)(rng);
    c.inputs = {x};
    c.node = node_of("MaxPool", "", 1, {ir::attr_ints("kernel_shape", {3, 3}), ir::attr_ints("strides", {2, 2})});
    check(c);
    c.outputs = 2;
    c.node = node_of("MaxPool", "", 1, {ir::attr_ints("kernel_shape", {3, 3})}, 2);
    c.inputs = {codes(false, {1, 2, 9, 9}, rng)};
    check(c);
  }
  {
    Case c;
    Tensor x(DType::kFloat32, {2, 3, 4});
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = std::uniform_real_distribution<float>(-5, 5)(rng);
    c.inputs = {x, Tensor::from_vector<float>({3}, {0.1f, 0.2f, 0.3f}),
                Tensor::from_vector<uint8_t>({3}, {1, 2, 3})};
    c.node = node_of("QuantizeLinear", "", 3, {ir::attr_int("axis", 1)});
    check(c);
    c.inputs[1] = Tensor::scalar(0.f);  // zero scale: the reference's error
    c.inputs[2] = Tensor::scalar<uint8_t>(3);
    check(c);
  }
  {
    Case c;
    c.inputs = {codes(false, {40}, rng), Tensor::scalar(0.1f), Tensor::scalar<uint8_t>(3), codes(false, {40}, rng),
                Tensor::scalar(-0.1f), Tensor::scalar<uint8_t>(3), Tensor::scalar(0.1f), Tensor::scalar<uint8_t>(3)};
    c.node = node_of("QLinearAdd", "com.microsoft", 8);
    c.opset = 1;
    check(c);  // negative B_scale: error
    c.inputs[4] = Tensor::scalar(0.1f);
    c.inputs[5] = Tensor::scalar<int8_t>(3);  // zero point of the wrong type: error
    check(c);
  }
}

}  // namespace
}  // namespace qtk
