// The depthwise QLinearConv kernel (src/runtime/kernels/x86/qdepthwise_conv*)
// against the reference QLinearConv kernel, bit for bit, on random shapes,
// attributes, types, zero points, scales and biases; its scalar, AVX2 and
// AVX-512 paths (each falls back to the next narrower one on a CPU without
// it), 1 and 2 threads. Kernels are called directly (factory +
// KernelContext) so the comparison does not depend on which kernel the
// registry picks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "runtime/kernels/x86/qdepthwise_conv.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk {
namespace {

using rt::qdw::Path;

// QLinearConv inputs: x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, [bias].
struct Case {
  Shape x_shape;
  int64_t k_h = 3, k_w = 3;
  std::vector<ir::Attribute> attrs;
  std::vector<Tensor> inputs;  // 9 entries; bias undefined when absent
  std::string text;            // for SCOPED_TRACE
};

template <class T>
Tensor random_codes(Shape s, std::mt19937& rng) {
  Tensor t(dtype_of<T>, std::move(s));
  std::uniform_int_distribution<int> d(std::numeric_limits<T>::min(), std::numeric_limits<T>::max());
  for (int64_t i = 0; i < t.numel(); ++i) t.data<T>()[i] = static_cast<T>(d(rng));
  return t;
}

Tensor codes_tensor(bool is_signed, Shape s, std::mt19937& rng) {
  return is_signed ? random_codes<int8_t>(std::move(s), rng) : random_codes<uint8_t>(std::move(s), rng);
}

Tensor zero_point(bool is_signed, Shape s, std::mt19937& rng) { return codes_tensor(is_signed, std::move(s), rng); }

// A random depthwise case. `big` pushes biases and multipliers to the edges
// (int32 clamp of acc + bias, multipliers >= 0.5) that the vector path must
// hand to the exact scalar path.
Case random_case(std::mt19937& rng, bool big) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Case c;
  const int64_t n = pick(1, 2), ch = pick(1, 12);
  const int kernels[] = {1, 2, 3, 3, 3, 4, 5, 5, 7};
  c.k_h = kernels[pick(0, 8)];
  c.k_w = pick(0, 3) == 0 ? kernels[pick(0, 8)] : c.k_h;
  const int64_t sh = pick(1, 4) == 4 ? 3 : pick(1, 2), sw = pick(1, 4) == 4 ? 3 : pick(1, 2);
  const int64_t dh = pick(0, 3) == 0 ? 2 : 1, dw = pick(0, 3) == 0 ? pick(2, 3) : 1;
  const int64_t ext_h = (c.k_h - 1) * dh + 1, ext_w = (c.k_w - 1) * dw + 1;
  const int64_t h = pick(static_cast<int>(std::max<int64_t>(1, ext_h - 2)), 37);
  const int64_t w = pick(static_cast<int>(std::max<int64_t>(1, ext_w - 2)), 45);
  c.x_shape = {n, ch, h, w};
  std::ostringstream os;
  os << "x " << shape_to_string(c.x_shape) << " k " << c.k_h << "x" << c.k_w << " s " << sh << "," << sw << " d "
     << dh << "," << dw;
  c.attrs = {ir::attr_int("group", ch), ir::attr_ints("strides", {sh, sw}), ir::attr_ints("dilations", {dh, dw})};
  const int pad_mode = pick(0, 5);
  if (pad_mode <= 2 || ext_h > h || ext_w > w) {
    // Explicit pads; enough of them that the window fits.
    const int64_t need_h = std::max<int64_t>(0, ext_h - h), need_w = std::max<int64_t>(0, ext_w - w);
    const int64_t pt = pick(0, static_cast<int>(c.k_h)), pl = pick(0, static_cast<int>(c.k_w));
    const int64_t pb = std::max<int64_t>(need_h - pt, pick(0, static_cast<int>(c.k_h)));
    const int64_t pr = std::max<int64_t>(need_w - pl, pick(0, static_cast<int>(c.k_w)));
    c.attrs.push_back(ir::attr_ints("pads", {pt, pl, pb, pr}));
    os << " pads " << pt << "," << pl << "," << pb << "," << pr;
  } else {
    const char* modes[] = {"SAME_UPPER", "SAME_LOWER", "VALID"};
    const char* m = modes[pad_mode - 3];
    c.attrs.push_back(ir::attr_string("auto_pad", m));
    os << " auto_pad " << m;
  }
  const bool x_signed = pick(0, 1), w_signed = pick(0, 3) != 0, y_signed = pick(0, 1);
  const bool per_channel = pick(0, 1), has_bias = pick(0, 3) != 0;
  c.inputs.resize(9);
  c.inputs[0] = codes_tensor(x_signed, c.x_shape, rng);
  const float x_scale = std::uniform_real_distribution<float>(0.002f, 0.05f)(rng);
  c.inputs[1] = Tensor::scalar(x_scale);
  c.inputs[2] = zero_point(x_signed, {}, rng);
  c.inputs[3] = codes_tensor(w_signed, {ch, 1, c.k_h, c.k_w}, rng);
  const int64_t wn = per_channel ? ch : 1;
  Tensor ws(DType::kFloat32, {wn});
  std::vector<float> w_scales;
  for (int64_t i = 0; i < wn; ++i) ws.data<float>()[i] = std::uniform_real_distribution<float>(0.001f, 0.03f)(rng);
  c.inputs[4] = ws;
  c.inputs[5] = pick(0, 2) == 0 ? zero_point(w_signed, {wn}, rng)
                                : (w_signed ? Tensor::from_vector<int8_t>({wn}, std::vector<int8_t>(wn, 0))
                                            : Tensor::from_vector<uint8_t>({wn}, std::vector<uint8_t>(wn, 128)));
  // y_scale near the typical |acc| so the codes spread over the range.
  const double typical = 128.0 * 64.0 * std::sqrt(static_cast<double>(c.k_h * c.k_w));
  double y_scale = x_scale * 0.015 * typical / 100.0 * std::uniform_real_distribution<double>(0.3, 3.0)(rng);
  if (big && pick(0, 1)) y_scale = x_scale * 0.03 / std::uniform_real_distribution<double>(0.5, 8.0)(rng);
  c.inputs[6] = Tensor::scalar(static_cast<float>(y_scale));
  c.inputs[7] = zero_point(y_signed, {}, rng);
  if (has_bias) {
    Tensor b(DType::kInt32, {ch});
    for (int64_t i = 0; i < ch; ++i) {
      int32_t v = std::uniform_int_distribution<int32_t>(-20000, 20000)(rng);
      if (big && pick(0, 2) == 0)
        v = pick(0, 1) ? INT32_MAX - std::uniform_int_distribution<int32_t>(0, 100000)(rng)
                       : INT32_MIN + std::uniform_int_distribution<int32_t>(0, 100000)(rng);
      b.data<int32_t>()[i] = v;
    }
    c.inputs[8] = b;
  }
  os << " x " << (x_signed ? "s8" : "u8") << " w " << (w_signed ? "s8" : "u8") << " y " << (y_signed ? "s8" : "u8")
     << (per_channel ? " per-channel" : " per-tensor") << (has_bias ? " bias" : "") << " x_zp "
     << c.inputs[2].get_as_int64(0) << " y_zp " << c.inputs[7].get_as_int64(0) << " y_scale " << y_scale;
  c.text = os.str();
  return c;
}

ir::Node make_node(const Case& c) {
  ir::Node n;
  n.name = "dw";
  n.op_type = "QLinearConv";
  n.inputs = {"x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp"};
  if (c.inputs[8].defined()) n.inputs.push_back("bias");
  n.outputs = {"y"};
  n.attrs = c.attrs;
  return n;
}

// `constants`: which inputs the factory sees as initializers.
rt::KernelInit make_init(const ir::Node& node, const Case& c, std::vector<bool> constants) {
  rt::KernelInit init{node, 19, nullptr, nullptr};
  init.constant_input = [&c, constants](size_t i) -> const Tensor* {
    if (i >= c.inputs.size() || !c.inputs[i].defined() || !constants[i]) return nullptr;
    return &c.inputs[i];
  };
  return init;
}

Expected<Tensor> run_kernel(rt::Kernel& k, const Case& c, rt::ThreadPool& pool) {
  rt::KernelContext ctx;
  for (const Tensor& t : c.inputs) ctx.inputs.push_back(t.defined() ? &t : nullptr);
  if (!c.inputs[8].defined()) ctx.inputs.pop_back();
  ctx.outputs.resize(1);
  ctx.pool = &pool;
  QTK_RETURN_IF_ERROR(k.run(ctx));
  return ctx.outputs[0];
}

std::unique_ptr<rt::Kernel> reference_kernel(const rt::KernelInit& init) {
  rt::OpRegistry r;
  rt::register_qlinear_ops(r);
  auto k = (*r.find("", "QLinearConv", 19))(init);
  EXPECT_TRUE(k.ok());
  return k.ok() ? std::move(*k) : nullptr;
}

void expect_same(const Tensor& got, const Tensor& want) {
  ASSERT_EQ(got.dtype(), want.dtype());
  ASSERT_EQ(got.shape(), want.shape());
  for (int64_t i = 0; i < want.numel(); ++i)
    ASSERT_EQ(got.get_as_int64(i), want.get_as_int64(i)) << "element " << i << " of " << shape_to_string(want.shape());
}

void check_case(const Case& c, Path path, int threads, std::vector<bool> constants) {
  const ir::Node node = make_node(c);
  const rt::KernelInit init = make_init(node, c, constants);
  auto ref = reference_kernel(init);
  ASSERT_NE(ref, nullptr);
  auto k = rt::qdw::try_make_kernel(init, path);
  ASSERT_TRUE(k.ok()) << k.status().message();
  ASSERT_NE(*k, nullptr) << "a depthwise conv with constant weights must be taken";
  rt::ThreadPool pool(threads);
  auto want = run_kernel(*ref, c, pool);
  ASSERT_TRUE(want.ok()) << want.status().message();
  auto got = run_kernel(**k, c, pool);
  ASSERT_TRUE(got.ok()) << got.status().message();
  expect_same(*got, *want);
}

std::vector<bool> all_constant() { return std::vector<bool>(9, true); }

TEST(QDepthwiseConv, RandomCasesMatchReferenceBitExactly) {
  const uint32_t seed = 20240611;
  std::mt19937 rng(seed);
  for (int i = 0; i < 300; ++i) {
    const Case c = random_case(rng, i % 4 == 3);
    for (Path path : {Path::kScalar, Path::kAvx2, Path::kAvx512}) {
      const int threads = 1 + (i % 2);
      SCOPED_TRACE("seed " + std::to_string(seed) + " case " + std::to_string(i) + " path " +
                   rt::qdw::path_name(path) + " threads " + std::to_string(threads) + ": " + c.text);
      check_case(c, path, threads, all_constant());
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

TEST(QDepthwiseConv, ParametersGivenAtRunTimeMatchReference) {
  const uint32_t seed = 7;
  std::mt19937 rng(seed);
  // Only the weights (and their zero point) are initializers.
  std::vector<bool> constants(9, false);
  constants[3] = constants[5] = true;
  for (int i = 0; i < 20; ++i) {
    const Case c = random_case(rng, i % 2 == 1);
    SCOPED_TRACE("seed " + std::to_string(seed) + " case " + std::to_string(i) + ": " + c.text);
    check_case(c, Path::kAuto, 2, constants);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(QDepthwiseConv, MobileNetShapes) {
  std::mt19937 rng(11);
  // 3x3 stride 1 and 2 on 56x56 / 28x28 planes, with and without pads.
  for (int64_t stride : {1, 2})
    for (int64_t pad : {0, 1}) {
      Case c = random_case(rng, false);
      const int64_t ch = 16, hw = stride == 1 ? 56 : 28;
      c.x_shape = {1, ch, hw, hw};
      c.k_h = c.k_w = 3;
      c.attrs = {ir::attr_int("group", ch), ir::attr_ints("strides", {stride, stride}),
                 ir::attr_ints("pads", {pad, pad, pad, pad})};
      const bool xs = c.inputs[0].dtype() == DType::kInt8, ws = c.inputs[3].dtype() == DType::kInt8;
      c.inputs[0] = codes_tensor(xs, c.x_shape, rng);
      c.inputs[3] = codes_tensor(ws, {ch, 1, 3, 3}, rng);
      c.inputs[4] = Tensor::scalar(0.01f);
      c.inputs[5] = zero_point(ws, {}, rng);
      c.inputs[6] = Tensor::scalar(0.002f);
      Tensor b(DType::kInt32, {ch});
      for (int64_t i = 0; i < ch; ++i) b.data<int32_t>()[i] = static_cast<int32_t>(i * 1000 - 8000);
      c.inputs[8] = b;
      for (Path path : {Path::kAvx2, Path::kAvx512, Path::kAvx512Channels}) {
        SCOPED_TRACE("stride " + std::to_string(stride) + " pad " + std::to_string(pad) + " path " +
                     rt::qdw::path_name(path) + ": " + c.text);
        check_case(c, path, 1, all_constant());
      }
    }
}

// Kernels past the unrolled sizes (weight pairs read from memory, or from a
// heap buffer beyond 64 pairs), 1-D-like kernels, pads wider than the image.
TEST(QDepthwiseConv, UnusualKernelsAndPads) {
  std::mt19937 rng(13);
  struct Geo {
    int64_t h, w, kh, kw, sh, sw, dh, dw, pad;
  };
  const Geo geos[] = {{20, 23, 11, 11, 1, 1, 1, 1, 5}, {17, 40, 9, 13, 2, 2, 1, 1, 6}, {9, 30, 1, 9, 1, 1, 1, 1, 4},
                      {30, 9, 9, 1, 1, 2, 1, 1, 4},    {4, 4, 3, 3, 1, 1, 1, 1, 7},    {5, 6, 3, 3, 3, 3, 2, 2, 3},
                      {12, 70, 5, 5, 1, 1, 1, 3, 2},   {1, 1, 1, 1, 1, 1, 1, 1, 0},    {3, 100, 3, 3, 1, 2, 1, 1, 1}};
  for (const Geo& g : geos)
    for (bool x_signed : {false, true}) {
      Case c = random_case(rng, false);
      const int64_t ch = 3;
      c.x_shape = {2, ch, g.h, g.w};
      c.k_h = g.kh, c.k_w = g.kw;
      c.attrs = {ir::attr_int("group", ch), ir::attr_ints("strides", {g.sh, g.sw}),
                 ir::attr_ints("dilations", {g.dh, g.dw}), ir::attr_ints("pads", {g.pad, g.pad, g.pad, g.pad})};
      c.inputs[0] = codes_tensor(x_signed, c.x_shape, rng);
      c.inputs[2] = zero_point(x_signed, {}, rng);
      const bool w_signed = c.inputs[3].dtype() == DType::kInt8;
      c.inputs[3] = codes_tensor(w_signed, {ch, 1, g.kh, g.kw}, rng);
      c.inputs[4] = Tensor::scalar(0.01f);
      c.inputs[5] = zero_point(w_signed, {}, rng);
      c.inputs[6] = Tensor::scalar(static_cast<float>(0.0002 * std::sqrt(static_cast<double>(g.kh * g.kw))));
      c.inputs[8] = Tensor();
      std::ostringstream os;
      os << "x " << shape_to_string(c.x_shape) << " k " << g.kh << "x" << g.kw << " s " << g.sh << "," << g.sw
         << " d " << g.dh << "," << g.dw << " pad " << g.pad << (x_signed ? " s8" : " u8");
      for (Path path : {Path::kScalar, Path::kAvx2, Path::kAvx512}) {
        SCOPED_TRACE(os.str() + " path " + rt::qdw::path_name(path));
        check_case(c, path, 2, all_constant());
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
}

// The AVX-512 planes run 32- or 64-output blocks straight across output row
// ends (a flat index with row pitch q >= out_w) and split rows into stride_h
// phases, with vpdpwssd (any weights) or, stride 1 with w - w_zp in int8,
// vpdpbusd on an 8-bit plane padded with the input zero point: widths around the block size and the pitch, every stride_h /
// dilation_h with stride_w 1 and 2, odd and even kernel widths, pads on one
// side only. Each case against the reference, on 1 and 2 threads.
TEST(QDepthwiseConv, Avx512FlatBlocksAcrossRowEnds) {
  if (!rt::qdw::avx512_supported()) GTEST_SKIP() << "CPU without AVX-512 VNNI (the path falls back to AVX2)";
  const uint32_t seed = 4242;
  std::mt19937 rng(seed);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const int64_t widths[] = {1, 2, 7, 14, 15, 16, 17, 28, 31, 32, 33, 56, 63, 64, 65, 100};
  const int64_t kernels[][2] = {{3, 3}, {5, 5}, {1, 1}, {2, 2}, {7, 7}, {3, 1}, {1, 4}, {3, 5}};
  int n = 0;
  for (int64_t w : widths)
    for (const auto& k : kernels)
      for (int64_t sw : {1, 2}) {
        Case c = random_case(rng, n % 5 == 4);
        const int64_t sh = pick(1, 3), dh = pick(0, 2) == 0 ? 2 : 1, ch = pick(1, 5);
        const int64_t ext_h = (k[0] - 1) * dh + 1, h = std::max<int64_t>(ext_h, pick(1, 20));
        const int64_t pt = pick(0, 2), pl = pick(0, 2), pb = pick(0, 2), pr = pick(0, 2);
        const int64_t in_w = std::max<int64_t>(w, k[1]);
        c.x_shape = {pick(1, 2), ch, h, in_w};
        c.k_h = k[0], c.k_w = k[1];
        c.attrs = {ir::attr_int("group", ch), ir::attr_ints("strides", {sh, sw}), ir::attr_ints("dilations", {dh, 1}),
                   ir::attr_ints("pads", {pt, pl, pb, pr})};
        const bool xs = c.inputs[0].dtype() == DType::kInt8, ws = c.inputs[3].dtype() == DType::kInt8;
        c.inputs[0] = codes_tensor(xs, c.x_shape, rng);
        c.inputs[3] = codes_tensor(ws, {ch, 1, k[0], k[1]}, rng);
        const int64_t wn = c.inputs[4].numel() == 1 ? 1 : ch;
        Tensor wsc(DType::kFloat32, {wn});
        for (int64_t i = 0; i < wn; ++i) wsc.data<float>()[i] = std::uniform_real_distribution<float>(0.001f, 0.03f)(rng);
        c.inputs[4] = wsc;
        // Symmetric weights (w - w_zp fits int8: the stride-1 vpdpbusd planes)
        // on even cases, any weight zero point (the vpdpwssd planes) on odd ones.
        const bool symmetric = n % 2 == 0;
        c.inputs[5] = !symmetric ? zero_point(ws, {wn}, rng)
                                 : (ws ? Tensor::from_vector<int8_t>({wn}, std::vector<int8_t>(wn, 0))
                                       : Tensor::from_vector<uint8_t>({wn}, std::vector<uint8_t>(wn, 128)));
        if (c.inputs[8].defined()) {
          Tensor b(DType::kInt32, {ch});
          for (int64_t i = 0; i < ch; ++i) b.data<int32_t>()[i] = std::uniform_int_distribution<int32_t>(-20000, 20000)(rng);
          c.inputs[8] = b;
        }
        std::ostringstream os;
        os << "seed " << seed << " case " << n << ": x " << shape_to_string(c.x_shape) << " k " << k[0] << "x" << k[1]
           << " s " << sh << "," << sw << " d " << dh << ",1 pads " << pt << "," << pl << "," << pb << "," << pr
           << (xs ? " x s8" : " x u8") << (ws ? " w s8" : " w u8")
           << (c.inputs[7].dtype() == DType::kInt8 ? " y s8" : " y u8") << (symmetric ? " symmetric w" : "");
        SCOPED_TRACE(os.str());
        check_case(c, Path::kAvx512, 1 + n % 2, all_constant());
        if (::testing::Test::HasFatalFailure()) return;
        ++n;
      }
}

// The channels-last path (16 channels per vector, small planes), forced:
// channel counts around multiples of 16, planes 1x1..14x14 (and some to
// 30x30), stride 1 and 2 (and stride_h 3, dilation_h 2), pads, 3x3 / 5x5 and
// other kernels, zero points, per-channel and per-tensor scales, uint8/int8
// in and out, parameters as initializers and at run time, 1 and 2 threads.
// Symmetric weights on most cases (the path needs w - w_zp in int8; the
// others check the hand-over to the per-plane paths).
TEST(QDepthwiseConv, ChannelsLastSmallPlanesMatchReference) {
  if (!rt::qdw::avx512_supported()) GTEST_SKIP() << "CPU without AVX-512 VNNI (the path falls back to AVX2)";
  const uint32_t seed = 977;
  std::mt19937 rng(seed);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const int64_t channel_counts[] = {1, 3, 15, 16, 17, 31, 33, 48, 64, 77};
  const int64_t kernels[][2] = {{3, 3}, {3, 3}, {5, 5}, {1, 1}, {2, 3}, {3, 5}, {7, 7}};
  for (int n = 0; n < 160; ++n) {
    Case c = random_case(rng, n % 7 == 6);
    const auto& k = kernels[pick(0, 6)];
    const int64_t ch = channel_counts[pick(0, 9)];
    const int64_t sw = pick(1, 2), sh = pick(0, 5) == 0 ? 3 : pick(1, 2), dh = pick(0, 5) == 0 ? 2 : 1;
    // Mostly the planes the rule sends here, some up to 30x30 (forced).
    const int64_t h = n % 10 == 9 ? pick(15, 30) : pick(1, 14), w = n % 10 == 9 ? pick(15, 30) : pick(1, 14);
    const int64_t ext_h = (k[0] - 1) * dh + 1;
    // Enough pads that the window fits, some more.
    const int64_t pt = pick(0, 2), pl = pick(0, 2);
    const int64_t pb = std::max<int64_t>(ext_h - h - pt, pick(0, 2)), pr = std::max<int64_t>(k[1] - w - pl, pick(0, 2));
    c.x_shape = {pick(1, 3), ch, h, w};
    c.k_h = k[0], c.k_w = k[1];
    c.attrs = {ir::attr_int("group", ch), ir::attr_ints("strides", {sh, sw}), ir::attr_ints("dilations", {dh, 1}),
               ir::attr_ints("pads", {pt, pl, pb, pr})};
    const bool xs = c.inputs[0].dtype() == DType::kInt8, ws = c.inputs[3].dtype() == DType::kInt8;
    c.inputs[0] = codes_tensor(xs, c.x_shape, rng);
    c.inputs[3] = codes_tensor(ws, {ch, 1, k[0], k[1]}, rng);
    const int64_t wn = pick(0, 1) ? 1 : ch;
    Tensor wsc(DType::kFloat32, {wn});
    for (int64_t i = 0; i < wn; ++i) wsc.data<float>()[i] = std::uniform_real_distribution<float>(0.001f, 0.03f)(rng);
    c.inputs[4] = wsc;
    const bool symmetric = n % 8 != 7;
    c.inputs[5] = !symmetric ? zero_point(ws, {wn}, rng)
                             : (ws ? Tensor::from_vector<int8_t>({wn}, std::vector<int8_t>(wn, 0))
                                   : Tensor::from_vector<uint8_t>({wn}, std::vector<uint8_t>(wn, 128)));
    if (c.inputs[8].defined()) {
      Tensor b(DType::kInt32, {ch});
      std::uniform_int_distribution<int32_t> bias(-30000, 30000);
      for (int64_t i = 0; i < ch; ++i) b.data<int32_t>()[i] = bias(rng);
      c.inputs[8] = b;
    }
    std::vector<bool> constants = all_constant();
    if (n % 5 == 4) constants = {false, false, false, true, false, true, false, false, false};
    std::ostringstream os;
    os << "seed " << seed << " case " << n << ": x " << shape_to_string(c.x_shape) << " k " << k[0] << "x" << k[1]
       << " s " << sh << "," << sw << " d " << dh << ",1 pads " << pt << "," << pl << "," << pb << "," << pr
       << (xs ? " x s8" : " x u8") << (ws ? " w s8" : " w u8")
       << (c.inputs[7].dtype() == DType::kInt8 ? " y s8" : " y u8") << (wn == 1 ? " per-tensor" : " per-channel")
       << (symmetric ? " symmetric w" : "") << (n % 5 == 4 ? " params at run time" : "") << " x_zp "
       << c.inputs[2].get_as_int64(0) << " y_zp " << c.inputs[7].get_as_int64(0);
    SCOPED_TRACE(os.str());
    check_case(c, Path::kAvx512Channels, 1 + n % 2, constants);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

// The automatic choice (per-plane or channels-last by the plane-size rule) on
// the depthwise convs of mobilenetv2_fm (28x28 inputs), symmetric int8
// weights, against the reference.
TEST(QDepthwiseConv, AutoChoiceOnMobileNetV2SmallPlanes) {
  std::mt19937 rng(29);
  struct Geo {
    int64_t c, hw, stride;
  };
  const Geo geos[] = {{8, 14, 1}, {32, 14, 2}, {64, 7, 1}, {64, 7, 2}, {128, 4, 1}};
  for (const Geo& g : geos)
    for (bool x_signed : {false, true}) {
      Case c = random_case(rng, false);
      c.x_shape = {3, g.c, g.hw, g.hw};
      c.k_h = c.k_w = 3;
      c.attrs = {ir::attr_int("group", g.c), ir::attr_ints("strides", {g.stride, g.stride}),
                 ir::attr_ints("pads", {1, 1, 1, 1})};
      c.inputs[0] = codes_tensor(x_signed, c.x_shape, rng);
      c.inputs[2] = zero_point(x_signed, {}, rng);
      c.inputs[3] = codes_tensor(true, {g.c, 1, 3, 3}, rng);
      Tensor ws(DType::kFloat32, {g.c});
      for (int64_t i = 0; i < g.c; ++i) ws.data<float>()[i] = std::uniform_real_distribution<float>(0.002f, 0.02f)(rng);
      c.inputs[4] = ws;
      c.inputs[5] = Tensor::from_vector<int8_t>({g.c}, std::vector<int8_t>(g.c, 0));
      Tensor b(DType::kInt32, {g.c});
      for (int64_t i = 0; i < g.c; ++i) b.data<int32_t>()[i] = static_cast<int32_t>(i * 300 - 9000);
      c.inputs[8] = b;
      SCOPED_TRACE("c " + std::to_string(g.c) + " " + std::to_string(g.hw) + "x" + std::to_string(g.hw) + " stride " +
                   std::to_string(g.stride) + (x_signed ? " x s8" : " x u8") + ": " + c.text);
      check_case(c, Path::kAuto, 2, all_constant());
      if (::testing::Test::HasFatalFailure()) return;
    }
}

// The AVX2 planes' padded copy (stride 1 and 2 along W, no dilation along
// W): one column span per plane, converted 16 columns at a time with the
// last conversion moved back to end at the span's end, or column by column
// below 16; rows the windows never read are left out. Widths around the
// multiples of 16, pads of 0..3 on each side (so the span starts anywhere in
// a cache line), heights whose last rows stride 2 skips, odd channel counts
// (the scratch plane is reused, so a column left unwritten keeps the
// previous plane's value), u8 / s8 input with random zero points. Forced to
// the AVX2 tier (it runs there on an AVX-512 machine too), 1 and 2 threads.
TEST(QDepthwiseConv, Avx2PaddedCopyMatchesReference) {
  if (!rt::qdw::avx2_supported()) GTEST_SKIP() << "CPU without AVX2 (the path falls back to scalar)";
  const uint32_t seed = 5309;
  std::mt19937 rng(seed);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const int widths[] = {1, 2, 7, 14, 15, 16, 17, 18, 30, 31, 32, 33, 47, 48, 49, 56, 63, 64, 65, 81};
  for (int n = 0; n < 120; ++n) {
    Case c = random_case(rng, false);
    const int64_t ch = 2 * pick(0, 3) + 1, images = pick(1, 2);
    const int64_t kh = pick(0, 4) == 0 ? 5 : 3, kw = pick(0, 4) == 0 ? pick(1, 2) * 2 : 3;
    const int64_t sh = pick(1, 2), sw = pick(1, 2);
    const int64_t w = widths[pick(0, static_cast<int>(std::size(widths)) - 1)], h = pick(1, 21);
    const int64_t pt = pick(0, 3), pl = pick(0, 3);
    // Enough padding at the bottom / right for one window.
    const int64_t pb = std::max<int64_t>(kh - h - pt, pick(0, 3)), pr = std::max<int64_t>(kw - w - pl, pick(0, 3));
    const bool x_signed = pick(0, 1), w_signed = pick(0, 1);
    c.x_shape = {images, ch, h, w};
    c.k_h = kh, c.k_w = kw;
    c.attrs = {ir::attr_int("group", ch), ir::attr_ints("strides", {sh, sw}), ir::attr_ints("pads", {pt, pl, pb, pr})};
    c.inputs[0] = codes_tensor(x_signed, c.x_shape, rng);
    c.inputs[2] = zero_point(x_signed, {}, rng);
    c.inputs[3] = codes_tensor(w_signed, {ch, 1, kh, kw}, rng);
    Tensor ws(DType::kFloat32, {ch});
    for (int64_t i = 0; i < ch; ++i) ws.data<float>()[i] = std::uniform_real_distribution<float>(0.002f, 0.02f)(rng);
    c.inputs[4] = ws;
    c.inputs[5] = zero_point(w_signed, {ch}, rng);
    Tensor b(DType::kInt32, {ch});
    for (int64_t i = 0; i < ch; ++i) b.data<int32_t>()[i] = std::uniform_int_distribution<int32_t>(-20000, 20000)(rng);
    c.inputs[8] = b;
    // y_scale near the typical |acc| (as in random_case) so the codes spread over the range.
    const double typical = 128.0 * 64.0 * std::sqrt(static_cast<double>(kh * kw));
    c.inputs[6] = Tensor::scalar(static_cast<float>(c.inputs[1].get_as_double(0) * 0.05 * typical / 100.0 *
                                                    std::uniform_real_distribution<double>(0.3, 3.0)(rng)));
    std::ostringstream os;
    os << "seed " << seed << " case " << n << ": x " << shape_to_string(c.x_shape) << (x_signed ? " s8" : " u8")
       << " x_zp " << c.inputs[2].get_as_int64(0) << " k " << kh << "x" << kw << " s " << sh << "," << sw
       << " pads " << pt << "," << pl << "," << pb << "," << pr << " w " << (w_signed ? "s8" : "u8") << " y "
       << (c.inputs[7].dtype() == DType::kInt8 ? "s8" : "u8") << " y_zp " << c.inputs[7].get_as_int64(0);
    SCOPED_TRACE(os.str());
    check_case(c, Path::kAvx2, 1 + n % 2, all_constant());
    if (::testing::Test::HasFatalFailure()) return;
  }
}

// The AVX2 tier's 8-bit planes (stride 1, weights whose pairs fit
// vpmaddubsw: 7-bit symmetric weights): row widths around the 32-byte
// blocks and below 16, kernels 1x1 to 7x7 (quads with zero taps, two quads
// per row), u8 / s8 input with random zero points, biases, and channels
// whose one pair over the bound (|w0| + |w1| = 129) sends them to the int16
// planes. Against the reference, 1 and 2 threads.
TEST(QDepthwiseConv, Avx2U8PlanesWithSevenBitWeightsMatchReference) {
  if (!rt::qdw::avx2_supported()) GTEST_SKIP() << "CPU without AVX2 (the path falls back to scalar)";
  const uint32_t seed = 7717;
  std::mt19937 rng(seed);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const int widths[] = {1, 3, 7, 8, 14, 15, 16, 17, 28, 31, 32, 33, 56, 63, 64, 65};
  const int kernels[][2] = {{3, 3}, {3, 3}, {5, 5}, {1, 1}, {2, 2}, {3, 5}, {7, 7}, {4, 4}, {1, 6}};
  for (int n = 0; n < 120; ++n) {
    Case c = random_case(rng, false);
    const int64_t ch = pick(1, 5), images = pick(1, 2);
    const auto& k = kernels[pick(0, static_cast<int>(std::size(kernels)) - 1)];
    const int64_t kh = k[0], kw = k[1];
    const int64_t w = widths[pick(0, static_cast<int>(std::size(widths)) - 1)], h = pick(1, 19);
    const int64_t pt = pick(0, 3), pl = pick(0, 3);
    const int64_t pb = std::max<int64_t>(kh - h - pt, pick(0, 3)), pr = std::max<int64_t>(kw - w - pl, pick(0, 3));
    const bool x_signed = pick(0, 1), w_signed = pick(0, 1), over = pick(0, 3) == 0;
    c.x_shape = {images, ch, h, w};
    c.k_h = kh, c.k_w = kw;
    c.attrs = {ir::attr_int("group", ch), ir::attr_ints("pads", {pt, pl, pb, pr})};
    c.inputs[0] = codes_tensor(x_signed, c.x_shape, rng);
    c.inputs[2] = zero_point(x_signed, {}, rng);
    // 7-bit weights around the zero point (0 for int8, 128 for uint8).
    Tensor wt(w_signed ? DType::kInt8 : DType::kUInt8, {ch, 1, kh, kw});
    for (int64_t i = 0; i < wt.numel(); ++i) {
      const int v = pick(-64, 63) + (w_signed ? 0 : 128);
      if (w_signed) wt.data<int8_t>()[i] = static_cast<int8_t>(v);
      else wt.data<uint8_t>()[i] = static_cast<uint8_t>(v);
    }
    if (over && kw >= 2) {  // channel 0's first pair: |w0| + |w1| = 129
      const int a = pick(0, 1) ? 65 : -65, b = pick(0, 1) ? 64 : -64;
      if (w_signed) wt.data<int8_t>()[0] = static_cast<int8_t>(a), wt.data<int8_t>()[1] = static_cast<int8_t>(b);
      else wt.data<uint8_t>()[0] = static_cast<uint8_t>(a + 128), wt.data<uint8_t>()[1] = static_cast<uint8_t>(b + 128);
    }
    c.inputs[3] = wt;
    Tensor ws(DType::kFloat32, {ch});
    for (int64_t i = 0; i < ch; ++i) ws.data<float>()[i] = std::uniform_real_distribution<float>(0.002f, 0.02f)(rng);
    c.inputs[4] = ws;
    c.inputs[5] = w_signed ? Tensor::from_vector<int8_t>({ch}, std::vector<int8_t>(ch, 0))
                           : Tensor::from_vector<uint8_t>({ch}, std::vector<uint8_t>(ch, 128));
    Tensor b(DType::kInt32, {ch});
    for (int64_t i = 0; i < ch; ++i) b.data<int32_t>()[i] = std::uniform_int_distribution<int32_t>(-20000, 20000)(rng);
    c.inputs[8] = b;
    const double typical = 128.0 * 32.0 * std::sqrt(static_cast<double>(kh * kw));
    c.inputs[6] = Tensor::scalar(static_cast<float>(c.inputs[1].get_as_double(0) * 0.05 * typical / 100.0 *
                                                    std::uniform_real_distribution<double>(0.3, 3.0)(rng)));
    std::ostringstream os;
    os << "seed " << seed << " case " << n << ": x " << shape_to_string(c.x_shape) << (x_signed ? " s8" : " u8")
       << " x_zp " << c.inputs[2].get_as_int64(0) << " k " << kh << "x" << kw << " pads " << pt << "," << pl << ","
       << pb << "," << pr << " w " << (w_signed ? "s8" : "u8") << (over ? " (a pair over the bound)" : "") << " y "
       << (c.inputs[7].dtype() == DType::kInt8 ? "s8" : "u8") << " y_zp " << c.inputs[7].get_as_int64(0);
    SCOPED_TRACE(os.str());
    check_case(c, Path::kAvx2, 1 + n % 2, all_constant());
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(QDepthwiseConv, DeclinesWhatItDoesNotHandle) {
  std::mt19937 rng(3);
  Case c = random_case(rng, false);
  c.x_shape = {1, 4, 9, 9};
  c.inputs[0] = codes_tensor(false, c.x_shape, rng);
  c.inputs[3] = codes_tensor(true, {4, 1, 3, 3}, rng);
  c.inputs[5] = Tensor::scalar<int8_t>(0);
  c.inputs[4] = Tensor::scalar(0.01f);
  c.attrs = {ir::attr_int("group", 4)};
  const ir::Node node = make_node(c);
  {  // weights not an initializer
    std::vector<bool> constants(9, true);
    constants[3] = false;
    auto k = rt::try_make_qdepthwise_conv_kernel(make_init(node, c, constants));
    ASSERT_TRUE(k.ok());
    EXPECT_EQ(*k, nullptr);
  }
  {  // weight zero point computed at run time
    std::vector<bool> constants(9, true);
    constants[5] = false;
    auto k = rt::try_make_qdepthwise_conv_kernel(make_init(node, c, constants));
    ASSERT_TRUE(k.ok());
    EXPECT_EQ(*k, nullptr);
  }
  {  // x_zero_point absent (required by QLinearConv; the reference reports it)
    ir::Node n = node;
    n.inputs[2] = "";
    auto k = rt::try_make_qdepthwise_conv_kernel(make_init(n, c, all_constant()));
    ASSERT_TRUE(k.ok());
    EXPECT_EQ(*k, nullptr);
  }
  {  // not depthwise: group 1 with 4 output channels of 1 input channel
    Case g = c;
    g.attrs = {ir::attr_int("group", 1)};
    const ir::Node gn = make_node(g);
    auto k = rt::try_make_qdepthwise_conv_kernel(make_init(gn, g, all_constant()));
    ASSERT_TRUE(k.ok());
    EXPECT_EQ(*k, nullptr);
  }
  {  // 1-D conv
    Case r = c;
    r.inputs[3] = codes_tensor(true, {4, 1, 3}, rng);
    const ir::Node rn = make_node(r);
    auto k = rt::try_make_qdepthwise_conv_kernel(make_init(rn, r, all_constant()));
    ASSERT_TRUE(k.ok());
    EXPECT_EQ(*k, nullptr);
  }
}

// Bad input reaches the reference kernel's error, not a crash.
TEST(QDepthwiseConv, BadInputReportsTheReferenceError) {
  std::mt19937 rng(5);
  Case c = random_case(rng, false);
  c.x_shape = {1, 3, 8, 8};
  c.inputs[0] = codes_tensor(false, c.x_shape, rng);
  c.inputs[2] = Tensor::scalar<uint8_t>(3);
  c.inputs[3] = codes_tensor(true, {3, 1, 3, 3}, rng);
  c.inputs[4] = Tensor::scalar(0.01f);
  c.inputs[5] = Tensor::scalar<int8_t>(0);
  c.attrs = {ir::attr_int("group", 3)};
  c.inputs[8] = Tensor(DType::kInt32, {5});  // wrong bias length
  const ir::Node node = make_node(c);
  auto k = rt::try_make_qdepthwise_conv_kernel(make_init(node, c, all_constant()));
  ASSERT_TRUE(k.ok());
  ASSERT_NE(*k, nullptr);
  rt::ThreadPool pool(1);
  auto y = run_kernel(**k, c, pool);
  ASSERT_FALSE(y.ok());
  EXPECT_NE(y.status().message().find("bias"), std::string::npos) << y.status().message();
  // Input with the wrong channel count.
  c.inputs[8] = Tensor(DType::kInt32, {3});
  c.x_shape = {1, 5, 8, 8};
  c.inputs[0] = codes_tensor(false, c.x_shape, rng);
  auto y2 = run_kernel(**k, c, pool);
  EXPECT_FALSE(y2.ok());
}

}  // namespace
}  // namespace qtk
