// Einsum's fast path: a float32 pair that is a (batched) matrix product up
// to transposes runs on sgemm, one call per batch, operands read in place
// where each matrix's labels nest into one row and one column stride (else
// copied to [batch, rows, cols] first), the output written plain,
// transposed (Y^T = op(B)^T op(A)^T) or through a buffer scattered into place.
#include <algorithm>
#include <vector>

#include "runtime/kernels/ref/einsum.h"
#include "runtime/kernels/ref/sgemm.h"
#include "runtime/thread_pool.h"

namespace qtk::rt::ref::detail {
namespace {

// dst[strided] = src[strided] over `dims` (a gather or a scatter).
void strided_copy(const float* src, const std::vector<int64_t>& ss, float* dst, const std::vector<int64_t>& ds,
                  const std::vector<int64_t>& dims) {
  int64_t total = 1;
  for (int64_t d : dims) total *= d;
  if (total == 0) return;
  const int r = static_cast<int>(dims.size());
  std::vector<int64_t> idx(r, 0);
  int64_t so = 0, dof = 0;
  for (int64_t i = 0; i < total; ++i) {
    dst[dof] = src[so];
    for (int d = r - 1; d >= 0; --d) {
      so += ss[d], dof += ds[d];
      if (++idx[d] < dims[d]) break;
      so -= dims[d] * ss[d], dof -= dims[d] * ds[d];
      idx[d] = 0;
    }
  }
}

// A group of labels read as one matrix axis: its extent, and its stride when
// the labels' strides nest (ok), as a contiguous sub-block's would.
struct Axis {
  int64_t extent = 1, stride = 0;
  bool ok = true;
};
Axis collapse(const EinsumOperand& v, const std::vector<int>& group, const std::vector<int64_t>& sizes) {
  Axis a;
  int64_t expect = -1;
  for (size_t i = group.size(); i-- > 0;) {
    const int64_t size = sizes[group[i]];
    a.extent *= size;
    if (size == 1) continue;
    const int64_t s = stride_of(v, group[i]);
    if (expect < 0) a.stride = s;
    else if (s != expect) a.ok = false;
    expect = s * size;
  }
  return a;
}

// How sgemm reads a matrix of rows x cols: plain (element (i, j) at
// i * ld + j) or transposed (at j * ld + i); ok = false when neither.
struct MatrixLayout {
  bool ok = false, trans = false;
  int64_t ld = 1;
};
MatrixLayout matrix_layout(const Axis& rows, const Axis& cols) {
  MatrixLayout m;
  if (!rows.ok || !cols.ok) return m;
  if (cols.extent <= 1 || cols.stride == 1) {
    m.ld = rows.extent <= 1 ? std::max<int64_t>(cols.extent, 1) : rows.stride;
    m.ok = m.ld >= cols.extent && m.ld >= 1;
    if (m.ok) return m;
  }
  if (rows.extent <= 1 || rows.stride == 1) {
    m.trans = true;
    m.ld = cols.extent <= 1 ? std::max<int64_t>(rows.extent, 1) : cols.stride;
    m.ok = m.ld >= rows.extent && m.ld >= 1;
  }
  return m;
}

}  // namespace

// The pair as batch x [M, K] x [K, N] -> [M, N]: batch = labels in A, B and
// the output, M = in A and the output, N = in B and the output, K = in A and
// B only.
bool einsum_gemm(const float* a, const EinsumOperand& A, const float* b, const EinsumOperand& B,
                 const std::vector<int>& out, const std::vector<int64_t>& sizes, float* y, ThreadPool* pool) {
  std::vector<int> batch, m, n, k;
  for (int l : out) {
    const bool in_a = has_label(A.labels, l), in_b = has_label(B.labels, l);
    if (in_a && in_b) batch.push_back(l);
    else if (in_a) m.push_back(l);
    else if (in_b) n.push_back(l);
    else return false;
  }
  for (int l : A.labels)
    if (!has_label(out, l)) {
      if (!has_label(B.labels, l)) return false;
      k.push_back(l);
    }
  for (int l : B.labels)
    if (!has_label(out, l) && !has_label(A.labels, l)) return false;
  int64_t nbatch = 1, M = 1, N = 1, K = 1;
  for (int l : batch) nbatch *= sizes[l];
  for (int l : m) M *= sizes[l];
  for (int l : n) N *= sizes[l];
  for (int l : k) K *= sizes[l];
  const EinsumOperand Y = contiguous(out, sizes);
  if (nbatch * M * N == 0) return true;
  if (K == 0) {
    std::fill(y, y + nbatch * M * N, 0.f);
    return true;
  }
  // An operand whose strides do not fit sgemm is copied to [batch, rows, cols] first.
  std::vector<float> a_copy, b_copy, y_tmp;
  auto fit = [&](const float*& p, EinsumOperand& v, const std::vector<int>& rows, const std::vector<int>& cols,
                 std::vector<float>& copy) {
    MatrixLayout l = matrix_layout(collapse(v, rows, sizes), collapse(v, cols, sizes));
    if (l.ok) return l;
    std::vector<int> order = batch;
    order.insert(order.end(), rows.begin(), rows.end());
    order.insert(order.end(), cols.begin(), cols.end());
    const EinsumOperand c = contiguous(order, sizes);
    std::vector<int64_t> src(order.size()), dims(order.size());
    for (size_t i = 0; i < order.size(); ++i) src[i] = stride_of(v, order[i]), dims[i] = sizes[order[i]];
    copy.resize(static_cast<size_t>(shape_numel(dims)));
    strided_copy(p, src, copy.data(), c.strides, dims);
    p = copy.data(), v = c;
    return matrix_layout(collapse(v, rows, sizes), collapse(v, cols, sizes));
  };
  EinsumOperand Av = A, Bv = B, Yv = Y;
  const MatrixLayout la = fit(a, Av, m, k, a_copy), lb = fit(b, Bv, k, n, b_copy);
  // The output plain, or transposed (then Y^T = op(B)^T op(A)^T), or
  // through a [batch, M, N] buffer scattered into place.
  MatrixLayout ly = matrix_layout(collapse(Yv, m, sizes), collapse(Yv, n, sizes));
  float* yp = y;
  if (!ly.ok) {
    std::vector<int> order = batch;
    order.insert(order.end(), m.begin(), m.end());
    order.insert(order.end(), n.begin(), n.end());
    Yv = contiguous(order, sizes);
    y_tmp.resize(static_cast<size_t>(nbatch * M * N));
    yp = y_tmp.data();
    ly = MatrixLayout{true, false, N};
  }
  // Element offsets of each batch's matrices (a stride-0 batch dim repeats one).
  std::vector<int64_t> ao(nbatch), bo(nbatch), yo(nbatch);
  {
    std::vector<int64_t> idx(batch.size(), 0);
    int64_t oa = 0, ob = 0, oy = 0;
    for (int64_t i = 0; i < nbatch; ++i) {
      ao[i] = oa, bo[i] = ob, yo[i] = oy;
      for (size_t d = batch.size(); d-- > 0;) {
        const int l = batch[d];
        oa += stride_of(Av, l), ob += stride_of(Bv, l), oy += stride_of(Yv, l);
        if (++idx[d] < sizes[l]) break;
        oa -= sizes[l] * stride_of(Av, l), ob -= sizes[l] * stride_of(Bv, l), oy -= sizes[l] * stride_of(Yv, l);
        idx[d] = 0;
      }
    }
  }
  auto one = [&](int64_t i, ThreadPool* p) {
    if (!ly.trans)
      sgemm(la.trans, lb.trans, M, N, K, 1.f, a + ao[i], la.ld, b + bo[i], lb.ld, 0.f, yp + yo[i], ly.ld, p);
    else
      sgemm(!lb.trans, !la.trans, N, M, K, 1.f, b + bo[i], lb.ld, a + ao[i], la.ld, 0.f, yp + yo[i], ly.ld, p);
  };
  if (pool != nullptr && pool->size() > 1 && nbatch >= pool->size()) {
    pool->parallel_for(nbatch, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) one(i, nullptr);
    }, std::max<int64_t>(1, (int64_t{1} << 17) / std::max<int64_t>(1, M * N * K)));
  } else {
    for (int64_t i = 0; i < nbatch; ++i) one(i, pool);
  }
  if (yp != y) {
    std::vector<int64_t> dst(Yv.labels.size()), dims(Yv.labels.size());
    for (size_t i = 0; i < Yv.labels.size(); ++i) dst[i] = stride_of(Y, Yv.labels[i]), dims[i] = sizes[Yv.labels[i]];
    strided_copy(yp, Yv.strides, y, dst, dims);
  }
  return true;
}


}  // namespace qtk::rt::ref::detail
