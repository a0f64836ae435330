// Quantized models: qtk's integer runtime against ONNX Runtime. Quantizes
//   models/cnn.onnx      to QOperator (QLinearConv, QGemm, integer MaxPool ...)
//   models/resnet20.onnx to QDQ (ORT fuses it into its own integer kernels)
//   models/vit_fm.onnx   to QOperator (QLinearMatMul, QLinearConcat, ...)
// with 256 Fashion-MNIST training images (W8 per channel, A8 uint8, MinMax),
// saves them, runs each saved file in onnxruntime-node (tests/ort/ort_run.mjs)
// and in a qtk Session with SessionOptions::integer on the same test images,
// and requires the two to pick the same top-1 class on >= 99.5% of images.
// Integer kernels round differently (ORT requantizes in float, qtk in fixed
// point), so codes may differ by one here and there: agreement, not equality.
//
// usage: qtk_quantized_agreement --source-dir DIR --work-dir DIR [--node PATH]
//                                [--images N] [--min-agreement F]
// Prints one line per model (agreement, both accuracies); exit status 1 if a
// model fails or agrees less than required.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "data/npy.h"
#include "shell_quote.h"
#include "qtk/model.h"
#include "qtk/quantize.h"
#include "qtk/session.h"
#include "quant/schemes/qformat.h"

namespace fs = std::filesystem;
using namespace qtk;

namespace {

struct Options {
  fs::path source_dir, work_dir;
  std::string node = "node";
  int64_t images = 2000;
  int64_t calib_images = 256;
  double min_agreement = 0.995;
};

using ort_driver::quote;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

Expected<std::vector<int64_t>> top1(const Tensor& logits) {
  if (logits.dtype() != DType::kFloat32 || logits.rank() != 2)
    return invalid_argument("logits must be float32 [N, classes], got " + std::string(dtype_name(logits.dtype())) +
                            shape_to_string(logits.shape()));
  std::vector<int64_t> r;
  const int64_t n = logits.dim(0), c = logits.dim(1);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = logits.data<float>() + i * c;
    int64_t best = 0;
    for (int64_t j = 1; j < c; ++j)
      if (row[j] > row[best]) best = j;
    r.push_back(best);
  }
  return r;
}

// Rows [begin, end) of a batch (axis 0), copied.
Tensor slice_rows(const Tensor& t, int64_t begin, int64_t end) {
  Shape shape = t.shape();
  shape[0] = end - begin;
  Tensor r(t.dtype(), shape);
  const size_t row = t.nbytes() / static_cast<size_t>(t.dim(0));
  std::memcpy(r.raw(), static_cast<const std::byte*>(t.raw()) + begin * row, r.nbytes());
  return r;
}

// qtk's reference integer kernels are single-threaded: run two sessions on
// the two halves of the batch side by side, and put the logits back together.
Expected<Tensor> run_qtk_integer(const fs::path& model, const Tensor& images) {
  constexpr int kParts = 2;
  SessionOptions so;
  so.integer = true;
  std::vector<std::unique_ptr<Session>> sessions;
  for (int p = 0; p < kParts; ++p) {
    QTK_ASSIGN_OR_RETURN(auto s, Session::load(model.string(), so));
    if (s->inputs().size() != 1 || s->outputs().empty()) return invalid_argument("expected one input and an output");
    sessions.push_back(std::move(s));
  }
  const int64_t n = images.dim(0);
  std::vector<Expected<std::vector<Tensor>>> results(kParts, Expected<std::vector<Tensor>>(internal_error("not run")));
  std::vector<std::thread> workers;
  for (int p = 0; p < kParts; ++p)
    workers.emplace_back([&, p] {
      results[p] = sessions[p]->run({slice_rows(images, n * p / kParts, n * (p + 1) / kParts)});
    });
  for (auto& w : workers) w.join();
  std::vector<Tensor> parts;
  for (auto& r : results) {
    if (!r.ok()) return r.status();
    parts.push_back((*r)[0]);
  }
  Shape shape = parts[0].shape();
  shape[0] = n;
  Tensor all(parts[0].dtype(), shape);
  size_t offset = 0;
  for (const auto& t : parts) {
    std::memcpy(static_cast<std::byte*>(all.raw()) + offset, t.raw(), t.nbytes());
    offset += t.nbytes();
  }
  return all;
}

// Runs ORT on the model through ort_run.mjs; returns its first output.
Expected<Tensor> run_ort(const Options& opt, const fs::path& model, const std::string& input_name, const Tensor& x,
                         const std::string& tag) {
  const fs::path in = opt.work_dir / (tag + ".in.npz"), out = opt.work_dir / (tag + ".ort.npz"),
                 log = opt.work_dir / (tag + ".ort.log");
  QTK_RETURN_IF_ERROR(data::write_npz({{input_name, x}}, in.string()));
  std::error_code ec;
  fs::remove(out, ec);
  const fs::path script = opt.source_dir / "tests" / "ort" / "ort_run.mjs";
  const std::string cmd = quote(opt.node) + " " + quote(script.string()) + " " + quote(model.string()) + " " +
                          quote(in.string()) + " " + quote(out.string()) + " --threads 2 2> " + quote(log.string());
  if (const int rc = std::system(cmd.c_str()); rc != 0) {
    std::string msg;
    if (FILE* f = std::fopen(log.string().c_str(), "r")) {
      char buf[512];
      while (std::fgets(buf, sizeof buf, f)) msg += buf;
      std::fclose(f);
    }
    return internal_error("ONNX Runtime failed (exit " + std::to_string(rc) + "): " + msg);
  }
  QTK_ASSIGN_OR_RETURN(data::NamedTensors outs, data::read_npz(out.string()));
  if (outs.empty()) return internal_error("ONNX Runtime wrote no output");
  return outs[0].second;
}

// Quantizes, saves, runs both sides; prints one line. Returns "" on success.
// One model per export form; the int4 cases write ONNX's packed INT4 type
// (opset 21) and ONNX Runtime's MatMulNBits (weight-only, per group).
struct Case {
  std::string name;
  ExportFormat format;
  quant::QFormat weights = quant::QFormat::kInt8;
  ActivationMode activations = ActivationMode::kStatic;
  Granularity granularity = Granularity::kPerChannel;
  quant::QFormat activation_format = quant::QFormat::kUInt8;  // uint4: W4A4 (opset 21), first/last layer 8-bit
  int64_t nbits_accuracy_level = 0;  // 4: MatMulNBits multiplies in int8 (A quantized per block)
};

std::string check(const Options& opt, const Case& c, const data::Dataset& calib, const data::Dataset& test) {
  const std::string& name = c.name;
  const auto t0 = std::chrono::steady_clock::now();
  auto model = load_model((opt.source_dir / "models" / (name + ".onnx")).string());
  if (!model.ok()) return "cannot load: " + model.status().message();
  QuantConfig cfg;
  cfg.format = c.format;
  cfg.weight_format = c.weights;
  cfg.activations = c.activations;
  cfg.granularity = c.granularity;
  cfg.activation_format = c.activation_format;
  cfg.group_size = 32;
  cfg.nbits_accuracy_level = c.nbits_accuracy_level;
  cfg.threads = 2;
  auto q = quantize(*model, cfg, CalibrationData{{calib.images}});
  if (!q.ok()) return "quantize failed: " + q.status().message();
  const std::string fmt = std::string(c.format == ExportFormat::kQOperator ? "qoperator" : "qdq") + "-w" +
                          quant::traits(c.weights).name +
                          (c.activations == ActivationMode::kWeightOnly ? "-weight-only" : "") +
                          (c.granularity == Granularity::kPerGroup ? "-group32" : "") +
                          (c.nbits_accuracy_level ? "-level" + std::to_string(c.nbits_accuracy_level) : "") +
                          (c.activation_format != quant::QFormat::kUInt8
                               ? std::string("-a") + quant::traits(c.activation_format).name
                               : "");
  const fs::path saved = opt.work_dir / (name + "." + fmt + ".onnx");
  if (Status st = save_model(q->model, saved.string()); !st.ok()) return "save failed: " + st.message();

  // qtk reads the saved file back, as a user would.
  const auto tq = std::chrono::steady_clock::now();
  auto qtk_out = run_qtk_integer(saved, test.images);
  if (!qtk_out.ok()) return "qtk integer session: " + qtk_out.status().message();
  const double qtk_seconds = seconds_since(tq);
  const auto inputs = q->model.graph.runtime_inputs();
  if (inputs.size() != 1) return "expected one model input";
  auto ort_out = run_ort(opt, saved, inputs[0]->name, test.images, name + "." + fmt);
  if (!ort_out.ok()) return ort_out.status().message();

  auto a = top1(*qtk_out);
  auto b = top1(*ort_out);
  if (!a.ok()) return "qtk output: " + a.status().message();
  if (!b.ok()) return "ORT output: " + b.status().message();
  if (a->size() != test.labels.size() || b->size() != test.labels.size()) return "output batch size differs";
  int64_t agree = 0, qtk_right = 0, ort_right = 0;
  for (size_t i = 0; i < a->size(); ++i) {
    agree += (*a)[i] == (*b)[i];
    qtk_right += (*a)[i] == test.labels[i];
    ort_right += (*b)[i] == test.labels[i];
  }
  const double n = static_cast<double>(a->size());
  const double rate = agree / n;
  std::printf("%s %s (%s): top-1 agreement qtk integer vs ORT %.4f (%lld/%lld); accuracy qtk integer %.4f, ORT %.4f "
              "[qtk run %.1fs, total %.1fs]\n",
              rate >= opt.min_agreement ? "PASS" : "FAIL", name.c_str(), fmt.c_str(), rate,
              static_cast<long long>(agree), static_cast<long long>(a->size()), qtk_right / n, ort_right / n,
              qtk_seconds, seconds_since(t0));
  std::fflush(stdout);
  if (rate < opt.min_agreement) return "agreement below " + std::to_string(opt.min_agreement);
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value\n", a.c_str());
      return 2;
    }
    const std::string v = argv[++i];
    if (a == "--source-dir") opt.source_dir = v;
    else if (a == "--work-dir") opt.work_dir = v;
    else if (a == "--node") opt.node = v;
    else if (a == "--images") opt.images = std::atoll(v.c_str());
    else if (a == "--min-agreement") opt.min_agreement = std::atof(v.c_str());
    else {
      std::fprintf(stderr,
                   "usage: qtk_quantized_agreement --source-dir DIR --work-dir DIR [--node PATH] [--images N] "
                   "[--min-agreement F]\n");
      return 2;
    }
  }
  if (opt.source_dir.empty() || opt.work_dir.empty() || opt.images <= 0) {
    std::fprintf(stderr, "--source-dir and --work-dir are required\n");
    return 2;
  }
  std::error_code ec;
  fs::create_directories(opt.work_dir, ec);
  if (ec) {
    std::fprintf(stderr, "cannot create %s: %s\n", opt.work_dir.string().c_str(), ec.message().c_str());
    return 1;
  }
  auto calib = data::load_dataset("fashion-mnist:train", opt.calib_images);
  auto test = data::load_dataset("fashion-mnist:test", opt.images);
  if (!calib.ok() || !test.ok()) {
    std::printf("FAIL cannot load Fashion-MNIST: %s\n",
                (!calib.ok() ? calib.status() : test.status()).message().c_str());
    return 1;
  }
  int failures = 0;
  for (const Case& c : {Case{"cnn", ExportFormat::kQOperator}, Case{"resnet20", ExportFormat::kQDQ},
                        Case{"vit_fm", ExportFormat::kQOperator},  // QLinearMatMul, QLinearConcat, QLinearAdd/Mul
                        Case{"fmnist_small", ExportFormat::kQDQ, quant::QFormat::kInt4},
                        Case{"mlp", ExportFormat::kQOperator, quant::QFormat::kInt4, ActivationMode::kWeightOnly,
                             Granularity::kPerGroup},
                        Case{"mlp", ExportFormat::kQOperator, quant::QFormat::kInt4, ActivationMode::kWeightOnly,
                             Granularity::kPerGroup, quant::QFormat::kUInt8, 4},
                        Case{"cnn", ExportFormat::kQDQ, quant::QFormat::kInt4, ActivationMode::kStatic,
                             Granularity::kPerChannel, quant::QFormat::kUInt4}}) {
    const std::string& name = c.name;
    if (std::string err = check(opt, c, *calib, *test); !err.empty()) {
      ++failures;
      std::printf("FAIL %s: %s\n", name.c_str(), err.c_str());
    }
  }
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
