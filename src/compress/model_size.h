// How big a model is: parameters (all and nonzero), bytes of its ONNX file,
// and bytes after deflate (zlib level 9, what zip would store): pruning
// shows in the nonzero count and the deflated size, clustering in the
// deflated size, channel pruning everywhere.
#pragma once

#include <cstdint>

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::compress {

struct ModelSize {
  int64_t parameters = 0;  // elements of all initializers
  int64_t nonzero = 0;
  uint64_t file_bytes = 0;
  uint64_t deflated_bytes = 0;
};

Expected<ModelSize> measure_size(const ir::Model& m);

// Deflated size of a byte string (zlib, best compression).
Expected<uint64_t> deflated_size(const std::string& bytes);

}  // namespace qtk::compress
