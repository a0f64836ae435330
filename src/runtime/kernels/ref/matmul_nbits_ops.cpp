// com.microsoft MatMulNBits: Y = A · dequant(B)ᵀ (+ bias), B block-quantized
// along K with 2/4/8-bit unsigned codes packed low bits first
// (src/quant/graph/matmul_nbits_writer.h describes the layout).
// W[k, n] = (code - zero_point) * scale, zero point 2^(bits-1) when absent.
// Float levels: constant weights are dequantized once, at session build; the
// product runs on the float GEMM. accuracy_level 4: the int8 arithmetic of
// kernels/x86/qnbits.h, plainly (matmul_nbits.h).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/ref/matmul_nbits.h"
#include "runtime/kernels/ref/sgemm.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk::rt {

Expected<MatMulNBitsAttrs> read_matmul_nbits_attrs(const ir::Node& node) {
  MatMulNBitsAttrs a;
  a.k = node.attr_int("K", 0);
  a.n = node.attr_int("N", 0);
  a.bits = node.attr_int("bits", 4);
  a.block = node.attr_int("block_size", 0);
  a.accuracy_level = node.attr_int("accuracy_level", 0);
  if (a.k <= 0 || a.n <= 0) return invalid_argument("attributes K and N must be positive");
  if (a.bits != 2 && a.bits != 4 && a.bits != 8) return unsupported("bits = " + std::to_string(a.bits));
  if (a.block < 16 || (a.block & (a.block - 1)) != 0)
    return invalid_argument("block_size must be a power of two >= 16, got " + std::to_string(a.block));
  if (a.accuracy_level < 0 || a.accuracy_level > 4)
    return invalid_argument("accuracy_level must be 0..4, got " + std::to_string(a.accuracy_level));
  return a;
}

Status check_matmul_nbits_operands(const MatMulNBitsAttrs& a, const Tensor& b, const Tensor& scales,
                                   const Tensor* zp) {
  const int64_t blocks = (a.k + a.block - 1) / a.block, blob = a.block * a.bits / 8;
  if (b.dtype() != DType::kUInt8 || b.numel() != a.n * blocks * blob)
    return invalid_argument("B must be uint8 with " + std::to_string(a.n * blocks * blob) + " bytes ([N, k_blocks, " +
                            std::to_string(blob) + "]), got " + dtype_name(b.dtype()) + " " +
                            shape_to_string(b.shape()));
  if (scales.dtype() != DType::kFloat32 || scales.numel() != a.n * blocks)
    return invalid_argument("scales must be float32 with N * k_blocks = " + std::to_string(a.n * blocks) +
                            " values, got " + dtype_name(scales.dtype()) + " " + shape_to_string(scales.shape()));
  const int64_t zp_bytes = (blocks * a.bits + 7) / 8;
  if (zp && !((zp->dtype() == DType::kUInt8 && zp->numel() == a.n * zp_bytes) ||
              (zp->dtype() == DType::kFloat32 && zp->numel() == a.n * blocks)))
    return invalid_argument("zero_points must be uint8 [N * " + std::to_string(zp_bytes) + "] or float32 [N * " +
                            std::to_string(blocks) + "], got " + dtype_name(zp->dtype()) + " " +
                            shape_to_string(zp->shape()));
  return Status::Ok();
}

bool matmul_nbits_int8_arithmetic(const MatMulNBitsAttrs& a, const Tensor* zp) {
  return a.accuracy_level == 4 && a.block <= kMatMulNBitsMaxInt8Block && (!zp || zp->dtype() == DType::kUInt8);
}

void matmul_nbits_quantize_a_block(const float* a, int64_t len, int8_t* qa, float* sa, int32_t* asum) {
  float amax = 0.f;
  bool finite = true;
  for (int64_t i = 0; i < len; ++i) {
    const float v = std::fabs(a[i]);
    finite &= v < std::numeric_limits<float>::infinity();  // false for NaN too
    amax = std::max(amax, v);
  }
  const float s = amax / 127.f;
  *asum = 0;
  if (!finite || s == 0.f) {
    *sa = finite ? 0.f : std::numeric_limits<float>::quiet_NaN();
    std::memset(qa, 0, static_cast<size_t>(len));
    return;
  }
  *sa = s;
  int32_t sum = 0;
  for (int64_t i = 0; i < len; ++i) {
    // The clamp matters only when s is subnormal (its rounding can make a/s > 127).
    const float q = std::min(std::max(a[i] / s, -127.f), 127.f);
    const int32_t c = static_cast<int32_t>(std::nearbyint(q));
    qa[i] = static_cast<int8_t>(c);
    sum += c;
  }
  *asum = sum;
}

void matmul_nbits_int8_reference(const MatMulNBitsAttrs& at, int64_t m, const float* a, const uint8_t* b,
                                 const float* scales, const uint8_t* zero_points, const float* bias, float* y) {
  const int64_t blocks = (at.k + at.block - 1) / at.block, blob = at.block * at.bits / 8;
  const int64_t zp_bytes = (blocks * at.bits + 7) / 8, per_byte = 8 / at.bits;
  const uint32_t mask = (1u << at.bits) - 1;
  std::vector<int8_t> qa(static_cast<size_t>(at.k));
  std::vector<float> sa(static_cast<size_t>(blocks));
  std::vector<int32_t> asum(static_cast<size_t>(blocks));
  for (int64_t r = 0; r < m; ++r) {
    const float* arow = a + r * at.k;
    for (int64_t kb = 0; kb < blocks; ++kb) {
      const int64_t k0 = kb * at.block, len = std::min(at.block, at.k - k0);
      matmul_nbits_quantize_a_block(arow + k0, len, qa.data() + k0, &sa[kb], &asum[kb]);
    }
    for (int64_t n = 0; n < at.n; ++n) {
      float acc = bias ? bias[n] : 0.f;
      for (int64_t kb = 0; kb < blocks; ++kb) {
        int32_t z = 1 << (at.bits - 1);
        if (zero_points)
          z = static_cast<int32_t>((zero_points[n * zp_bytes + kb / per_byte] >> (at.bits * (kb % per_byte))) & mask);
        const uint8_t* blk = b + (n * blocks + kb) * blob;
        const int64_t k0 = kb * at.block, len = std::min(at.block, at.k - k0);
        int32_t dot = 0;
        for (int64_t j = 0; j < len; ++j)
          dot += static_cast<int32_t>((blk[j / per_byte] >> (at.bits * (j % per_byte))) & mask) * qa[k0 + j];
        dot -= z * asum[kb];
        acc = std::fma(static_cast<float>(dot), sa[kb] * scales[n * blocks + kb], acc);
      }
      y[r * at.n + n] = acc;
    }
  }
}

namespace {

// W as float [K, N], from checked operands.
Tensor dequantize_nbits(const MatMulNBitsAttrs& a, const Tensor& b, const Tensor& scales, const Tensor* zp) {
  const int64_t blocks = (a.k + a.block - 1) / a.block, blob = a.block * a.bits / 8;
  const int64_t zp_bytes = (blocks * a.bits + 7) / 8;
  const uint32_t mask = (1u << a.bits) - 1;
  const int per_byte = static_cast<int>(8 / a.bits);
  Tensor w(DType::kFloat32, {a.k, a.n});
  float* out = w.data<float>();
  const uint8_t* codes = b.data<uint8_t>();
  for (int64_t n = 0; n < a.n; ++n)
    for (int64_t kb = 0; kb < blocks; ++kb) {
      const float s = scales.data<float>()[n * blocks + kb];
      float z = static_cast<float>(1 << (a.bits - 1));
      if (zp && zp->dtype() == DType::kFloat32) {
        z = zp->data<float>()[n * blocks + kb];
      } else if (zp) {
        const uint8_t byte = zp->data<uint8_t>()[n * zp_bytes + kb / per_byte];
        z = static_cast<float>((byte >> (a.bits * (kb % per_byte))) & mask);
      }
      const uint8_t* blk = codes + (n * blocks + kb) * blob;
      for (int64_t j = 0; j < a.block; ++j) {
        const int64_t k = kb * a.block + j;
        if (k >= a.k) break;
        const uint32_t c = (blk[j / per_byte] >> (a.bits * (j % per_byte))) & mask;
        out[k * a.n + n] = (static_cast<float>(c) - z) * s;
      }
    }
  return w;
}

class MatMulNBitsKernel final : public Kernel {
 public:
  MatMulNBitsKernel(MatMulNBitsAttrs a, Tensor w) : a_(a), w_(std::move(w)) {}

  Status run(KernelContext& ctx) override {
    QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, 3));
    const Tensor& x = ctx.input(0);
    QTK_RETURN_IF_ERROR(ref::expect_dtype(x, DType::kFloat32, "A"));
    if (x.rank() < 1 || x.dim(-1) != a_.k)
      return invalid_argument("A " + shape_to_string(x.shape()) + " must end in K = " + std::to_string(a_.k));
    if (ctx.has_input(4)) return unsupported("MatMulNBits g_idx input");
    const Tensor* zp = ctx.has_input(3) ? ctx.inputs[3] : nullptr;
    const bool int8 = matmul_nbits_int8_arithmetic(a_, zp);
    Tensor w = w_;
    if (!w.defined() || int8) QTK_RETURN_IF_ERROR(check_matmul_nbits_operands(a_, ctx.input(1), ctx.input(2), zp));
    if (!w.defined() && !int8) w = dequantize_nbits(a_, ctx.input(1), ctx.input(2), zp);
    const Tensor* bias = ctx.has_input(5) ? ctx.inputs[5] : nullptr;
    if (bias && (bias->dtype() != DType::kFloat32 || bias->numel() != a_.n))
      return invalid_argument("bias must be float32 with N = " + std::to_string(a_.n) + " values");
    Shape ys = x.shape();
    ys.back() = a_.n;
    Tensor y(DType::kFloat32, ys);
    const int64_t m = x.numel() / a_.k;
    float* out = y.data<float>();
    if (int8) {
      matmul_nbits_int8_reference(a_, m, x.data<float>(), ctx.input(1).data<uint8_t>(), ctx.input(2).data<float>(),
                                  zp ? zp->data<uint8_t>() : nullptr, bias ? bias->data<float>() : nullptr, out);
      ctx.outputs[0] = std::move(y);
      return Status::Ok();
    }
    if (bias)
      for (int64_t r = 0; r < m; ++r) std::memcpy(out + r * a_.n, bias->data<float>(), a_.n * sizeof(float));
    ref::sgemm(false, false, m, a_.n, a_.k, 1.f, x.data<float>(), a_.k, w.data<float>(), a_.n, bias ? 1.f : 0.f, out,
               a_.n, ctx.pool);
    ctx.outputs[0] = std::move(y);
    return Status::Ok();
  }

 private:
  MatMulNBitsAttrs a_;
  Tensor w_;  // dequantized constant weights (float levels); undefined otherwise
};

}  // namespace

Expected<std::unique_ptr<Kernel>> make_matmul_nbits_reference(const KernelInit& init) {
  QTK_ASSIGN_OR_RETURN(MatMulNBitsAttrs a, read_matmul_nbits_attrs(init.node));
  Tensor w;
  const Tensor* b = init.constant_input ? init.constant_input(1) : nullptr;
  const Tensor* s = init.constant_input ? init.constant_input(2) : nullptr;
  const bool has_zp = init.node.has_input(3);
  const Tensor* z = has_zp && init.constant_input ? init.constant_input(3) : nullptr;
  if (b && s && (!has_zp || z)) {
    // Constant operands: errors at build time; float levels dequantize now.
    QTK_RETURN_IF_ERROR(check_matmul_nbits_operands(a, *b, *s, z));
    if (!matmul_nbits_int8_arithmetic(a, z)) w = dequantize_nbits(a, *b, *s, z);
  }
  return std::unique_ptr<Kernel>(new MatMulNBitsKernel(a, std::move(w)));
}

void register_matmul_nbits_op(OpRegistry& r) {
  r.add("MatMulNBits", make_matmul_nbits_reference, "com.microsoft");
}

}  // namespace qtk::rt
