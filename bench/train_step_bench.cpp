// Training-step throughput of a built-in architecture (qtk's side of
// bench/train_vs_torch.sh): one step = forward (training mode) + softmax
// cross-entropy + backward + optimizer update, on a fixed random batch,
// exactly what qtk train runs per batch minus data loading. Prints one line
// per timed step ("step_ms X") and a summary line with the median (and the
// fastest step, steadier than the median on a loaded machine):
//   qtk_train arch=resnet20 batch=64 threads=2 ... median_ms=... images_per_s=... min_ms=...
//
// usage: qtk_train_step_bench [--arch SPEC] [--batch B] [--threads N]
//                             [--warmup N] [--steps N] [--optimizer adamw|sgd]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "runtime/thread_pool.h"
#include "train/arch.h"
#include "train/trainer.h"
#include "train/optimizer.h"
#include "train/train_graph.h"

namespace {

int fail(const std::string& what) {
  std::fprintf(stderr, "qtk_train_step_bench: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string arch = "resnet20", optimizer = "adamw";
  long batch = 64, threads = 2, warmup = 3, steps = 10;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return fail("missing value for " + a);
    const char* v = argv[++i];
    if (a == "--arch") arch = v;
    else if (a == "--optimizer") optimizer = v;
    else if (a == "--batch") batch = std::strtol(v, nullptr, 10);
    else if (a == "--threads") threads = std::strtol(v, nullptr, 10);
    else if (a == "--warmup") warmup = std::strtol(v, nullptr, 10);
    else if (a == "--steps") steps = std::strtol(v, nullptr, 10);
    else return fail("unknown option " + a);
  }
  if (batch < 1 || threads < 1 || warmup < 0 || steps < 1) return fail("batch, threads and steps must be >= 1");
  auto kind = qtk::train::parse_optimizer(optimizer);
  if (!kind.ok()) return fail(kind.status().message());
  auto model = qtk::train::build_architecture(arch, 0, 10);
  if (!model.ok()) return fail(model.status().message());
  qtk::train::retain_freed_memory();  // as train_classifier does
  auto graph = qtk::train::TrainGraph::create(*model);
  if (!graph.ok()) return fail(graph.status().message());

  qtk::Shape shape{batch};
  for (int64_t d : graph->sample_shape()) shape.push_back(d);
  qtk::Tensor x(qtk::DType::kFloat32, shape);
  std::vector<int64_t> labels(static_cast<size_t>(batch));
  std::mt19937 gen(0);
  std::normal_distribution<float> nd;
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = nd(gen);
  for (auto& l : labels) l = static_cast<int64_t>(gen() % 10);

  qtk::rt::ThreadPool pool(static_cast<int>(threads));
  qtk::train::OptimizerConfig cfg;
  cfg.kind = *kind;
  qtk::train::Optimizer opt(cfg);
  const float lr = cfg.kind == qtk::train::OptimizerKind::kSgd ? 0.05f : 1e-3f;
  std::vector<double> ms;
  for (long s = 0; s < warmup + steps; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    auto st = graph->train_step(x, labels, &pool);
    if (!st.ok()) return fail(st.status().message());
    opt.step(graph->params(), lr, &pool);
    const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (s >= warmup) {
      ms.push_back(t);
      std::printf("step_ms %.3f loss %.4f\n", t, st->loss);
    }
  }
  std::sort(ms.begin(), ms.end());
  const double med = ms.size() % 2 ? ms[ms.size() / 2] : (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]) / 2;
  std::printf("qtk_train arch=%s batch=%ld threads=%ld optimizer=%s median_ms=%.3f images_per_s=%.1f min_ms=%.3f\n",
              arch.c_str(), batch, threads, optimizer.c_str(), med, batch * 1000.0 / med, ms.front());
  return 0;
}
