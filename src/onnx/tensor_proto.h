// TensorProto <-> qtk::Tensor, shared by the model reader and writer.
#pragma once

#include <onnx/onnx_pb.h>

#include <string>

#include "qtk/status.h"
#include "qtk/tensor.h"

namespace qtk::onnx_io {

// base_dir resolves external data; empty disables external data.
Expected<Tensor> tensor_from_proto(const onnx::TensorProto& p, const std::string& base_dir);
void tensor_to_proto(const Tensor& t, const std::string& name, onnx::TensorProto* p);

}  // namespace qtk::onnx_io
