#include "runtime/kernels/ref/code_table_op.h"

#include <array>
#include <cstring>

#include "runtime/code_tables.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk::rt {

void code_table_scalar(const uint8_t* table, const uint8_t* x, uint8_t* y, int64_t n, uint8_t flip) {
  for (int64_t i = 0; i < n; ++i) y[i] = table[x[i] ^ flip];
}

namespace {

class CodeTableKernel final : public Kernel {
 public:
  CodeTableKernel(std::array<uint8_t, 256> table, DType in, DType out, CodeTableFn fn)
      : table_(table), in_(in), out_(out), fn_(fn) {}

  Status run(KernelContext& ctx) override {
    const Tensor& x = ctx.input(0);
    if (x.dtype() != in_)
      return invalid_argument("input must be " + std::string(dtype_name(in_)) + ", got " + dtype_name(x.dtype()));
    Tensor y = Tensor::uninitialized(out_, x.shape());  // every byte written
    const auto* src = static_cast<const uint8_t*>(x.raw());
    auto* dst = static_cast<uint8_t*>(y.raw());
    const uint8_t flip = in_ == DType::kInt8 ? 0x80 : 0;
    ctx.pool->parallel_for(
        x.numel(), [&](int64_t b, int64_t e) { fn_(table_.data(), src + b, dst + b, e - b, flip); }, int64_t{1} << 16);
    ctx.outputs[0] = std::move(y);
    return Status::Ok();
  }

 private:
  std::array<uint8_t, 256> table_;
  DType in_, out_;
  CodeTableFn fn_;
};

}  // namespace

Expected<std::unique_ptr<Kernel>> make_code_table_kernel(const KernelInit& init, CodeTableFn fn) {
  const ir::Node& n = init.node;
  // The executor names the node in front of these messages.
  if (n.inputs.size() != 2 || n.outputs.size() != 1) return invalid_argument("takes (x, table) and gives y");
  const Tensor* table = init.constant_input(1);
  if (table == nullptr) return invalid_argument("the table must be a constant");
  if ((table->dtype() != DType::kUInt8 && table->dtype() != DType::kInt8) || table->numel() != 256)
    return invalid_argument(std::string("the table must hold 256 uint8 or int8 codes, got ") + dtype_name(table->dtype()) +
                            " " + shape_to_string(table->shape()));
  std::array<uint8_t, 256> bytes{};
  std::memcpy(bytes.data(), table->raw(), 256);
  const DType in = n.attr_int("input_signed", 0) ? DType::kInt8 : DType::kUInt8;
  return std::unique_ptr<Kernel>(std::make_unique<CodeTableKernel>(bytes, in, table->dtype(), fn));
}

void register_code_table_op(OpRegistry& r) {
  r.add(kCodeTableOp, [](const KernelInit& init) { return make_code_table_kernel(init, code_table_scalar); },
        kCodeTableDomain);
}

}  // namespace qtk::rt
