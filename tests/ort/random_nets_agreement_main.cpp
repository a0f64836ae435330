// Random nets (tests/unit/random_conv_net.h, random_seq_net.h) in qtk and in
// ONNX Runtime: the checks that qtk's own semantics (reference and
// optimized kernels alike) are ONNX's on shapes no shared model has.
//   float:  qtk's float session against ORT, |a - b| <= 1e-4 + 1e-3 |a|
//           (the conformance tests' tolerance);
//   int8:   the net quantized by qtk (QDQ), qtk's integer session against
//           ORT at its `basic` optimization level, which runs the QDQ graph
//           as the ONNX spec defines it (Q and DQ nodes, float ops): codes
//           may differ by one where the spec's float rounding and qtk's
//           fixed point part, and that grows with depth, so the relative L2
//           error must stay under 5% (a wrong pad, stride or layout gives
//           far more). ORT's fused integer run (level `all`) is reported
//           beside it, not judged: on some attention nets it is far off the
//           float model (8.5-90% in a run of 100) where qtk stays within 2.1%.
//
// usage: qtk_random_nets_agreement --source-dir DIR --work-dir DIR [--node PATH] [--nets N]
// One line per net; exit status 1 if any net fails.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "data/npy.h"
#include "shell_quote.h"
#include "qtk/model.h"
#include "qtk/quantize.h"
#include "qtk/session.h"
#include "random_conv_net.h"
#include "random_seq_net.h"

namespace fs = std::filesystem;
using namespace qtk;

namespace {

struct Options {
  fs::path source_dir, work_dir;
  std::string node = "node";
  int nets = 24;  // of each kind
};

using ort_driver::quote;

// ORT's first output for x, through tests/ort/ort_run.mjs.
Expected<Tensor> run_ort(const Options& opt, const ir::Model& m, const Tensor& x, const std::string& tag,
                         const std::string& level = "all") {
  const fs::path model = opt.work_dir / (tag + ".onnx"), in = opt.work_dir / (tag + ".in.npz"),
                 out = opt.work_dir / (tag + ".ort.npz"), log = opt.work_dir / (tag + ".ort.log");
  QTK_RETURN_IF_ERROR(save_model(m, model.string()));
  QTK_RETURN_IF_ERROR(data::write_npz({{"x", x}}, in.string()));
  const fs::path script = opt.source_dir / "tests" / "ort" / "ort_run.mjs";
  const std::string cmd = quote(opt.node) + " " + quote(script.string()) + " " + quote(model.string()) + " " +
                          quote(in.string()) + " " + quote(out.string()) + " --threads 1 --optimization " + level +
                          " 2> " + quote(log.string());
  if (std::system(cmd.c_str()) != 0) return internal_error("ONNX Runtime failed (see " + log.string() + ")");
  QTK_ASSIGN_OR_RETURN(data::NamedTensors outs, data::read_npz(out.string()));
  const std::string& name = m.graph.outputs.at(0).name;
  for (auto& [n, t] : outs)
    if (n == name) return t;
  return internal_error("ORT wrote no output '" + name + "'");
}

Expected<Tensor> run_qtk(const ir::Model& m, const Tensor& x, bool integer) {
  SessionOptions o;
  o.integer = integer;
  QTK_ASSIGN_OR_RETURN(auto s, Session::create(m, o));
  QTK_ASSIGN_OR_RETURN(auto y, s->run(std::vector<Tensor>{x}));
  return y.at(0);
}

// "" when qtk's y agrees with ORT's: element-wise (float) or in relative L2 (int8).
std::string compare(const Tensor& ort, const Tensor& qtk, bool integer) {
  if (ort.shape() != qtk.shape() || ort.dtype() != DType::kFloat32 || qtk.dtype() != DType::kFloat32)
    return "shape " + shape_to_string(qtk.shape()) + " in qtk, " + shape_to_string(ort.shape()) + " in ORT";
  double diff2 = 0, ref2 = 0;
  for (int64_t i = 0; i < ort.numel(); ++i) {
    const double a = ort.data<float>()[i], b = qtk.data<float>()[i], d = std::fabs(a - b);
    diff2 += d * d;
    ref2 += a * a;
    if (!integer && !(d <= 1e-4 + 1e-3 * std::fabs(a)))
      return "element " + std::to_string(i) + ": qtk " + std::to_string(b) + ", ORT " + std::to_string(a);
  }
  const double rel = std::sqrt(diff2 / std::max(ref2, 1e-30));
  if (integer && rel > 0.05) return "relative L2 error " + std::to_string(rel);
  return "";
}

std::string rel_error(const Tensor& ref, const Tensor& y) {
  if (ref.shape() != y.shape()) return "shape";
  double d2 = 0, r2 = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    const double a = ref.data<float>()[i], b = y.data<float>()[i];
    d2 += (a - b) * (a - b);
    r2 += a * a;
  }
  return std::to_string(std::sqrt(d2 / std::max(r2, 1e-30)));
}

int run(const Options& opt) {
  int failures = 0;
  for (int kind = 0; kind < 2; ++kind)
    for (int k = 0; k < opt.nets; ++k) {
      const uint32_t seed = (kind == 0 ? 1000u : 5000u) + static_cast<uint32_t>(k);
      std::ostringstream log;
      ir::Model model;
      Shape sample;
      if (kind == 0) {
        auto n = qtk::testing::random_conv_net(seed, log);
        model = std::move(n.model);
        sample = {n.c, n.h, n.w};
      } else {
        auto n = qtk::testing::random_seq_net(seed, log);
        model = std::move(n.model);
        sample = {n.t, n.d};
      }
      auto shaped = [&](int64_t batch) {
        Shape s{batch};
        s.insert(s.end(), sample.begin(), sample.end());
        return s;
      };
      const Tensor calib = qtk::testing::uniform_tensor(shaped(8), seed + 1, kind == 0 ? 0.f : -1.f, 1.f);
      const Tensor x = qtk::testing::uniform_tensor(shaped(2), seed + 2, kind == 0 ? 0.f : -1.f, 1.f);
      auto q = quantize(model, QuantConfig{}, CalibrationData{{calib}});
      std::string verdict, notes;
      Tensor float_out;
      for (bool integer : {false, true}) {
        if (integer && !q.ok()) {
          verdict += " int8: quantize failed: " + q.status().message();
          continue;
        }
        const ir::Model& m = integer ? q->model : model;
        const std::string tag = "net" + std::to_string(seed) + (integer ? "_int8" : "_float");
        auto ort = run_ort(opt, m, x, tag, integer ? "basic" : "all");
        auto mine = run_qtk(m, x, integer);
        std::string why = !ort.ok() ? ort.status().message() : !mine.ok() ? mine.status().message()
                                                                           : compare(*ort, *mine, integer);
        if (!integer && mine.ok()) float_out = *mine;
        // Which side moved away from the float model: each one's error against it.
        if (integer && !why.empty() && ort.ok() && mine.ok() && float_out.defined())
          why += " (against float: qtk " + rel_error(float_out, *mine) + ", ORT " + rel_error(float_out, *ort) + ")";
        if (integer && mine.ok() && float_out.defined()) {  // ORT's fused run, for the record
          auto fused = run_ort(opt, m, x, tag + "_fused");
          if (fused.ok() && compare(*fused, *mine, true) != "")
            notes += " (ORT fused: " + rel_error(float_out, *fused) + " off float, qtk " + rel_error(float_out, *mine) + ")";
        }
        if (!why.empty()) verdict += std::string(integer ? " int8: " : " float: ") + why;
      }
      failures += !verdict.empty();
      std::printf("%s %s%s%s\n", verdict.empty() ? "ok  " : "FAIL", log.str().c_str(), verdict.c_str(), notes.c_str());
      std::fflush(stdout);
    }
  std::printf("%d of %d nets disagree\n", failures, 2 * opt.nets);
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "usage: qtk_random_nets_agreement --source-dir DIR --work-dir DIR [--node PATH] [--nets N]\n");
      return 2;
    }
    const std::string v = argv[++i];
    if (a == "--source-dir") opt.source_dir = v;
    else if (a == "--work-dir") opt.work_dir = v;
    else if (a == "--node") opt.node = v;
    else if (a == "--nets") opt.nets = std::atoi(v.c_str());
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (opt.source_dir.empty() || opt.work_dir.empty()) {
    std::fprintf(stderr, "--source-dir and --work-dir are required\n");
    return 2;
  }
  std::error_code ec;
  fs::create_directories(opt.work_dir, ec);
  return run(opt);
}
