// com.microsoft MatMulNBits: Y = A · dequant(B)ᵀ (+ bias), B block-quantized
// along K with 2/4/8-bit unsigned codes packed low bits first
// (src/quant/graph/matmul_nbits_writer.h describes the layout).
// W[k, n] = (code - zero_point) * scale, zero point 2^(bits-1) when absent.
// Constant weights are dequantized once, at session build; the product runs
// on the float GEMM.
#include <cstring>

#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/ref/matmul_nbits.h"
#include "runtime/kernels/ref/sgemm.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk::rt {

namespace {

struct NBitsAttrs {
  int64_t k = 0, n = 0, bits = 4, block = 0;
};

// W as float [K, N], from B [N, blocks, blob], scales [N * blocks] and the
// optional zero points (packed uint8 [N * ceil(blocks * bits / 8)] or float [N * blocks]).
Expected<Tensor> dequantize_nbits(const NBitsAttrs& a, const Tensor& b, const Tensor& scales, const Tensor* zp) {
  const int64_t blocks = (a.k + a.block - 1) / a.block, blob = a.block * a.bits / 8;
  if (b.dtype() != DType::kUInt8 || b.numel() != a.n * blocks * blob)
    return invalid_argument("B must be uint8 with " + std::to_string(a.n * blocks * blob) + " bytes ([N, k_blocks, " +
                            std::to_string(blob) + "]), got " + dtype_name(b.dtype()) + " " + shape_to_string(b.shape()));
  if (scales.dtype() != DType::kFloat32 || scales.numel() != a.n * blocks)
    return invalid_argument("scales must be float32 with N * k_blocks = " + std::to_string(a.n * blocks) + " values");
  const int64_t zp_bytes = (blocks * a.bits + 7) / 8;
  if (zp && !((zp->dtype() == DType::kUInt8 && zp->numel() == a.n * zp_bytes) ||
              (zp->dtype() == DType::kFloat32 && zp->numel() == a.n * blocks)))
    return invalid_argument("zero_points must be uint8 [N * " + std::to_string(zp_bytes) + "] or float32 [N * k_blocks]");
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
  MatMulNBitsKernel(NBitsAttrs a, Tensor w) : a_(a), w_(std::move(w)) {}

  Status run(KernelContext& ctx) override {
    QTK_RETURN_IF_ERROR(ref::expect_inputs(ctx, 3));
    const Tensor& x = ctx.input(0);
    QTK_RETURN_IF_ERROR(ref::expect_dtype(x, DType::kFloat32, "A"));
    if (x.rank() < 1 || x.dim(-1) != a_.k)
      return invalid_argument("A " + shape_to_string(x.shape()) + " must end in K = " + std::to_string(a_.k));
    if (ctx.has_input(4)) return unsupported("MatMulNBits g_idx input");
    Tensor w = w_;
    if (!w.defined()) {
      QTK_ASSIGN_OR_RETURN(w, dequantize_nbits(a_, ctx.input(1), ctx.input(2), ctx.has_input(3) ? ctx.inputs[3] : nullptr));
    }
    const Tensor* bias = ctx.has_input(5) ? ctx.inputs[5] : nullptr;
    if (bias && (bias->dtype() != DType::kFloat32 || bias->numel() != a_.n))
      return invalid_argument("bias must be float32 with N = " + std::to_string(a_.n) + " values");
    Shape ys = x.shape();
    ys.back() = a_.n;
    Tensor y(DType::kFloat32, ys);
    const int64_t m = x.numel() / a_.k;
    float* out = y.data<float>();
    if (bias)
      for (int64_t r = 0; r < m; ++r) std::memcpy(out + r * a_.n, bias->data<float>(), a_.n * sizeof(float));
    ref::sgemm(false, false, m, a_.n, a_.k, 1.f, x.data<float>(), a_.k, w.data<float>(), a_.n, bias ? 1.f : 0.f, out,
               a_.n, ctx.pool);
    ctx.outputs[0] = std::move(y);
    return Status::Ok();
  }

 private:
  NBitsAttrs a_;
  Tensor w_;  // dequantized constant weights; undefined when B is computed at run time
};

Expected<std::unique_ptr<Kernel>> make_matmul_nbits(const KernelInit& init) {
  NBitsAttrs a;
  a.k = init.node.attr_int("K", 0);
  a.n = init.node.attr_int("N", 0);
  a.bits = init.node.attr_int("bits", 4);
  a.block = init.node.attr_int("block_size", 0);
  if (a.k <= 0 || a.n <= 0) return invalid_argument("attributes K and N must be positive");
  if (a.bits != 2 && a.bits != 4 && a.bits != 8) return unsupported("bits = " + std::to_string(a.bits));
  if (a.block < 16 || (a.block & (a.block - 1)) != 0)
    return invalid_argument("block_size must be a power of two >= 16, got " + std::to_string(a.block));
  Tensor w;
  const Tensor* b = init.constant_input ? init.constant_input(1) : nullptr;
  const Tensor* s = init.constant_input ? init.constant_input(2) : nullptr;
  const bool has_zp = init.node.has_input(3);
  const Tensor* z = has_zp && init.constant_input ? init.constant_input(3) : nullptr;
  if (b && s && (!has_zp || z)) {
    QTK_ASSIGN_OR_RETURN(w, dequantize_nbits(a, *b, *s, z));
  }
  return std::unique_ptr<Kernel>(new MatMulNBitsKernel(a, std::move(w)));
}

}  // namespace

void register_matmul_nbits_op(OpRegistry& r) { r.add("MatMulNBits", make_matmul_nbits, "com.microsoft"); }

}  // namespace qtk::rt
