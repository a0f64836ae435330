// Gemm and MatMul. float32 goes through the blocked sgemm, with a constant B
// (the weights) packed once at session build; double and the integer types
// use a plain loop (integer products wrap like ONNX Runtime's).
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "core/alloc_hook.h"
#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/ref/sgemm.h"
#include "runtime/op_registry.h"
#include "runtime/optimize.h"
#include "runtime/thread_pool.h"

namespace qtk::rt {
namespace {

using namespace ref;

// C[m, n] += alpha * sum_p op(A)[m, p] * op(B)[p, n], i-p-j order so the inner
// loop streams rows of B and C. For the non-float32 dtypes.
template <class T>
void gemm_loop(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const T* a, int64_t lda,
               const T* b, int64_t ldb, T* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    T* crow = c + i * ldc;
    for (int64_t p = 0; p < k; ++p) {
      const T a_ip = ta ? a[p * lda + i] : a[i * lda + p];
      // alpha == 1 (always, for MatMul) keeps integer products exact.
      const T av = alpha == 1.0 ? a_ip : static_cast<T>(alpha * static_cast<double>(a_ip));
      if (!tb) {
        const T* brow = b + p * ldb;
        for (int64_t j = 0; j < n; ++j) crow[j] += av * brow[j];
      } else {
        for (int64_t j = 0; j < n; ++j) crow[j] += av * b[j * ldb + p];
      }
    }
  }
}

// Batches per parallel task: enough multiply-adds to be worth a thread.
int64_t batch_grain(int64_t macs_per_batch) {
  return std::max<int64_t>(1, (int64_t{1} << 17) / std::max<int64_t>(1, macs_per_batch));
}

bool gemm_dtype_ok(DType t) {
  switch (t) {
    case DType::kFloat32:
    case DType::kFloat64:
    case DType::kInt32:
    case DType::kInt64:
    case DType::kUInt32:
    case DType::kUInt64:
      return true;
    default:
      return false;
  }
}

// ---------------------------------------------------------------------------
// Gemm: Y = alpha * op(A) * op(B) + beta * C, C unidirectionally broadcast.

struct GemmAttrs {
  float alpha = 1.f, beta = 1.f;
  bool trans_a = false, trans_b = false;
};

// A float32 B (Gemm's or MatMul's weights), when it is an initializer,
// packed once, when the session is built, and the original let go
// (KernelInit::release_constant): every run then reads the packed copy, a
// batch-1 product too, and the session holds B once. Where the executor
// keeps the original (no release), runs with a few rows of A read it in
// place, and the packed copy serves only while B is that very tensor (same
// storage and shape).
class PackedB {
 public:
  // op(B) = B or B^T of a 2-D float32 constant, input `index` of the node.
  void pack(const Tensor& b, bool trans_b, const KernelInit& init, size_t index) {
    if (b.dtype() != DType::kFloat32 || b.rank() != 2 || b.numel() == 0) return;
    const int64_t k = trans_b ? b.dim(1) : b.dim(0), n = trans_b ? b.dim(0) : b.dim(1);
    const int64_t floats = sgemm_packed_b_floats(k, n, path_);
    float* dst = buf_.get(floats);
    if (dst == nullptr) return;  // no memory: every run takes the plain path
    const float* src = b.data<float>();
    void* consumed = init.consumable_constant ? init.consumable_constant(index) : nullptr;
    if (consumed != nullptr && trans_b) {
      // B's rows are op(B)'s columns: a sliver of NR of them at a time, each
      // row's pages let go once packed (at most one B and a sliver resident).
      const int64_t nr = sgemm_packed_b_width(path_), ldb = b.dim(1);
      for (int64_t j0 = 0; j0 < n; j0 += nr) {
        const int64_t cols = std::min(nr, n - j0);
        sgemm_pack_b(true, k, cols, src + j0 * ldb, ldb, dst + (j0 / nr) * k * nr, path_);
        core::discard_pages(static_cast<float*>(consumed), static_cast<size_t>((j0 + cols) * ldb) * sizeof(float));
      }
    } else {
      sgemm_pack_b(trans_b, k, n, src, b.dim(1), dst, path_);
    }
    data_ = dst;
    released_ = init.release_constant && init.release_constant(index, static_cast<uint64_t>(floats) * sizeof(float));
    if (!released_) source_ = b;
  }
  // The packed form of b for a product with m rows of op(A), or null when b
  // is not the packed tensor or m is a few rows and b is still there to be
  // read in place.
  const float* find(const Tensor& b, int64_t m) const {
    if (data_ == nullptr || released_) return data_;
    if (m <= detail::kSgemmSmallM || source_.raw() != b.raw() || source_.shape() != b.shape()) return nullptr;
    return data_;
  }
  SgemmPath path() const { return path_; }

 private:
  SgemmPath path_ = sgemm_resolve_path(SgemmPath::kAuto);
  Tensor source_;          // the packed B, while the session keeps it
  bool released_ = false;  // the session freed B: runs see a stand-in
  AlignedFloats buf_;
  const float* data_ = nullptr;
};

template <class T>
void fill_broadcast_c(const Tensor& c, int64_t m, int64_t n, double beta, T* y) {
  const Shape out = {m, n};
  const std::vector<int64_t> st = broadcast_strides(c.shape(), out);
  const T* cv = c.data<T>();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const T v = cv[i * st[0] + j * st[1]];
      y[i * n + j] = beta == 1.0 ? v : static_cast<T>(beta * static_cast<double>(v));
    }
}

Status run_gemm(const GemmAttrs& at, const PackedB& packed_b, KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(expect_inputs(ctx, 2));
  const Tensor& A = ctx.input(0);
  const Tensor& B = ctx.input(1);
  const Tensor* C = ctx.has_input(2) ? &ctx.input(2) : nullptr;
  if (!gemm_dtype_ok(A.dtype()))
    return unsupported(std::string("Gemm on dtype ") + dtype_name(A.dtype()) +
                       " (implemented: float32, float64, int32, int64, uint32, uint64)");
  if (B.dtype() != A.dtype() || (C != nullptr && C->dtype() != A.dtype()))
    return invalid_argument(std::string("A, B and C must share a dtype, got ") + dtype_name(A.dtype()) + ", " +
                            dtype_name(B.dtype()) + (C ? std::string(", ") + dtype_name(C->dtype()) : ""));
  if (A.rank() != 2 || B.rank() != 2)
    return invalid_argument("A " + shape_to_string(A.shape()) + " and B " + shape_to_string(B.shape()) +
                            " must be 2-D");
  const int64_t M = at.trans_a ? A.dim(1) : A.dim(0), K = at.trans_a ? A.dim(0) : A.dim(1);
  const int64_t Kb = at.trans_b ? B.dim(1) : B.dim(0), N = at.trans_b ? B.dim(0) : B.dim(1);
  if (K != Kb)
    return invalid_argument("inner dims differ: op(A) is [" + std::to_string(M) + ", " + std::to_string(K) +
                            "], op(B) is [" + std::to_string(Kb) + ", " + std::to_string(N) + "]");
  const bool use_c = C != nullptr && at.beta != 0.f;
  if (C != nullptr) {
    // Unidirectional broadcast: C's shape must stretch to [M, N].
    const Shape& cs = C->shape();
    bool ok = cs.size() <= 2;
    for (size_t i = 0; ok && i < cs.size(); ++i) {
      const int64_t want = i + 2 - cs.size() == 0 ? M : N;
      ok = cs[i] == 1 || cs[i] == want;
    }
    if (!ok)
      return invalid_argument("C " + shape_to_string(cs) + " does not broadcast to [" + std::to_string(M) + ", " +
                              std::to_string(N) + "]");
  }
  const int64_t lda = A.dim(1), ldb = B.dim(1);
  if (A.dtype() == DType::kFloat32) {
    Tensor Y = Tensor::uninitialized(DType::kFloat32, {M, N});  // sgemm writes all of it
    float* y = Y.data<float>();
    if (use_c) fill_broadcast_c<float>(*C, M, N, 1.f, y);
    const float beta = use_c ? at.beta : 0.f;
    if (const float* pb = packed_b.find(B, M))
      sgemm_prepacked_b(at.trans_a, M, N, K, at.alpha, A.data<float>(), lda, pb, beta, y, N, ctx.pool,
                        packed_b.path());
    else
      sgemm(at.trans_a, at.trans_b, M, N, K, at.alpha, A.data<float>(), lda, B.data<float>(), ldb, beta, y, N,
            ctx.pool);
    ctx.outputs[0] = Y;
    return Status::Ok();
  }
  Tensor Y(A.dtype(), {M, N});  // zeroed: the loop accumulates into it
  QTK_RETURN_IF_ERROR(dispatch_numeric(A.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* y = Y.data<T>();
    if (use_c) fill_broadcast_c<T>(*C, M, N, at.beta, y);
    gemm_loop<T>(at.trans_a, at.trans_b, M, N, K, at.alpha, A.data<T>(), lda, B.data<T>(), ldb, y, N);
  }));
  ctx.outputs[0] = Y;
  return Status::Ok();
}

KernelFactory gemm_factory() {
  return [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    GemmAttrs at;
    at.alpha = init.node.attr_float("alpha", 1.f);
    at.beta = init.node.attr_float("beta", 1.f);
    at.trans_a = init.node.attr_int("transA", 0) != 0;
    at.trans_b = init.node.attr_int("transB", 0) != 0;
    auto packed = std::make_shared<PackedB>();
    if (init.constant_input) {
      if (const Tensor* b = init.constant_input(1)) packed->pack(*b, at.trans_b, init, 1);
    }
    return make_fn_kernel([at, packed](KernelContext& ctx) { return run_gemm(at, *packed, ctx); });
  };
}

// ---------------------------------------------------------------------------
// MatMul: numpy.matmul semantics. A 1-D A is a row [1, K] and a 1-D B a
// column [K, 1], with that dim dropped from the result; leading (batch) dims
// broadcast.

// A fused bias (runtime/optimize.h kFusedBiasAttr): y's rows + bias, in
// place, as the Add it replaces rounds them.
Status add_fused_bias(const Tensor& bias, Tensor& y, ThreadPool* pool) {
  const int64_t n = y.rank() > 0 ? y.shape().back() : 1;
  if (bias.dtype() != DType::kFloat32 || y.dtype() != DType::kFloat32 || bias.numel() != n)
    return invalid_argument("fused bias of shape " + shape_to_string(bias.shape()) + " (" +
                            dtype_name(bias.dtype()) + ") does not fit the product " + shape_to_string(y.shape()));
  const float* b = bias.data<float>();
  float* yp = y.data<float>();
  const int64_t rows = n > 0 ? y.numel() / n : 0;
  pool->parallel_for(rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t j = 0; j < n; ++j) yp[r * n + j] = yp[r * n + j] + b[j];
  }, std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(n, 1)));
  return Status::Ok();
}

Status run_matmul(const PackedB& packed_b, KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(expect_inputs(ctx, 2));
  const Tensor& A = ctx.input(0);
  const Tensor& B = ctx.input(1);
  if (!gemm_dtype_ok(A.dtype()))
    return unsupported(std::string("MatMul on dtype ") + dtype_name(A.dtype()) +
                       " (implemented: float32, float64, int32, int64, uint32, uint64)");
  if (B.dtype() != A.dtype())
    return invalid_argument(std::string("A and B must share a dtype, got ") + dtype_name(A.dtype()) + " and " +
                            dtype_name(B.dtype()));
  if (A.rank() < 1 || B.rank() < 1)
    return invalid_argument("MatMul needs operands of rank >= 1, got " + shape_to_string(A.shape()) + " and " +
                            shape_to_string(B.shape()));
  Shape as = A.shape(), bs = B.shape();
  const bool a_vec = as.size() == 1, b_vec = bs.size() == 1;
  if (a_vec) as.insert(as.begin(), 1);
  if (b_vec) bs.push_back(1);
  const int64_t M = as[as.size() - 2], K = as.back(), N = bs.back();
  if (bs[bs.size() - 2] != K)
    return invalid_argument("inner dims differ: A " + shape_to_string(A.shape()) + ", B " +
                            shape_to_string(B.shape()));
  const Shape a_batch(as.begin(), as.end() - 2), b_batch(bs.begin(), bs.end() - 2);
  QTK_ASSIGN_OR_RETURN(Shape batch, broadcast_shapes(a_batch, b_batch));

  Shape y_shape = batch;
  if (!a_vec) y_shape.push_back(M);
  if (!b_vec) y_shape.push_back(N);
  // float32 writes every element; the integer loops accumulate into zeros.
  Tensor Y = A.dtype() == DType::kFloat32 ? Tensor::uninitialized(A.dtype(), y_shape) : Tensor(A.dtype(), y_shape);
  const int64_t nbatch = shape_numel(batch);
  if (Y.numel() == 0) {
    ctx.outputs[0] = Y;
    return Status::Ok();
  }
  // Element offsets of each batch's A and B matrices (broadcast dims repeat one).
  const BatchOffsets which = broadcast_batch_offsets(a_batch, b_batch, batch);
  std::vector<int64_t> a_off(nbatch), b_off(nbatch);
  for (int64_t i = 0; i < nbatch; ++i) {
    a_off[i] = which.a[i] * M * K;
    b_off[i] = which.b[i] * K * N;
  }

  if (A.dtype() == DType::kFloat32) {
    const float* a = A.data<float>();
    const float* b = B.data<float>();
    float* y = Y.data<float>();
    if (b_batch.empty() || shape_numel(b_batch) == 1) {
      // B is shared by every batch and A's batches are contiguous when A is
      // not itself broadcast: one tall GEMM [nbatch*M, K] x [K, N].
      if (shape_numel(a_batch) == nbatch) {
        if (const float* pb = packed_b.find(B, nbatch * M))
          sgemm_prepacked_b(false, nbatch * M, N, K, 1.f, a, K, pb, 0.f, y, N, ctx.pool, packed_b.path());
        else
          sgemm(false, false, nbatch * M, N, K, 1.f, a, K, b, N, 0.f, y, N, ctx.pool);
        ctx.outputs[0] = Y;
        return Status::Ok();
      }
    }
    const int threads = ctx.pool->size();
    if (threads > 1 && nbatch >= threads) {
      ctx.pool->parallel_for(nbatch, [&](int64_t s, int64_t e) {
        for (int64_t i = s; i < e; ++i)
          sgemm(false, false, M, N, K, 1.f, a + a_off[i], K, b + b_off[i], N, 0.f, y + i * M * N, N, nullptr);
      }, batch_grain(M * N * K));
    } else {
      for (int64_t i = 0; i < nbatch; ++i)
        sgemm(false, false, M, N, K, 1.f, a + a_off[i], K, b + b_off[i], N, 0.f, y + i * M * N, N, ctx.pool);
    }
  } else {
    QTK_RETURN_IF_ERROR(dispatch_numeric(A.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* a = A.data<T>();
      const T* b = B.data<T>();
      T* y = Y.data<T>();
      ctx.pool->parallel_for(nbatch, [&](int64_t s, int64_t e) {
        for (int64_t i = s; i < e; ++i)
          gemm_loop<T>(false, false, M, N, K, 1.0, a + a_off[i], K, b + b_off[i], N, y + i * M * N, N);
      }, batch_grain(M * N * K));
    }));
  }
  ctx.outputs[0] = Y;
  return Status::Ok();
}

}  // namespace

void register_linalg_ops(OpRegistry& r) {
  r.add("Gemm", gemm_factory());
  r.add("MatMul", [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    auto packed = std::make_shared<PackedB>();
    if (init.constant_input) {
      if (const Tensor* b = init.constant_input(1)) packed->pack(*b, false, init, 1);
    }
    if (init.node.attr_int(kFusedBiasAttr, 0) == 0)
      return make_fn_kernel([packed](KernelContext& ctx) { return run_matmul(*packed, ctx); });
    return make_fn_kernel([packed](KernelContext& ctx) -> Status {
      if (!ctx.has_input(2)) return invalid_argument("fused MatMul has no bias (input 2)");
      QTK_RETURN_IF_ERROR(run_matmul(*packed, ctx));
      return add_fused_bias(ctx.input(2), ctx.outputs[0], ctx.pool);
    });
  });
}

}  // namespace qtk::rt
