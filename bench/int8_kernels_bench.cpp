// Int8 kernel throughput against the machine's measured int8 peak.
//
// First the peak probes, measured in the same run: the u8 x s8 idiom
// vpmaddubsw -> vpmaddwd -> vpaddd on independent register accumulators (no
// memory), on 1 and on 2 threads at once ("peak/idiom/threads:T"); and, for
// reference, the instructions of qtk's two exact tiers (see
// docs/integer-semantics.md, "Optimized x86 kernels"): vpmaddwd -> vpaddd
// ("peak/int16", the AVX2 tier) and AVX-512 vpdpbusd ("peak/vnni512", where
// the CPU has it). Then GEMM (uint8 A x packed int8 B -> requantized uint8 codes,
// per-column multipliers) for 64x1024x1024, 256x256x256, 1024x1024x1024 and
// 1x1024x1024 (GEMV), and QLinearConv 3x3 1x64x56x56 -> 64 (pad 1) and
// depthwise 3x3 1x144x56x56 (pad 1) through the kernel a session would pick
// (OpRegistry::global()), each at 1 and 2 threads. Last, weight-only
// com.microsoft MatMulNBits at accuracy_level 4 (float A quantized to int8
// per block on the fly, packed 4-bit / 2-bit codes unpacked in registers,
// kernels/x86/qnbits.h; block 32, float output): GEMV 1x1024x1024 and GEMM
// 64x1024x1024, to set against the int8 GEMM rows of the same shapes.
//
// The _w7 variants (BM_gemm_w7, conv3x3_..._w7, depthwise3x3_..._w7) draw
// their weights in [-64, 63]: on the AVX2 tier GEMM and conv then run the
// exact u8 x s8 path (qgemm_u8s8.h, qgemm_conv_u8s8.h; the label says so),
// and the _w7_int16 ones pack the same weights as QTK_QGEMM_NO_U8S8=1 does,
// on the int16 path. (Depthwise convs have their own kernel; with 7-bit
// weights at stride 1 its AVX2 planes are 8-bit, vpmaddubsw.)
//
// Counters: GOP/s (2 ops per multiply-add) and pct_peak, the percentage of
// the idiom probe's best GOP/s on the same number of threads, over the whole
// timed loop; GOP/s_median_call and pct_peak_median_call, the same of the
// median call (robust to the host's preemptions; see report()). The label names
// the kernel tier that ran (QTK_QGEMM_NO_VNNI=1 selects the AVX2 tier on a
// VNNI machine, QTK_QGEMM_SCALAR=1 the portable one).
//
// usage: qtk_int8_kernels_bench [google benchmark flags]
//   e.g. --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "runtime/kernel.h"
#include "quant/schemes/fixed_point.h"
#include "runtime/kernels/x86/qgemm.h"
#include "runtime/kernels/x86/qgemm_vnni.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace {

using namespace qtk;
using namespace qtk::rt;

// ---------------------------------------------------------------------------
// Peak probes (x86-64 with AVX2 only).

#if defined(__x86_64__)
// 8 independent chains of maddubsw (32 u8 x s8 products, pair sums) -> maddwd
// by ones -> add: 8 x 64 int8 ops per iteration.
#define QTK_IDIOM(t, acc)                                                              \
  "vpmaddubsw %%ymm1, %%ymm0, %%" #t "\n\t vpmaddwd %%ymm2, %%" #t ", %%" #t "\n\t " \
  "vpaddd %%" #t ", %%" #acc ", %%" #acc "\n\t"
__attribute__((target("avx2"), noinline)) void probe_idiom(int64_t iterations) {
  __asm__ volatile(
      "vpcmpeqb %%ymm0, %%ymm0, %%ymm0\n\t vpabsb %%ymm0, %%ymm1\n\t vpabsw %%ymm0, %%ymm2\n\t"
      "1:\n\t" QTK_IDIOM(ymm11, ymm3) QTK_IDIOM(ymm12, ymm4) QTK_IDIOM(ymm13, ymm5) QTK_IDIOM(ymm14, ymm6)
          QTK_IDIOM(ymm15, ymm7) QTK_IDIOM(ymm11, ymm8) QTK_IDIOM(ymm12, ymm9) QTK_IDIOM(ymm13, ymm10)
      "dec %0\n\t jnz 1b\n\t vzeroupper"
      : "+r"(iterations)
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
        "xmm13", "xmm14", "xmm15", "cc");
}
constexpr double kIdiomOpsPerIteration = 8 * 64;

// 10 chains of maddwd (16 int16 x int16 products, pair sums) -> add: 10 x 32 ops.
#define QTK_INT16(t, acc) "vpmaddwd %%ymm1, %%ymm0, %%" #t "\n\t vpaddd %%" #t ", %%" #acc ", %%" #acc "\n\t"
__attribute__((target("avx2"), noinline)) void probe_int16(int64_t iterations) {
  __asm__ volatile(
      "vpcmpeqb %%ymm0, %%ymm0, %%ymm0\n\t vpabsb %%ymm0, %%ymm1\n\t"
      "1:\n\t" QTK_INT16(ymm13, ymm3) QTK_INT16(ymm14, ymm4) QTK_INT16(ymm15, ymm5) QTK_INT16(ymm13, ymm6)
          QTK_INT16(ymm14, ymm7) QTK_INT16(ymm15, ymm8) QTK_INT16(ymm13, ymm9) QTK_INT16(ymm14, ymm10)
              QTK_INT16(ymm15, ymm11) QTK_INT16(ymm13, ymm12)
      "dec %0\n\t jnz 1b\n\t vzeroupper"
      : "+r"(iterations)
      :
      : "xmm0", "xmm1", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13",
        "xmm14", "xmm15", "cc");
}
constexpr double kInt16OpsPerIteration = 10 * 32;

// 12 independent zmm vpdpbusd accumulators: 12 x 128 ops per iteration.
#define QTK_VNNI512(acc) "vpdpbusd %%zmm1, %%zmm0, %%" #acc "\n\t"
__attribute__((target("avx512f,avx512vnni"), noinline)) void probe_vnni512(int64_t iterations) {
  __asm__ volatile(
      "vpternlogd $0xff, %%zmm0, %%zmm0, %%zmm0\n\t vpabsb %%zmm0, %%zmm1\n\t"
      "1:\n\t" QTK_VNNI512(zmm2) QTK_VNNI512(zmm3) QTK_VNNI512(zmm4) QTK_VNNI512(zmm5) QTK_VNNI512(zmm6)
          QTK_VNNI512(zmm7) QTK_VNNI512(zmm8) QTK_VNNI512(zmm9) QTK_VNNI512(zmm10) QTK_VNNI512(zmm11)
              QTK_VNNI512(zmm12) QTK_VNNI512(zmm13)
      "dec %0\n\t jnz 1b\n\t vzeroupper"
      : "+r"(iterations)
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
        "xmm13", "cc");
}
constexpr double kVnni512OpsPerIteration = 12 * 128;
#endif

// GOP/s of `probe` on `threads` threads at once (each runs `iterations`).
double probe_rate(void (*probe)(int64_t), double ops_per_iteration, int threads, int64_t iterations) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> others;
  for (int t = 1; t < threads; ++t) others.emplace_back(probe, iterations);
  probe(iterations);
  for (auto& t : others) t.join();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return ops_per_iteration * static_cast<double>(iterations) * threads / s / 1e9;
}

bool have_avx2() { return x86::qgemm_avx2_supported(); }

// The best of several short runs: noise only ever lowers a peak.
double idiom_peak(int threads) {
  static double peak[3] = {0, 0, 0};
#if defined(__x86_64__)
  if (peak[threads] == 0 && have_avx2())
    for (int r = 0; r < 7; ++r) peak[threads] = std::max(peak[threads], probe_rate(probe_idiom, kIdiomOpsPerIteration, threads, 4000000));
#endif
  return peak[threads];
}

enum class Probe { kIdiom, kInt16, kVnni512 };

void BM_peak(benchmark::State& state, Probe probe) {
#if defined(__x86_64__)
  if (!have_avx2() || (probe == Probe::kVnni512 && !x86::qgemm_avx512_vnni_supported())) {
    state.SkipWithError("not supported by this CPU");
    return;
  }
  const int threads = static_cast<int>(state.range(0));
  double rate = 0;
  for (auto _ : state)
    rate = probe == Probe::kIdiom   ? probe_rate(probe_idiom, kIdiomOpsPerIteration, threads, 4000000)
           : probe == Probe::kInt16 ? probe_rate(probe_int16, kInt16OpsPerIteration, threads, 4000000)
                                    : probe_rate(probe_vnni512, kVnni512OpsPerIteration, threads, 2000000);
  state.counters["GOP/s"] = rate;
  state.counters["pct_peak"] = 100.0 * rate / idiom_peak(threads);
#else
  state.SkipWithError("x86-64 only");
#endif
}

// Wall-clock seconds of each call of a timed loop.
class CallTimes {
 public:
  explicit CallTimes(const benchmark::State& state) { seconds_.reserve(static_cast<size_t>(state.max_iterations)); }
  template <class F>
  void time(F&& call) {
    const auto t0 = std::chrono::steady_clock::now();
    call();
    seconds_.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  double median() {
    if (seconds_.empty()) return 0;
    const auto mid = seconds_.begin() + static_cast<std::ptrdiff_t>(seconds_.size() / 2);
    std::nth_element(seconds_.begin(), mid, seconds_.end());
    return *mid;
  }

 private:
  std::vector<double> seconds_;
};

// Wall-clock GOP/s of the timed loop (started by the caller) and its share
// of the idiom peak on as many threads; then the same of the median call:
// a shared host's preemptions (another guest on the core) land in a few
// calls, which the loop's mean carries and the median call does not. The
// peak is the idiom's best short run either way.
void report(benchmark::State& state, double ops_per_iteration, int threads,
            std::chrono::steady_clock::time_point start, CallTimes& calls) {
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double rate = ops_per_iteration * static_cast<double>(state.iterations()) / s / 1e9;
  state.counters["GOP/s"] = rate;
  const double median = calls.median(), median_rate = median > 0 ? ops_per_iteration / median / 1e9 : 0;
  state.counters["GOP/s_median_call"] = median_rate;
  const double peak = idiom_peak(threads);
  if (peak > 0) {
    state.counters["pct_peak"] = 100.0 * rate / peak;
    state.counters["pct_peak_median_call"] = 100.0 * median_rate / peak;
  }
  state.SetLabel(x86::qgemm_path_name(x86::qgemm_resolve_path(x86::QgemmPath::kAuto)));
}

std::vector<uint8_t> random_bytes(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<uint8_t>(rng() >> 24);
  return v;
}

// ---------------------------------------------------------------------------
// GEMM: uint8 A [M, K] x int8 B [K, N] (packed once) -> uint8 codes.

// weight_bits 7: B's codes in [-64, 63] (on the AVX2 tier the u8 x s8 path,
// qgemm_u8s8.h); no_u8s8: packed as with QTK_QGEMM_NO_U8S8=1 (the int16 path).
void gemm_bench(benchmark::State& state, int weight_bits, bool no_u8s8) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  auto a = random_bytes(m * k, 1), b = random_bytes(k * n, 2);
  if (weight_bits == 7)
    for (auto& v : b) v = static_cast<uint8_t>(static_cast<int8_t>(v) >> 1);
  x86::QgemmPackedB packed;
  if (no_u8s8) setenv("QTK_QGEMM_NO_U8S8", "1", 1);  // read when B is packed
  x86::qgemm_pack_b({b.data(), true, n, 1}, k, n, {0}, packed);
  if (no_u8s8) unsetenv("QTK_QGEMM_NO_U8S8");
  std::vector<quant::FixedPointMultiplier> mult;
  for (int64_t j = 0; j < n; ++j) mult.push_back(quant::quantize_multiplier(1e-4 * (1 + j % 7)));
  const x86::QgemmRequant requant = x86::qgemm_make_requant(mult, n, 128, 0, 255, x86::QgemmRequantFor::kColumns);
  std::vector<uint8_t> y(static_cast<size_t>(m * n));
  x86::QgemmOutput out;
  out.kind = x86::QgemmOutputKind::kCodes;
  out.requant = &requant;
  out.out = y.data();
  out.ldo = n;
  ThreadPool pool(threads);
  idiom_peak(threads);  // measured before timing starts
  CallTimes calls(state);
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    calls.time([&] { x86::qgemm(m, {a.data(), false, k, 1}, 3, packed, out, &pool); });
    benchmark::DoNotOptimize(y.data());
  }
  report(state, 2.0 * m * n * k, threads, start, calls);
  if (weight_bits == 7)
    state.SetLabel(std::string(x86::qgemm_path_name(x86::qgemm_resolve_path(x86::QgemmPath::kAuto))) +
                   ", 7-bit weights" + (packed.u8s8 ? ", u8 x s8 path" : ""));
}

void BM_gemm(benchmark::State& state) { gemm_bench(state, 8, false); }
void BM_gemm_w7(benchmark::State& state) { gemm_bench(state, 7, false); }
void BM_gemm_w7_int16(benchmark::State& state) { gemm_bench(state, 7, true); }

// Times `node`'s kernel as a session would build it (the global registry,
// every input but the first a constant), `ops` operations per run.
void time_node(benchmark::State& state, const ir::Node& node, int64_t opset, std::vector<Tensor>& inputs,
               int threads, double ops) {
  KernelInit init{node, opset, {}, [&](size_t i) -> const Tensor* { return i == 0 ? nullptr : &inputs[i]; }};
  const KernelFactory* f = OpRegistry::global().find(node.domain, node.op_type, opset);
  auto kernel = (*f)(init);
  if (!kernel.ok()) {
    state.SkipWithError(kernel.status().message().c_str());
    return;
  }
  ThreadPool pool(threads);
  KernelContext ctx;
  for (auto& t : inputs) ctx.inputs.push_back(&t);
  ctx.pool = &pool;
  idiom_peak(threads);  // measured before timing starts
  CallTimes calls(state);
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    Status st;
    calls.time([&] {
      ctx.outputs.assign(1, Tensor());
      st = (*kernel)->run(ctx);
    });
    if (!st.ok()) {
      state.SkipWithError(st.message().c_str());
      break;
    }
    benchmark::DoNotOptimize(ctx.outputs[0].raw());
  }
  report(state, ops, threads, start, calls);
}

// ---------------------------------------------------------------------------
// QLinearConv through the kernel a session would use.

struct ConvBench {
  int64_t c, h, w, oc, group;
  int weight_bits = 8;     // 7: random codes in [-64, 63] (the AVX2 tier's u8 x s8 path)
  bool no_u8s8 = false;    // pack as if QTK_QGEMM_NO_U8S8=1 (the int16 path, for comparison)
};

void BM_qlinear_conv(benchmark::State& state, ConvBench cb) {
  const int threads = static_cast<int>(state.range(0));
  std::vector<Tensor> inputs(9);
  inputs[0] = Tensor(DType::kUInt8, {1, cb.c, cb.h, cb.w});
  const auto xb = random_bytes(inputs[0].numel(), 3);
  std::copy(xb.begin(), xb.end(), inputs[0].data<uint8_t>());
  inputs[1] = Tensor::scalar<float>(0.02f);
  inputs[2] = Tensor::scalar<uint8_t>(0);
  inputs[3] = Tensor(DType::kInt8, {cb.oc, cb.c / cb.group, 3, 3});
  auto wb = random_bytes(inputs[3].numel(), 4);
  if (cb.weight_bits == 7)
    for (auto& v : wb) v = static_cast<uint8_t>(static_cast<int8_t>(v) >> 1);  // [-64, 63]
  std::copy(wb.begin(), wb.end(), inputs[3].data<uint8_t>());
  inputs[4] = Tensor(DType::kFloat32, {cb.oc});
  for (int64_t i = 0; i < cb.oc; ++i) inputs[4].data<float>()[i] = 0.001f * (1 + i % 5);
  inputs[5] = Tensor(DType::kInt8, {cb.oc});
  inputs[6] = Tensor::scalar<float>(0.05f);
  inputs[7] = Tensor::scalar<uint8_t>(0);
  inputs[8] = Tensor(DType::kInt32, {cb.oc});
  ir::Node node;
  node.op_type = "QLinearConv";
  for (int i = 0; i < 9; ++i) node.inputs.push_back("in" + std::to_string(i));
  node.outputs = {"y"};
  node.attrs = {ir::attr_ints("pads", {1, 1, 1, 1}), ir::attr_int("group", cb.group)};
  if (cb.no_u8s8) setenv("QTK_QGEMM_NO_U8S8", "1", 1);  // read when the weights are packed
  time_node(state, node, 17, inputs, threads, 2.0 * cb.oc * (cb.c / cb.group) * 9 * cb.h * cb.w);
  if (cb.no_u8s8) unsetenv("QTK_QGEMM_NO_U8S8");
  const std::string weights = cb.weight_bits == 7 ? ", 7-bit weights" : "";
  // The u8 x s8 path: the AVX2 tier, weights that fit (7-bit), not turned off.
  const bool u8s8 = x86::qgemm_resolve_path(x86::QgemmPath::kAuto) == x86::QgemmPath::kAvx2 &&
                    cb.weight_bits == 7 && !cb.no_u8s8 && !std::getenv("QTK_QGEMM_NO_U8S8");
  if (cb.group > 1) state.SetLabel("depthwise kernel (qdepthwise_conv.h)" + weights);
  else if (cb.weight_bits == 7)
    state.SetLabel(std::string(x86::qgemm_path_name(x86::qgemm_resolve_path(x86::QgemmPath::kAuto))) + weights +
                   (u8s8 ? ", u8 x s8 path" : ""));
}

// ---------------------------------------------------------------------------
// MatMulNBits (accuracy_level 4) through the kernel a session would pick.

void BM_matmul_nbits(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2), bits = state.range(3);
  const int threads = static_cast<int>(state.range(4));
  const int64_t block = 32, blocks = (k + block - 1) / block;
  std::vector<Tensor> inputs(3);
  inputs[0] = Tensor(DType::kFloat32, {m, k});
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> real(-1.f, 1.f);
  for (int64_t i = 0; i < inputs[0].numel(); ++i) inputs[0].data<float>()[i] = real(rng);
  inputs[1] = Tensor(DType::kUInt8, {n, blocks, block * bits / 8});
  const auto codes = random_bytes(inputs[1].numel(), 6);
  std::copy(codes.begin(), codes.end(), inputs[1].data<uint8_t>());
  inputs[2] = Tensor(DType::kFloat32, {n * blocks});
  for (int64_t i = 0; i < inputs[2].numel(); ++i) inputs[2].data<float>()[i] = 0.01f * (1 + i % 5);
  ir::Node node;
  node.op_type = "MatMulNBits";
  node.domain = "com.microsoft";
  node.inputs = {"a", "b", "scales"};
  node.outputs = {"y"};
  node.attrs = {ir::attr_int("K", k), ir::attr_int("N", n), ir::attr_int("bits", bits),
                ir::attr_int("block_size", block), ir::attr_int("accuracy_level", 4)};
  time_node(state, node, 1, inputs, threads, 2.0 * m * n * k);
  state.SetLabel("int" + std::to_string(bits) + " weights, " +
                 x86::qgemm_path_name(x86::qgemm_resolve_path(x86::QgemmPath::kAuto)));
}

// ---------------------------------------------------------------------------
// The int8 conv output stage on the AVX-512 VNNI tier alone: 16 rows (output
// channels) of 16 int32 sums -> requantized uint8 codes, as the direct conv
// calls it (two 8-row halves per 14-pixel panel of a 28x28 plane, batch 64),
// without and with the fused residual join. Counter: ns per 16-lane row.

void BM_conv_output_stage(benchmark::State& state) {
  if (!x86::qgemm_avx512_vnni_supported()) {
    state.SkipWithError("no AVX-512 VNNI on this CPU");
    return;
  }
  const bool residual_join = state.range(0) != 0;
  const int64_t plane = 784, images = 64, channels = 16;
  std::vector<quant::FixedPointMultiplier> mult(channels);
  for (int64_t c = 0; c < channels; ++c) mult[static_cast<size_t>(c)] = quant::quantize_multiplier(0.0007 * (1 + c % 3));
  const x86::QgemmRequant requant = x86::qgemm_make_requant(mult, channels, 3, 0, 255, x86::QgemmRequantFor::kRows);
  alignas(64) int32_t acc[16 * 16];
  std::mt19937 rng(7);
  for (auto& a : acc) a = static_cast<int32_t>(rng() % 200001) - 100000;
  std::vector<uint8_t> out(static_cast<size_t>(images * channels * plane)), codes = random_bytes(static_cast<int64_t>(out.size()), 8);
  const auto shared = quant::shared_shift_multipliers(0.7, 1.3);
  x86::QgemmResidualAdd residual;
  residual.a_zp = 3, residual.b_zp = 5, residual.c_zp = 2;
  residual.ma = shared->ma, residual.mb = shared->mb, residual.n = shared->n;
  x86::QgemmOutput o;
  o.kind = x86::QgemmOutputKind::kCodes;
  o.channel_is_row = true;
  o.requant = &requant;
  o.ldo = plane;
  if (residual_join) o.residual = &residual;
  int64_t rows = 0;
  for (auto _ : state) {
    for (int64_t b = 0; b < images; ++b) {
      o.out = out.data() + b * channels * plane;
      residual.codes = codes.data() + b * channels * plane;
      for (int64_t p = 0; p + 14 <= plane; p += 14) {
        x86::detail::qgemm_epilogue_avx512(acc, 8, 14, 0, p, o);
        x86::detail::qgemm_epilogue_avx512(acc + 8 * 16, 8, 14, 8, p, o);
        rows += 16;
      }
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["ns_per_row"] =
      benchmark::Counter(static_cast<double>(rows), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.SetLabel(residual_join ? "with the fused residual join" : "requantization only");
}

void thread_args(benchmark::internal::Benchmark* b) {
  b->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();
}

BENCHMARK_CAPTURE(BM_peak, idiom, Probe::kIdiom)->Apply(thread_args)->Iterations(3);
BENCHMARK_CAPTURE(BM_peak, int16, Probe::kInt16)->Apply(thread_args)->Iterations(3);
BENCHMARK_CAPTURE(BM_peak, vnni512, Probe::kVnni512)->Apply(thread_args)->Iterations(3);
BENCHMARK(BM_gemm)
    ->ArgNames({"M", "N", "K", "threads"})
    ->Args({64, 1024, 1024, 1})
    ->Args({64, 1024, 1024, 2})
    ->Args({256, 256, 256, 1})
    ->Args({256, 256, 256, 2})
    ->Args({1024, 1024, 1024, 1})
    ->Args({1024, 1024, 1024, 2})
    ->Args({1, 1024, 1024, 1})
    ->Args({1, 1024, 1024, 2})
    ->UseRealTime();
// 7-bit B: on the AVX2 tier the u8 x s8 path, and the same B on the int16 path.
BENCHMARK(BM_gemm_w7)
    ->ArgNames({"M", "N", "K", "threads"})
    ->Args({64, 1024, 1024, 1})
    ->Args({64, 1024, 1024, 2})
    ->Args({256, 256, 256, 1})
    ->Args({256, 256, 256, 2})
    ->Args({1024, 1024, 1024, 1})
    ->Args({1024, 1024, 1024, 2})
    ->Args({1, 1024, 1024, 1})
    ->UseRealTime();
BENCHMARK(BM_gemm_w7_int16)
    ->ArgNames({"M", "N", "K", "threads"})
    ->Args({64, 1024, 1024, 1})
    ->Args({64, 1024, 1024, 2})
    ->Args({256, 256, 256, 1})
    ->Args({256, 256, 256, 2})
    ->Args({1, 1024, 1024, 1})
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_qlinear_conv, conv3x3_64x56x56_to_64, ConvBench{64, 56, 56, 64, 1})->Apply(thread_args);
BENCHMARK_CAPTURE(BM_qlinear_conv, depthwise3x3_144x56x56, ConvBench{144, 56, 56, 144, 144})->Apply(thread_args);
// 7-bit weights: on the AVX2 tier the u8 x s8 path (qgemm_conv_u8s8.h), and
// the same weights on the int16 path.
BENCHMARK_CAPTURE(BM_qlinear_conv, conv3x3_64x56x56_to_64_w7, ConvBench{64, 56, 56, 64, 1, 7})->Apply(thread_args);
BENCHMARK_CAPTURE(BM_qlinear_conv, conv3x3_64x56x56_to_64_w7_int16, ConvBench{64, 56, 56, 64, 1, 7, true})
    ->Apply(thread_args);
BENCHMARK_CAPTURE(BM_qlinear_conv, depthwise3x3_144x56x56_w7, ConvBench{144, 56, 56, 144, 144, 7})->Apply(thread_args);
// resnet20's three stages on one 28x28 image (batch 1): what 2 threads give
// on a conv of about 20 us, where per-call costs count.
BENCHMARK_CAPTURE(BM_qlinear_conv, conv3x3_16x28x28_to_16_w7, ConvBench{16, 28, 28, 16, 1, 7})->Apply(thread_args);
BENCHMARK_CAPTURE(BM_qlinear_conv, conv3x3_32x14x14_to_32_w7, ConvBench{32, 14, 14, 32, 1, 7})->Apply(thread_args);
BENCHMARK_CAPTURE(BM_qlinear_conv, conv3x3_64x7x7_to_64_w7, ConvBench{64, 7, 7, 64, 1, 7})->Apply(thread_args);
BENCHMARK(BM_conv_output_stage)->ArgName("residual")->Arg(0)->Arg(1);
BENCHMARK(BM_matmul_nbits)
    ->ArgNames({"M", "N", "K", "bits", "threads"})
    ->Args({1, 1024, 1024, 4, 1})
    ->Args({1, 1024, 1024, 4, 2})
    ->Args({1, 1024, 1024, 2, 1})
    ->Args({1, 1024, 1024, 2, 2})
    ->Args({64, 1024, 1024, 4, 1})
    ->Args({64, 1024, 1024, 4, 2})
    ->Args({64, 1024, 1024, 2, 1})
    ->Args({64, 1024, 1024, 2, 2})
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
