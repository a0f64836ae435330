// Public API: ONNX models in and out.
#pragma once

#include <string>

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk {

using Model = ir::Model;

Expected<Model> load_model(const std::string& path);
// Atomic: writes a temporary file, then renames it over `path`.
Status save_model(const Model& model, const std::string& path);

}  // namespace qtk
