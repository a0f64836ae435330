// Reading and writing ONNX files. This folder is the only code that sees protobuf.
#pragma once

#include <string>

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::onnx_io {

// Loads a model; weights may be initializers, Constant nodes or external
// data files next to the model. ONNX's checker runs, but its complaints only
// become Model::warnings (libonnx 1.12 knows IR <= 8 and opset <= 17).
Expected<ir::Model> load_model(const std::string& path);
Expected<ir::Model> load_model_from_bytes(const std::string& bytes, const std::string& base_dir);

// Writes through a temporary file and a rename, so a failed save never leaves
// a half-written model and never clobbers the input on error.
Status save_model(const ir::Model& model, const std::string& path);
Expected<std::string> serialize_model(const ir::Model& model);

// A serialized TensorProto (the .pb files of ONNX's conformance tests).
Expected<Tensor> load_tensor_file(const std::string& path);
Expected<std::string> serialize_tensor(const Tensor& t, const std::string& name);

// Runs ONNX's shape inference on the model and records every inferred
// shape as a value_info. Failures are returned as messages, not errors.
std::vector<std::string> infer_shapes(ir::Model& model);

}  // namespace qtk::onnx_io
