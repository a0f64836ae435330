// Einsum (ONNX opset 12+): the equation grammar (einsum_parse.cpp) and the
// contraction (einsum.cpp). Semantics follow numpy.einsum, which ONNX's
// reference uses: implicit output = the '...' dims, then the labels that
// appear once, in ASCII order (upper case before lower case; ONNX Runtime
// may order or refuse mixed-case implicit outputs otherwise); a label
// repeated within a term takes a diagonal (its dims must be equal); a dim of
// 1 stretches to the other operands' size of its label (letters and '...'
// dims alike, as in numpy and ONNX Runtime), '...' dims right-aligned;
// labels absent from the output are summed.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "qtk/status.h"
#include "qtk/tensor.h"

namespace qtk::rt {
class OpRegistry;
class ThreadPool;
}  // namespace qtk::rt

namespace qtk::rt::ref {

// One term of the equation as written: its letters, and where "..." sits
// among them (before letters[ellipsis_at]; -1 when the term has none).
struct EinsumTerm {
  std::string letters;
  int ellipsis_at = -1;
};

struct EinsumSpec {
  std::string equation;  // as given, for error messages
  std::vector<EinsumTerm> inputs;
  EinsumTerm output;
  bool explicit_output = false;  // "->" given
};

// Syntax only (no shapes): letters a-z A-Z, at most one "..." per term,
// terms split by ',', at most one "->", spaces ignored.
Expected<EinsumSpec> parse_einsum(const std::string& equation);

// One operand as seen by the contraction: each distinct label it carries
// and that label's element stride (a label repeated in the term: the sum of
// its axes' strides, i.e. the diagonal; a dim of 1 stretched to a larger
// size: stride 0).
struct EinsumOperand {
  std::vector<int> labels;
  std::vector<int64_t> strides;
};

// The equation bound to the operands' shapes. Label ids: the '...' dims
// first (0 .. ellipsis_rank-1), then the letters in ASCII order.
struct EinsumPlan {
  std::vector<int64_t> sizes;  // per label id
  std::vector<EinsumOperand> operands;
  std::vector<int> output;  // label ids of the output's axes, in order
  Shape output_shape;
};

// Checks operand count, ranks and dim sizes against the spec.
Expected<EinsumPlan> plan_einsum(const EinsumSpec& spec, const std::vector<Shape>& shapes);

// How a product of two operands runs: kAuto takes sgemm (float32) where the
// pair is a (batched) matrix product up to transposes, kLoop never does
// (tests compare the two).
enum class EinsumPath { kAuto, kLoop };

// The whole op: float32, float64, int32, int64 (all operands of one dtype).
// More than two operands contract left to right, pairwise. `pool` may be null.
Expected<Tensor> einsum(const EinsumSpec& spec, const std::vector<const Tensor*>& inputs, ThreadPool* pool,
                        EinsumPath path = EinsumPath::kAuto);

namespace detail {
inline bool has_label(const std::vector<int>& v, int l) { return std::find(v.begin(), v.end(), l) != v.end(); }

// The operand's stride of label l (0 when it does not carry l).
inline int64_t stride_of(const EinsumOperand& v, int l) {
  const auto it = std::find(v.labels.begin(), v.labels.end(), l);
  return it == v.labels.end() ? 0 : v.strides[it - v.labels.begin()];
}

// Row-major strides of a contiguous buffer whose axes are `labels`.
inline EinsumOperand contiguous(const std::vector<int>& labels, const std::vector<int64_t>& sizes) {
  EinsumOperand v{labels, std::vector<int64_t>(labels.size())};
  int64_t s = 1;
  for (size_t i = labels.size(); i-- > 0;) v.strides[i] = s, s *= sizes[labels[i]];
  return v;
}

// y (contiguous over `out`) = the contraction of float32 operands a and b
// as a batched sgemm (einsum_gemm.cpp). False, with nothing written, when
// the pair is no matrix product (a label summed in one operand only).
bool einsum_gemm(const float* a, const EinsumOperand& A, const float* b, const EinsumOperand& B,
                 const std::vector<int>& out, const std::vector<int64_t>& sizes, float* y, ThreadPool* pool);
}  // namespace detail

}  // namespace qtk::rt::ref

namespace qtk::rt {
void register_einsum_op(OpRegistry& r);  // Einsum (since opset 12)
}  // namespace qtk::rt
