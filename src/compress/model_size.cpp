#include "compress/model_size.h"

#include <zlib.h>

#include <vector>

#include "compress/weight_masks.h"
#include "onnx/model_io.h"

namespace qtk::compress {

Expected<uint64_t> deflated_size(const std::string& bytes) {
  uLongf cap = compressBound(static_cast<uLong>(bytes.size()));
  std::vector<Bytef> buf(cap);
  const int rc = compress2(buf.data(), &cap, reinterpret_cast<const Bytef*>(bytes.data()),
                           static_cast<uLong>(bytes.size()), Z_BEST_COMPRESSION);
  if (rc != Z_OK) return internal_error("zlib compress2 failed with code " + std::to_string(rc));
  return static_cast<uint64_t>(cap);
}

Expected<ModelSize> measure_size(const ir::Model& m) {
  ModelSize s;
  for (const auto& [name, t] : m.graph.initializers) {
    s.parameters += t.numel();
    s.nonzero += count_nonzero(t);
  }
  QTK_ASSIGN_OR_RETURN(std::string bytes, onnx_io::serialize_model(m));
  s.file_bytes = bytes.size();
  QTK_ASSIGN_OR_RETURN(s.deflated_bytes, deflated_size(bytes));
  return s;
}

}  // namespace qtk::compress
