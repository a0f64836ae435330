// Runs ONNX's own node conformance tests (Debian's libonnx-testdata): one
// folder per case, model.onnx + test_data_set_*/{input,output}_N.pb.
// A case whose op qtk does not register is counted "unsupported"; a case whose
// op is registered but which uses a variant qtk rejects with kUnsupported
// (e.g. a string dtype) is counted "unsupported variant" and listed; anything
// else that does not match is a failure and makes the exit code non-zero.
//
// usage: qtk_conformance [DATA_DIR] [--filter SUBSTR] [--verbose] [--list-unsupported]
#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "onnx/model_io.h"
#include "qtk/session.h"
#include "runtime/op_registry.h"

namespace fs = std::filesystem;
using namespace qtk;

namespace {

// ONNX 1.12's test data stores bfloat16 tensors as uint16 bit patterns
// (numpy has no bfloat16), and computed its float->bfloat16 expectations by
// truncation where the spec (and qtk, and ONNX Runtime) round to nearest
// even. So: bfloat16 bits are compared as bits, allowing one unit in the
// last place.
Tensor as_dtype(const Tensor& t, DType d) {
  Tensor r(d, t.shape());
  std::memcpy(r.raw(), t.raw(), t.nbytes());
  return r;
}

std::string compare_bfloat16_bits(const Tensor& want_u16, const Tensor& got) {
  if (want_u16.shape() != got.shape()) return "shape " + shape_to_string(got.shape());
  for (int64_t i = 0; i < got.numel(); ++i) {
    const int a = want_u16.data<uint16_t>()[i], b = got.data<uint16_t>()[i];
    if (std::abs(a - b) > 1) return "bfloat16 element " + std::to_string(i) + " differs by more than 1 ulp";
  }
  return {};
}

std::string compare(const Tensor& want, const Tensor& got) {
  if (want.dtype() == DType::kUInt16 && got.dtype() == DType::kBFloat16) return compare_bfloat16_bits(want, got);
  if (want.dtype() != got.dtype())
    return std::string("dtype ") + dtype_name(got.dtype()) + ", expected " + dtype_name(want.dtype());
  if (want.shape() != got.shape()) return "shape " + shape_to_string(got.shape()) + ", expected " + shape_to_string(want.shape());
  const bool is_float = want.dtype() == DType::kFloat32 || want.dtype() == DType::kFloat64 ||
                        want.dtype() == DType::kFloat16 || want.dtype() == DType::kBFloat16;
  for (int64_t i = 0; i < want.numel(); ++i) {
    if (is_float) {
      double a = want.get_as_double(i), b = got.get_as_double(i);
      if (std::isnan(a) && std::isnan(b)) continue;
      if (std::isinf(a) && a == b) continue;
      // numpy.testing.assert_allclose with ONNX's backend defaults.
      if (!(std::fabs(a - b) <= 1e-7 + 1e-3 * std::fabs(a)))
        return "element " + std::to_string(i) + " is " + std::to_string(b) + ", expected " + std::to_string(a);
    } else if (want.get_as_int64(i) != got.get_as_int64(i)) {
      return "element " + std::to_string(i) + " is " + std::to_string(got.get_as_int64(i)) + ", expected " +
             std::to_string(want.get_as_int64(i));
    }
  }
  return {};
}

std::vector<std::string> sorted_pb(const fs::path& dir, const std::string& prefix) {
  std::vector<std::pair<int, std::string>> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::string n = e.path().filename().string();
    if (n.rfind(prefix, 0) == 0 && n.size() > 3 && n.substr(n.size() - 3) == ".pb")
      files.emplace_back(std::stoi(n.substr(prefix.size())), e.path().string());
  }
  std::sort(files.begin(), files.end());
  std::vector<std::string> r;
  for (auto& f : files) r.push_back(f.second);
  return r;
}

enum class Outcome { kPass, kFail, kUnsupported, kUnsupportedVariant, kInvalidData };

// A test input whose shape contradicts the model's declared fixed shape (a
// few ONNX 1.12 CastLike cases): qtk, like ONNX Runtime, refuses such input,
// so the case says nothing about the op. Listed, not counted as pass or fail.
std::string contradicts_declaration(const TensorInfo& info, const Tensor& t) {
  if (!info.has_shape) return {};
  bool ok = t.rank() == static_cast<int>(info.shape.size());
  for (size_t d = 0; ok && d < info.shape.size(); ++d) ok = info.shape[d] < 0 || info.shape[d] == t.shape()[d];
  return ok ? std::string() : "input '" + info.name + "' data has shape " + shape_to_string(t.shape()) +
                                  ", which the model's declaration excludes";
}

Outcome run_case(const fs::path& dir, std::string& why) {
  auto model = onnx_io::load_model((dir / "model.onnx").string());
  if (!model.ok()) {
    why = model.status().message();
    return model.status().code() == ErrorCode::kUnsupported ? Outcome::kUnsupportedVariant : Outcome::kFail;
  }
  const auto& reg = rt::OpRegistry::global();
  for (const auto& n : model->graph.nodes)
    if (!reg.supports(n.domain, n.op_type)) {
      why = n.op_type;
      return Outcome::kUnsupported;
    }
  auto session = Session::create(*model);
  if (!session.ok()) {
    why = session.status().message();
    return session.status().code() == ErrorCode::kUnsupported ? Outcome::kUnsupportedVariant : Outcome::kFail;
  }
  bool any = false;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_directory() || e.path().filename().string().rfind("test_data_set", 0) != 0) continue;
    any = true;
    std::vector<Tensor> inputs, expected;
    for (const auto& f : sorted_pb(e.path(), "input_")) {
      auto t = onnx_io::load_tensor_file(f);
      if (!t.ok()) { why = t.status().message(); return Outcome::kUnsupportedVariant; }
      inputs.push_back(*t);
    }
    for (const auto& f : sorted_pb(e.path(), "output_")) {
      auto t = onnx_io::load_tensor_file(f);
      if (!t.ok()) { why = t.status().message(); return Outcome::kUnsupportedVariant; }
      expected.push_back(*t);
    }
    // Graph inputs that are initializers are not fed; files cover the rest in order.
    if (inputs.size() > (*session)->inputs().size()) inputs.resize((*session)->inputs().size());
    for (size_t i = 0; i < inputs.size(); ++i)
      if (inputs[i].dtype() == DType::kUInt16 && (*session)->inputs()[i].dtype == DType::kBFloat16)
        inputs[i] = as_dtype(inputs[i], DType::kBFloat16);
    for (size_t i = 0; i < inputs.size(); ++i) {
      why = contradicts_declaration((*session)->inputs()[i], inputs[i]);
      if (!why.empty()) return Outcome::kInvalidData;
    }
    auto out = (*session)->run(inputs);
    if (!out.ok()) {
      why = out.status().message();
      return out.status().code() == ErrorCode::kUnsupported ? Outcome::kUnsupportedVariant : Outcome::kFail;
    }
    if (out->size() < expected.size()) { why = "too few outputs"; return Outcome::kFail; }
    for (size_t i = 0; i < expected.size(); ++i) {
      std::string diff = compare(expected[i], (*out)[i]);
      if (!diff.empty()) {
        why = "output " + std::to_string(i) + ": " + diff;
        return Outcome::kFail;
      }
    }
  }
  if (!any) { why = "no test_data_set"; return Outcome::kFail; }
  return Outcome::kPass;
}

}  // namespace

int main(int argc, char** argv) {
  std::string data = "/usr/share/libonnx-testdata/data/node";
  std::string filter;
  bool verbose = false, list_unsupported = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--filter" && i + 1 < argc) filter = argv[++i];
    else if (a == "--verbose") verbose = true;
    else if (a == "--list-unsupported") list_unsupported = true;
    else data = a;
  }
  if (!fs::is_directory(data)) {
    std::fprintf(stderr, "error: conformance data not found at %s (apt-get install libonnx-testdata)\n", data.c_str());
    return 2;
  }
  std::vector<fs::path> cases;
  for (const auto& e : fs::directory_iterator(data))
    if (e.is_directory() && e.path().filename().string().find(filter) != std::string::npos) cases.push_back(e.path());
  std::sort(cases.begin(), cases.end());
  int pass = 0, fail = 0, unsup = 0, variant = 0, invalid = 0;
  std::map<std::string, int> missing_ops;
  for (const auto& c : cases) {
    std::string why;
    Outcome o = run_case(c, why);
    const std::string name = c.filename().string();
    switch (o) {
      case Outcome::kPass: ++pass; if (verbose) std::printf("PASS %s\n", name.c_str()); break;
      case Outcome::kFail: ++fail; std::printf("FAIL %s: %s\n", name.c_str(), why.c_str()); break;
      case Outcome::kUnsupported: ++unsup; ++missing_ops[why]; break;
      case Outcome::kInvalidData:
        ++invalid;
        std::printf("INVALID-TEST-DATA %s: %s\n", name.c_str(), why.c_str());
        break;
      case Outcome::kUnsupportedVariant:
        ++variant;
        std::printf("UNSUPPORTED-VARIANT %s: %s\n", name.c_str(), why.c_str());
        break;
    }
  }
  if (list_unsupported)
    for (const auto& [op, n] : missing_ops) std::printf("unsupported op %s (%d cases)\n", op.c_str(), n);
  std::printf(
      "conformance: %d passed, %d failed, %d unsupported-variant, %d unsupported-op, %d invalid-test-data (of %zu "
      "cases)\n",
      pass, fail, variant, unsup, invalid, cases.size());
  return fail == 0 ? 0 : 1;
}
