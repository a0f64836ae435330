// MatMulNBits at accuracy_level 4 (kernels/x86/qnbits.h): every tier
// (scalar, AVX2, AVX-512 VNNI, where the CPU has them) bit for bit against
// the plain reference (rt::matmul_nbits_int8_reference) on random shapes; the
// session picks the packed kernel and stays within the A-quantization error
// bound of the float (level 0) result; bad operands are errors that name the
// node and the problem.
#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#if __GLIBC_PREREQ(2, 33) && !defined(__SANITIZE_ADDRESS__)
#define QTK_TEST_HEAP_STATS 1  // mallinfo2, meaningful without a sanitizer's allocator
#endif
#endif

#include "data/dataset.h"
#include "ir/graph.h"
#include "qtk/model.h"
#include "qtk/quantize.h"
#include "qtk/session.h"
#include "runtime/kernels/ref/matmul_nbits.h"
#include "runtime/kernels/x86/qnbits.h"
#include "runtime/thread_pool.h"

namespace qtk {
namespace {

using rt::x86::QgemmPath;

struct Operands {
  rt::MatMulNBitsAttrs at;
  std::vector<float> a, scales, bias;
  std::vector<uint8_t> b, zp;
};

Operands random_operands(std::mt19937& rng, int64_t m, int64_t k, int64_t n, int64_t bits, int64_t block, bool zp,
                         bool bias) {
  Operands o;
  o.at = {k, n, bits, block, 4};
  const int64_t blocks = (k + block - 1) / block;
  std::uniform_real_distribution<float> real(-1.f, 1.f);
  std::uniform_int_distribution<int> byte(0, 255);
  o.a.resize(static_cast<size_t>(m * k));
  for (auto& v : o.a) v = real(rng) * (rng() % 4 == 0 ? 30.f : 1.f);  // some blocks with a wide range
  if (m > 1 && k > 0)
    for (int64_t i = 0; i < std::min<int64_t>(k, block); ++i) o.a[static_cast<size_t>(k + i)] = 0.f;  // a zero block
  o.b.resize(static_cast<size_t>(n * blocks * block * bits / 8));
  for (auto& v : o.b) v = static_cast<uint8_t>(byte(rng));
  o.scales.resize(static_cast<size_t>(n * blocks));
  for (auto& v : o.scales) v = 0.001f + 0.1f * std::fabs(real(rng));
  if (zp) {
    o.zp.resize(static_cast<size_t>(n * ((blocks * bits + 7) / 8)));
    for (auto& v : o.zp) v = static_cast<uint8_t>(byte(rng));
  }
  if (bias) {
    o.bias.resize(static_cast<size_t>(n));
    for (auto& v : o.bias) v = real(rng);
  }
  return o;
}

std::vector<float> reference(const Operands& o, int64_t m) {
  std::vector<float> y(static_cast<size_t>(m * o.at.n), -1.f);
  rt::matmul_nbits_int8_reference(o.at, m, o.a.data(), o.b.data(), o.scales.data(),
                                  o.zp.empty() ? nullptr : o.zp.data(), o.bias.empty() ? nullptr : o.bias.data(),
                                  y.data());
  return y;
}

std::vector<float> tier(const Operands& o, int64_t m, QgemmPath path, rt::ThreadPool* pool) {
  rt::x86::QnbitsPacked w;
  rt::x86::qnbits_pack(o.at.k, o.at.n, o.at.bits, o.at.block, o.b.data(), o.scales.data(),
                       o.zp.empty() ? nullptr : o.zp.data(), w);
  std::vector<float> y(static_cast<size_t>(m * o.at.n), -1.f);
  rt::x86::qnbits_gemm(m, o.a.data(), w, o.bias.empty() ? nullptr : o.bias.data(), y.data(), pool, path);
  return y;
}

bool same_bits(const std::vector<float>& x, const std::vector<float>& y) {
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

std::string first_difference(const std::vector<float>& got, const std::vector<float>& want) {
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0)
      return "first difference at " + std::to_string(i) + ": " + std::to_string(got[i]) + " vs " +
             std::to_string(want[i]);
  return "sizes differ";
}

const QgemmPath kTiers[] = {QgemmPath::kScalar, QgemmPath::kAvx2, QgemmPath::kAvx512Vnni};

TEST(QnbitsKernel, EveryTierMatchesReferenceBitForBit) {
  std::mt19937 shape_rng(2024);
  for (int trial = 0; trial < 60; ++trial) {
    const uint32_t seed = shape_rng();
    std::mt19937 rng(seed);
    const int64_t bits = std::vector<int64_t>{2, 4, 8}[trial % 3];
    const int64_t block = int64_t{16} << (rng() % 4);  // 16 .. 128
    const int64_t m = 1 + rng() % 9, n = 1 + rng() % 71, k = 1 + rng() % 300;
    const bool zp = rng() % 2, bias = rng() % 2;
    const std::string what = "seed=" + std::to_string(seed) + " M=" + std::to_string(m) + " N=" + std::to_string(n) +
                             " K=" + std::to_string(k) + " bits=" + std::to_string(bits) +
                             " block=" + std::to_string(block) + " zp=" + std::to_string(zp) +
                             " bias=" + std::to_string(bias);
    const Operands o = random_operands(rng, m, k, n, bits, block, zp, bias);
    const std::vector<float> want = reference(o, m);
    for (QgemmPath p : kTiers) {
      const std::vector<float> got = tier(o, m, p, nullptr);
      EXPECT_TRUE(same_bits(got, want)) << what << " tier=" << rt::x86::qgemm_path_name(rt::x86::qgemm_resolve_path(p))
                                        << ": " << first_difference(got, want);
    }
  }
}

// Big enough to split over threads (M·N·K >= kQgemmMinParallelMacs), and to
// run every micro-kernel shape: row groups of 4 plus a remainder, panel
// chunks plus a partial panel.
TEST(QnbitsKernel, ThreadedMatchesReferenceBitForBit) {
  rt::ThreadPool pool(2);
  for (int64_t bits : {2, 4, 8}) {
    const uint32_t seed = static_cast<uint32_t>(100 + bits);
    std::mt19937 rng(seed);
    const int64_t m = 11, n = 200, k = 1000, block = 32;
    ASSERT_GE(m * n * k, rt::x86::detail::kQgemmMinParallelMacs);
    const Operands o = random_operands(rng, m, k, n, bits, block, bits != 4, true);
    const std::vector<float> want = reference(o, m);
    for (QgemmPath p : kTiers) {
      const std::vector<float> got = tier(o, m, p, &pool);
      EXPECT_TRUE(same_bits(got, want)) << "seed=" << seed << " bits=" << bits
                                        << " tier=" << rt::x86::qgemm_path_name(rt::x86::qgemm_resolve_path(p)) << ": "
                                        << first_difference(got, want);
    }
  }
}

// A non-finite activation makes its row NaN (as float would), in every tier;
// other rows are unaffected.
TEST(QnbitsKernel, NonFiniteActivationGivesNanRow) {
  std::mt19937 rng(5);
  const int64_t m = 2, n = 20, k = 64;
  Operands o = random_operands(rng, m, k, n, 4, 32, false, false);
  o.a[40] = std::numeric_limits<float>::infinity();  // row 0, block 1
  const std::vector<float> want = reference(o, m);
  for (QgemmPath p : kTiers) {
    const std::vector<float> got = tier(o, m, p, nullptr);
    for (int64_t i = 0; i < m * n; ++i) {
      if (i < n) EXPECT_TRUE(std::isnan(got[i])) << i;
      else EXPECT_EQ(got[i], want[i]) << i;
    }
  }
}

ir::ValueInfo value(const std::string& name, DType dt) {
  ir::ValueInfo v;
  v.name = name;
  v.dtype = dt;
  return v;
}

// One MatMulNBits node, operands as initializers.
ir::Model nbits_model(const Operands& o, int64_t accuracy_level) {
  ir::Model m;
  m.opsets = {{"", 17}, {"com.microsoft", 1}};
  ir::Node node;
  node.name = "fc_nbits";
  node.op_type = "MatMulNBits";
  node.domain = "com.microsoft";
  node.inputs = {"a", "b", "s", o.zp.empty() ? "" : "z", "", o.bias.empty() ? "" : "bias"};
  while (node.inputs.back().empty()) node.inputs.pop_back();
  node.outputs = {"y"};
  node.attrs = {ir::attr_int("K", o.at.k), ir::attr_int("N", o.at.n), ir::attr_int("bits", o.at.bits),
                ir::attr_int("block_size", o.at.block), ir::attr_int("accuracy_level", accuracy_level)};
  m.graph.nodes.push_back(node);
  m.graph.inputs.push_back(value("a", DType::kFloat32));
  m.graph.outputs.push_back(value("y", DType::kFloat32));
  const int64_t blocks = (o.at.k + o.at.block - 1) / o.at.block;
  Tensor b(DType::kUInt8, {o.at.n, blocks, o.at.block * o.at.bits / 8});
  std::memcpy(b.data<uint8_t>(), o.b.data(), o.b.size());
  Tensor s(DType::kFloat32, {static_cast<int64_t>(o.scales.size())});
  std::memcpy(s.data<float>(), o.scales.data(), o.scales.size() * sizeof(float));
  m.graph.set_initializer("b", b);
  m.graph.set_initializer("s", s);
  if (!o.zp.empty()) {
    Tensor z(DType::kUInt8, {static_cast<int64_t>(o.zp.size())});
    std::memcpy(z.data<uint8_t>(), o.zp.data(), o.zp.size());
    m.graph.set_initializer("z", z);
  }
  if (!o.bias.empty()) {
    Tensor bias(DType::kFloat32, {o.at.n});
    std::memcpy(bias.data<float>(), o.bias.data(), o.bias.size() * sizeof(float));
    m.graph.set_initializer("bias", bias);
  }
  return m;
}

std::vector<float> run_session(const ir::Model& model, const Tensor& a, SessionOptions options = {}) {
  auto s = Session::create(model, options);
  EXPECT_TRUE(s.ok()) << s.status().message();
  if (!s.ok()) return {};
  auto out = (*s)->run(std::vector<Tensor>{a});
  EXPECT_TRUE(out.ok()) << out.status().message();
  if (!out.ok()) return {};
  const Tensor& y = (*out)[0];
  return std::vector<float>(y.data<float>(), y.data<float>() + y.numel());
}

// accuracy_level 4 in a session: the optimized kernel equals the reference
// kernel bit for bit, and differs from the float result (level 0) by no more
// than A's rounding allows: |Δy[m, n]| <= Σ_blocks (max|a_blk| / 254) ·
// Σ_{k in blk} |w[k, n]| (half a step of A's int8 grid per value), plus float
// rounding (1e-4 relative to Σ |a·w|).
TEST(QnbitsSession, Level4WithinQuantizationBoundOfFloat) {
  for (int64_t bits : {2, 4}) {
    for (bool zp : {false, true}) {
      SCOPED_TRACE("bits=" + std::to_string(bits) + " zp=" + std::to_string(zp));
      std::mt19937 rng(static_cast<uint32_t>(11 + bits + zp));
      const int64_t m = 3, k = 200, n = 37, block = 32, blocks = (k + block - 1) / block;
      const Operands o = random_operands(rng, m, k, n, bits, block, zp, true);
      Tensor a(DType::kFloat32, {m, k});
      std::memcpy(a.data<float>(), o.a.data(), o.a.size() * sizeof(float));
      const std::vector<float> y4 = run_session(nbits_model(o, 4), a);
      const std::vector<float> y4_ref = run_session(nbits_model(o, 4), a, {.reference_kernels = true});
      const std::vector<float> y0 = run_session(nbits_model(o, 0), a);
      ASSERT_EQ(y4.size(), static_cast<size_t>(m * n));
      EXPECT_TRUE(same_bits(y4, y4_ref)) << first_difference(y4, y4_ref);
      EXPECT_TRUE(same_bits(y4, reference(o, m))) << first_difference(y4, reference(o, m));
      const int64_t per_byte = 8 / bits, zbytes = (blocks * bits + 7) / 8;
      double worst_ratio = 0;
      for (int64_t r = 0; r < m; ++r)
        for (int64_t col = 0; col < n; ++col) {
          double bound = 0, mag = 0;
          for (int64_t kb = 0; kb < blocks; ++kb) {
            double amax = 0, wsum = 0;
            const int z = zp ? (o.zp[col * zbytes + kb / per_byte] >> (bits * (kb % per_byte))) & ((1 << bits) - 1)
                             : 1 << (bits - 1);
            for (int64_t kk = kb * block; kk < std::min(k, (kb + 1) * block); ++kk) {
              const int64_t j = kk - kb * block;
              const int c = (o.b[(col * blocks + kb) * (block * bits / 8) + j / per_byte] >> (bits * (j % per_byte))) &
                            ((1 << bits) - 1);
              const double w = (c - z) * static_cast<double>(o.scales[col * blocks + kb]);
              amax = std::max(amax, std::fabs(static_cast<double>(o.a[r * k + kk])));
              wsum += std::fabs(w);
              mag += std::fabs(w * o.a[r * k + kk]);
            }
            bound += amax / 254.0 * wsum;
          }
          const double diff = std::fabs(static_cast<double>(y4[r * n + col]) - y0[r * n + col]);
          const double allowed = bound + 1e-4 * mag + 1e-6;
          EXPECT_LE(diff, allowed) << "row " << r << " col " << col;
          worst_ratio = std::max(worst_ratio, diff / allowed);
        }
      EXPECT_GT(worst_ratio, 0.0);  // the two paths do differ: level 4 ran the int8 arithmetic
    }
  }
}

// B, scales and zero points fed at run time (no packing possible): the
// reference kernel runs the same int8 arithmetic, so level 4 means the same
// numbers whether the weights are initializers or not.
TEST(QnbitsSession, Level4RuntimeWeightsSameBitsAsPacked) {
  std::mt19937 rng(21);
  const Operands o = random_operands(rng, 4, 90, 33, 4, 16, true, true);
  Tensor a(DType::kFloat32, {4, 90});
  std::memcpy(a.data<float>(), o.a.data(), o.a.size() * sizeof(float));
  const ir::Model constant = nbits_model(o, 4);
  ir::Model runtime = constant;
  std::vector<Tensor> feeds = {a};
  for (const char* name : {"b", "s", "z"}) {
    feeds.push_back(*runtime.graph.find_initializer(name));
    runtime.graph.initializers.erase(name);
    runtime.graph.inputs.push_back(value(name, feeds.back().dtype()));
  }
  auto s = Session::create(runtime);
  ASSERT_TRUE(s.ok()) << s.status().message();
  auto out = (*s)->run(feeds);
  ASSERT_TRUE(out.ok()) << out.status().message();
  const std::vector<float> got((*out)[0].data<float>(), (*out)[0].data<float>() + (*out)[0].numel());
  const std::vector<float> packed = run_session(constant, a);
  EXPECT_TRUE(same_bits(got, packed)) << first_difference(got, packed);
}

// QuantConfig::nbits_accuracy_level reaches the MatMulNBits nodes of a
// QOperator export (qtk quantize --nbits-accuracy int8), and the model
// classifies like the float-level export.
TEST(QnbitsSession, QuantizeWritesAccuracyLevel) {
  auto model = load_model(std::string(QTK_MODELS_DIR) + "/mlp.onnx");
  ASSERT_TRUE(model.ok());
  auto calib = data::load_dataset("fashion-mnist:train", 64);
  ASSERT_TRUE(calib.ok());
  std::vector<float> outputs[2];
  for (int64_t level : {0, 4}) {
    QuantConfig c;
    c.weight_format = quant::QFormat::kInt4;
    c.method = WeightMethod::kRtn;
    c.granularity = Granularity::kPerGroup;
    c.group_size = 32;
    c.activations = ActivationMode::kWeightOnly;
    c.format = ExportFormat::kQOperator;
    c.nbits_accuracy_level = level;
    auto q = quantize(*model, c, CalibrationData{{calib->images}});
    ASSERT_TRUE(q.ok()) << q.status().message();
    int nodes = 0;
    for (const auto& n : q->model.graph.nodes) {
      if (n.op_type != "MatMulNBits") continue;
      ++nodes;
      EXPECT_EQ(n.attr_int("accuracy_level", -1), level == 0 ? -1 : level) << n.name;  // 0: left unset
    }
    EXPECT_EQ(nodes, 3);
    outputs[level == 4] = run_session(q->model, calib->images);
  }
  ASSERT_EQ(outputs[0].size(), outputs[1].size());
  const int64_t classes = 10, samples = static_cast<int64_t>(outputs[0].size()) / classes;
  int same = 0;
  for (int64_t i = 0; i < samples; ++i) {
    auto top = [&](const std::vector<float>& y) {
      return std::max_element(y.begin() + i * classes, y.begin() + (i + 1) * classes) - (y.begin() + i * classes);
    };
    same += top(outputs[0]) == top(outputs[1]);
  }
  EXPECT_GE(same, samples - 1) << same << " of " << samples;
  EXPECT_FALSE(same_bits(outputs[0], outputs[1]));  // level 4 did run the int8 arithmetic
}

// The packed kernel holds the codes at bits per weight: building a session
// of a 4-bit 1024 x 1024 MatMulNBits allocates far less at level 4 than the
// float path, which keeps a dequantized float copy (4 MiB).
TEST(QnbitsSession, Level4HoldsPackedWeights) {
#ifdef QTK_TEST_HEAP_STATS
  std::mt19937 rng(3);
  const Operands o = random_operands(rng, 1, 1024, 1024, 4, 32, false, false);
  auto heap = [] {
    const struct mallinfo2 mi = mallinfo2();
    return static_cast<int64_t>(mi.uordblks + mi.hblkhd);
  };
  int64_t grew[2];
  for (int64_t level : {0, 4}) {
    const ir::Model model = nbits_model(o, level);
    const int64_t before = heap();
    auto s = Session::create(model);
    ASSERT_TRUE(s.ok()) << s.status().message();
    grew[level == 4] = heap() - before;
  }
  std::printf("session build heap growth, 4-bit 1024x1024 MatMulNBits: level 0 %lld bytes, level 4 %lld bytes\n",
              static_cast<long long>(grew[0]), static_cast<long long>(grew[1]));
  EXPECT_GT(grew[0], 4 << 20);        // the float copy
  EXPECT_LT(grew[1], grew[0] / 3);    // codes + scales, packed
#else
  GTEST_SKIP() << "needs glibc >= 2.33 (mallinfo2), not under sanitizers";
#endif
}

// Bad operands: an error naming the node and what is wrong, never a crash.
TEST(QnbitsSession, BadOperandsAreClearErrors) {
  std::mt19937 rng(9);
  const Operands good = random_operands(rng, 1, 100, 10, 4, 32, true, true);
  struct Case {
    std::string what, expect;
    Operands o;
  };
  std::vector<Case> cases;
  {
    Operands o = good;
    o.b.pop_back();  // B one byte short
    cases.push_back({"short B", "B must be uint8", o});
  }
  {
    Operands o = good;
    o.b.resize(o.b.size() + 3);  // an odd packed size
    cases.push_back({"long B", "B must be uint8", o});
  }
  {
    Operands o = good;
    o.scales.pop_back();
    cases.push_back({"scales", "scales must be float32", o});
  }
  {
    Operands o = good;
    o.zp.push_back(0);
    cases.push_back({"zero points", "zero_points must be", o});
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    for (bool reference : {false, true}) {
      // nbits_model sizes B by the attributes: build the bad tensor by hand.
      ir::Model m = nbits_model(good, 4);
      Tensor b(DType::kUInt8, {static_cast<int64_t>(c.o.b.size())});
      std::memcpy(b.data<uint8_t>(), c.o.b.data(), c.o.b.size());
      m.graph.set_initializer("b", b);
      Tensor s(DType::kFloat32, {static_cast<int64_t>(c.o.scales.size())});
      std::memcpy(s.data<float>(), c.o.scales.data(), c.o.scales.size() * sizeof(float));
      m.graph.set_initializer("s", s);
      Tensor z(DType::kUInt8, {static_cast<int64_t>(c.o.zp.size())});
      std::memcpy(z.data<uint8_t>(), c.o.zp.data(), c.o.zp.size());
      m.graph.set_initializer("z", z);
      auto session = Session::create(m, {.reference_kernels = reference});
      ASSERT_FALSE(session.ok());
      const std::string msg = session.status().message();
      EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
      EXPECT_NE(msg.find("fc_nbits"), std::string::npos) << msg;
    }
  }
  // A whose last dimension is not K: a run-time error that says what K must be.
  auto s = Session::create(nbits_model(good, 4));
  ASSERT_TRUE(s.ok());
  auto bad = (*s)->run(std::vector<Tensor>{Tensor(DType::kFloat32, {2, 99})});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("K = 100"), std::string::npos) << bad.status().message();
  // accuracy_level outside 0..4.
  ir::Model m = nbits_model(good, 4);
  m.graph.nodes[0].set_attr(ir::attr_int("accuracy_level", 7));
  auto level = Session::create(m);
  ASSERT_FALSE(level.ok());
  EXPECT_NE(level.status().message().find("accuracy_level"), std::string::npos) << level.status().message();
}

}  // namespace
}  // namespace qtk
