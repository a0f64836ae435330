// The int8 kernels that let their packed weights go (QLinearConv /
// ConvInteger through the implicit-GEMM conv, QGemm, QLinearMatMul,
// MatMulInteger; VNNI and AVX2 tiers): the VNNI layout must give back the exact codes, the kernel must never read the
// weights it let go (it gets garbage here), and where it falls back to the
// reference kernel the rebuilt weights must give the reference's result.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "ir/graph.h"
#include "runtime/kernels/x86/qgemm.h"
#include "runtime/kernels/x86/qgemm_conv.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk::rt {
namespace {

bool vnni() { return x86::qgemm_resolve_path(x86::QgemmPath::kAuto) == x86::QgemmPath::kAvx512Vnni; }

Tensor random_codes(DType t, Shape shape, uint32_t seed) {
  Tensor r(t, std::move(shape));
  std::mt19937 g(seed);
  std::uniform_int_distribution<int> d(0, 255);
  for (int64_t i = 0; i < r.numel(); ++i) static_cast<uint8_t*>(r.raw())[i] = static_cast<uint8_t>(d(g));
  return r;
}

Tensor scalar_code(DType t, int v) {
  Tensor r(t, {});
  static_cast<uint8_t*>(r.raw())[0] = static_cast<uint8_t>(v);
  return r;
}

TEST(PackedConstantReleaseInt8, QuadLayoutGivesBackTheCodes) {
  if (!vnni()) GTEST_SKIP() << "no AVX-512 VNNI: the quad layout is not packed";
  struct Case {
    int64_t out_c, in_c_per_group, kh, kw, group;
    bool is_signed;
  };
  for (const Case c : {Case{16, 8, 3, 3, 1, true}, Case{20, 3, 3, 3, 1, false}, Case{12, 5, 1, 1, 3, true},
                       Case{8, 1, 3, 3, 8, false}, Case{33, 6, 2, 3, 1, false}}) {
    const int64_t k = c.in_c_per_group * c.kh * c.kw;
    const Tensor w = random_codes(c.is_signed ? DType::kInt8 : DType::kUInt8, {c.out_c, c.in_c_per_group, c.kh, c.kw},
                                  static_cast<uint32_t>(c.out_c * 7 + k));
    x86::QconvWeights packed;
    x86::qconv_pack_weights({w.raw(), c.is_signed, k, 1}, c.out_c, c.in_c_per_group, c.kh, c.kw, c.group, {3},
                            packed, std::make_shared<const Tensor>(w));
    std::vector<uint8_t> back(static_cast<size_t>(w.numel()), 0);
    x86::qconv_unpack_quad_weights(packed, c.is_signed, back.data());
    EXPECT_EQ(std::memcmp(back.data(), w.raw(), back.size()), 0)
        << "out_c " << c.out_c << " in_c " << c.in_c_per_group << " group " << c.group;
  }
}

struct Built {
  std::unique_ptr<Kernel> kernel;
  bool released = false;
};

// The node's kernel from the global registry, with constant inputs `constant`
// (by position) and, when `release`, a release_constant that accepts.
// With `consumable` (input index, storage), a consumable_constant that hands
// that storage out for that input.
Built build(const ir::Node& node, const std::vector<Tensor>& inputs, const std::vector<bool>& constant, bool release,
            std::pair<size_t, void*> consumable = {0, nullptr}) {
  Built b;
  KernelInit init{node, 19, {}, [&](size_t i) -> const Tensor* {
                    return i < inputs.size() && constant[i] && inputs[i].defined() ? &inputs[i] : nullptr;
                  }};
  if (consumable.second != nullptr)
    init.consumable_constant = [consumable](size_t i) { return i == consumable.first ? consumable.second : nullptr; };
  if (release)
    init.release_constant = [&](size_t, uint64_t) {
      b.released = true;
      return true;
    };
  const KernelFactory* f = OpRegistry::global().find(node.domain, node.op_type, 19);
  EXPECT_NE(f, nullptr);
  auto k = (*f)(init);
  EXPECT_TRUE(k.ok()) << k.status().message();
  if (k.ok()) b.kernel = std::move(*k);
  return b;
}

// Runs `node` with its weights (input w) let go and replaced by garbage, and
// with the reference kernel on the real inputs: same outputs or same error.
void expect_let_go_matches_reference(const ir::Node& node, const std::vector<Tensor>& inputs,
                                     const std::vector<bool>& constant, size_t w, const std::string& what,
                                     bool must_succeed = true) {
  SCOPED_TRACE(what);
  Built opt = build(node, inputs, constant, true);
  ASSERT_TRUE(opt.kernel);
  ASSERT_TRUE(opt.released) << "the kernel kept its weights";
  const KernelFactory* rf = OpRegistry::reference().find(node.domain, node.op_type, 19);
  ASSERT_NE(rf, nullptr);
  KernelInit rinit{node, 19, {}, [](size_t) -> const Tensor* { return nullptr; }};
  auto ref = (*rf)(rinit);
  ASSERT_TRUE(ref.ok());
  Tensor garbage = random_codes(inputs[w].dtype(), inputs[w].shape(), 99);
  ThreadPool pool(1);
  KernelContext a, b;
  for (const auto& t : inputs) b.inputs.push_back(t.defined() ? &t : nullptr);
  a.inputs = b.inputs;
  a.inputs[w] = &garbage;
  a.outputs.resize(1);
  b.outputs.resize(1);
  a.pool = b.pool = &pool;
  const Status sa = opt.kernel->run(a), sb = (*ref)->run(b);
  ASSERT_EQ(sa.ok(), sb.ok()) << "let go: " << sa.message() << " / reference: " << sb.message();
  EXPECT_EQ(sb.ok(), must_succeed) << sb.message();
  if (!sa.ok()) {
    EXPECT_EQ(sa.message(), sb.message());
    return;
  }
  ASSERT_EQ(a.outputs[0].shape(), b.outputs[0].shape());
  ASSERT_EQ(a.outputs[0].dtype(), b.outputs[0].dtype());
  EXPECT_EQ(std::memcmp(a.outputs[0].raw(), b.outputs[0].raw(), a.outputs[0].nbytes()), 0);
}

ir::Node qlinear_conv_node(std::vector<int64_t> pads) {
  ir::Node n;
  n.name = "conv";
  n.op_type = "QLinearConv";
  for (int i = 0; i < 9; ++i) n.inputs.push_back("in" + std::to_string(i));
  n.outputs = {"y"};
  n.attrs = {ir::attr_ints("pads", std::move(pads))};
  return n;
}

TEST(PackedConstantReleaseInt8, QLinearConvNeverReadsItsLetGoWeights) {
  if (x86::qgemm_resolve_path(x86::QgemmPath::kAuto) == x86::QgemmPath::kScalar) GTEST_SKIP() << "the scalar tier keeps W";
  for (DType wt : {DType::kInt8, DType::kUInt8}) {
    std::vector<Tensor> in = {random_codes(DType::kUInt8, {2, 8, 9, 9}, 1), Tensor::scalar<float>(0.05f),
                              scalar_code(DType::kUInt8, 120), random_codes(wt, {16, 8, 3, 3}, 2),
                              Tensor::scalar<float>(0.02f), scalar_code(wt, wt == DType::kInt8 ? 0 : 128),
                              Tensor::scalar<float>(0.3f), scalar_code(DType::kUInt8, 100), Tensor(DType::kInt32, {16})};
    for (int64_t i = 0; i < 16; ++i) in[8].data<int32_t>()[i] = static_cast<int32_t>(i * 37 - 300);
    const std::vector<bool> constant = {false, true, true, true, true, true, true, true, true};
    const std::string w = wt == DType::kInt8 ? "int8 W" : "uint8 W";
    expect_let_go_matches_reference(qlinear_conv_node({1, 1, 1, 1}), in, constant, 3, w + ", packed path");
    // A per-channel x zero point: the packed path does not take it, the
    // reference does, with the weights rebuilt from the quads.
    std::vector<Tensor> per_channel = in;
    per_channel[2] = random_codes(DType::kUInt8, {8}, 5);
    expect_let_go_matches_reference(qlinear_conv_node({1, 1, 1, 1}), per_channel,
                                    {false, true, false, true, true, true, true, true, true}, 3, w + ", reference path");
    // Negative pads: the fallback, and the reference's error.
    expect_let_go_matches_reference(qlinear_conv_node({-1, 0, 0, -1}), in, constant, 3, w + ", error path", false);
  }
}

// A QGemm node reading in0..in8 (A, its scale and zero point, B, its scale
// and zero point, C, y's scale and zero point).
ir::Node qgemm_node(bool trans_b) {
  ir::Node n;
  n.name = "qgemm";
  n.op_type = "QGemm";
  n.domain = "com.microsoft";
  for (int i = 0; i < 9; ++i) n.inputs.push_back("in" + std::to_string(i));
  n.outputs = {"y"};
  n.attrs = {ir::attr_int("transB", trans_b ? 1 : 0)};
  return n;
}

TEST(PackedConstantReleaseInt8, QGemmNeverReadsItsLetGoWeights) {
  if (x86::qgemm_resolve_path(x86::QgemmPath::kAuto) == x86::QgemmPath::kScalar) GTEST_SKIP() << "the scalar tier keeps B";
  for (bool trans_b : {false, true}) {
    for (DType bt : {DType::kInt8, DType::kUInt8}) {
      const ir::Node n = qgemm_node(trans_b);
      const int64_t m = 3, k = 37, nn = 21;
      std::vector<Tensor> in = {random_codes(DType::kUInt8, {m, k}, 1), Tensor::scalar<float>(0.05f),
                                scalar_code(DType::kUInt8, 120),
                                random_codes(bt, trans_b ? Shape{nn, k} : Shape{k, nn}, 2),
                                Tensor::scalar<float>(0.02f), scalar_code(bt, bt == DType::kInt8 ? 3 : 130),
                                Tensor(DType::kInt32, {nn}), Tensor::scalar<float>(0.3f),
                                scalar_code(DType::kUInt8, 100)};
      for (int64_t i = 0; i < nn; ++i) in[6].data<int32_t>()[i] = static_cast<int32_t>(i * 51 - 400);
      const std::vector<bool> constant = {false, true, true, true, true, true, true, true, true};
      const std::string what = std::string(trans_b ? "B^T " : "B ") + (bt == DType::kInt8 ? "int8" : "uint8");
      expect_let_go_matches_reference(n, in, constant, 3, what + ", packed path");
      // C that does not broadcast: the fallback, and the reference's error.
      std::vector<Tensor> bad = in;
      bad[6] = Tensor(DType::kInt32, {2, nn});
      expect_let_go_matches_reference(n, bad, constant, 3, what + ", error path", false);
    }
  }
}

// B given transposed and consumable: the packing lets the packed panels'
// pages go as it moves on (they read zero after), and the kernel's results
// are still the reference's on the original codes.
TEST(PackedConstantReleaseInt8, QGemmConsumesItsTransposedWeightsWhilePacking) {
  // The VNNI and AVX2 tiers both consume it; the scalar tier keeps B.
  if (x86::qgemm_resolve_path(x86::QgemmPath::kAuto) == x86::QgemmPath::kScalar) GTEST_SKIP() << "the scalar tier keeps B";
  const ir::Node n = qgemm_node(true);
  const int64_t m = 5, k = 3000, nn = 40;  // B^T: 120 KB, 30 pages
  std::vector<Tensor> in = {random_codes(DType::kUInt8, {m, k}, 1), Tensor::scalar<float>(0.05f),
                            scalar_code(DType::kUInt8, 120), random_codes(DType::kInt8, {nn, k}, 2),
                            Tensor::scalar<float>(0.002f), scalar_code(DType::kInt8, 0), Tensor(DType::kInt32, {nn}),
                            Tensor::scalar<float>(0.3f), scalar_code(DType::kUInt8, 100)};
  for (int64_t i = 0; i < nn; ++i) in[6].data<int32_t>()[i] = static_cast<int32_t>(i * 51 - 400);
  const std::vector<bool> constant = {false, true, true, true, true, true, true, true, true};
  Tensor consumed = in[3].clone();
  for (int64_t i = 0; i < consumed.numel(); ++i)  // no zero code: a discarded page shows
    if (consumed.data<int8_t>()[i] == 0) consumed.data<int8_t>()[i] = 1;
  in[3] = consumed.clone();
  std::vector<Tensor> packed_from = in;
  packed_from[3] = consumed;
  Built opt = build(n, packed_from, constant, true, {3, consumed.raw()});
  ASSERT_TRUE(opt.kernel);
  ASSERT_TRUE(opt.released);
  int64_t zeros = 0;
  for (int64_t i = 0; i < consumed.numel(); ++i) zeros += consumed.data<int8_t>()[i] == 0;
  EXPECT_GE(zeros, 16 * 4096) << "the packed panels' pages were not let go";
  const KernelFactory* rf = OpRegistry::reference().find(n.domain, n.op_type, 19);
  ASSERT_NE(rf, nullptr);
  KernelInit rinit{n, 19, {}, [](size_t) -> const Tensor* { return nullptr; }};
  auto ref = (*rf)(rinit);
  ASSERT_TRUE(ref.ok());
  ThreadPool pool(1);
  KernelContext a, b;
  for (const auto& t : in) b.inputs.push_back(&t);
  a.inputs = b.inputs;
  a.inputs[3] = &consumed;  // what is left of it: never read
  a.outputs.resize(1);
  b.outputs.resize(1);
  a.pool = b.pool = &pool;
  ASSERT_TRUE(opt.kernel->run(a).ok());
  ASSERT_TRUE((*ref)->run(b).ok());
  ASSERT_EQ(a.outputs[0].shape(), b.outputs[0].shape());
  EXPECT_EQ(std::memcmp(a.outputs[0].raw(), b.outputs[0].raw(), a.outputs[0].nbytes()), 0);
}

}  // namespace
}  // namespace qtk::rt

namespace qtk::rt {
namespace {

ir::Node node_of(const std::string& op, int inputs) {
  ir::Node n;
  n.name = op;
  n.op_type = op;
  for (int i = 0; i < inputs; ++i) n.inputs.push_back("in" + std::to_string(i));
  n.outputs = {"y"};
  return n;
}

// QLinearMatMul and MatMulInteger with a constant B hold it once packed on
// the VNNI and AVX2 tiers (the scalar tier keeps the initializer).
TEST(PackedConstantReleaseInt8, MatMulsNeverReadTheirLetGoWeights) {
  if (x86::qgemm_resolve_path(x86::QgemmPath::kAuto) == x86::QgemmPath::kScalar) GTEST_SKIP() << "the scalar tier keeps B";
  const int64_t m = 7, k = 45, nn = 19;
  for (int kind = 0; kind < 3; ++kind) {
    // int8, 7-bit int8 with zero point 0 (the AVX2 tier's u8 x s8 layout), uint8.
    const DType bt = kind < 2 ? DType::kInt8 : DType::kUInt8;
    const std::string what = kind == 0 ? "int8 B" : kind == 1 ? "7-bit B" : "uint8 B";
    const Tensor a = random_codes(DType::kUInt8, {2, m, k}, 1);
    Tensor b = random_codes(bt, {k, nn}, 2);
    if (kind == 1)
      for (int64_t i = 0; i < b.numel(); ++i) b.data<int8_t>()[i] = static_cast<int8_t>(b.data<int8_t>()[i] / 2);
    const Tensor bzp = scalar_code(bt, kind == 0 ? -3 : kind == 1 ? 0 : 131);
    std::vector<Tensor> q = {a, Tensor::scalar<float>(0.05f), scalar_code(DType::kUInt8, 120), b,
                             Tensor::scalar<float>(0.02f), bzp, Tensor::scalar<float>(0.3f), scalar_code(DType::kUInt8, 100)};
    const std::vector<bool> qc = {false, true, true, true, true, true, true, true};
    expect_let_go_matches_reference(node_of("QLinearMatMul", 8), q, qc, 3, "QLinearMatMul " + what + ", packed path");
    // A whose inner size is not B's: the fallback, and the reference's error.
    std::vector<Tensor> bad = q;
    bad[0] = random_codes(DType::kUInt8, {m, k + 1}, 3);
    expect_let_go_matches_reference(node_of("QLinearMatMul", 8), bad, qc, 3, "QLinearMatMul " + what + ", error path",
                                    false);
    std::vector<Tensor> mi = {a, b, scalar_code(DType::kUInt8, 7), bzp};
    const std::vector<bool> mc = {false, true, false, true};
    expect_let_go_matches_reference(node_of("MatMulInteger", 4), mi, mc, 1, "MatMulInteger " + what + ", packed path");
    // Per-row A zero points: the packed path does not take them, the
    // reference does, with B rebuilt from the packed layout.
    std::vector<Tensor> per_row = mi;
    per_row[0] = random_codes(DType::kUInt8, {m, k}, 4);
    per_row[2] = random_codes(DType::kUInt8, {m}, 5);
    expect_let_go_matches_reference(node_of("MatMulInteger", 4), per_row, mc, 1,
                                    "MatMulInteger " + what + ", reference path");
  }
}

}  // namespace
}  // namespace qtk::rt
