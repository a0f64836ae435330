// qtk's own graph IR. Values are named by strings as in ONNX; an empty input
// name marks an absent optional input. Subgraphs (If/Loop bodies) hang off
// graph-typed attributes.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qtk/status.h"
#include "qtk/tensor.h"

namespace qtk::ir {

struct Graph;

enum class AttrType { kFloat, kInt, kString, kTensor, kGraph, kFloats, kInts, kStrings, kTensors, kGraphs };

struct Attribute {
  std::string name;
  AttrType type = AttrType::kInt;
  float f = 0.f;
  int64_t i = 0;
  std::string s;
  Tensor t;
  std::shared_ptr<Graph> g;
  std::vector<float> floats;
  std::vector<int64_t> ints;
  std::vector<std::string> strings;
  std::vector<Tensor> tensors;
  std::vector<std::shared_ptr<Graph>> graphs;
  std::string doc_string;
};

// Attribute builders for passes and tests.
Attribute attr_int(const std::string& name, int64_t v);
Attribute attr_float(const std::string& name, float v);
Attribute attr_string(const std::string& name, std::string v);
Attribute attr_ints(const std::string& name, std::vector<int64_t> v);
Attribute attr_floats(const std::string& name, std::vector<float> v);
Attribute attr_tensor(const std::string& name, Tensor v);
Attribute attr_graph(const std::string& name, Graph g);

struct Node {
  std::string name;
  std::string op_type;
  std::string domain;  // "" and "ai.onnx" are the default domain
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  std::vector<Attribute> attrs;
  std::string doc_string;

  const Attribute* attr(const std::string& n) const;
  Attribute* attr(const std::string& n);
  bool has_attr(const std::string& n) const { return attr(n) != nullptr; }
  int64_t attr_int(const std::string& n, int64_t def) const;
  float attr_float(const std::string& n, float def) const;
  std::string attr_string(const std::string& n, const std::string& def) const;
  std::vector<int64_t> attr_ints(const std::string& n, std::vector<int64_t> def = {}) const;
  std::vector<float> attr_floats(const std::string& n, std::vector<float> def = {}) const;
  void set_attr(Attribute a);
  void remove_attr(const std::string& n);
  bool has_input(size_t i) const { return i < inputs.size() && !inputs[i].empty(); }
  // "name (OpType)" for error messages.
  std::string describe() const;
};

// One dimension of a declared shape: a number, a symbolic name, or unknown.
struct Dim {
  int64_t value = -1;  // -1 when not a fixed number
  std::string param;   // symbolic name, e.g. "batch"
  bool is_fixed() const { return value >= 0; }
};

struct ValueInfo {
  std::string name;
  DType dtype = DType::kUndefined;
  bool has_shape = false;
  std::vector<Dim> shape;
  std::string doc_string;
  bool is_tensor = true;  // false for sequence/map/optional types (unsupported)
};

struct Graph {
  std::string name;
  std::string doc_string;
  std::vector<ValueInfo> inputs;
  std::vector<ValueInfo> outputs;
  std::vector<ValueInfo> value_infos;
  std::vector<Node> nodes;
  // Initializers in file order (order kept so save(load(x)) keeps it).
  std::vector<std::string> initializer_order;
  std::map<std::string, Tensor> initializers;

  const Tensor* find_initializer(const std::string& n) const;
  void set_initializer(const std::string& n, Tensor t);
  void remove_initializer(const std::string& n);
  const ValueInfo* find_value_info(const std::string& n) const;  // inputs, outputs, value_infos
  bool is_graph_input(const std::string& n) const;
  bool is_graph_output(const std::string& n) const;
  // Inputs that are not initializers (what a user must feed).
  std::vector<const ValueInfo*> runtime_inputs() const;
};

struct OpsetImport {
  std::string domain;
  int64_t version = 0;
};

struct Model {
  int64_t ir_version = 8;
  std::vector<OpsetImport> opsets;
  std::string producer_name;
  std::string producer_version;
  std::string domain;
  int64_t model_version = 0;
  std::string doc_string;
  std::vector<std::pair<std::string, std::string>> metadata;
  Graph graph;
  std::vector<std::string> warnings;  // non-fatal issues found while loading

  // Opset version imported for a domain ("" = default ONNX domain); 0 if none.
  int64_t opset(const std::string& domain = "") const;
};

bool is_default_domain(const std::string& d);

// Orders g.nodes so every node comes after the producers of its inputs.
// Names not produced by any node must be graph inputs, initializers or be in
// `outer_scope` (values visible from an enclosing graph). Fails on a cycle or
// a reference to a missing tensor, naming the node.
Status topological_sort(Graph& g, const std::vector<std::string>& outer_scope = {});

// Every value name a graph (and its subgraphs) reads but does not define.
std::vector<std::string> free_variables(const Graph& g);

}  // namespace qtk::ir
