// Raises a model's default-domain opset for a quantized export: per-axis
// DequantizeLinear (per-channel weights) needs opset 13, 4-bit types and
// blocked quantization opset 21. Ops whose form or meaning changed on the way
// are rewritten or refused (below); the others are the same ops under the new
// version.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::quant {

// Rewrites m from its opset (11 or later) to `target` (13 or later) and sets
// the opset and the IR version that goes with it. Rewritten, every If/Loop/
// Scan body included (copied first: bodies may be shared with another model):
//   from < 13: Split's `split`, Squeeze/Unsqueeze's and ReduceSum's `axes`
//     attributes become inputs; Softmax/LogSoftmax/Hardmax, which before 13
//     flattened their input to 2-D at `axis` (default 1), keep that meaning:
//     an explicit axis where it is the last one, else Flatten -> op -> Reshape
//     to the input's shape;
//   from < 18 (target >= 18): the other Reduce ops' `axes` become an input,
//     and a Split without sizes gets num_outputs;
//   RoiAlign across 16 keeps its old default coordinate mode; GridSample
//     across 20 gets the new names of its modes.
// Refused: opsets below 11, Resize's tf_half_pixel_for_nn (gone at 13),
// BatchNormalization's training outputs across 14, DFT across 20 (its axis
// became an input), GroupNormalization across 21 (its meaning changed), and
// a Softmax-family axis out of range. `unique` returns an
// unused name built from its argument (for added nodes, values and
// initializers).
Status upgrade_opset(ir::Model& m, int64_t target, const std::function<std::string(const std::string&)>& unique);

}  // namespace qtk::quant
