// ModelProto -> ir::Model.
#include <google/protobuf/io/coded_stream.h>
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "onnx/model_io.h"
#include "onnx/tensor_proto.h"

namespace qtk::onnx_io {

namespace {

constexpr int kMaxGraphDepth = 32;

Expected<ir::ValueInfo> read_value_info(const onnx::ValueInfoProto& v) {
  ir::ValueInfo vi;
  vi.name = v.name();
  vi.doc_string = v.doc_string();
  if (!v.has_type()) return vi;
  if (!v.type().has_tensor_type()) {
    vi.is_tensor = false;
    return vi;
  }
  const auto& tt = v.type().tensor_type();
  vi.dtype = static_cast<DType>(tt.elem_type());
  if (tt.has_shape()) {
    vi.has_shape = true;
    for (const auto& d : tt.shape().dim()) {
      ir::Dim dim;
      if (d.has_dim_value()) dim.value = d.dim_value() >= 0 ? d.dim_value() : -1;
      if (d.has_dim_param()) dim.param = d.dim_param();
      vi.shape.push_back(dim);
    }
  }
  return vi;
}

Expected<ir::Graph> read_graph(const onnx::GraphProto& gp, const std::string& base_dir, int depth);

Expected<ir::Attribute> read_attribute(const onnx::AttributeProto& a, const std::string& base_dir, int depth,
                                       const std::string& node_name) {
  ir::Attribute r;
  r.name = a.name();
  r.doc_string = a.doc_string();
  using AP = onnx::AttributeProto;
  auto type = a.type();
  if (type == AP::UNDEFINED) {  // IR < 0.0.2 files leave type unset; infer it
    if (a.has_f()) type = AP::FLOAT;
    else if (a.has_i()) type = AP::INT;
    else if (a.has_s()) type = AP::STRING;
    else if (a.has_t()) type = AP::TENSOR;
    else if (a.has_g()) type = AP::GRAPH;
    else if (a.floats_size()) type = AP::FLOATS;
    else if (a.ints_size()) type = AP::INTS;
    else if (a.strings_size()) type = AP::STRINGS;
  }
  switch (type) {
    case AP::FLOAT: r.type = ir::AttrType::kFloat; r.f = a.f(); break;
    case AP::INT: r.type = ir::AttrType::kInt; r.i = a.i(); break;
    case AP::STRING: r.type = ir::AttrType::kString; r.s = a.s(); break;
    case AP::TENSOR: {
      r.type = ir::AttrType::kTensor;
      QTK_ASSIGN_OR_RETURN(r.t, tensor_from_proto(a.t(), base_dir));
      break;
    }
    case AP::GRAPH: {
      r.type = ir::AttrType::kGraph;
      QTK_ASSIGN_OR_RETURN(ir::Graph g, read_graph(a.g(), base_dir, depth + 1));
      r.g = std::make_shared<ir::Graph>(std::move(g));
      break;
    }
    case AP::FLOATS: r.type = ir::AttrType::kFloats; r.floats.assign(a.floats().begin(), a.floats().end()); break;
    case AP::INTS: r.type = ir::AttrType::kInts; r.ints.assign(a.ints().begin(), a.ints().end()); break;
    case AP::STRINGS: r.type = ir::AttrType::kStrings; r.strings.assign(a.strings().begin(), a.strings().end()); break;
    case AP::TENSORS: {
      r.type = ir::AttrType::kTensors;
      for (const auto& t : a.tensors()) {
        QTK_ASSIGN_OR_RETURN(Tensor x, tensor_from_proto(t, base_dir));
        r.tensors.push_back(std::move(x));
      }
      break;
    }
    case AP::GRAPHS: {
      r.type = ir::AttrType::kGraphs;
      for (const auto& g : a.graphs()) {
        QTK_ASSIGN_OR_RETURN(ir::Graph x, read_graph(g, base_dir, depth + 1));
        r.graphs.push_back(std::make_shared<ir::Graph>(std::move(x)));
      }
      break;
    }
    default:
      return unsupported("node '" + node_name + "': attribute '" + a.name() + "' has unsupported type " +
                         std::to_string(static_cast<int>(a.type())));
  }
  return r;
}

Expected<ir::Graph> read_graph(const onnx::GraphProto& gp, const std::string& base_dir, int depth) {
  if (depth > kMaxGraphDepth) return parse_error("subgraphs nested deeper than " + std::to_string(kMaxGraphDepth));
  ir::Graph g;
  g.name = gp.name();
  g.doc_string = gp.doc_string();
  for (const auto& v : gp.input()) {
    QTK_ASSIGN_OR_RETURN(auto vi, read_value_info(v));
    g.inputs.push_back(std::move(vi));
  }
  for (const auto& v : gp.output()) {
    QTK_ASSIGN_OR_RETURN(auto vi, read_value_info(v));
    g.outputs.push_back(std::move(vi));
  }
  for (const auto& v : gp.value_info()) {
    QTK_ASSIGN_OR_RETURN(auto vi, read_value_info(v));
    g.value_infos.push_back(std::move(vi));
  }
  for (const auto& t : gp.initializer()) {
    auto x = tensor_from_proto(t, base_dir);
    if (!x.ok()) return x.status().with_context("initializer '" + t.name() + "'");
    if (g.initializers.count(t.name())) return parse_error("initializer '" + t.name() + "' appears twice");
    g.set_initializer(t.name(), std::move(x).value());
  }
  if (gp.sparse_initializer_size() > 0)
    return unsupported("graph '" + gp.name() + "' has sparse initializers, which qtk does not support");
  int index = 0;
  for (const auto& np : gp.node()) {
    ir::Node n;
    n.name = np.name().empty() ? np.op_type() + "_" + std::to_string(index) : np.name();
    ++index;
    n.op_type = np.op_type();
    n.domain = np.domain() == "ai.onnx" ? "" : np.domain();
    n.doc_string = np.doc_string();
    n.inputs.assign(np.input().begin(), np.input().end());
    n.outputs.assign(np.output().begin(), np.output().end());
    for (const auto& a : np.attribute()) {
      QTK_ASSIGN_OR_RETURN(auto attr, read_attribute(a, base_dir, depth, n.name));
      n.attrs.push_back(std::move(attr));
    }
    g.nodes.push_back(std::move(n));
  }
  return g;
}

std::string run_checker(const onnx::ModelProto& mp) {
  try {
    onnx::checker::CheckerContext ctx;
    ctx.set_ir_version(static_cast<int>(mp.ir_version()));
    std::unordered_map<std::string, int> opsets;
    for (const auto& o : mp.opset_import()) opsets[o.domain()] = static_cast<int>(o.version());
    ctx.set_opset_imports(opsets);
    onnx::checker::LexicalScopeContext lex;
    onnx::checker::check_graph(mp.graph(), ctx, lex);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    auto nl = msg.find('\n');
    if (nl != std::string::npos) msg = msg.substr(0, nl);
    return msg;
  }
  return {};
}

}  // namespace

Expected<ir::Model> load_model_from_bytes(const std::string& bytes, const std::string& base_dir) {
  if (bytes.empty()) return parse_error("empty file, not an ONNX model");
  onnx::ModelProto mp;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(std::min<size_t>(bytes.size(), INT32_MAX)));
  in.SetTotalBytesLimit(INT32_MAX);
  if (!mp.ParseFromCodedStream(&in) || !in.ConsumedEntireMessage())
    return parse_error("not a valid ONNX model (protobuf parse failed; truncated or corrupt file?)");
  if (!mp.has_graph()) return parse_error("not a valid ONNX model (no graph)");
  if (mp.ir_version() <= 0 || mp.ir_version() > 10)
    return unsupported("IR version " + std::to_string(mp.ir_version()) + " is not supported (1..10)");

  ir::Model m;
  m.ir_version = mp.ir_version();
  m.producer_name = mp.producer_name();
  m.producer_version = mp.producer_version();
  m.domain = mp.domain();
  m.model_version = mp.model_version();
  m.doc_string = mp.doc_string();
  for (const auto& o : mp.opset_import()) m.opsets.push_back({o.domain() == "ai.onnx" ? "" : o.domain(), o.version()});
  for (const auto& kv : mp.metadata_props()) m.metadata.emplace_back(kv.key(), kv.value());
  if (mp.functions_size() > 0)
    m.warnings.push_back("model-local functions are present; nodes that call them are unsupported");
  auto g = read_graph(mp.graph(), base_dir, 0);
  if (!g.ok()) return g.status();
  m.graph = std::move(g).value();
  if (std::string complaint = run_checker(mp); !complaint.empty())
    m.warnings.push_back("onnx checker (libonnx 1.12): " + complaint);
  return m;
}

Expected<ir::Model> load_model(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return not_found("model file not found: " + path);
  if (std::filesystem::is_directory(path, ec)) return invalid_argument("model path is a directory: " + path);
  std::ifstream f(path, std::ios::binary);
  if (!f) return io_error("cannot open model file: " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  auto base = std::filesystem::path(path).parent_path().string();
  if (base.empty()) base = ".";
  auto m = load_model_from_bytes(ss.str(), base);
  if (!m.ok()) return m.status().with_context(path);
  return m;
}

Expected<Tensor> load_tensor_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return not_found("tensor file not found: " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  onnx::TensorProto tp;
  if (!tp.ParseFromString(ss.str())) return parse_error("not a TensorProto: " + path);
  return tensor_from_proto(tp, std::filesystem::path(path).parent_path().string());
}

}  // namespace qtk::onnx_io
