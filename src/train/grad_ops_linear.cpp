// Gemm and MatMul: forward and backward are all SGEMMs (the runtime's
// blocked AVX2/AVX-512 kernel, split over the pool).
#include "runtime/kernels/ref/sgemm.h"
#include "train/broadcast.h"
#include "train/grad_op.h"

namespace qtk::train {
namespace {

using rt::ref::sgemm;

Status gemm_forward(ForwardContext& c) {
  QTK_RETURN_IF_ERROR(expect_float(c, 0));
  QTK_RETURN_IF_ERROR(expect_float(c, 1));
  const Tensor &a = c.in[0], &b = c.in[1];
  if (a.rank() != 2 || b.rank() != 2)
    return invalid_argument(node_label(c.node) + ": A and B must be 2-D, got " + shape_to_string(a.shape()) + " and " +
                            shape_to_string(b.shape()));
  const bool ta = c.node.attr_int("transA", 0), tb = c.node.attr_int("transB", 0);
  const float alpha = c.node.attr_float("alpha", 1.f), beta = c.node.attr_float("beta", 1.f);
  const int64_t m = ta ? a.dim(1) : a.dim(0), k = ta ? a.dim(0) : a.dim(1);
  const int64_t kb = tb ? b.dim(1) : b.dim(0), n = tb ? b.dim(0) : b.dim(1);
  if (k != kb)
    return invalid_argument(node_label(c.node) + ": inner dimensions differ: " + shape_to_string(a.shape()) + " x " +
                            shape_to_string(b.shape()));
  Tensor y(DType::kFloat32, {m, n});
  float* py = y.data<float>();
  bool has_c = c.in.size() > 2 && c.in[2].defined();
  if (has_c) {
    QTK_RETURN_IF_ERROR(expect_float(c, 2));
    auto s = broadcast_shape(c.in[2].shape(), {m, n});
    if (!s.ok() || *s != Shape{m, n})
      return invalid_argument(node_label(c.node) + ": C of shape " + shape_to_string(c.in[2].shape()) +
                              " does not broadcast to " + shape_to_string({m, n}));
    const std::vector<int64_t> off = broadcast_offsets(c.in[2].shape(), {m, n});
    const float* pc = c.in[2].data<float>();
    for (int64_t i = 0; i < m * n; ++i) py[i] = beta * pc[off[i]];
  }
  sgemm(ta, tb, m, n, k, alpha, a.data<float>(), a.dim(1), b.data<float>(), b.dim(1), has_c ? 1.f : 0.f, py, n,
        c.pool);
  c.out = {y};
  return Status::Ok();
}

Status gemm_backward(BackwardContext& c) {
  const Tensor &a = c.in[0], &b = c.in[1], &dy = c.dout[0];
  const bool ta = c.node.attr_int("transA", 0), tb = c.node.attr_int("transB", 0);
  const float alpha = c.node.attr_float("alpha", 1.f), beta = c.node.attr_float("beta", 1.f);
  const int64_t m = dy.dim(0), n = dy.dim(1), k = ta ? a.dim(0) : a.dim(1);
  const float* g = dy.data<float>();
  if (c.need[0]) {
    Tensor da(DType::kFloat32, a.shape());
    if (!ta)  // dA[M,K] = alpha dY op(B)^T
      sgemm(false, !tb, m, k, n, alpha, g, n, b.data<float>(), b.dim(1), 0.f, da.data<float>(), k, c.pool);
    else  // dA[K,M] = alpha op(B) dY^T
      sgemm(tb, true, k, m, n, alpha, b.data<float>(), b.dim(1), g, n, 0.f, da.data<float>(), m, c.pool);
    c.din[0] = da;
  }
  if (c.need[1]) {
    Tensor db(DType::kFloat32, b.shape());
    if (!tb)  // dB[K,N] = alpha op(A)^T dY
      sgemm(!ta, false, k, n, m, alpha, a.data<float>(), a.dim(1), g, n, 0.f, db.data<float>(), n, c.pool);
    else  // dB[N,K] = alpha dY^T op(A)
      sgemm(true, ta, n, k, m, alpha, g, n, a.data<float>(), a.dim(1), 0.f, db.data<float>(), k, c.pool);
    c.din[1] = db;
  }
  if (c.need.size() > 2 && c.need[2]) {
    Tensor dc = reduce_to_shape(dy, c.in[2].shape()).clone();
    float* p = dc.data<float>();
    for (int64_t i = 0; i < dc.numel(); ++i) p[i] *= beta;
    c.din[2] = dc;
  }
  return Status::Ok();
}

// MatMul as one GEMM over rows: A [..., M, K] x B [K, N], or equal batch
// dims on both sides ([..., M, K] x [..., K, N]).
struct MatMulDims {
  int64_t batch = 1, m = 0, k = 0, n = 0;
  bool b_batched = false;
};

Expected<MatMulDims> matmul_dims(const ir::Node& node, const Tensor& a, const Tensor& b) {
  MatMulDims d;
  if (a.rank() < 2 || b.rank() < 2)
    return unsupported(node_label(node) + ": training supports MatMul on operands of rank >= 2, got " +
                       shape_to_string(a.shape()) + " x " + shape_to_string(b.shape()));
  d.m = a.dim(-2);
  d.k = a.dim(-1);
  d.n = b.dim(-1);
  if (b.dim(-2) != d.k)
    return invalid_argument(node_label(node) + ": inner dimensions differ: " + shape_to_string(a.shape()) + " x " +
                            shape_to_string(b.shape()));
  if (b.rank() == 2) {
    d.m = a.numel() / d.k;  // fold A's batch into rows
    return d;
  }
  if (a.rank() != b.rank() ||
      !std::equal(a.shape().begin(), a.shape().end() - 2, b.shape().begin()))
    return unsupported(node_label(node) + ": training supports MatMul with equal batch dims or a 2-D B, got " +
                       shape_to_string(a.shape()) + " x " + shape_to_string(b.shape()));
  d.batch = a.numel() / (d.m * d.k);
  d.b_batched = true;
  return d;
}

Status matmul_forward(ForwardContext& c) {
  QTK_RETURN_IF_ERROR(expect_float(c, 0));
  QTK_RETURN_IF_ERROR(expect_float(c, 1));
  const Tensor &a = c.in[0], &b = c.in[1];
  QTK_ASSIGN_OR_RETURN(MatMulDims d, matmul_dims(c.node, a, b));
  Shape ys = a.shape();
  ys.back() = d.n;
  Tensor y = Tensor::uninitialized(DType::kFloat32, ys);
  for (int64_t i = 0; i < d.batch; ++i)
    sgemm(false, false, d.m, d.n, d.k, 1.f, a.data<float>() + i * d.m * d.k, d.k,
          b.data<float>() + (d.b_batched ? i * d.k * d.n : 0), d.n, 0.f, y.data<float>() + i * d.m * d.n, d.n,
          c.pool);
  c.out = {y};
  return Status::Ok();
}

Status matmul_backward(BackwardContext& c) {
  const Tensor &a = c.in[0], &b = c.in[1], &dy = c.dout[0];
  QTK_ASSIGN_OR_RETURN(MatMulDims d, matmul_dims(c.node, a, b));
  Tensor da, db;
  if (c.need[0]) da = Tensor(DType::kFloat32, a.shape());
  if (c.need[1]) db = Tensor(DType::kFloat32, b.shape());
  for (int64_t i = 0; i < d.batch; ++i) {
    const float* g = dy.data<float>() + i * d.m * d.n;
    const float* pa = a.data<float>() + i * d.m * d.k;
    const int64_t boff = d.b_batched ? i * d.k * d.n : 0;
    if (c.need[0])  // dA = dY B^T
      sgemm(false, true, d.m, d.k, d.n, 1.f, g, d.n, b.data<float>() + boff, d.n, 0.f,
            da.data<float>() + i * d.m * d.k, d.k, c.pool);
    if (c.need[1])  // dB (+)= A^T dY
      sgemm(true, false, d.k, d.n, d.m, 1.f, pa, d.k, g, d.n, d.b_batched || i == 0 ? 0.f : 1.f,
            db.data<float>() + boff, d.n, c.pool);
  }
  if (c.need[0]) c.din[0] = da;
  if (c.need[1]) c.din[1] = db;
  return Status::Ok();
}

}  // namespace

void register_linear_grad_ops(GradOpTable& t) {
  t.push_back({"Gemm", {gemm_forward, gemm_backward}});
  t.push_back({"MatMul", {matmul_forward, matmul_backward}});
}

}  // namespace qtk::train
