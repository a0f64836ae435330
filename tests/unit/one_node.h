// Test helper: build a one-node model in code and run it through a Session.
#pragma once

#include <string>
#include <vector>

#include "ir/graph.h"
#include "qtk/session.h"

namespace qtk::testing {

struct OneNodeOptions {
  int64_t opset = 17;
  int threads = 1;
  bool optimize = true;
};

inline ir::ValueInfo value_info(const std::string& name, DType dt) {
  ir::ValueInfo v;
  v.name = name;
  v.dtype = dt;
  return v;
}

// Inputs are fed in order; an empty name marks an absent optional input.
// Outputs are named y0, y1, ...
inline Expected<std::vector<Tensor>> run_one_node(const std::string& op, const std::vector<std::string>& input_names,
                                                  const std::vector<Tensor>& inputs, std::vector<ir::Attribute> attrs,
                                                  size_t num_outputs, const OneNodeOptions& o = {}) {
  ir::Model m;
  m.opsets = {{"", o.opset}};
  ir::Node n;
  n.name = "node";
  n.op_type = op;
  n.inputs = input_names;
  n.attrs = std::move(attrs);
  std::vector<Tensor> feeds;
  for (size_t i = 0; i < input_names.size(); ++i) {
    if (input_names[i].empty()) continue;
    m.graph.inputs.push_back(value_info(input_names[i], inputs[i].dtype()));
    feeds.push_back(inputs[i]);
  }
  for (size_t k = 0; k < num_outputs; ++k) {
    n.outputs.push_back("y" + std::to_string(k));
    m.graph.outputs.push_back(value_info("y" + std::to_string(k), DType::kUndefined));
  }
  m.graph.nodes.push_back(n);
  SessionOptions so;
  so.threads = o.threads;
  so.optimize = o.optimize;
  QTK_ASSIGN_OR_RETURN(auto session, Session::create(m, so));
  return session->run(feeds);
}

}  // namespace qtk::testing
