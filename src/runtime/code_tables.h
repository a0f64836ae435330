// 8-bit elementwise regions as one table lookup (integer sessions).
//
// A QDQ model keeps float elementwise ops between a DequantizeLinear and a
// QuantizeLinear (GELU's Div → Erf → Add → Mul, Sigmoid, Tanh, scaling by a
// constant). When such a region reads one 8-bit tensor x with per-tensor
// parameters, and its constants are scalars, its 8-bit output y depends on
// each code of x alone: y = f(x) takes at most 256 values. The session then
// evaluates the region once, at build time, with the same kernels on the 256
// codes, and runs a CodeTable node (y[i] = table[x[i]]) in its place: the
// same bits as the region, without the float round trip.
#pragma once

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::rt {

class OpRegistry;
struct OpsetMap;

// The node that replaces a region: domain kCodeTableDomain, op "CodeTable",
// inputs (x, table), where table is a 256-element initializer of y's dtype
// indexed by x's code (uint8 as is, int8 + 128); attribute "input_signed"
// (x is int8) and "fused" (the region's op types, for profiles and errors).
inline constexpr const char* kCodeTableDomain = "qtk";
inline constexpr const char* kCodeTableOp = "CodeTable";

struct CodeTableStats {
  int regions = 0;         // CodeTable nodes made
  int nodes_replaced = 0;  // nodes they stand for
};

// Replaces every such region of m's main graph (largest first from each
// root, regions of at least two nodes), evaluating each with `registry`'s
// kernels. Regions whose evaluation fails are left as they are.
Expected<CodeTableStats> fuse_code_tables(ir::Model& m, const OpRegistry& registry);

}  // namespace qtk::rt
