// Float inference latency of the shared Fashion-MNIST models in qtk.
// One benchmark per model x batch {1, 64} x threads {1, 2}, named
// "float/<model>/batch:<B>/threads:<T>"; wall-clock time is per batch, and
// the counters give seconds per batch (ms in the console with an SI prefix:
// 3.2m = 3.2 ms) and images per second. Session creation is outside the
// timed loop (prepare once, run many). Inputs are seeded uniform [0,1) images,
// the same distribution bench/compare_ort.sh feeds ONNX Runtime.
//
// Also one benchmark per 3x3 pad-1 Conv layer shape of cnn and resnet20
// ("float_conv/<C>to<M>x<H>/batch:<B>/threads:<T>": a one-node session with
// constant weights and bias), with the useful GFLOP/s as a counter ("gflop"), to
// follow the float convolution kernel apart from the rest of the model.
//
// usage: qtk_float_models_bench [google benchmark flags]
// The model folder is QTK_MODELS_DIR (compiled in; the environment variable
// of the same name overrides it).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/session.h"

namespace {

std::string models_dir() {
  if (const char* env = std::getenv("QTK_MODELS_DIR"); env && *env) return env;
  return QTK_MODELS_DIR;
}

qtk::Tensor random_images(int64_t batch) {
  qtk::Tensor t(qtk::DType::kFloat32, {batch, 1, 28, 28});
  std::mt19937 gen(12345);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(gen() >> 8) / 16777216.0f;
  return t;
}

void bench_model(benchmark::State& state, const std::string& model, int64_t batch, int threads) {
  qtk::SessionOptions opt;
  opt.threads = threads;
  auto session = qtk::Session::load(models_dir() + "/" + model + ".onnx", opt);
  if (!session.ok()) {
    state.SkipWithError(("cannot load " + model + ": " + session.status().message()).c_str());
    return;
  }
  const std::vector<qtk::Tensor> inputs{random_images(batch)};
  // One untimed run: first-touch allocations, and fail fast on an error.
  if (auto first = (*session)->run(inputs); !first.ok()) {
    state.SkipWithError((model + ": " + first.status().message()).c_str());
    return;
  }
  for (auto _ : state) {
    auto out = (*session)->run(inputs);
    benchmark::DoNotOptimize(out);
    if (!out.ok()) {
      state.SkipWithError(out.status().message().c_str());
      break;
    }
  }
  state.counters["sec_per_batch"] =
      benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["images_per_s"] =
      benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["batch"] = static_cast<double>(batch);
  state.counters["threads"] = threads;
}

// One 3x3 Conv (pads 1, bias, weights as initializers) on random [batch, c,
// h, h] inputs.
void bench_conv(benchmark::State& state, int64_t c, int64_t m, int64_t h, int64_t batch, int threads) {
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  qtk::Tensor x(qtk::DType::kFloat32, {batch, c, h, h}), w(qtk::DType::kFloat32, {m, c, 3, 3}),
      b(qtk::DType::kFloat32, {m});
  for (qtk::Tensor* t : {&x, &w, &b})
    for (int64_t i = 0; i < t->numel(); ++i) t->data<float>()[i] = u(gen);
  qtk::ir::Model model;
  model.opsets = {{"", 19}};
  qtk::ir::Node node;
  node.name = "conv";
  node.op_type = "Conv";
  node.inputs = {"x", "w", "b"};
  node.outputs = {"y"};
  node.attrs = {qtk::ir::attr_ints("pads", {1, 1, 1, 1})};
  model.graph.initializers["w"] = w;
  model.graph.initializers["b"] = b;
  qtk::ir::ValueInfo in, out;
  in.name = "x";
  in.dtype = qtk::DType::kFloat32;
  out.name = "y";
  model.graph.inputs.push_back(in);
  model.graph.outputs.push_back(out);
  model.graph.nodes.push_back(node);
  qtk::SessionOptions opt;
  opt.threads = threads;
  auto session = qtk::Session::create(model, opt);
  if (!session.ok()) {
    state.SkipWithError(session.status().message().c_str());
    return;
  }
  const std::vector<qtk::Tensor> inputs{x};
  if (auto first = (*session)->run(inputs); !first.ok()) {
    state.SkipWithError(first.status().message().c_str());
    return;
  }
  for (auto _ : state) {
    auto y = (*session)->run(inputs);
    benchmark::DoNotOptimize(y);
  }
  state.counters["gflop"] = benchmark::Counter(2e-9 * double(batch * m * c * 9 * h * h),
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

int main(int argc, char** argv) {
  for (const char* model : {"mlp", "cnn", "resnet20"})
    for (int64_t batch : {1, 64})
      for (int threads : {1, 2}) {
        const std::string name = std::string("float/") + model + "/batch:" + std::to_string(batch) +
                                 "/threads:" + std::to_string(threads);
        benchmark::RegisterBenchmark(name.c_str(), bench_model, std::string(model), batch, threads)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
  // cnn's two convs, resnet20's first conv and its three stages' convs.
  const int64_t convs[][3] = {{1, 32, 28}, {32, 64, 14}, {1, 16, 28}, {16, 16, 28}, {32, 32, 14}, {64, 64, 7}};
  for (const auto& cv : convs)
    for (int64_t batch : {1, 64})
      for (int threads : {1, 2}) {
        const std::string name = "float_conv/" + std::to_string(cv[0]) + "to" + std::to_string(cv[1]) + "x" +
                                 std::to_string(cv[2]) + "/batch:" + std::to_string(batch) +
                                 "/threads:" + std::to_string(threads);
        benchmark::RegisterBenchmark(name.c_str(), bench_conv, cv[0], cv[1], cv[2], batch, threads)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
