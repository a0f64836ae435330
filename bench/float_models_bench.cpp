// Float inference latency of the shared Fashion-MNIST models in qtk.
// One benchmark per model x batch {1, 64} x threads {1, 2}, named
// "float/<model>/batch:<B>/threads:<T>"; wall-clock time is per batch, and
// the counters give seconds per batch (ms in the console with an SI prefix:
// 3.2m = 3.2 ms) and images per second. Session creation is outside the
// timed loop (prepare once, run many). Inputs are seeded uniform [0,1) images,
// the same distribution bench/compare_ort.sh feeds ONNX Runtime.
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
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
