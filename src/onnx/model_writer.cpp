// ir::Model -> ModelProto, and the save path (temp file + rename).
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "onnx/model_io.h"
#include "onnx/tensor_proto.h"

namespace qtk::onnx_io {

namespace {

void write_value_info(const ir::ValueInfo& v, onnx::ValueInfoProto* p) {
  p->set_name(v.name);
  if (!v.doc_string.empty()) p->set_doc_string(v.doc_string);
  if (v.dtype == DType::kUndefined && !v.has_shape) return;
  auto* tt = p->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(static_cast<int32_t>(v.dtype));
  if (v.has_shape) {
    auto* sh = tt->mutable_shape();
    for (const auto& d : v.shape) {
      auto* dp = sh->add_dim();
      if (d.is_fixed()) dp->set_dim_value(d.value);
      else if (!d.param.empty()) dp->set_dim_param(d.param);
    }
  }
}

void write_graph(const ir::Graph& g, onnx::GraphProto* gp);

void write_attribute(const ir::Attribute& a, onnx::AttributeProto* p) {
  using AP = onnx::AttributeProto;
  p->set_name(a.name);
  if (!a.doc_string.empty()) p->set_doc_string(a.doc_string);
  switch (a.type) {
    case ir::AttrType::kFloat: p->set_type(AP::FLOAT); p->set_f(a.f); break;
    case ir::AttrType::kInt: p->set_type(AP::INT); p->set_i(a.i); break;
    case ir::AttrType::kString: p->set_type(AP::STRING); p->set_s(a.s); break;
    case ir::AttrType::kTensor: p->set_type(AP::TENSOR); tensor_to_proto(a.t, "", p->mutable_t()); break;
    case ir::AttrType::kGraph: p->set_type(AP::GRAPH); write_graph(*a.g, p->mutable_g()); break;
    case ir::AttrType::kFloats: p->set_type(AP::FLOATS); for (float f : a.floats) p->add_floats(f); break;
    case ir::AttrType::kInts: p->set_type(AP::INTS); for (int64_t i : a.ints) p->add_ints(i); break;
    case ir::AttrType::kStrings: p->set_type(AP::STRINGS); for (const auto& s : a.strings) p->add_strings(s); break;
    case ir::AttrType::kTensors:
      p->set_type(AP::TENSORS);
      for (const auto& t : a.tensors) tensor_to_proto(t, "", p->add_tensors());
      break;
    case ir::AttrType::kGraphs:
      p->set_type(AP::GRAPHS);
      for (const auto& g : a.graphs) write_graph(*g, p->add_graphs());
      break;
  }
}

void write_graph(const ir::Graph& g, onnx::GraphProto* gp) {
  gp->set_name(g.name);
  if (!g.doc_string.empty()) gp->set_doc_string(g.doc_string);
  for (const auto& v : g.inputs) write_value_info(v, gp->add_input());
  for (const auto& v : g.outputs) write_value_info(v, gp->add_output());
  for (const auto& v : g.value_infos) write_value_info(v, gp->add_value_info());
  for (const auto& name : g.initializer_order) {
    auto it = g.initializers.find(name);
    if (it != g.initializers.end()) tensor_to_proto(it->second, name, gp->add_initializer());
  }
  for (const auto& n : g.nodes) {
    auto* np = gp->add_node();
    np->set_name(n.name);
    np->set_op_type(n.op_type);
    if (!n.domain.empty()) np->set_domain(n.domain);
    if (!n.doc_string.empty()) np->set_doc_string(n.doc_string);
    for (const auto& i : n.inputs) np->add_input(i);
    for (const auto& o : n.outputs) np->add_output(o);
    for (const auto& a : n.attrs) write_attribute(a, np->add_attribute());
  }
}

onnx::ModelProto to_proto(const ir::Model& m) {
  onnx::ModelProto mp;
  mp.set_ir_version(m.ir_version);
  if (!m.producer_name.empty()) mp.set_producer_name(m.producer_name);
  if (!m.producer_version.empty()) mp.set_producer_version(m.producer_version);
  if (!m.domain.empty()) mp.set_domain(m.domain);
  if (m.model_version) mp.set_model_version(m.model_version);
  if (!m.doc_string.empty()) mp.set_doc_string(m.doc_string);
  for (const auto& o : m.opsets) {
    auto* op = mp.add_opset_import();
    op->set_domain(o.domain);
    op->set_version(o.version);
  }
  for (const auto& [k, v] : m.metadata) {
    auto* kv = mp.add_metadata_props();
    kv->set_key(k);
    kv->set_value(v);
  }
  write_graph(m.graph, mp.mutable_graph());
  return mp;
}

}  // namespace

Expected<std::string> serialize_model(const ir::Model& model) {
  std::string out;
  if (!to_proto(model).SerializeToString(&out))
    return internal_error("model does not serialize (over 2 GiB? external data is not written yet)");
  return out;
}

Status save_model(const ir::Model& model, const std::string& path) {
  QTK_ASSIGN_OR_RETURN(std::string bytes, serialize_model(model));
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return io_error("cannot write " + tmp);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f) return io_error("write failed: " + tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    return io_error("cannot rename to " + path);
  }
  return Status::Ok();
}

Expected<std::string> serialize_tensor(const Tensor& t, const std::string& name) {
  onnx::TensorProto p;
  tensor_to_proto(t, name, &p);
  std::string out;
  if (!p.SerializeToString(&out)) return internal_error("tensor does not serialize");
  return out;
}

namespace {
// A node whose attributes libonnx 1.12's inference divides by (strides,
// dilations, kernel sizes, block sizes) at zero or below: it then dies of
// SIGFPE instead of throwing. "" when there is none.
std::string inference_hazard(const ir::Graph& g) {
  for (const auto& n : g.nodes)
    for (const auto& a : n.attrs) {
      if (a.name == "strides" || a.name == "dilations" || a.name == "kernel_shape")
        for (int64_t v : a.ints)
          if (v <= 0) return n.describe() + " has " + a.name + " " + std::to_string(v);
      if (a.name == "blocksize" && a.type == ir::AttrType::kInt && a.i <= 0)
        return n.describe() + " has blocksize " + std::to_string(a.i);
      for (const auto& sub : a.graphs)
        if (std::string h = inference_hazard(*sub); !h.empty()) return h;
      if (a.g)
        if (std::string h = inference_hazard(*a.g); !h.empty()) return h;
    }
  return "";
}
}  // namespace

std::vector<std::string> infer_shapes(ir::Model& model) {
  std::vector<std::string> problems;
  if (std::string hazard = inference_hazard(model.graph); !hazard.empty()) {
    problems.push_back("shape inference skipped: " + hazard);
    return problems;
  }
  // libonnx 1.12's inference dereferences the type of every graph input and
  // crashes (not throws) on an untyped one, so such graphs are not inferred.
  for (const auto* list : {&model.graph.inputs, &model.graph.outputs, &model.graph.value_infos})
    for (const auto& v : *list)
      if (v.is_tensor && v.dtype == DType::kUndefined) {
        problems.push_back("shape inference skipped: '" + v.name + "' has no declared type");
        return problems;
      }
  // Shapes need the weights' dtypes and dims, not their values: initializers
  // of more than a few values go to libonnx as typed graph inputs, so that
  // inference does not copy every weight into a protobuf (a session's build
  // would hold its weights twice at that moment: its peak resident memory).
  // Small ones (shapes, axes, scales: values that decide output shapes) stay
  // initializers with their data.
  constexpr int64_t kMaxValuesNeeded = 64;
  ir::Model lite = model;  // shallow: the tensors' storage is shared
  for (auto it = lite.graph.initializers.begin(); it != lite.graph.initializers.end();) {
    if (it->second.numel() <= kMaxValuesNeeded || dtype_size(it->second.dtype()) == 0 ||
        lite.graph.is_graph_input(it->first)) {
      ++it;
      continue;
    }
    ir::ValueInfo v;
    v.name = it->first;
    v.dtype = it->second.dtype();
    v.has_shape = true;
    for (int64_t d : it->second.shape()) v.shape.push_back(ir::Dim{d, {}});
    lite.graph.inputs.push_back(std::move(v));
    it = lite.graph.initializers.erase(it);
  }
  std::erase_if(lite.graph.initializer_order, [&](const std::string& n) { return !lite.graph.initializers.count(n); });
  onnx::ModelProto mp = to_proto(lite);
  try {
    onnx::shape_inference::InferShapes(mp);
  } catch (const std::exception& e) {
    problems.push_back(e.what());
    return problems;
  }
  model.graph.value_infos.clear();
  for (const auto& v : mp.graph().value_info()) {
    ir::ValueInfo vi;
    vi.name = v.name();
    if (v.type().has_tensor_type()) {
      const auto& tt = v.type().tensor_type();
      vi.dtype = static_cast<DType>(tt.elem_type());
      if (tt.has_shape()) {
        vi.has_shape = true;
        for (const auto& d : tt.shape().dim()) {
          ir::Dim dim;
          if (d.has_dim_value()) dim.value = d.dim_value();
          if (d.has_dim_param()) dim.param = d.dim_param();
          vi.shape.push_back(dim);
        }
      }
    }
    model.graph.value_infos.push_back(std::move(vi));
  }
  return problems;
}

}  // namespace qtk::onnx_io
