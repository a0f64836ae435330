// The optimized integer op kernels (src/runtime/kernels/x86/qlinear_x86_*.cpp)
// against the reference kernels, bit for bit: each case is built as one node
// with constant weights, the optimized kernel must take it, and both kernels
// run on the same inputs (1 and 2 threads). Random shapes cover odd sizes,
// kernels 1/3/5, strides 1/2, pads, dilations, groups, zero points, per-tensor
// and per-channel scales, biases. End to end: the shared models quantized to
// QDQ give identical outputs in integer sessions with optimized and with
// reference kernels.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "ir/graph.h"
#include "quant/graph/residual_add_fusion.h"
#include "qtk/model.h"
#include "qtk/quantize.h"
#include "qtk/session.h"
#include "runtime/kernel.h"
#include "runtime/kernels/x86/qlinear_x86_ops.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"
#include "test_models.h"

namespace qtk::rt {
namespace {

using qtk::testing::first_difference;
using TryMake = Expected<std::unique_ptr<Kernel>> (*)(const KernelInit&);

struct NodeCase {
  ir::Node node;
  int64_t opset = 17;
  std::vector<Tensor> inputs;  // by position; undefined = absent
  std::vector<bool> constant;  // input i is an initializer
  std::string describe;

  void add(Tensor t, bool is_constant) {
    node.inputs.push_back(t.defined() ? "in" + std::to_string(inputs.size()) : "");
    inputs.push_back(std::move(t));
    constant.push_back(is_constant);
  }
};

// The optimized kernel must take the node and agree with the reference one
// (outputs, or both failing).
void expect_as_reference(const NodeCase& c, TryMake make, bool must_take = true) {
  SCOPED_TRACE(c.node.op_type + " " + c.describe);
  KernelInit init{c.node, c.opset, {}, [&c](size_t i) -> const Tensor* {
                    return i < c.inputs.size() && c.constant[i] && c.inputs[i].defined() ? &c.inputs[i] : nullptr;
                  }};
  auto opt = make(init);
  ASSERT_TRUE(opt.ok()) << opt.status().message();
  if (must_take) ASSERT_TRUE(*opt != nullptr) << "the optimized kernel did not take this node";
  if (!*opt) return;
  const KernelFactory* rf = OpRegistry::reference().find(c.node.domain, c.node.op_type, c.opset);
  ASSERT_NE(rf, nullptr);
  auto ref = (*rf)(init);
  ASSERT_TRUE(ref.ok()) << ref.status().message();
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    KernelContext a, b;
    for (const auto& t : c.inputs) a.inputs.push_back(t.defined() ? &t : nullptr);
    b.inputs = a.inputs;
    a.outputs.resize(1);
    b.outputs.resize(1);
    a.pool = b.pool = &pool;
    const Status sa = (*opt)->run(a), sb = (*ref)->run(b);
    ASSERT_EQ(sa.ok(), sb.ok()) << "optimized: " << sa.message() << " / reference: " << sb.message();
    if (!sa.ok()) {
      EXPECT_EQ(sa.message(), sb.message());
      continue;
    }
    const std::string diff = first_difference(a.outputs[0], b.outputs[0]);
    ASSERT_TRUE(diff.empty()) << "threads " << threads << ": " << diff;
  }
}

Tensor codes(DType t, Shape shape, std::mt19937& rng) {
  Tensor r(t, std::move(shape));
  std::uniform_int_distribution<int> d(0, 255);
  for (int64_t i = 0; i < r.numel(); ++i) static_cast<uint8_t*>(r.raw())[i] = static_cast<uint8_t>(d(rng));
  return r;
}

Tensor zero_points(DType t, int64_t n, std::mt19937& rng) {
  Tensor z = codes(t, n == 0 ? Shape{} : Shape{n}, rng);
  return z;
}

Tensor scales(int64_t n, std::mt19937& rng, float lo = 1e-3f, float hi = 0.05f) {
  std::uniform_real_distribution<float> d(lo, hi);
  Tensor s(DType::kFloat32, n == 0 ? Shape{} : Shape{n});
  for (int64_t i = 0; i < s.numel(); ++i) s.data<float>()[i] = d(rng);
  return s;
}

// extremes: a few values near the int32 limits (QLinearConv saturates acc +
// bias; QGemm's reference sums C in int32 and must not overflow).
Tensor int32_values(Shape shape, std::mt19937& rng, bool extremes = true) {
  Tensor b(DType::kInt32, std::move(shape));
  std::uniform_int_distribution<int32_t> d(-30000, 30000);
  std::uniform_int_distribution<int> extreme(0, 40);
  for (int64_t i = 0; i < b.numel(); ++i) {
    const int e = extremes ? extreme(rng) : 2;
    b.data<int32_t>()[i] = e == 0 ? INT32_MAX - 5 : e == 1 ? INT32_MIN + 5 : d(rng);
  }
  return b;
}

DType pick_type(std::mt19937& rng) { return rng() % 2 ? DType::kUInt8 : DType::kInt8; }

// ---------------------------------------------------------------------------
// Convolutions

struct ConvShape {
  int64_t n, c, h, w, oc, kh, kw, group;
  std::vector<int64_t> strides, dilations, pads;
  std::string auto_pad;
};

ConvShape random_conv(std::mt19937& rng) {
  auto pick = [&](std::vector<int64_t> v) { return v[rng() % v.size()]; };
  for (;;) {
    ConvShape s;
    s.group = pick({1, 1, 1, 2, 3});
    const int64_t cg = pick({1, 2, 3, 5, 8, 16}), ocg = pick({1, 2, 5, 7, 16, 19});
    s.n = pick({1, 1, 2});
    s.c = cg * s.group;
    s.oc = ocg * s.group;
    s.kh = pick({1, 3, 5});
    s.kw = rng() % 3 ? s.kh : pick({1, 3, 5});
    s.h = pick({1, 2, 5, 7, 9, 14, 17});
    s.w = pick({1, 3, 6, 7, 11, 16, 23});
    s.strides = {pick({1, 1, 2}), pick({1, 1, 2})};
    s.dilations = {pick({1, 1, 1, 2}), pick({1, 1, 1, 2})};
    const int64_t a = rng() % 8;
    s.auto_pad = a == 0 ? "SAME_UPPER" : a == 1 ? "VALID" : "NOTSET";
    if (s.auto_pad == "NOTSET") s.pads = {pick({0, 1, 2}), pick({0, 1, 2}), pick({0, 1, 2}), pick({0, 1, 2})};
    const int64_t ph = s.pads.empty() ? 0 : s.pads[0] + s.pads[2], pw = s.pads.empty() ? 0 : s.pads[1] + s.pads[3];
    const bool fits = s.h + ph >= s.dilations[0] * (s.kh - 1) + 1 && s.w + pw >= s.dilations[1] * (s.kw - 1) + 1;
    if (fits || s.auto_pad == "SAME_UPPER") return s;
  }
}

std::string describe(const ConvShape& s) {
  std::string d = "x[" + std::to_string(s.n) + "," + std::to_string(s.c) + "," + std::to_string(s.h) + "," +
                  std::to_string(s.w) + "] oc " + std::to_string(s.oc) + " k " + std::to_string(s.kh) + "x" +
                  std::to_string(s.kw) + " group " + std::to_string(s.group) + " strides " +
                  std::to_string(s.strides[0]) + "," + std::to_string(s.strides[1]) + " dilations " +
                  std::to_string(s.dilations[0]) + "," + std::to_string(s.dilations[1]) + " auto_pad " + s.auto_pad;
  if (!s.pads.empty())
    d += " pads " + std::to_string(s.pads[0]) + "," + std::to_string(s.pads[1]) + "," + std::to_string(s.pads[2]) +
         "," + std::to_string(s.pads[3]);
  return d;
}

void set_conv_attrs(ir::Node& n, const ConvShape& s) {
  n.attrs = {ir::attr_ints("strides", s.strides), ir::attr_ints("dilations", s.dilations),
             ir::attr_int("group", s.group), ir::attr_string("auto_pad", s.auto_pad)};
  if (!s.pads.empty()) n.attrs.push_back(ir::attr_ints("pads", s.pads));
}

TEST(QLinearX86, ConvMatchesReferenceOnRandomShapes) {
  const uint32_t seed = 2024;
  std::mt19937 rng(seed);
  for (int iter = 0; iter < 60; ++iter) {
    const ConvShape s = random_conv(rng);
    const DType xt = pick_type(rng), wt = pick_type(rng), yt = pick_type(rng);
    const bool per_channel = rng() % 2, with_bias = rng() % 4 != 0;
    NodeCase c;
    c.node.op_type = "QLinearConv";
    set_conv_attrs(c.node, s);
    c.add(codes(xt, {s.n, s.c, s.h, s.w}, rng), false);
    c.add(scales(0, rng), true);
    c.add(zero_points(xt, 0, rng), true);
    c.add(codes(wt, {s.oc, s.c / s.group, s.kh, s.kw}, rng), true);
    c.add(scales(per_channel ? s.oc : 0, rng), true);
    c.add(zero_points(wt, per_channel ? s.oc : 0, rng), true);
    c.add(scales(0, rng, 0.05f, 0.5f), true);
    c.add(zero_points(yt, 0, rng), true);
    c.add(with_bias ? int32_values({s.oc}, rng) : Tensor(), true);
    c.node.outputs = {"y"};
    c.describe = describe(s) + " seed " + std::to_string(seed) + " iter " + std::to_string(iter) +
                 (per_channel ? " per-channel" : " per-tensor") + (with_bias ? " bias" : "");
    // Depthwise convs (group == C == OC) belong to the depthwise kernel.
    const bool depthwise = s.group == s.c && s.group == s.oc && s.group > 1;
    expect_as_reference(c, x86::try_make_qlinear_conv_kernel, !depthwise);
    if (HasFatalFailure()) return;
  }
}

TEST(QLinearX86, ConvIntegerMatchesReference) {
  const uint32_t seed = 77;
  std::mt19937 rng(seed);
  for (int iter = 0; iter < 25; ++iter) {
    const ConvShape s = random_conv(rng);
    const DType xt = pick_type(rng), wt = pick_type(rng);
    NodeCase c;
    c.node.op_type = "ConvInteger";
    set_conv_attrs(c.node, s);
    c.add(codes(xt, {s.n, s.c, s.h, s.w}, rng), false);
    c.add(codes(wt, {s.oc, s.c / s.group, s.kh, s.kw}, rng), true);
    c.add(rng() % 3 ? zero_points(xt, 0, rng) : Tensor(), false);
    c.add(rng() % 2 ? zero_points(wt, rng() % 2 ? s.oc : 0, rng) : Tensor(), true);
    c.node.outputs = {"y"};
    c.describe = describe(s) + " seed " + std::to_string(seed) + " iter " + std::to_string(iter);
    expect_as_reference(c, x86::try_make_conv_integer_kernel);
    if (HasFatalFailure()) return;
  }
}

// 1-D convs (Conv1d: audio, sequence models) run on the 2-D kernel as height
// 1: the kernel must take them (the reference is ~50x slower) and match it,
// with strides, dilations, explicit and automatic pads, groups and depthwise.
TEST(QLinearX86, Conv1dMatchesReference) {
  const uint32_t seed = 1313;
  std::mt19937 rng(seed);
  auto pick = [&](std::vector<int64_t> v) { return v[rng() % v.size()]; };
  const uint64_t fallbacks = x86::qconv_reference_runs();
  for (int iter = 0; iter < 40; ++iter) {
    const int64_t group = pick({1, 1, 2, 4}), cg = pick({1, 3, 8}), ocg = pick({1, 5, 16});
    const int64_t n = pick({1, 2}), c = cg * group, oc = ocg * group, k = pick({1, 3, 5, 9});
    const int64_t len = pick({4, 13, 64, 100}), stride = pick({1, 1, 2}), dilation = pick({1, 2, 4});
    const std::string auto_pad = iter % 5 == 4 ? "SAME_UPPER" : "NOTSET";
    std::vector<int64_t> pads;
    if (auto_pad == "NOTSET") pads = {pick({0, 1, 4}), pick({0, 2, 4})};
    const int64_t room = len + (pads.empty() ? 0 : pads[0] + pads[1]) - (dilation * (k - 1) + 1);
    if (room < 0 && auto_pad == "NOTSET") continue;
    const bool qlinear = iter % 3 != 2;
    const DType xt = pick_type(rng), wt = pick_type(rng), yt = pick_type(rng);
    NodeCase cs;
    cs.node.op_type = qlinear ? "QLinearConv" : "ConvInteger";
    cs.node.attrs = {ir::attr_ints("strides", {stride}), ir::attr_ints("dilations", {dilation}),
                     ir::attr_int("group", group), ir::attr_string("auto_pad", auto_pad)};
    if (!pads.empty()) cs.node.attrs.push_back(ir::attr_ints("pads", pads));
    if (qlinear) {
      cs.add(codes(xt, {n, c, len}, rng), false);
      cs.add(scales(0, rng), true);
      cs.add(zero_points(xt, 0, rng), true);
      cs.add(codes(wt, {oc, cg, k}, rng), true);
      cs.add(scales(oc, rng), true);
      cs.add(zero_points(wt, oc, rng), true);
      cs.add(scales(0, rng, 0.05f, 0.5f), true);
      cs.add(zero_points(yt, 0, rng), true);
      cs.add(int32_values({oc}, rng), true);
    } else {
      cs.add(codes(xt, {n, c, len}, rng), false);
      cs.add(codes(wt, {oc, cg, k}, rng), true);
      cs.add(zero_points(xt, 0, rng), false);
      cs.add(zero_points(wt, 0, rng), true);
    }
    cs.node.outputs = {"y"};
    cs.describe = "x[" + std::to_string(n) + "," + std::to_string(c) + "," + std::to_string(len) + "] oc " +
                  std::to_string(oc) + " k " + std::to_string(k) + " group " + std::to_string(group) + " stride " +
                  std::to_string(stride) + " dilation " + std::to_string(dilation) + " " + auto_pad + " seed " +
                  std::to_string(seed) + " iter " + std::to_string(iter);
    expect_as_reference(cs, qlinear ? x86::try_make_qlinear_conv_kernel : x86::try_make_conv_integer_kernel);
    if (HasFatalFailure()) return;
  }
  EXPECT_EQ(x86::qconv_reference_runs(), fallbacks) << "1-D convs ran on the reference kernel";
}

// A realistic layer size (tile and panel edges, two threads, several panel blocks).
TEST(QLinearX86, LargerConvsMatchReference) {
  std::mt19937 rng(5);
  const ConvShape shapes[] = {
      {1, 16, 28, 28, 32, 3, 3, 1, {1, 1}, {1, 1}, {1, 1, 1, 1}, "NOTSET"},
      {2, 32, 15, 15, 24, 3, 3, 1, {2, 2}, {1, 1}, {1, 1, 1, 1}, "NOTSET"},
      {1, 64, 14, 14, 40, 1, 1, 1, {1, 1}, {1, 1}, {0, 0, 0, 0}, "NOTSET"},
      {1, 48, 9, 9, 48, 3, 3, 4, {1, 1}, {2, 2}, {2, 2, 2, 2}, "NOTSET"},
  };
  for (const ConvShape& s : shapes) {
    NodeCase c;
    c.node.op_type = "QLinearConv";
    set_conv_attrs(c.node, s);
    c.add(codes(DType::kUInt8, {s.n, s.c, s.h, s.w}, rng), false);
    c.add(scales(0, rng), true);
    c.add(zero_points(DType::kUInt8, 0, rng), true);
    c.add(codes(DType::kInt8, {s.oc, s.c / s.group, s.kh, s.kw}, rng), true);
    c.add(scales(s.oc, rng), true);
    c.add(Tensor(DType::kInt8, {s.oc}), true);
    c.add(scales(0, rng, 0.1f, 1.f), true);
    c.add(zero_points(DType::kUInt8, 0, rng), true);
    c.add(int32_values({s.oc}, rng), true);
    c.node.outputs = {"y"};
    c.describe = describe(s);
    expect_as_reference(c, x86::try_make_qlinear_conv_kernel);
    if (HasFatalFailure()) return;
  }
}

// ---------------------------------------------------------------------------
// Matrix products

TEST(QLinearX86, MatMulsMatchReference) {
  const uint32_t seed = 99;
  std::mt19937 rng(seed);
  auto pick = [&](std::vector<int64_t> v) { return v[rng() % v.size()]; };
  for (int iter = 0; iter < 40; ++iter) {
    const int64_t m = pick({1, 2, 5, 6, 7, 33}), k = pick({1, 3, 16, 17, 64, 129}), n = pick({1, 5, 16, 31, 40});
    const int rank = static_cast<int>(pick({1, 2, 2, 3}));
    Shape a_shape = rank == 1 ? Shape{k} : rank == 2 ? Shape{m, k} : Shape{2, m, k};
    const DType at = pick_type(rng), bt = pick_type(rng), yt = pick_type(rng);
    const bool per_col = rng() % 2;
    const std::string trace = "A " + shape_to_string(a_shape) + " B [" + std::to_string(k) + "," + std::to_string(n) +
                              "] seed " + std::to_string(seed) + " iter " + std::to_string(iter);
    NodeCase q;
    q.node.op_type = "QLinearMatMul";
    q.add(codes(at, a_shape, rng), false);
    q.add(scales(0, rng), true);
    q.add(zero_points(at, 0, rng), true);
    q.add(codes(bt, {k, n}, rng), true);
    q.add(scales(per_col ? n : 0, rng), true);
    q.add(zero_points(bt, per_col ? n : 0, rng), true);
    q.add(scales(0, rng, 0.05f, 0.5f), true);
    q.add(zero_points(yt, 0, rng), true);
    q.node.outputs = {"y"};
    q.describe = trace;
    expect_as_reference(q, x86::try_make_qlinear_matmul_kernel);
    if (HasFatalFailure()) return;

    NodeCase mi;
    mi.node.op_type = "MatMulInteger";
    mi.add(codes(at, a_shape, rng), false);
    mi.add(codes(bt, {k, n}, rng), true);
    mi.add(rng() % 2 ? zero_points(at, 0, rng) : Tensor(), false);
    mi.add(rng() % 2 ? zero_points(bt, per_col ? n : 0, rng) : Tensor(), true);
    mi.node.outputs = {"y"};
    mi.describe = trace;
    expect_as_reference(mi, x86::try_make_matmul_integer_kernel);
    if (HasFatalFailure()) return;
  }
}

// Threads for batched products with an activation B: a short sequence's
// attention heads (4 x 10x8x10 multiply-adds) stay on one thread, where
// handing them to a second one cost 8x their run time (encoder layer, 2
// threads); large matrices split one per thread, and still match the reference.
// QLinearMatMul of two activations (B not a constant), per-tensor
// parameters, uint8 output.
NodeCase activation_matmul(DType at, const Shape& a, DType bt, const Shape& b, std::mt19937& rng,
                           std::string describe) {
  NodeCase q;
  q.node.op_type = "QLinearMatMul";
  q.add(codes(at, a, rng), false);
  q.add(scales(0, rng), true);
  q.add(zero_points(at, 0, rng), true);
  q.add(codes(bt, b, rng), false);
  q.add(scales(0, rng), true);
  q.add(zero_points(bt, 0, rng), true);
  q.add(scales(0, rng, 0.05f, 0.5f), true);
  q.add(zero_points(DType::kUInt8, 0, rng), true);
  q.node.outputs = {"y"};
  q.describe = std::move(describe);
  return q;
}

TEST(QLinearX86, BatchedMatMulGrainKeepsSmallProductsOnOneThread) {
  EXPECT_GE(x86::batched_matmul_grain(10, 10, 8), 4 * 8);  // 8 sequences x 4 heads: one chunk
  EXPECT_EQ(x86::batched_matmul_grain(64, 64, 64), 1);
  EXPECT_EQ(x86::batched_matmul_grain(0, 0, 0), x86::batched_matmul_grain(1, 1, 1));  // no division by zero
  for (int64_t s : {4, 16, 64, 256}) EXPECT_GE(x86::batched_matmul_grain(s, s, 16), x86::batched_matmul_grain(2 * s, 2 * s, 16));
  std::mt19937 rng(31);
  expect_as_reference(activation_matmul(DType::kUInt8, {6, 64, 64}, DType::kInt8, {6, 64, 64}, rng,
                                        "6 x 64x64x64, one matrix per thread"),
                      x86::try_make_qlinear_matmul_kernel);
}

// B an activation (attention's Q·Kᵀ, P·V): packed per matrix at run time.
TEST(QLinearX86, BatchedMatMulsWithActivationBMatchReference) {
  const uint32_t seed = 2718;
  std::mt19937 rng(seed);
  auto pick = [&](std::vector<int64_t> v) { return v[rng() % v.size()]; };
  for (int iter = 0; iter < 40; ++iter) {
    const int64_t m = pick({1, 2, 7, 17, 50}), k = pick({1, 3, 16, 17, 50}), n = pick({1, 5, 16, 31, 50});
    const int rank = static_cast<int>(pick({2, 3, 4}));
    Shape batch = rank == 2 ? Shape{} : rank == 3 ? Shape{pick({1, 3})} : Shape{2, pick({1, 4})};
    Shape a_shape = batch, b_shape = batch;
    a_shape.insert(a_shape.end(), {m, k});
    b_shape.insert(b_shape.end(), {k, n});
    const DType at = pick_type(rng), bt = pick_type(rng), yt = pick_type(rng);
    NodeCase q;
    q.node.op_type = "QLinearMatMul";
    q.add(codes(at, a_shape, rng), false);
    q.add(scales(0, rng), true);
    q.add(zero_points(at, 0, rng), true);
    q.add(codes(bt, b_shape, rng), false);  // not a constant
    q.add(scales(0, rng), true);
    q.add(rng() % 3 ? zero_points(bt, 0, rng) : Tensor(), false);
    q.add(scales(0, rng, 0.05f, 0.5f), true);
    q.add(zero_points(yt, 0, rng), true);
    q.node.outputs = {"y"};
    q.describe = "A " + shape_to_string(a_shape) + " B " + shape_to_string(b_shape) + " seed " + std::to_string(seed) +
                 " iter " + std::to_string(iter);
    expect_as_reference(q, x86::try_make_qlinear_matmul_kernel);
    if (HasFatalFailure()) return;
  }
  // Empty dimensions: an empty output, or (K = 0) the requantized zero sums.
  for (const Shape& mkn : {Shape{0, 3, 4}, Shape{3, 0, 4}, Shape{3, 4, 0}}) {
    expect_as_reference(activation_matmul(DType::kUInt8, {2, mkn[0], mkn[1]}, DType::kInt8, {2, mkn[1], mkn[2]}, rng,
                                          "empty " + shape_to_string(mkn)),
                        x86::try_make_qlinear_matmul_kernel);
    if (HasFatalFailure()) return;
  }
  // Broadcast batch dimensions and per-column B scales go to the reference (same results, same errors).
  expect_as_reference(activation_matmul(DType::kUInt8, {2, 3, 4}, DType::kUInt8, {1, 4, 5}, rng, "broadcast batch"),
                      x86::try_make_qlinear_matmul_kernel);
}

TEST(QLinearX86, QGemmMatchesReference) {
  const uint32_t seed = 314;
  std::mt19937 rng(seed);
  auto pick = [&](std::vector<int64_t> v) { return v[rng() % v.size()]; };
  for (int iter = 0; iter < 40; ++iter) {
    const int64_t m = pick({1, 3, 6, 13, 64}), k = pick({1, 2, 31, 100}), n = pick({1, 7, 16, 50});
    const bool trans_a = rng() % 4 == 0, trans_b = rng() % 2, per_col = rng() % 2, quantized = rng() % 3 != 0;
    const DType at = pick_type(rng), bt = pick_type(rng);
    const int c_form = static_cast<int>(rng() % 6);  // none, (), (N), (1,N), (M,1), (M,N)
    const Shape c_shapes[] = {{}, {}, {n}, {1, n}, {m, 1}, {m, n}};
    NodeCase q;
    q.opset = 1;
    q.node.op_type = "QGemm";
    q.node.domain = "com.microsoft";
    std::uniform_real_distribution<float> alpha(0.25f, 2.f);
    q.node.attrs = {ir::attr_int("transA", trans_a), ir::attr_int("transB", trans_b), ir::attr_float("alpha", alpha(rng))};
    q.add(codes(at, trans_a ? Shape{k, m} : Shape{m, k}, rng), false);
    q.add(scales(0, rng), true);
    q.add(rng() % 4 ? zero_points(at, 0, rng) : Tensor(), true);
    q.add(codes(bt, trans_b ? Shape{n, k} : Shape{k, n}, rng), true);
    q.add(scales(per_col ? n : 0, rng), true);
    q.add(rng() % 4 ? zero_points(bt, per_col ? n : 0, rng) : Tensor(), true);
    q.add(c_form ? int32_values(c_shapes[c_form], rng, false) : Tensor(), c_form % 2 == 0);
    const DType yt = pick_type(rng);
    q.add(quantized ? scales(0, rng, 0.05f, 0.5f) : Tensor(), true);
    q.add(quantized && rng() % 3 ? zero_points(yt, 0, rng) : Tensor(), true);
    q.node.outputs = {"y"};
    q.describe = "M " + std::to_string(m) + " K " + std::to_string(k) + " N " + std::to_string(n) + " transA " +
                 std::to_string(trans_a) + " transB " + std::to_string(trans_b) + " C form " +
                 std::to_string(c_form) + (quantized ? " codes" : " float") + " seed " + std::to_string(seed) +
                 " iter " + std::to_string(iter);
    expect_as_reference(q, x86::try_make_qgemm_kernel);
    if (HasFatalFailure()) return;
  }
}

// Cases decided at run time go to the reference kernel: same results, same errors.
TEST(QLinearX86, RunTimeCasesFallBackToReference) {
  std::mt19937 rng(8);
  NodeCase q;
  q.node.op_type = "QLinearMatMul";
  q.add(codes(DType::kUInt8, {4, 8}, rng), false);
  q.add(scales(0, rng), true);
  q.add(codes(DType::kUInt8, {4}, rng), false);  // per-row a_zero_point: reference says unsupported
  q.add(codes(DType::kInt8, {8, 5}, rng), true);
  q.add(scales(0, rng), true);
  q.add(Tensor(), true);
  q.add(scales(0, rng), true);
  q.add(zero_points(DType::kUInt8, 0, rng), true);
  q.node.outputs = {"y"};
  expect_as_reference(q, x86::try_make_qlinear_matmul_kernel);
  q.inputs[2] = zero_points(DType::kUInt8, 0, rng);
  q.inputs[0] = codes(DType::kUInt8, {4, 7}, rng);  // inner dimensions differ
  expect_as_reference(q, x86::try_make_qlinear_matmul_kernel);
  q.inputs[0] = codes(DType::kFloat32, {4, 8}, rng);  // wrong dtype
  expect_as_reference(q, x86::try_make_qlinear_matmul_kernel);

  NodeCase c;
  c.node.op_type = "QLinearConv";
  c.node.attrs = {ir::attr_ints("pads", {1, 1, 1, 1})};
  c.add(codes(DType::kUInt8, {1, 3, 5, 5}, rng), false);
  c.add(scales(0, rng), false);
  c.add(zero_points(DType::kUInt8, 0, rng), false);
  c.add(codes(DType::kInt8, {4, 3, 3, 3}, rng), true);
  c.add(scales(4, rng), false);  // scales at run time: multipliers per call
  c.add(Tensor(), true);
  c.add(scales(0, rng), false);
  c.add(zero_points(DType::kUInt8, 0, rng), false);
  c.add(int32_values({4}, rng), false);
  c.node.outputs = {"y"};
  expect_as_reference(c, x86::try_make_qlinear_conv_kernel);
  c.inputs[8] = int32_values({3}, rng);  // wrong bias length: the reference's error
  expect_as_reference(c, x86::try_make_qlinear_conv_kernel);
  c.inputs[8] = Tensor();
  c.inputs[0] = codes(DType::kUInt8, {1, 2, 5, 5}, rng);  // channels do not match the weights
  expect_as_reference(c, x86::try_make_qlinear_conv_kernel);
}

// ---------------------------------------------------------------------------
// End to end: optimized and reference kernels in one integer session each.

TEST(QLinearX86, QuantizedModelsGiveIdenticalOutputs) {
  auto calib = data::load_dataset("fashion-mnist:train", 64);
  auto test = data::load_dataset("fashion-mnist:test", 16);
  ASSERT_TRUE(calib.ok() && test.ok());
  for (const char* name : {"mlp", "cnn", "resnet20"}) {
    SCOPED_TRACE(name);
    auto m = load_model(std::string(QTK_MODELS_DIR) + "/" + name + ".onnx");
    ASSERT_TRUE(m.ok()) << m.status().message();
    auto q = quantize(*m, QuantConfig{}, CalibrationData{{calib->images}});
    ASSERT_TRUE(q.ok()) << q.status().message();
    std::vector<Tensor> outputs;
    for (bool reference : {true, false}) {
      SessionOptions o;
      o.integer = true;
      o.threads = 2;
      o.reference_kernels = reference;
      auto s = Session::create(q->model, o);
      ASSERT_TRUE(s.ok()) << s.status().message();
      auto y = (*s)->run(std::vector<Tensor>{test->images});
      ASSERT_TRUE(y.ok()) << y.status().message();
      outputs.push_back((*y)[0]);
    }
    const std::string diff = first_difference(outputs[0], outputs[1]);
    EXPECT_TRUE(diff.empty()) << diff;
  }
}

// The integer session's fusions (4-bit / Relu clamps inside QLinearConv's
// requantization, residual QLinearAdds inside the conv before them) against
// the exported QOperator model, where they are separate nodes: the integer
// session with reference and with optimized kernels, and the export run
// as it is, agree bit for bit.
void expect_fused_session_matches_export(const char* name, const QuantConfig& cfg) {
  SCOPED_TRACE(name);
  auto calib = data::load_dataset("fashion-mnist:train", 64);
  auto test = data::load_dataset("fashion-mnist:test", 16);
  ASSERT_TRUE(calib.ok() && test.ok());
  auto m = load_model(std::string(QTK_MODELS_DIR) + "/" + name + ".onnx");
  ASSERT_TRUE(m.ok()) << m.status().message();
  auto q = quantize(*m, cfg, CalibrationData{{calib->images}});
  ASSERT_TRUE(q.ok()) << q.status().message();
  QuantConfig exported = cfg;
  exported.format = ExportFormat::kQOperator;
  auto qop = quantize(*m, exported, CalibrationData{{calib->images}});
  ASSERT_TRUE(qop.ok()) << qop.status().message();
  std::vector<Tensor> outputs;
  for (int variant = 0; variant < 3; ++variant) {
    SessionOptions o;
    o.threads = 2;
    o.integer = variant < 2;
    o.reference_kernels = variant == 0;
    auto s = Session::create(variant < 2 ? q->model : qop->model, o);
    ASSERT_TRUE(s.ok()) << s.status().message();
    auto y = (*s)->run(std::vector<Tensor>{test->images});
    ASSERT_TRUE(y.ok()) << y.status().message();
    outputs.push_back((*y)[0]);
  }
  for (int v = 1; v < 3; ++v) {
    const std::string diff = first_difference(outputs[0], outputs[v]);
    EXPECT_TRUE(diff.empty()) << "variant " << v << ": " << diff;
  }
}

int count_ops(const ir::Graph& g, const std::string& op) {
  int n = 0;
  for (const auto& node : g.nodes) n += node.op_type == op;
  return n;
}

TEST(QLinearX86, FusedFourBitClampsMatchSeparateClips) {
  QuantConfig cfg;
  cfg.weight_format = quant::QFormat::kInt4;
  cfg.activation_format = quant::QFormat::kUInt4;
  cfg.method = WeightMethod::kRtn;
  cfg.int4_types = false;
  for (const char* name : {"cnn", "resnet20"}) expect_fused_session_matches_export(name, cfg);
}

// resnet20's residual joins: each QLinearAdd reading a conv's only output
// goes into that conv (quant/graph/residual_add_fusion.h).
TEST(QLinearX86, FusedResidualAddsMatchSeparateAdds) {
  auto calib = data::load_dataset("fashion-mnist:train", 64);
  ASSERT_TRUE(calib.ok());
  auto m = load_model(std::string(QTK_MODELS_DIR) + "/resnet20.onnx");
  ASSERT_TRUE(m.ok()) << m.status().message();
  QuantConfig cfg;
  cfg.format = ExportFormat::kQOperator;
  auto qop = quantize(*m, cfg, CalibrationData{{calib->images}});
  ASSERT_TRUE(qop.ok()) << qop.status().message();
  ir::Graph g = qop->model.graph;
  const int adds = count_ops(g, "QLinearAdd"), convs = count_ops(g, "QLinearConv");
  ASSERT_GT(adds, 0);
  auto fused = quant::fuse_residual_adds(g);
  ASSERT_TRUE(fused.ok()) << fused.status().message();
  EXPECT_GT(*fused, 0);
  EXPECT_EQ(count_ops(g, "QLinearAdd"), adds - *fused);
  EXPECT_EQ(count_ops(g, "QLinearConv"), convs);
  int marked = 0;
  for (const auto& n : g.nodes) marked += n.has_attr(quant::kResidualAddAttr);
  EXPECT_EQ(marked, *fused);
  EXPECT_TRUE(ir::topological_sort(g).ok());
  expect_fused_session_matches_export("resnet20", QuantConfig{});
}

}  // namespace
}  // namespace qtk::rt
