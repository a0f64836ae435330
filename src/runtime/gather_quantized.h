// Gather before DequantizeLinear (integer sessions).
//
// A QDQ model stores a quantized embedding table as DequantizeLinear(codes)
// → Gather(ids): run as written, every run dequantizes the whole table to
// float and then copies out the few rows the ids pick. DequantizeLinear is
// elementwise (each output element depends only on its own code and its
// own scale / zero point), so gathering the codes first and dequantizing
// only the rows picked gives the same bits:
//   Gather(DQ(Wq, s, zp), idx, axis=a) == DQ(Gather(Wq, idx, axis=a), s', zp')
// with s', zp' the parameters of each gathered element:
//   per tensor               s, zp as they are (any gather axis);
//   per axis d != a          s, zp, axis renumbered for the output's rank
//                            (d < a keeps its number; d > a counts from the
//                            end, as Gather keeps data's trailing axes);
//   per axis d == a, 2-D     s, zp gathered with the same indices, as the
//   table                    one-block-per-row layout of a blocked DQ (the
//                            rows' parameters follow the rows).
// Blocked DQs, DQs of runtime codes and other layouts stay as they are.
//
// The Gather keeps its name and attributes, so a bad index fails as before,
// naming it. A DQ still read elsewhere (tied weights) stays for its other
// readers; the Gathers stop reading it. ONNX Runtime's quantizer writes
// DQ → Gather → Q with the table's parameters: that Q gives back the codes
// (exactly, for 8-bit codes and a normal scale), so it goes too and the
// Gather writes its output. Sessions run this after qdq_to_qoperator, so
// the integer ops picked are those of the graph as written (a new DQ
// before a MatMul or Add would otherwise turn a float island into an
// integer op, with different rounding).
#pragma once

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::rt {

// Rewrites each Gather (main graph, default domain) whose data is a
// DequantizeLinear of constant codes with constant float32 parameters, as
// listed above. Returns how many Gathers; leaves the graph sorted.
Expected<int> gather_before_dequantize(ir::Model& m);

}  // namespace qtk::rt
