// Agreement with ONNX Runtime: runs each model in qtk and in ONNX Runtime
// (through tests/ort/ort_run.mjs, exchanging .npz files) on the same inputs
// and requires
//   1. qtk's outputs to agree with ORT's: |a-b| <= 1e-4*max(|a|,|b|) + 1e-5
//      (integer and bool outputs exactly), with 1 and with 2 threads;
//   2. the model after qtk load -> save_model to give, in ORT, outputs
//      bit-identical to ORT's on the original file (the writer loses nothing);
//      and in qtk bit-identical outputs to qtk's on the original.
// Models: models/{mlp,cnn,resnet20,mobilenetv2_fm,vit_fm}.onnx on 64 real Fashion-MNIST test images
// and on random images, and every tests/models/*.onnx and
// tests/models/external/*.onnx on seeded random inputs (dynamic dims = 2).
//
// usage: qtk_ort_agreement --source-dir DIR --work-dir DIR [--node PATH]
//                          [--filter SUBSTR] [--verbose]
// Prints one line per model and input set; exit status 1 if anything failed.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/npy.h"
#include "shell_quote.h"
#include "qtk/model.h"
#include "qtk/session.h"

namespace fs = std::filesystem;
using namespace qtk;

namespace {

struct Options {
  fs::path source_dir;
  fs::path work_dir;
  std::string node = "node";
  std::string filter;
  bool verbose = false;
};

struct InputSet {
  std::string label;  // e.g. "fashion-mnist[64]"
  std::vector<Tensor> tensors;  // in the order of Session::inputs()
};

using ort_driver::quote;

// Uniform floats in [lo, hi) from a fixed-seed mt19937 (its sequence is fixed
// by the standard; the float conversion is ours, so inputs repeat everywhere).
Tensor random_tensor(DType dtype, const Shape& shape, std::mt19937& gen, float lo, float hi) {
  Tensor t(dtype, shape);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float u = static_cast<float>(gen() >> 8) * (1.0f / 16777216.0f);
    const float v = lo + (hi - lo) * u;
    switch (dtype) {
      case DType::kFloat32: t.data<float>()[i] = v; break;
      case DType::kFloat64: t.data<double>()[i] = v; break;
      case DType::kInt64: t.data<int64_t>()[i] = static_cast<int64_t>(u * 4); break;
      case DType::kInt32: t.data<int32_t>()[i] = static_cast<int32_t>(u * 4); break;
      case DType::kBool: t.data<uint8_t>()[i] = u < 0.5f; break;
      default: break;  // zeros
    }
  }
  return t;
}

// Input names and declared shapes come from the model itself (not from a
// qtk Session), so the ORT-side checks run even where qtk lacks a kernel.
struct InputSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;  // -1 = dynamic
};

Expected<std::vector<InputSpec>> input_specs(const ir::Model& m) {
  std::vector<InputSpec> r;
  for (const ir::ValueInfo* v : m.graph.runtime_inputs()) {
    if (!v->has_shape) return invalid_argument("input '" + v->name + "' has no declared shape");
    if (dtype_size(v->dtype) == 0) return unsupported("input '" + v->name + "' has dtype " + dtype_name(v->dtype));
    InputSpec spec{v->name, v->dtype, {}};
    for (const auto& d : v->shape) spec.shape.push_back(d.is_fixed() ? d.value : -1);
    r.push_back(std::move(spec));
  }
  return r;
}

std::vector<Tensor> random_inputs(const std::vector<InputSpec>& specs, int64_t dynamic_dim, uint32_t seed,
                                  float lo, float hi) {
  std::mt19937 gen(seed);
  std::vector<Tensor> r;
  for (const auto& in : specs) {
    Shape shape;
    for (int64_t d : in.shape) shape.push_back(d >= 0 ? d : dynamic_dim);
    r.push_back(random_tensor(in.dtype, shape, gen, lo, hi));
  }
  return r;
}

// |a-b| <= 1e-4*max(|a|,|b|) + 1e-5 for floats; exact otherwise. Returns "" or
// a description of the mismatches; *worst_ratio gets max |a-b|/tolerance.
std::string compare_close(const Tensor& ort, const Tensor& qtk, double* worst_ratio) {
  if (ort.dtype() != qtk.dtype())
    return std::string("dtype ") + dtype_name(qtk.dtype()) + " in qtk, " + dtype_name(ort.dtype()) + " in ORT";
  if (ort.shape() != qtk.shape())
    return "shape " + shape_to_string(qtk.shape()) + " in qtk, " + shape_to_string(ort.shape()) + " in ORT";
  const bool is_float = ort.dtype() == DType::kFloat32 || ort.dtype() == DType::kFloat64 ||
                        ort.dtype() == DType::kFloat16 || ort.dtype() == DType::kBFloat16;
  int64_t bad = 0, worst = -1;
  double worst_excess = 0;
  for (int64_t i = 0; i < ort.numel(); ++i) {
    if (!is_float) {
      if (ort.get_as_int64(i) != qtk.get_as_int64(i) && bad++ == 0) worst = i;
      continue;
    }
    const double a = ort.get_as_double(i), b = qtk.get_as_double(i);
    if (std::isnan(a) && std::isnan(b)) continue;
    if (a == b) continue;  // also equal infinities
    const double tol = 1e-4 * std::max(std::fabs(a), std::fabs(b)) + 1e-5;
    const double err = std::fabs(a - b);
    *worst_ratio = std::max(*worst_ratio, std::isfinite(err) ? err / tol : INFINITY);
    if (!(err <= tol)) {
      ++bad;
      const double excess = std::isfinite(err) ? err / tol : INFINITY;
      if (worst < 0 || excess > worst_excess) worst = i, worst_excess = excess;
    }
  }
  if (bad == 0) return {};
  char buf[256];
  std::snprintf(buf, sizeof buf, "%lld of %lld elements differ; worst at flat index %lld: qtk %.9g, ORT %.9g",
                static_cast<long long>(bad), static_cast<long long>(ort.numel()), static_cast<long long>(worst),
                qtk.get_as_double(worst), ort.get_as_double(worst));
  return buf;
}

// Bit-identical (same dtype, shape and bytes).
std::string compare_exact(const Tensor& want, const Tensor& got) {
  if (want.dtype() != got.dtype() || want.shape() != got.shape())
    return "dtype/shape " + std::string(dtype_name(got.dtype())) + shape_to_string(got.shape()) + " vs " +
           dtype_name(want.dtype()) + shape_to_string(want.shape());
  if (want.nbytes() != 0 && std::memcmp(want.raw(), got.raw(), want.nbytes()) != 0) {
    for (int64_t i = 0; i < want.numel(); ++i)
      if (want.get_as_double(i) != got.get_as_double(i) &&
          !(std::isnan(want.get_as_double(i)) && std::isnan(got.get_as_double(i)))) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "not bit-identical; first difference at flat index %lld: %.9g vs %.9g",
                      static_cast<long long>(i), got.get_as_double(i), want.get_as_double(i));
        return buf;
      }
    return "not bit-identical (NaN payloads differ)";
  }
  return {};
}

class Checker {
 public:
  explicit Checker(Options o) : opt_(std::move(o)) {}

  int failures() const { return failures_; }

  void fail(const std::string& model, const std::string& what) {
    ++failures_;
    std::printf("FAIL %s: %s\n", model.c_str(), what.c_str());
    std::fflush(stdout);
  }

  // Runs ORT on `model_path` with `inputs` (named after `specs`).
  Expected<std::map<std::string, Tensor>> run_ort(const std::string& model_path, const std::vector<InputSpec>& specs,
                                                   const std::vector<Tensor>& inputs, const std::string& tag) {
    const fs::path in = opt_.work_dir / (tag + ".in.npz");
    const fs::path out = opt_.work_dir / (tag + ".ort.npz");
    const fs::path log = opt_.work_dir / (tag + ".ort.log");
    data::NamedTensors arrays;
    for (size_t i = 0; i < inputs.size(); ++i) arrays.emplace_back(specs[i].name, inputs[i]);
    QTK_RETURN_IF_ERROR(data::write_npz(arrays, in.string()));
    std::error_code ec;
    fs::remove(out, ec);
    const fs::path script = opt_.source_dir / "tests" / "ort" / "ort_run.mjs";
    const std::string cmd = quote(opt_.node) + " " + quote(script.string()) + " " + quote(model_path) + " " +
                            quote(in.string()) + " " + quote(out.string()) + " --threads 1 2> " + quote(log.string());
    if (opt_.verbose) std::printf("  $ %s\n", cmd.c_str());
    const int rc = std::system(cmd.c_str());
    if (rc != 0) {
      std::string msg;
      if (FILE* f = std::fopen(log.string().c_str(), "r")) {
        char buf[512];
        while (std::fgets(buf, sizeof buf, f)) msg += buf;
        std::fclose(f);
      }
      while (!msg.empty() && msg.back() == '\n') msg.pop_back();
      return internal_error("ONNX Runtime run failed (exit " + std::to_string(rc) + "): " + msg);
    }
    QTK_ASSIGN_OR_RETURN(data::NamedTensors outs, data::read_npz(out.string()));
    std::map<std::string, Tensor> r;
    for (auto& [name, t] : outs) r[name] = t;
    return r;
  }

  // qtk (1 and 2 threads) against ORT's outputs.
  void check_qtk(const std::string& where, const Session& sess, const std::vector<Tensor>& inputs,
                 const std::map<std::string, Tensor>& ort) {
    auto got = sess.run(inputs);
    const std::string threads = std::to_string(sess.threads()) + " thread(s)";
    if (!got.ok()) return fail(where, "qtk run with " + threads + " failed: " + got.status().message());
    for (size_t i = 0; i < sess.outputs().size(); ++i) {
      const std::string& out = sess.outputs()[i].name;
      auto it = ort.find(out);
      if (it == ort.end()) {
        fail(where, "ORT gave no output '" + out + "'");
        continue;
      }
      if (std::string d = compare_close(it->second, (*got)[i], &worst_ratio_); !d.empty())
        fail(where, "output '" + out + "' (qtk, " + threads + " vs ORT): " + d);
    }
  }

  // One model, several input sets.
  void check_model(const fs::path& path, const std::string& kind) {
    const std::string name = fs::relative(path, opt_.source_dir).string();
    if (!opt_.filter.empty() && name.find(opt_.filter) == std::string::npos) return;
    ++models_;
    auto model = load_model(path.string());
    if (!model.ok()) return fail(name, "qtk cannot load it: " + model.status().message());
    auto specs = input_specs(*model);
    if (!specs.ok()) return fail(name, specs.status().message());

    // The model after a qtk load -> save round trip.
    std::string stem = name;
    std::replace(stem.begin(), stem.end(), '/', '_');
    const fs::path saved = opt_.work_dir / (stem + ".saved.onnx");
    if (Status st = save_model(*model, saved.string()); !st.ok())
      return fail(name, "qtk save_model failed: " + st.message());

    // qtk sessions; when one cannot be made the ORT-only checks still run.
    SessionOptions one, two;
    two.threads = 2;
    auto s1 = Session::create(*model, one);
    if (!s1.ok()) fail(name, "qtk cannot prepare it: " + s1.status().message());
    auto s2 = Session::create(*model, two);
    if (s1.ok() && !s2.ok()) fail(name, "qtk cannot prepare it with 2 threads: " + s2.status().message());
    auto s_saved = Session::load(saved.string());
    if (s1.ok() && !s_saved.ok())
      fail(name, "qtk cannot prepare its own saved copy: " + s_saved.status().message());

    std::vector<InputSet> sets;
    if (kind == "fashion") {
      auto ds = data::load_dataset("fashion-mnist:test", 64);
      if (!ds.ok()) return fail(name, "cannot load Fashion-MNIST: " + ds.status().message());
      sets.push_back({"fashion-mnist[64]", {ds->images}});
      sets.push_back({"random[3]", random_inputs(*specs, 3, 7, 0.f, 1.f)});
    } else {
      sets.push_back({"random", random_inputs(*specs, 2, 42, -1.f, 1.f)});
    }

    for (const auto& set : sets) {
      const std::string where = name + " [" + set.label + "]";
      std::string tag = stem + "." + set.label;
      std::replace_if(tag.begin(), tag.end(), [](char c) { return c == '[' || c == ']'; }, '_');
      const int before = failures_;
      worst_ratio_ = 0;

      auto ort = run_ort(path.string(), *specs, set.tensors, tag);
      if (!ort.ok()) {
        fail(where, ort.status().message());
        continue;
      }
      if (s1.ok()) check_qtk(where, **s1, set.tensors, *ort);
      if (s2.ok()) check_qtk(where, **s2, set.tensors, *ort);

      // Saved copy: ORT on it must equal ORT on the original bit for bit.
      auto ort_saved = run_ort(saved.string(), *specs, set.tensors, tag + ".saved");
      if (!ort_saved.ok()) {
        fail(where, "saved copy: " + ort_saved.status().message());
      } else {
        for (const auto& [out, t] : *ort) {
          auto it = ort_saved->find(out);
          if (it == ort_saved->end()) fail(where, "saved copy: ORT gave no output '" + out + "'");
          else if (std::string d = compare_exact(t, it->second); !d.empty())
            fail(where, "output '" + out + "' of the qtk-saved copy in ORT vs the original in ORT: " + d);
        }
      }
      // ... and qtk on it must equal qtk on the original.
      if (s1.ok() && s_saved.ok()) {
        auto a = (*s1)->run(set.tensors);
        auto b = (*s_saved)->run(set.tensors);
        if (a.ok() && !b.ok()) fail(where, "qtk fails on its own saved copy: " + b.status().message());
        if (a.ok() && b.ok())
          for (size_t i = 0; i < a->size() && i < b->size(); ++i)
            if (std::string d = compare_exact((*a)[i], (*b)[i]); !d.empty())
              fail(where, "output '" + (*s1)->outputs()[i].name + "' of the qtk-saved copy in qtk vs the original: " + d);
      }

      if (failures_ == before && s1.ok())
        std::printf("PASS %s (max |qtk-ORT| / tolerance = %.3g)\n", where.c_str(), worst_ratio_);
      if (failures_ == before && !s1.ok())
        std::printf("     %s: the qtk-saved copy agrees in ORT (qtk itself could not run it)\n", where.c_str());
      std::fflush(stdout);
    }
  }

  int models() const { return models_; }

 private:
  Options opt_;
  int failures_ = 0;
  int models_ = 0;
  double worst_ratio_ = 0;  // over the current input set
};

std::vector<fs::path> onnx_files(const fs::path& dir) {
  std::vector<fs::path> r;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file() && e.path().extension() == ".onnx") r.push_back(e.path());
  std::sort(r.begin(), r.end());
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--source-dir") opt.source_dir = value();
    else if (a == "--work-dir") opt.work_dir = value();
    else if (a == "--node") opt.node = value();
    else if (a == "--filter") opt.filter = value();
    else if (a == "--verbose") opt.verbose = true;
    else {
      std::fprintf(stderr,
                   "usage: qtk_ort_agreement --source-dir DIR --work-dir DIR [--node PATH] [--filter SUBSTR] "
                   "[--verbose]\n");
      return 2;
    }
  }
  if (opt.source_dir.empty() || opt.work_dir.empty()) {
    std::fprintf(stderr, "--source-dir and --work-dir are required\n");
    return 2;
  }
  std::error_code ec;
  fs::create_directories(opt.work_dir, ec);
  if (ec) {
    std::fprintf(stderr, "cannot create %s: %s\n", opt.work_dir.string().c_str(), ec.message().c_str());
    return 1;
  }

  Checker c(opt);
  for (const char* m : {"mlp", "cnn", "resnet20", "mobilenetv2_fm", "vit_fm"})
    c.check_model(opt.source_dir / "models" / (std::string(m) + ".onnx"), "fashion");
  for (const auto& p : onnx_files(opt.source_dir / "tests" / "models")) c.check_model(p, "random");
  for (const auto& p : onnx_files(opt.source_dir / "tests" / "models" / "external")) c.check_model(p, "random");

  if (c.models() == 0) {
    std::printf("no model matched\n");
    return 1;
  }
  std::printf("%d model(s) checked, %d failure(s)\n", c.models(), c.failures());
  return c.failures() == 0 ? 0 : 1;
}
