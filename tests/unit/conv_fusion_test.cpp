// The session-only Conv epilogue fusion (rt::fuse_conv_epilogues): Conv
// followed by Add (the residual join) and Relu / Clip runs as one Conv whose
// kernel adds and clamps in registers. Fused results must equal the separate
// ops bit for bit, on every micro-kernel path, and the fused form must never
// reach a saved (quantized) model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "ir/graph.h"
#include "qtk/quantize.h"
#include "qtk/session.h"
#include "runtime/kernels/ref/sgemm.h"
#include "runtime/kernels/x86/sconv_implicit_gemm.h"
#include "runtime/optimize.h"
#include "runtime/thread_pool.h"
#include "test_models.h"

namespace qtk {
namespace {

using rt::ref::SgemmPath;

// A model built in code: graph input "x" of `x_shape`, initializers, nodes in
// the order given (not necessarily sorted), outputs named.
struct Builder {
  ir::Model m;
  uint32_t seed = 1;
  explicit Builder(int64_t opset = 17) { m.opsets = {{"", opset}}; }
  void input(const std::string& name) { m.graph.inputs.push_back(testing::float_info(name)); }
  std::string weight(const std::string& name, const Shape& shape, float scale = 0.5f) {
    m.graph.set_initializer(name, testing::uniform_tensor(shape, seed++, -scale, scale));
    return name;
  }
  std::string scalar(const std::string& name, float v) {
    Tensor t(DType::kFloat32, {});
    t.data<float>()[0] = v;
    m.graph.set_initializer(name, t);
    return name;
  }
  ir::Node& node(const std::string& op, std::vector<std::string> in, const std::string& out,
                 std::vector<ir::Attribute> attrs = {}) {
    ir::Node n;
    n.name = out + "_node";
    n.op_type = op;
    n.inputs = std::move(in);
    n.outputs = {out};
    n.attrs = std::move(attrs);
    m.graph.nodes.push_back(std::move(n));
    return m.graph.nodes.back();
  }
  void output(const std::string& name) { m.graph.outputs.push_back(testing::float_info(name)); }
};

std::vector<ir::Attribute> conv_attrs(int64_t k, int64_t stride = 1, int64_t group = 1) {
  const int64_t p = k / 2;
  return {ir::attr_ints("kernel_shape", {k, k}), ir::attr_ints("pads", {p, p, p, p}),
          ir::attr_ints("strides", {stride, stride}), ir::attr_int("group", group)};
}

std::vector<Tensor> run(const ir::Model& m, const Tensor& x, bool optimize, bool reference = false, int threads = 1) {
  SessionOptions so;
  so.optimize = optimize;
  so.reference_kernels = reference;
  so.threads = threads;
  auto s = Session::create(m, so);
  EXPECT_TRUE(s.ok()) << s.status().message();
  if (!s.ok()) return {};
  auto out = (*s)->run(std::vector<Tensor>{x});
  EXPECT_TRUE(out.ok()) << out.status().message();
  return out.ok() ? *out : std::vector<Tensor>{};
}

// Fused (optimized session) against the separate ops (no optimization, and
// reference kernels): same shapes, same bits.
void expect_fused_equals_unfused(const ir::Model& m, const Tensor& x, const std::string& what) {
  for (int threads : {1, 2}) {
    const auto fused = run(m, x, true, false, threads);
    const auto plain = run(m, x, false, false, threads);
    const auto ref = run(m, x, false, true, threads);
    ASSERT_EQ(fused.size(), plain.size()) << what;
    ASSERT_EQ(fused.size(), ref.size()) << what;
    ASSERT_FALSE(fused.empty()) << what;
    for (size_t i = 0; i < fused.size(); ++i) {
      ASSERT_EQ(fused[i].shape(), plain[i].shape()) << what << " output " << i;
      ASSERT_EQ(fused[i].shape(), ref[i].shape()) << what << " output " << i;
      EXPECT_EQ(std::memcmp(fused[i].raw(), plain[i].raw(), fused[i].nbytes()), 0)
          << what << " output " << i << " threads " << threads << ": fused differs from the separate ops";
      EXPECT_EQ(std::memcmp(fused[i].raw(), ref[i].raw(), fused[i].nbytes()), 0)
          << what << " output " << i << " threads " << threads << ": fused differs from the reference kernels";
    }
  }
}

// Nodes left after the session-only pipeline, and how many it folded.
int fused_count(ir::Model m, size_t* nodes_left = nullptr) {
  EXPECT_TRUE(rt::optimize_model(m).ok());
  auto n = rt::fuse_conv_epilogues(m);
  EXPECT_TRUE(n.ok()) << n.status().message();
  if (nodes_left) *nodes_left = m.graph.nodes.size();
  return n.ok() ? *n : -1;
}

// Input with NaN, +-0 and values on both sides of zero, so that the clamp
// sees every case.
Tensor input(const Shape& shape, uint32_t seed) {
  Tensor x = testing::uniform_tensor(shape, seed, -1.f, 1.f);
  float* p = x.data<float>();
  p[0] = std::numeric_limits<float>::quiet_NaN();
  if (x.numel() > 7) p[7] = -0.f;
  if (x.numel() > 11) p[11] = 0.f;
  return x;
}

TEST(ConvFusion, ConvReluMatchesSeparateOps) {
  Builder b;
  b.input("x");
  b.node("Conv", {"x", b.weight("w", {8, 3, 3, 3}), b.weight("b", {8})}, "c", conv_attrs(3));
  b.node("Relu", {"c"}, "y");
  b.output("y");
  size_t left = 0;
  EXPECT_EQ(fused_count(b.m, &left), 1);
  EXPECT_EQ(left, 1u);
  expect_fused_equals_unfused(b.m, input({2, 3, 9, 11}, 5), "conv+relu");
}

// Residual block: the shortcut (a 1x1 Conv) is written after the main Conv,
// so the fused Conv must move behind it; Add(shortcut, main) order too.
TEST(ConvFusion, ResidualConvAddReluMatchesSeparateOps) {
  for (bool swap : {false, true}) {
    Builder b;
    b.input("x");
    // 32 channels x 3x3 = 288 taps: two K blocks, so the epilogue must wait for the last.
    b.node("Conv", {"x", b.weight("w0", {32, 4, 3, 3}), b.weight("b0", {32})}, "h", conv_attrs(3));
    b.node("Relu", {"h"}, "hr");
    b.node("Conv", {"hr", b.weight("w1", {16, 32, 3, 3}), b.weight("b1", {16})}, "main", conv_attrs(3));
    b.node("Conv", {"x", b.weight("ws", {16, 4, 1, 1})}, "short", conv_attrs(1));
    b.node("Add", swap ? std::vector<std::string>{"short", "main"} : std::vector<std::string>{"main", "short"}, "sum");
    b.node("Relu", {"sum"}, "y");
    b.output("y");
    size_t left = 0;
    EXPECT_EQ(fused_count(b.m, &left), 3);  // h's Relu, then Add and Relu into main
    EXPECT_EQ(left, 3u);
    expect_fused_equals_unfused(b.m, input({3, 4, 10, 13}, 7), swap ? "residual (swapped)" : "residual");
  }
}

// The identity shortcut of a ResNet basic block: Add(conv(x), x).
TEST(ConvFusion, IdentityShortcutAndStridedConv) {
  Builder b;
  b.input("x");
  b.node("Conv", {"x", b.weight("w0", {6, 6, 3, 3})}, "c0", conv_attrs(3));
  b.node("Add", {"c0", "x"}, "s0");
  b.node("Relu", {"s0"}, "r0");
  b.node("Conv", {"r0", b.weight("w1", {12, 6, 3, 3}), b.weight("b1", {12})}, "c1", conv_attrs(3, 2));
  b.node("Relu", {"c1"}, "y");
  b.output("y");
  EXPECT_EQ(fused_count(b.m), 3);
  expect_fused_equals_unfused(b.m, input({2, 6, 15, 17}, 9), "identity shortcut + strided");
}

TEST(ConvFusion, ClipWithConstantBoundsAndOldOpsetAttributes) {
  {
    Builder b;  // opset 17: bounds are inputs; max only, then min only
    b.input("x");
    b.node("Conv", {"x", b.weight("w", {5, 2, 3, 3}, 2.f)}, "c", conv_attrs(3));
    b.node("Clip", {"c", b.scalar("lo", -0.25f), b.scalar("hi", 0.5f)}, "k");
    b.node("Conv", {"k", b.weight("w2", {4, 5, 1, 1}, 2.f)}, "c2", conv_attrs(1));
    b.node("Clip", {"c2", "", b.scalar("hi2", 0.1f)}, "y");
    b.output("y");
    EXPECT_EQ(fused_count(b.m), 2);
    expect_fused_equals_unfused(b.m, input({2, 2, 7, 8}, 11), "clip opset 17");
  }
  {
    Builder b(6);  // opset 6: bounds are attributes (min > max gives max)
    b.input("x");
    b.node("Conv", {"x", b.weight("w", {5, 2, 3, 3}, 2.f)}, "c", conv_attrs(3));
    b.node("Clip", {"c"}, "y", {ir::attr_float("min", 0.3f), ir::attr_float("max", 0.2f)});
    b.output("y");
    EXPECT_EQ(fused_count(b.m), 1);
    expect_fused_equals_unfused(b.m, input({1, 2, 6, 6}, 12), "clip opset 6");
  }
}

// Depthwise Conv (direct loop) and an addend that broadcasts (added after).
TEST(ConvFusion, DepthwiseAndBroadcastAddend) {
  Builder b;
  b.input("x");
  b.node("Conv", {"x", b.weight("wd", {6, 1, 3, 3}), b.weight("bd", {6})}, "d", conv_attrs(3, 1, 6));
  b.node("Add", {"d", "x"}, "s");
  b.node("Relu", {"s"}, "r");
  b.node("Conv", {"r", b.weight("w", {6, 6, 1, 1})}, "c", conv_attrs(1));
  b.node("Add", {"c", b.weight("per_channel", {1, 6, 1, 1})}, "t");
  b.node("Clip", {"t", b.scalar("lo", 0.f), b.scalar("hi", 0.4f)}, "y");
  b.output("y");
  EXPECT_EQ(fused_count(b.m), 4);
  expect_fused_equals_unfused(b.m, input({2, 6, 9, 7}, 13), "depthwise + broadcast addend");
}

std::vector<ir::Attribute> max_pool_2x2(std::vector<ir::Attribute> extra = {}) {
  std::vector<ir::Attribute> a = {ir::attr_ints("kernel_shape", {2, 2}), ir::attr_ints("strides", {2, 2})};
  for (auto& e : extra) a.push_back(std::move(e));
  return a;
}

// Conv (+ Relu, + a residual Add) then a 2x2 MaxPool, stride 2: pooled by the
// Conv kernel, on odd sizes (the last row and column are in no window), on
// the implicit GEMM (group 1, one image or a few side by side) and, through
// the whole output, after a broadcast addend.
TEST(ConvFusion, MaxPoolAfterConvMatchesSeparateOps) {
  Builder b;
  b.input("x");
  b.node("Conv", {"x", b.weight("w0", {8, 3, 3, 3}), b.weight("b0", {8})}, "c0", conv_attrs(3));
  b.node("Relu", {"c0"}, "r0");
  b.node("MaxPool", {"r0"}, "p0", max_pool_2x2());
  b.node("Conv", {"p0", b.weight("w1", {8, 8, 3, 3})}, "c1", conv_attrs(3));
  b.node("Add", {"c1", "p0"}, "s1");
  b.node("MaxPool", {"s1"}, "p1", max_pool_2x2({ir::attr_ints("pads", {0, 0, 0, 0})}));
  b.node("Conv", {"p1", b.weight("w2", {8, 8, 1, 1})}, "c2", conv_attrs(1));
  b.node("Add", {"c2", b.weight("per_channel", {1, 8, 1, 1})}, "t2");
  b.node("MaxPool", {"t2"}, "y", max_pool_2x2());
  b.output("y");
  size_t left = 0;
  EXPECT_EQ(fused_count(b.m, &left), 6);
  EXPECT_EQ(left, 3u);
  for (int64_t n : {1, 5})
    expect_fused_equals_unfused(b.m, input({n, 3, 23, 21}, 19), "conv + maxpool, batch " + std::to_string(n));
}

// MaxPools the kernel does not do stay separate ops: other windows, pads,
// ceil mode, Indices, after a grouped Conv, or after a Conv read twice.
TEST(ConvFusion, LeavesOtherMaxPoolsAlone) {
  Builder b;
  b.input("x");
  b.node("Conv", {"x", b.weight("w0", {4, 4, 3, 3})}, "c0", conv_attrs(3));
  b.node("MaxPool", {"c0"}, "p0", {ir::attr_ints("kernel_shape", {3, 3}), ir::attr_ints("strides", {2, 2})});
  b.node("Conv", {"p0", b.weight("w1", {4, 4, 3, 3})}, "c1", conv_attrs(3));
  b.node("MaxPool", {"c1"}, "p1", max_pool_2x2({ir::attr_ints("pads", {0, 0, 1, 1})}));
  b.node("Conv", {"p1", b.weight("w2", {4, 4, 3, 3})}, "c2", conv_attrs(3));
  b.node("MaxPool", {"c2"}, "p2", max_pool_2x2({ir::attr_int("ceil_mode", 1)}));
  b.node("Conv", {"p2", b.weight("w3", {4, 2, 3, 3})}, "c3", conv_attrs(3, 1, 2));
  b.node("MaxPool", {"c3"}, "p3", max_pool_2x2());
  b.node("Conv", {"p3", b.weight("w4", {4, 4, 1, 1})}, "c4", conv_attrs(1));
  ir::Node& with_indices = b.node("MaxPool", {"c4"}, "p4", max_pool_2x2());
  with_indices.outputs.push_back("i4");
  b.output("p4");
  b.output("i4");
  EXPECT_EQ(fused_count(b.m), 0);
  expect_fused_equals_unfused(b.m, input({2, 4, 40, 40}, 23), "maxpools left alone");
}

// Nothing fuses when the Conv's output is read elsewhere or is a graph
// output, when a bound is a runtime value, or when Add reads the Conv twice.
TEST(ConvFusion, LeavesSharedOutputsAndRuntimeBoundsAlone) {
  Builder b;
  b.input("x");
  b.input("bound");
  b.node("Conv", {"x", b.weight("w0", {4, 4, 3, 3})}, "c0", conv_attrs(3));
  b.node("Relu", {"c0"}, "r0");
  b.output("c0");  // also a graph output
  b.node("Conv", {"r0", b.weight("w1", {4, 4, 3, 3})}, "c1", conv_attrs(3));
  b.node("Clip", {"c1", "bound"}, "k1");  // runtime min
  b.node("Conv", {"k1", b.weight("w2", {4, 4, 3, 3})}, "c2", conv_attrs(3));
  b.node("Add", {"c2", "c2"}, "a2");  // reads c2 twice
  b.node("Conv", {"a2", b.weight("w3", {4, 4, 3, 3})}, "c3", conv_attrs(3));
  b.node("Relu", {"c3"}, "r3");
  b.node("Sigmoid", {"c3"}, "g3");  // c3 has two readers
  b.output("r3");
  b.output("g3");
  EXPECT_EQ(fused_count(b.m), 0);
}

// MatMul + Add of a constant [N] bias (Linear layers on 3-D activations):
// the bias added to the product's rows inside the MatMul, bit for bit the
// Add, either operand order. Not fused: a [1, N] bias (it could change the
// product's shape), a runtime addend, a product read twice.
TEST(ConvFusion, MatMulBiasMatchesSeparateOps) {
  Builder b;
  b.input("x");
  b.input("runtime");
  b.node("MatMul", {"x", b.weight("w0", {12, 20})}, "m0");
  b.node("Add", {"m0", b.weight("b0", {20})}, "a0");
  b.node("MatMul", {"a0", b.weight("w1", {20, 8})}, "m1");
  b.node("Add", {b.weight("b1", {8}), "m1"}, "a1");  // bias first
  b.node("MatMul", {"a1", b.weight("w2", {8, 8})}, "m2");
  b.node("Add", {"m2", b.weight("b2", {1, 8})}, "a2");  // [1, N]: left alone
  b.node("MatMul", {"a2", b.weight("w3", {8, 8})}, "m3");
  b.node("Add", {"m3", "runtime"}, "a3");  // runtime addend: left alone
  b.node("MatMul", {"a3", b.weight("w4", {8, 8})}, "m4");
  b.node("Add", {"m4", b.weight("b4", {8})}, "y");
  b.node("Relu", {"m4"}, "r4");  // m4 read twice: left alone
  b.output("y");
  b.output("r4");
  ir::Model m = b.m;
  ASSERT_TRUE(rt::optimize_model(m).ok());
  auto n = rt::fuse_matmul_bias(m);
  ASSERT_TRUE(n.ok()) << n.status().message();
  EXPECT_EQ(*n, 2);
  const Tensor x = input({3, 5, 12}, 29), addend = testing::uniform_tensor({8}, 31, -1.f, 1.f);
  for (int threads : {1, 2}) {
    SessionOptions fused_o, plain_o;
    fused_o.threads = plain_o.threads = threads;
    plain_o.optimize = false;
    auto fused = Session::create(b.m, fused_o);
    auto plain = Session::create(b.m, plain_o);
    ASSERT_TRUE(fused.ok() && plain.ok());
    auto a = (*fused)->run(std::vector<Tensor>{x, addend});
    auto p = (*plain)->run(std::vector<Tensor>{x, addend});
    ASSERT_TRUE(a.ok() && p.ok());
    for (size_t i = 0; i < a->size(); ++i) {
      ASSERT_EQ((*a)[i].shape(), (*p)[i].shape());
      EXPECT_EQ(std::memcmp((*a)[i].raw(), (*p)[i].raw(), (*a)[i].nbytes()), 0) << "output " << i;
    }
  }
}

// Whole models (ResNet residual joins, MobileNetV2's Clip(0, 6) after
// depthwise and pointwise Convs, the CNN): optimized first so that BN
// folding is not what differs, then run with and without the fusion.
TEST(ConvFusion, ShippedModelsMatchBitForBit) {
  // Every Relu / Clip and residual Add sits right after a Conv in these, and
  // each of the CNN's MaxPools after a Conv + Relu.
  const std::pair<const char*, int> models[] = {{"resnet20", 19 + 9}, {"mobilenetv2_fm", 17 + 5}, {"cnn", 2 + 2}};
  for (const auto& [name, want_fused] : models) {
    auto model = load_model(std::string(QTK_MODELS_DIR) + "/" + name + ".onnx");
    ASSERT_TRUE(model.ok()) << name << ": " << model.status().message();
    ir::Model m = *model;
    ASSERT_TRUE(rt::optimize_model(m).ok()) << name;
    EXPECT_EQ(fused_count(m), want_fused) << name;
    expect_fused_equals_unfused(m, testing::uniform_tensor({3, 1, 28, 28}, 17, 0.f, 1.f), name);
  }
}

// The fused form is for sessions only: quantization (which optimizes the
// model it saves) must not produce it, in either export format.
TEST(ConvFusion, QuantizedModelsNeverCarryTheFusedForm) {
  auto model = load_model(std::string(QTK_MODELS_DIR) + "/resnet20.onnx");
  ASSERT_TRUE(model.ok()) << model.status().message();
  const CalibrationData calib{{testing::uniform_tensor({8, 1, 28, 28}, 3, 0.f, 1.f)}};
  for (ExportFormat f : {ExportFormat::kQDQ, ExportFormat::kQOperator}) {
    QuantConfig c;
    c.format = f;
    auto r = quantize(*model, c, calib);
    ASSERT_TRUE(r.ok()) << r.status().message();
    int relus = 0;
    for (const auto& n : r->model.graph.nodes) {
      relus += n.op_type == "Relu";
      for (const auto& a : n.attrs) EXPECT_NE(a.name.rfind("qtk_fused", 0), 0u) << n.describe() << " has " << a.name;
      if (n.op_type == "Conv") EXPECT_LE(n.inputs.size(), 3u) << n.describe();
    }
    // QDQ keeps the float graph's Relu nodes around the Q/DQ pairs.
    if (f == ExportFormat::kQDQ) EXPECT_GT(relus, 0);
  }
}

// ---------------------------------------------------------------------------
// The micro-kernels' epilogue (x86/sconv_implicit_gemm.h) on every path this
// CPU has, against the plain product followed by the separate add and clamp.

void check_epilogue(SgemmPath path, bool add, bool clamp, bool grid, rt::ThreadPool* pool) {
  namespace x86 = rt::x86;
  const int64_t m = 13, k = 300, cols = 2 * 40 + 7;  // two K blocks; a grid of two rows of 40 (see below)
  const int64_t nr = x86::sconv_tile(path).nr;
  std::mt19937 rng(static_cast<uint32_t>(path) * 8 + add * 4 + clamp * 2 + grid);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> w(m * k), bias(m), base(k + cols + nr + 64);
  for (auto& v : w) v = dist(rng);
  for (auto& v : bias) v = dist(rng);
  for (auto& v : base) v = dist(rng);
  base[3] = std::numeric_limits<float>::quiet_NaN();  // a NaN reaches some outputs
  std::vector<int64_t> k_off(k);
  for (int64_t p = 0; p < k; ++p) k_off[p] = p % 61;
  std::vector<float> packed(x86::sconv_packed_weights_floats(m, k, path));
  x86::sconv_pack_weights(m, k, w.data(), packed.data(), path);
  std::vector<x86::SconvRun> runs;
  std::vector<int64_t> tile_runs;
  int64_t out_cols = cols;
  if (grid) {  // rows of 40 outputs, 7 dropped positions between them
    x86::sconv_grid_runs({0, 47}, 40, cols, nr, runs, tile_runs);
    out_cols = 80;
  }
  const int64_t ldo = out_cols + 5;
  std::vector<float> z(m * ldo);
  for (auto& v : z) v = dist(rng);
  z[2] = -0.f;
  auto product = [&](bool fused) {
    std::vector<float> out(m * ldo, 1234.f);
    x86::SconvOut dst{out.data(), ldo};
    if (grid) dst = {out.data(), ldo, runs.data(), tile_runs.data()};
    if (fused) {
      dst.addend = add ? z.data() : nullptr;
      dst.clamp = clamp;
      dst.lo = -0.1f;
      dst.hi = 0.7f;
    }
    x86::sconv_implicit_gemm(m, cols, k, packed.data(), {base.data(), k_off.data(), nr}, bias.data(), dst, pool, path);
    return out;
  };
  const std::vector<float> fused = product(true);
  std::vector<float> want = product(false);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < out_cols; ++j) {
      float& v = want[i * ldo + j];
      if (add) v = v + z[i * ldo + j];
      if (clamp) {
        v = v < -0.1f ? -0.1f : v;
        v = 0.7f < v ? 0.7f : v;
      }
    }
  const std::string what = std::string("path=") + rt::ref::sgemm_path_name(path) + " add=" + std::to_string(add) +
                           " clamp=" + std::to_string(clamp) + " grid=" + std::to_string(grid) +
                           " threaded=" + std::to_string(pool != nullptr);
  ASSERT_EQ(std::memcmp(fused.data(), want.data(), want.size() * sizeof(float)), 0) << what;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = out_cols; j < ldo; ++j) ASSERT_EQ(fused[i * ldo + j], 1234.f) << what << ": wrote past a row";
}

TEST(ConvFusion, KernelEpilogueMatchesSeparateOpsOnEveryPath) {
  std::vector<SgemmPath> paths = {SgemmPath::kScalar};
  if (rt::ref::sgemm_avx2_supported()) paths.push_back(SgemmPath::kAvx2);
  if (rt::ref::sgemm_avx512_supported()) paths.push_back(SgemmPath::kAvx512);
  rt::ThreadPool pool(2);
  for (SgemmPath p : paths)
    for (bool add : {false, true})
      for (bool clamp : {false, true})
        for (bool grid : {false, true})
          for (rt::ThreadPool* tp : {static_cast<rt::ThreadPool*>(nullptr), &pool})
            check_epilogue(p, add, clamp, grid, tp);
}

}  // namespace
}  // namespace qtk
