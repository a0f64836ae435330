// QDQ → QOperator: rewrites DequantizeLinear → op → QuantizeLinear patterns of
// a QDQ graph into operators that take and return integer tensors
// (QLinearConv, QLinearMatMul, com.microsoft QGemm / QLinearAdd / QLinearMul /
// QLinearGlobalAveragePool, ConvInteger / MatMulInteger for float outputs and
// dynamic quantization, and data movement on the integer tensor). The same
// rewrite serves the QOperator export (quantize with ExportFormat::kQOperator)
// and integer execution (SessionOptions::integer).
//
// Patterns (x_q: an 8-bit tensor, DQ/Q per tensor unless said otherwise):
//   DQ(x_q) DQ(w const, per tensor or axis 0) [DQ(b int32) | b float const]
//       → Conv → [Relu | Clip] → Q                     ⇒ QLinearConv [→ Clip]
//   DQ(a_q) DQ(b, const per column or per tensor) → MatMul → [act] → Q
//                                                       ⇒ QLinearMatMul [→ Clip]
//   DQ(a_q) DQ(w const) [bias] → Gemm → [act] → Q, or Gemm with a float output
//                                                       ⇒ com.microsoft QGemm
//   DQ(a_q) DQ(b_q) → Add | Mul → [act] → Q             ⇒ QLinearAdd | QLinearMul
//   DQ(x_q) → GlobalAveragePool → [act] → Q             ⇒ QLinearGlobalAveragePool
//   DQ(x_q) → MaxPool | Reshape | Flatten | Transpose | Squeeze | Unsqueeze → Q,
//       Q with the same scale and zero point as the DQ  ⇒ the op on x_q
//   Conv | MatMul | Gemm with a float output (no Q after it, e.g. the logits,
//   or dynamic quantization: DynamicQuantizeLinear → DQ → op)
//       ⇒ ConvInteger | MatMulInteger → Cast → Mul(x_scale · w_scale) [→ Add(bias)]
//   DQ(x_q) → Q with equal parameters                  ⇒ x_q
//   A float × DQ(w 4-bit, block-wise, const) → MatMul | Gemm
//                                                       ⇒ com.microsoft MatMulNBits
//
// A Relu or Clip between the op and its Q is folded into the output range:
// quantization is monotone, so Q(clip(v, lo, hi)) = clamp(Q(v), Q(lo), Q(hi))
// exactly, and Q(relu(v)) = max(Q(v), y_zero_point). When those codes lie at
// or beyond the type's limits the clamp the op already does is enough;
// otherwise an integer Clip(y_q, Q(lo), Q(hi)) follows the op (opset >= 12).
//
// 4-bit activations (Q/DQ to UINT4/INT4 with a constant scalar scale) first
// become Clip(x, grid limits) → Q to the 8-bit container, the same codes; the
// Clip folds like any activation, so layers of mixed widths all run on the
// 8-bit kernels. A Relu/Clip followed by such a Clip folds as one clamp.
//
// Everything else stays as it was (float islands between DQ and Q are fine).
// DQ nodes nobody reads any more are removed; the graph comes out sorted.
#pragma once

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::quant {

// How many patterns each rewrite replaced.
struct QOperatorStats {
  int qlinear_conv = 0;
  int qlinear_matmul = 0;
  int qgemm = 0;
  int qlinear_add = 0;
  int qlinear_mul = 0;
  int qlinear_global_average_pool = 0;
  int qlinear_concat = 0;
  int integer_data_movement = 0;  // MaxPool, Reshape, ... run on the integer tensor
  int integer_accumulate = 0;     // ConvInteger / MatMulInteger + Cast + Mul (float output)
  int activations_folded = 0;     // Relu / Clip folded into an output range
  int integer_clips = 0;          // ... of which needed an integer Clip node
  int dq_q_pairs_removed = 0;
  int matmul_nbits = 0;  // weight-only 4-bit MatMul / Gemm (matmul_nbits_writer.h)
  int total() const {
    return matmul_nbits + qlinear_conv + qlinear_matmul + qgemm + qlinear_add + qlinear_mul + qlinear_global_average_pool + qlinear_concat +
           integer_data_movement + integer_accumulate + dq_q_pairs_removed;
  }
};

struct QOperatorOptions {
  // Emit ONNX Runtime's com.microsoft ops (QGemm, QLinearAdd, QLinearMul,
  // QLinearGlobalAveragePool). Off: only standard ONNX ops are written, and
  // those patterns stay as DQ → float op → Q.
  bool contrib_ops = true;
  QOperatorStats* stats = nullptr;  // filled when not null
  // MatMulNBits' accuracy_level attribute (matmul_nbits_writer.h): 0 unset, 4 int8.
  int64_t matmul_nbits_accuracy_level = 0;
  // Session-internal: a QLinearConv whose output codes a Relu/Clip or a
  // narrow (e.g. 4-bit) format clamps gets the clamp as attributes
  // kOutputMinAttr/kOutputMaxAttr, applied in its requantization, instead of
  // a separate integer Clip. Not standard ONNX: never set for exported files.
  bool fuse_output_clamp = false;
  // Session-internal: Convs whose weight has more than this rank (0: any)
  // stay DQ -> float Conv -> Q. The session's optimized QLinearConv takes 1-D
  // and 2-D convs only; a 3-D one would fall back to the reference kernel,
  // 35-73x slower than the float Conv on a small video net.
  int max_conv_weight_rank = 0;
};
inline constexpr const char* kOutputMinAttr = "qtk_output_min";
inline constexpr const char* kOutputMaxAttr = "qtk_output_max";

// Rewrites m in place. Fails only on a graph that cannot be sorted.
Status qdq_to_qoperator(ir::Model& m, const QOperatorOptions& options = {});

}  // namespace qtk::quant
