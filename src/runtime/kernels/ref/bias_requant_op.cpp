#include "runtime/kernels/ref/bias_requant_op.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/bias_requant_fusion.h"
#include "runtime/code_tables.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk::rt {

// As DequantizeLinear, Add and QuantizeLinear's reference kernels compute
// it (quant_ops.cpp, elementwise Add): each step rounds to float.
void bias_requant_scalar(const uint8_t* x, int64_t rows, int64_t n, const float* bias, const BiasRequantParams& p,
                         uint8_t* y) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = r * n + j;
      const int64_t code = p.x_signed ? static_cast<int8_t>(x[i]) : x[i];
      const float d = static_cast<float>(code - p.x_zero_point) * p.x_scale;
      const float v = std::nearbyint((bias[j] + d) / p.y_scale);
      const double q = std::isnan(v) ? p.y_zero_point : static_cast<double>(v) + p.y_zero_point;
      y[i] = static_cast<uint8_t>(static_cast<int32_t>(std::clamp(q, static_cast<double>(p.qmin), static_cast<double>(p.qmax))));
    }
}

namespace {

class BiasRequantKernel final : public Kernel {
 public:
  BiasRequantKernel(BiasRequantParams p, std::vector<float> bias, BiasRequantFn fn)
      : p_(p), bias_(std::move(bias)), fn_(fn) {}

  Status run(KernelContext& ctx) override {
    const Tensor& x = ctx.input(0);
    const DType in = p_.x_signed ? DType::kInt8 : DType::kUInt8;
    if (x.dtype() != in)
      return invalid_argument("input must be " + std::string(dtype_name(in)) + ", got " + dtype_name(x.dtype()));
    const int64_t n = static_cast<int64_t>(bias_.size());
    if (x.rank() < 1 || x.dim(-1) != n)
      return invalid_argument("input " + shape_to_string(x.shape()) + " must end in the bias's " + std::to_string(n));
    Tensor y = Tensor::uninitialized(p_.y_signed ? DType::kInt8 : DType::kUInt8, x.shape());  // every byte written
    const auto* src = static_cast<const uint8_t*>(x.raw());
    auto* dst = static_cast<uint8_t*>(y.raw());
    const int64_t rows = n == 0 ? 0 : x.numel() / n;
    ctx.pool->parallel_for(
        rows, [&](int64_t b, int64_t e) { fn_(src + b * n, e - b, n, bias_.data(), p_, dst + b * n); },
        std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(n, 1)));
    ctx.outputs[0] = std::move(y);
    return Status::Ok();
  }

 private:
  BiasRequantParams p_;
  std::vector<float> bias_;
  BiasRequantFn fn_;
};

// A per-tensor scale (float32, positive, finite) or zero point (8-bit) constant.
const Tensor* one_value(const KernelInit& init, size_t i) {
  const Tensor* t = init.constant_input(i);
  return t != nullptr && t->numel() == 1 ? t : nullptr;
}

}  // namespace

Expected<std::unique_ptr<Kernel>> make_bias_requant_kernel(const KernelInit& init, BiasRequantFn fn) {
  // The executor names the node in front of these messages.
  if (init.node.inputs.size() != 6 || init.node.outputs.size() != 1)
    return invalid_argument("takes (x, x_scale, x_zero_point, bias, y_scale, y_zero_point) and gives y");
  const Tensor *xs = one_value(init, 1), *xz = one_value(init, 2), *ys = one_value(init, 4), *yz = one_value(init, 5);
  const Tensor* bias = init.constant_input(3);
  if (!xs || !xz || !ys || !yz || xs->dtype() != DType::kFloat32 || ys->dtype() != DType::kFloat32 || !is_8bit(xz->dtype()) ||
      !is_8bit(yz->dtype()))
    return invalid_argument("scales must be float32 and zero points 8-bit constants of one value");
  if (!bias || bias->dtype() != DType::kFloat32 || bias->rank() != 1)
    return invalid_argument("the bias must be a float32 constant of rank 1");
  BiasRequantParams p;
  p.x_scale = xs->data<float>()[0];
  p.y_scale = ys->data<float>()[0];
  if (!(p.x_scale > 0.f) || !(p.y_scale > 0.f) || !std::isfinite(p.x_scale) || !std::isfinite(p.y_scale))
    return invalid_argument("scales must be positive and finite");
  p.x_signed = xz->dtype() == DType::kInt8;
  p.y_signed = yz->dtype() == DType::kInt8;
  p.x_zero_point = static_cast<int32_t>(xz->get_as_int64(0));
  p.y_zero_point = static_cast<int32_t>(yz->get_as_int64(0));
  p.qmin = p.y_signed ? -128 : 0;
  p.qmax = p.y_signed ? 127 : 255;
  std::vector<float> b(bias->data<float>(), bias->data<float>() + bias->numel());
  return std::unique_ptr<Kernel>(std::make_unique<BiasRequantKernel>(p, std::move(b), fn));
}

void register_bias_requant_op(OpRegistry& r) {
  r.add(kBiasRequantizeOp, [](const KernelInit& init) { return make_bias_requant_kernel(init, bias_requant_scalar); },
        kCodeTableDomain);
}

}  // namespace qtk::rt
