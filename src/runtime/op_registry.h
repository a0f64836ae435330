// op type (+ domain) -> kernel factory. Each kernel family file registers its
// ops in one function; op_registry.cpp calls them all.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/kernel.h"

namespace qtk::rt {

class OpRegistry {
 public:
  // since_version: the first opset of the op's domain this kernel implements.
  // Adding a kernel for a (domain, op, since_version) that is already there
  // replaces it: that is how optimized kernels override reference ones.
  void add(const std::string& op_type, KernelFactory f, const std::string& domain = "", int since_version = 1);
  // nullptr when (domain, op_type) is unknown or the opset predates every kernel.
  const KernelFactory* find(const std::string& domain, const std::string& op_type, int64_t opset) const;
  bool supports(const std::string& domain, const std::string& op_type) const;
  std::vector<std::string> op_types(const std::string& domain = "") const;

  // The reference kernels plus the optimized ones that override them (the
  // default for sessions). It holds the overrides only and finds the rest in
  // reference(), which every optimized kernel needs for its fallback anyway:
  // a process then keeps one copy of the reference table, not two.
  static const OpRegistry& global();
  // The reference kernels only: the golden semantics that optimized kernels
  // are tested against and fall back to (SessionOptions::reference_kernels).
  static const OpRegistry& reference();

 private:
  // One sorted array of small entries, the names in one string, the
  // factories in one array: the table is built amid a process's first
  // session build, where a map node, key strings and a versions vector per
  // op (about 340 blocks, 25 KB) landed in as many free spots of the heap;
  // now a few blocks, 9 KB.
  struct Entry {
    uint32_t domain = 0, domain_len = 0, op = 0, op_len = 0;  // in names_
    int since = 0;
    uint32_t factory = 0;  // in factories_
  };
  std::string_view domain_of(const Entry& e) const { return std::string_view(names_).substr(e.domain, e.domain_len); }
  std::string_view op_of(const Entry& e) const { return std::string_view(names_).substr(e.op, e.op_len); }
  std::pair<std::string_view, std::string_view> key_of(const Entry& e) const { return {domain_of(e), op_of(e)}; }
  // The first entry of (domain, op_type) (entries_.size() when none).
  size_t first_of(std::string_view domain, std::string_view op_type) const;
  // Capacity down to size once every kernel is added (global(), reference()).
  void shrink();
  std::string names_;
  std::vector<Entry> entries_;  // by (domain, op type, since_version)
  std::vector<KernelFactory> factories_;
  // Searched with this table (global(): the reference kernels under the
  // overrides); an entry of this table wins over the base's of the same
  // since_version.
  const OpRegistry* base_ = nullptr;
};

// Kernel families (src/runtime/kernels/ref/*.cpp).
void register_elementwise_ops(OpRegistry& r);   // arithmetic, comparison, logic, unary math, Where, Cast
void register_activation_ops(OpRegistry& r);    // Relu ... Gelu, Softmax, LogSoftmax
void register_linalg_ops(OpRegistry& r);        // Gemm, MatMul
void register_conv_ops(OpRegistry& r);          // Conv, ConvTranspose
void register_pool_ops(OpRegistry& r);          // MaxPool, AveragePool, Global*Pool
void register_norm_ops(OpRegistry& r);          // BatchNormalization, LayerNormalization
void register_reduce_ops(OpRegistry& r);        // Reduce*
void register_shape_ops(OpRegistry& r);         // Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Shape, Size, ...
void register_tensor_ops(OpRegistry& r);        // Concat, Split, Slice, Gather, Expand, Tile, Pad, Resize, ...
void register_generator_ops(OpRegistry& r);     // Constant, ConstantOfShape, Range, Identity, Dropout
void register_control_flow_ops(OpRegistry& r);  // If
void register_rnn_ops(OpRegistry& r);           // LSTM, GRU
void register_quant_ops(OpRegistry& r);         // QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear
void register_qlinear_ops(OpRegistry& r);       // ConvInteger, MatMulInteger, QLinearConv, QLinearMatMul
void register_qlinear_contrib_ops(OpRegistry& r);  // com.microsoft: QLinearAdd, QLinearMul, QLinearGlobalAveragePool, QGemm

// Optimized overrides (src/runtime/kernels/x86/*.cpp), added on top of the
// reference kernels in global(). Each falls back to the reference kernel for
// the cases it does not cover.
void register_x86_qlinear_ops(OpRegistry& r);  // QLinearConv, ConvInteger, QLinearMatMul, MatMulInteger, QGemm

}  // namespace qtk::rt
