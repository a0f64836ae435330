// qtk bench: time a model on random inputs (latency percentiles, throughput,
// session build time, peak resident memory).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <sys/mman.h>

#include "core/alloc_hook.h"
#include "cli.h"
#include "core/cpu_features.h"
#include "core/json.h"
#include "qtk/model.h"
#include "qtk/session.h"
#include "rss_probe.h"

namespace qtk::cli {
namespace {

constexpr OptionSpec kOptions[] = {
    {"--threads", "N", "threads for the kernels (default: physical cores)"},
    {"--batch", "B", "batch size fed to every input's first dimension (default 1, or the model's fixed batch)"},
    {"--runs", "R", "timed runs (default: as many as fit in about 2 s, at least 10)"},
    {"--warmup", "W", "untimed runs first (default 3)"},
    {"--integer", "", "integer session: QDQ patterns run as int8 kernels (SessionOptions::integer)"},
    {"--no-memory-plan", "", "give each activation its own block instead of the planned arena (SessionOptions::plan_memory)"},
    {"--no-code-tables", "", "with --integer: keep 8-bit elementwise regions and bias adds between quantizations as written, not fused (SessionOptions::code_tables)"},
    {"--profile", "", "time every node: ms per run by op type and the slowest nodes (JSON: profile, per node)"},
    {"--json", "", "print one JSON object instead of text"},
};

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// Shape of each input with the batch filled in. Only the first dimension
// may be dynamic (it becomes `batch`); a fixed first dimension must equal
// --batch when that is given.
Outcome input_shapes(const std::vector<TensorInfo>& inputs, bool batch_given, int64_t& batch,
                     std::vector<Shape>& shapes) {
  for (const TensorInfo& in : inputs) {
    if (!in.has_shape || in.shape.empty())
      return Outcome::failure("input '" + in.name + "' has no declared shape; qtk bench needs one to make inputs");
    if (in.shape[0] > 0) {
      if (batch_given && in.shape[0] != batch)
        return Outcome::usage("model input '" + in.name + "' has a fixed batch of " + std::to_string(in.shape[0]) +
                              "; use --batch " + std::to_string(in.shape[0]));
      if (!batch_given) batch = in.shape[0];
    }
  }
  for (const TensorInfo& in : inputs) {
    Shape s = in.shape;
    if (s[0] < 0) s[0] = batch;
    for (size_t d = 1; d < s.size(); ++d)
      if (s[d] < 0)
        return Outcome::failure("input '" + in.name + "' has a dynamic dimension " + std::to_string(d) +
                                " (shape " + format_shape(in.shape) + "); qtk bench needs fixed shapes past the batch");
    shapes.push_back(std::move(s));
  }
  return Outcome::ok();
}

template <class T, class Dist>
void fill(Tensor& t, Dist dist, std::mt19937& rng) {
  T* p = t.data<T>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<T>(dist(rng));
}

// Floats uniform in [0, 1) (a normalised image), integers in [0, 10), bools 0/1.
Expected<Tensor> random_input(const TensorInfo& info, const Shape& shape, std::mt19937& rng) {
  Tensor t(info.dtype, shape);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::uniform_int_distribution<int> small(0, 9), bit(0, 1);
  switch (info.dtype) {
    case DType::kFloat32: fill<float>(t, unit, rng); break;
    case DType::kFloat64: fill<double>(t, unit, rng); break;
    case DType::kInt8: fill<int8_t>(t, small, rng); break;
    case DType::kUInt8: fill<uint8_t>(t, small, rng); break;
    case DType::kInt16: fill<int16_t>(t, small, rng); break;
    case DType::kInt32: fill<int32_t>(t, small, rng); break;
    case DType::kInt64: fill<int64_t>(t, small, rng); break;
    case DType::kBool: fill<bool>(t, bit, rng); break;
    default:
      return unsupported("input '" + info.name + "' has dtype " + dtype_name(info.dtype) +
                         ", for which qtk bench makes no random data");
  }
  return t;
}

struct Stats {
  double median = 0, p10 = 0, p90 = 0, min = 0, max = 0, mean = 0;
};

// The most timed runs bench picks by itself (about 2 s of them).
constexpr int64_t kMaxDefaultRuns = 100'000;

// Nearest-rank percentiles of the sorted times; the median averages the two
// middle values of an even count.
Stats stats_of(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  Stats s;
  const size_t n = t.size();
  auto at = [&](double q) { return t[static_cast<size_t>(std::floor(q * static_cast<double>(n - 1)))]; };
  s.median = n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
  s.p10 = at(0.1);
  s.p90 = at(0.9);
  s.min = t.front();
  s.max = t.back();
  for (double v : t) s.mean += v / static_cast<double>(n);
  return s;
}

struct Report {
  std::string model;
  bool integer = false;
  int64_t threads = physical_core_count(), batch = 1, warmup = 0, runs = 0;
  std::vector<TensorInfo> inputs;  // with the shapes fed
  double load_ms = 0, build_ms = 0;
  Stats latency;  // ms
  uint64_t weight_bytes = 0;          // the file's initializers
  uint64_t session_weight_bytes = 0;  // Session::weight_bytes: after BN folding / QDQ rewriting
  uint64_t rss_before = 0, peak_rss = 0;  // peak_rss: the larger of VmHWM and the sampled peak
  uint64_t sampled_peak_rss = 0;          // the RSS sampler's largest reading (build and warm-up)
  // VmRSS once the model the session is handed (graph copy and its own
  // weights) exists, before Session::create: the floor of the session's growth.
  uint64_t rss_model_copy = 0;
  // After the runs: Session::peak_activation_bytes, largest_activation_pair_bytes, activation_arena_bytes.
  uint64_t activation_bytes = 0, activation_pair_bytes = 0, arena_bytes = 0;
  bool peak_is_session = false;  // VmHWM was reset before the session was built
  // The RSS while the built session runs: VmHWM reset after the warm-up,
  // read after the timed runs (0: unknown). What the session holds for its
  // life, where peak_rss also holds the build's transient (the model copy
  // it consumes, the rewrites).
  uint64_t running_rss = 0;
  // --profile: per node of the timed runs, ms per run, in execution order.
  struct NodeMs {
    std::string node, op_type;
    double ms = 0;
  };
  std::vector<NodeMs> profile;
};

// --profile's table: time per op type (share of the nodes' total) and the
// slowest nodes, per run.
std::string render_profile(const Report& r) {
  if (r.profile.empty()) return "";
  double total = 0;
  std::map<std::string, std::pair<double, int>> by_op;
  for (const auto& n : r.profile) {
    total += n.ms;
    auto& [ms, count] = by_op[n.op_type];
    ms += n.ms;
    ++count;
  }
  std::vector<std::pair<std::string, std::pair<double, int>>> ops(by_op.begin(), by_op.end());
  std::stable_sort(ops.begin(), ops.end(), [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  char buf[256];
  std::snprintf(buf, sizeof buf, "profile     %.3f ms per run in nodes (timed runs only)\n", total);
  std::string out = buf;
  out += "  by op type:   ms/run   share  nodes\n";
  for (const auto& [op, v] : ops) {
    std::snprintf(buf, sizeof buf, "  %-14s %7.3f  %5.1f%%  %5d\n", op.c_str(), v.first,
                  total > 0 ? 100.0 * v.first / total : 0.0, v.second);
    out += buf;
  }
  std::vector<Report::NodeMs> nodes = r.profile;
  std::stable_sort(nodes.begin(), nodes.end(), [](const auto& a, const auto& b) { return a.ms > b.ms; });
  out += "  slowest nodes:\n";
  for (size_t i = 0; i < nodes.size() && i < 10; ++i) {
    std::snprintf(buf, sizeof buf, "  %-32s %-14s %7.3f ms  %5.1f%%\n", nodes[i].node.c_str(), nodes[i].op_type.c_str(),
                  nodes[i].ms, total > 0 ? 100.0 * nodes[i].ms / total : 0.0);
    out += buf;
  }
  return out;
}

std::string mb(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(bytes) / 1e6);
  return buf;
}

// The session's peak RSS growth over weights + `activations` (1.0 = no
// overhead); unknown when the kernel cannot reset the peak. Issue 4 measures
// against the session's (packed) weights and the largest pair of live
// activations; a graph that keeps a third value alive (a residual branch)
// cannot get below its peak live set, the second ratio's denominator.
std::optional<double> memory_ratio(const Report& r, uint64_t activations, bool running = false) {
  const uint64_t need = r.session_weight_bytes + activations, rss = running ? r.running_rss : r.peak_rss;
  if (!r.peak_is_session || rss < r.rss_before || need == 0) return std::nullopt;
  return static_cast<double>(rss - r.rss_before) / static_cast<double>(need);
}

std::string render_text(const Report& r) {
  std::string out = "model       " + r.model + (r.integer ? " (integer session)" : "") + "\n";
  for (const auto& in : r.inputs) out += "input       " + in.name + " " + dtype_name(in.dtype) + " " + format_shape(in.shape) + "\n";
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "runs        %lld timed after %lld warm-up, batch %lld, %lld thread%s, %s kernels\n"
                "load        %.2f ms\nbuild       %.2f ms (session create)\n"
                "latency     median %.3f ms  p10 %.3f  p90 %.3f  min %.3f  max %.3f\n"
                "throughput  %.1f samples/s (batch / median latency)\n",
                static_cast<long long>(r.runs), static_cast<long long>(r.warmup), static_cast<long long>(r.batch),
                static_cast<long long>(r.threads), r.threads == 1 ? "" : "s", cpu_instruction_set(), r.load_ms, r.build_ms, r.latency.median,
                r.latency.p10, r.latency.p90, r.latency.min, r.latency.max,
                static_cast<double>(r.batch) * 1e3 / r.latency.median);
  out += buf;
  out += "memory      peak RSS " + mb(r.peak_rss) + ", " + mb(r.rss_before) + " before the session";
  if (r.peak_is_session && r.peak_rss >= r.rss_before) out += " (session: +" + mb(r.peak_rss - r.rss_before) + ")";
  out += "; weights " + mb(r.session_weight_bytes) + " (file " + mb(r.weight_bytes) + ")";
  out += "; activations: largest live pair " + mb(r.activation_pair_bytes) + ", peak live " + mb(r.activation_bytes);
  if (r.arena_bytes) out += ", planned arena " + mb(r.arena_bytes);
  const auto by_pair = memory_ratio(r, r.activation_pair_bytes), by_peak = memory_ratio(r, r.activation_bytes);
  if (by_pair && by_peak) {
    std::snprintf(buf, sizeof buf, "; session / (weights + largest pair) = %.2f, / (weights + peak live) = %.2f",
                  *by_pair, *by_peak);
    out += buf;
  }
  if (const auto running = memory_ratio(r, r.activation_pair_bytes, true)) {
    std::snprintf(buf, sizeof buf, "; while running: session +%s, / (weights + largest pair) = %.2f",
                  mb(r.running_rss - r.rss_before).c_str(), *running);
    out += buf;
  }
  return out + "\n" + render_profile(r);
}

std::string render_json(const Report& r) {
  JsonWriter w;
  w.begin_object();
  w.key("model").value(r.model).key("integer").value(r.integer).key("threads").value(r.threads);
  w.key("cpu_isa").value(cpu_instruction_set());  // after QTK_ISA
  w.key("batch").value(r.batch).key("warmup").value(r.warmup).key("runs").value(r.runs);
  w.key("inputs").begin_array();
  for (const auto& in : r.inputs) {
    w.begin_object(true).key("name").value(in.name).key("dtype").value(dtype_name(in.dtype)).key("shape");
    w.begin_array(true);
    for (int64_t d : in.shape) w.value(d);
    w.end_array().end_object();
  }
  w.end_array();
  w.key("load_ms").value(r.load_ms).key("build_ms").value(r.build_ms);
  w.key("latency_ms").begin_object(true);
  w.key("median").value(r.latency.median).key("p10").value(r.latency.p10).key("p90").value(r.latency.p90);
  w.key("min").value(r.latency.min).key("max").value(r.latency.max).key("mean").value(r.latency.mean);
  w.end_object();
  w.key("samples_per_second").value(static_cast<double>(r.batch) * 1e3 / r.latency.median);
  w.key("weight_bytes").value(r.weight_bytes);
  w.key("rss_before_session_bytes").value(r.rss_before);
  w.key("peak_rss_bytes").value(r.peak_rss);
  w.key("sampled_peak_rss_bytes").value(r.sampled_peak_rss);
  w.key("session_peak_rss_bytes");
  if (r.peak_is_session && r.peak_rss >= r.rss_before) w.value(r.peak_rss - r.rss_before);
  else w.null();
  w.key("model_copy_rss_bytes");  // of session_peak_rss_bytes: the graph and weights handed to Session::create
  if (r.rss_model_copy >= r.rss_before) w.value(r.rss_model_copy - r.rss_before);
  else w.null();
  w.key("session_weight_bytes").value(r.session_weight_bytes);
  w.key("activation_peak_bytes").value(r.activation_bytes);
  w.key("activation_pair_bytes").value(r.activation_pair_bytes);
  w.key("activation_arena_bytes").value(r.arena_bytes);
  w.key("memory_ratio");  // issue 4's: over session weights + the largest live pair
  if (const auto ratio = memory_ratio(r, r.activation_pair_bytes)) w.value(*ratio);
  else w.null();
  w.key("memory_ratio_peak_live");
  if (const auto ratio = memory_ratio(r, r.activation_bytes)) w.value(*ratio);
  else w.null();
  w.key("session_running_rss_bytes");  // the session's growth while it runs, build transient excluded
  if (r.peak_is_session && r.running_rss >= r.rss_before) w.value(r.running_rss - r.rss_before);
  else w.null();
  w.key("memory_ratio_running");  // the same over session weights + the largest live pair
  if (const auto ratio = memory_ratio(r, r.activation_pair_bytes, true)) w.value(*ratio);
  else w.null();
  if (!r.profile.empty()) {
    w.key("profile").begin_array();  // per node, execution order, ms per timed run
    for (const auto& n : r.profile)
      w.begin_object(true).key("node").value(n.node).key("op_type").value(n.op_type).key("ms").value(n.ms).end_object();
    w.end_array();
  }
  w.end_object();
  return w.str();
}

Outcome run_bench(const ParsedArgs& args) {
  Report r;
  r.model = args.positionals[0];
  r.integer = args.has("--integer");
  int64_t runs = 0;
  r.warmup = 3;
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--threads", 1, 1024, r.threads));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--batch", 1, 1 << 20, r.batch));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--runs", 1, 10'000'000, runs));
  QTK_CLI_RETURN_IF_FAILED(int_option(args, "--warmup", 0, 1'000'000, r.warmup));

  auto t0 = Clock::now();
  QTK_CLI_ASSIGN_OR_FAIL(Model model, load_model(r.model));
  r.load_ms = ms_since(t0);
  for (const auto& [name, t] : model.graph.initializers) r.weight_bytes += t.nbytes();

  SessionOptions options;
  options.threads = static_cast<int>(r.threads);
  options.integer = r.integer;
  options.plan_memory = !args.has("--no-memory-plan");
  options.code_tables = !args.has("--no-code-tables");
  options.profile = args.has("--profile");
  // The timings' buffer, written before the "before" reading: else its
  // pages (8 bytes a run, up to 800 kB by default) would count as the
  // session's growth while it runs.
  std::vector<double> times(static_cast<size_t>(runs > 0 ? runs : kMaxDefaultRuns), 0.0);
  prefault_file_mappings();
  // Samples the RSS through the build and the warm-up runs (peaks VmHWM
  // does not see); stopped before the timed runs, which it would slow.
  RssSampler sampler;
  // The loader's freed heap (file bytes, protobuf) would otherwise stay
  // resident and the session would grow into it unseen.
  core::release_free_heap_pages();
  r.rss_before = proc_status_bytes("VmRSS:");
  r.peak_is_session = reset_peak_rss();
  sampler.rebase();
  t0 = Clock::now();
  std::unique_ptr<Session> session;
  {
    // The session gets weights of its own, as Session::load would give it:
    // else those it keeps unchanged would share the loaded model's storage,
    // resident before the session, and its growth would leave them out.
    // Moved in, as Session::load does: what its kernels pack is freed then.
    Model own = model;
    for (auto& [name, t] : own.graph.initializers) t = t.clone();
    r.rss_model_copy = proc_status_bytes("VmRSS:");
    QTK_CLI_ASSIGN_OR_FAIL(session, Session::create(std::move(own), options));
  }
  r.build_ms = ms_since(t0);

  std::vector<Shape> shapes;
  QTK_CLI_RETURN_IF_FAILED(input_shapes(session->inputs(), args.has("--batch"), r.batch, shapes));
  std::mt19937 rng(1234);
  std::vector<Tensor> feeds;
  for (size_t i = 0; i < shapes.size(); ++i) {
    QTK_CLI_ASSIGN_OR_FAIL(Tensor t, random_input(session->inputs()[i], shapes[i], rng));
    feeds.push_back(std::move(t));
    r.inputs.push_back(session->inputs()[i]);
    r.inputs.back().shape = shapes[i];
  }

  auto run_once = [&]() -> Expected<double> {
    const auto start = Clock::now();
    QTK_ASSIGN_OR_RETURN(auto outputs, session->run(feeds));
    return ms_since(start);
  };
  double warm_ms = 0;
  for (int64_t i = 0; i < r.warmup; ++i) {
    QTK_CLI_ASSIGN_OR_FAIL(double ms, run_once());
    warm_ms = i == 0 ? ms : std::min(warm_ms, ms);
  }
  if (runs == 0) {  // about 2 s of runs, at least 10
    if (r.warmup == 0) {
      QTK_CLI_ASSIGN_OR_FAIL(warm_ms, run_once());
    }
    runs = std::clamp<int64_t>(static_cast<int64_t>(2000.0 / std::max(warm_ms, 1e-3)), 10, kMaxDefaultRuns);
  }
  r.runs = runs;
  r.sampled_peak_rss = sampler.stop();
  // The build's and warm-up's peak as VmHWM saw it, then a fresh peak for the timed runs.
  const uint64_t build_hwm = proc_status_bytes("VmHWM:");
  const bool running_reset = r.peak_is_session && reset_peak_rss();
  session->reset_profile();
  for (int64_t i = 0; i < runs; ++i) {
    QTK_CLI_ASSIGN_OR_FAIL(double ms, run_once());
    times[static_cast<size_t>(i)] = ms;
  }
  times.resize(static_cast<size_t>(runs));
  const uint64_t runs_hwm = std::max(proc_status_bytes("VmHWM:"), proc_status_bytes("VmRSS:"));
  r.peak_rss = std::max({build_hwm, runs_hwm, r.sampled_peak_rss});
  if (running_reset) r.running_rss = runs_hwm;
  r.latency = stats_of(std::move(times));
  r.activation_bytes = session->peak_activation_bytes();
  r.activation_pair_bytes = session->largest_activation_pair_bytes();
  r.arena_bytes = session->activation_arena_bytes();
  r.session_weight_bytes = session->weight_bytes();
  if (const uint64_t n = session->profiled_runs())
    for (const NodeTime& t : session->profile())
      r.profile.push_back({t.node, t.op_type, static_cast<double>(t.nanoseconds) / 1e6 / static_cast<double>(n)});
  return print_out(args.has("--json") ? render_json(r) : render_text(r));
}

}  // namespace

const CommandSpec kBenchCommand = {
    "bench",
    "MODEL",
    1,
    "time a model on random inputs: latency, throughput, build time, memory",
    "Builds a session for MODEL, feeds random inputs of its declared shapes (the first dimension\n"
    "set to --batch; floats uniform in [0, 1), integers in [0, 10)), runs it --warmup times\n"
    "untimed and then --runs times, and reports the median, 10th and 90th percentile latency\n"
    "(wall time of Session::run), throughput (batch / median), the session build time, the\n"
    "process's peak resident memory (the larger of VmHWM and the RSS sampled every 50 us through the\n"
    "build and warm-up runs; with the part the session added over the RSS before\n"
    "it, where the kernel lets the peak be reset; the program's code is mapped in before that\n"
    "reading, so the growth is what the session allocated), the weights the session holds (and\n"
    "the file's), and the activations' needs: the largest pair of values alive at once, the\n"
    "peak of all alive at once, and the planned arena that holds them; then the same growth while\n"
    "the built session runs (the peak over the timed runs: what it holds for its life, without\n"
    "the build's transient, which holds the model copy the session consumes). The kernels' instruction\n"
    "set is reported too; QTK_ISA=avx2 (or scalar) in the environment caps it, to measure a CPU\n"
    "without AVX-512 (or AVX2) on this one.",
    kOptions,
    run_bench,
};

}  // namespace qtk::cli
