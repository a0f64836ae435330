// Einsum's contraction. Operands contract left to right, two at a time,
// each intermediate keeping only the labels the output or a later operand
// needs. A float32 pair that is a (batched) matrix product up to transposes
// (attention's bhid,bhjd->bhij and bhij,bhjd->bhid, bij,bjk->bik) runs on
// sgemm (einsum_gemm.cpp); anything else (a label summed in one operand
// only, other dtypes, a single operand) runs the plain strided loop, which
// accumulates in double (floating types) or modulo 2^64 (integers, wrapping
// like a product in T).
#include "runtime/kernels/ref/einsum.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <type_traits>

#include "runtime/kernels/ref/common.h"
#include "runtime/op_registry.h"
#include "runtime/thread_pool.h"

namespace qtk::rt::ref {
namespace {

using detail::contiguous;
using detail::has_label;
using detail::stride_of;

void run_range(ThreadPool* pool, int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (pool != nullptr) pool->parallel_for(n, fn, grain);
  else fn(0, n);
}

// y (contiguous over `out`) = sum over the other labels of the product of
// the operands' elements.
template <class T>
void contract_loop(const std::vector<const T*>& data, const std::vector<const EinsumOperand*>& ops,
                   const std::vector<int>& out, const std::vector<int64_t>& sizes, T* y, ThreadPool* pool) {
  // Integers accumulate modulo 2^64: the result wraps as a product in T would (no signed overflow).
  using Acc = std::conditional_t<std::is_floating_point_v<T>, double, uint64_t>;
  const size_t nv = ops.size();
  std::vector<int> sum;
  for (const EinsumOperand* op : ops)
    for (int l : op->labels)
      if (!has_label(out, l) && !has_label(sum, l)) sum.push_back(l);
  // Per label (row), the stride of each operand (column).
  auto strides = [&](const std::vector<int>& labels) {
    std::vector<int64_t> s(labels.size() * nv);
    for (size_t d = 0; d < labels.size(); ++d)
      for (size_t v = 0; v < nv; ++v) s[d * nv + v] = stride_of(*ops[v], labels[d]);
    return s;
  };
  const std::vector<int64_t> so = strides(out), ss = strides(sum);
  int64_t total_out = 1, total_sum = 1;
  for (int l : out) total_out *= sizes[l];
  for (int l : sum) total_sum *= sizes[l];
  if (total_out == 0) return;
  const int nsum = static_cast<int>(sum.size()), nout = static_cast<int>(out.size());
  const int64_t last_n = nsum > 0 ? sizes[sum.back()] : 1;
  const int64_t* last_s = nsum > 0 ? &ss[(nsum - 1) * nv] : nullptr;
  run_range(pool, total_out, std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, total_sum * nv)),
            [&](int64_t begin, int64_t end) {
    std::vector<int64_t> idx(nout), base(nv, 0), sidx(nsum), off(nv);
    for (int64_t rem = begin, d = nout - 1; d >= 0; --d) {
      idx[d] = rem % sizes[out[d]];
      rem /= sizes[out[d]];
      for (size_t v = 0; v < nv; ++v) base[v] += idx[d] * so[d * nv + v];
    }
    for (int64_t o = begin; o < end; ++o) {
      Acc acc = 0;
      if (total_sum > 0) {
        std::fill(sidx.begin(), sidx.end(), 0);
        off = base;
        for (;;) {
          // The innermost summed label in a tight loop, the others by odometer.
          if (nv == 2 && last_s != nullptr) {  // a pair (every product but the first): no loop over operands
            const T *p0 = data[0] + off[0], *p1 = data[1] + off[1];
            const int64_t s0 = last_s[0], s1 = last_s[1];
            for (int64_t t = 0; t < last_n; ++t) acc += static_cast<Acc>(p0[t * s0]) * static_cast<Acc>(p1[t * s1]);
          } else {
            for (int64_t t = 0; t < last_n; ++t) {
              Acc prod = 1;
              for (size_t v = 0; v < nv; ++v) prod *= static_cast<Acc>(data[v][off[v] + (last_s ? t * last_s[v] : 0)]);
              acc += prod;
            }
          }
          int d = nsum - 2;
          for (; d >= 0; --d) {
            for (size_t v = 0; v < nv; ++v) off[v] += ss[d * nv + v];
            if (++sidx[d] < sizes[sum[d]]) break;
            for (size_t v = 0; v < nv; ++v) off[v] -= sizes[sum[d]] * ss[d * nv + v];
            sidx[d] = 0;
          }
          if (d < 0) break;
        }
      }
      y[o] = static_cast<T>(acc);
      for (int d = nout - 1; d >= 0; --d) {
        for (size_t v = 0; v < nv; ++v) base[v] += so[d * nv + v];
        if (++idx[d] < sizes[out[d]]) break;
        for (size_t v = 0; v < nv; ++v) base[v] -= sizes[out[d]] * so[d * nv + v];
        idx[d] = 0;
      }
    }
  });
}

template <class T>
void contract_pair(const T* a, const EinsumOperand& A, const T* b, const EinsumOperand& B,
                   const std::vector<int>& out, const std::vector<int64_t>& sizes, T* y, ThreadPool* pool,
                   EinsumPath path) {
  if constexpr (std::is_same_v<T, float>)
    if (path == EinsumPath::kAuto && detail::einsum_gemm(a, A, b, B, out, sizes, y, pool)) return;
  contract_loop<T>({a, b}, {&A, &B}, out, sizes, y, pool);
}

template <class T>
void run_einsum(const EinsumPlan& p, const std::vector<const Tensor*>& inputs, Tensor& Y, ThreadPool* pool,
                EinsumPath path) {
  T* y = Y.data<T>();
  const size_t n = inputs.size();
  if (n == 1) {
    contract_loop<T>({inputs[0]->data<T>()}, {&p.operands[0]}, p.output, p.sizes, y, pool);
    return;
  }
  const T* cur = inputs[0]->data<T>();
  EinsumOperand cur_op = p.operands[0];
  Tensor held;  // the latest intermediate
  for (size_t i = 1; i < n; ++i) {
    const EinsumOperand& next = p.operands[i];
    if (i + 1 == n) {
      contract_pair<T>(cur, cur_op, inputs[i]->data<T>(), next, p.output, p.sizes, y, pool, path);
      return;
    }
    // Keep the labels the output or a later operand needs, in order of appearance.
    std::vector<int> keep;
    auto needed = [&](int l) {
      if (has_label(p.output, l)) return true;
      for (size_t j = i + 1; j < n; ++j)
        if (has_label(p.operands[j].labels, l)) return true;
      return false;
    };
    for (const std::vector<int>* ls : {static_cast<const std::vector<int>*>(&cur_op.labels), &next.labels})
      for (int l : *ls)
        if (!has_label(keep, l) && needed(l)) keep.push_back(l);
    Shape shape;
    for (int l : keep) shape.push_back(p.sizes[l]);
    Tensor t = Tensor::uninitialized(Y.dtype(), shape);
    contract_pair<T>(cur, cur_op, inputs[i]->data<T>(), next, keep, p.sizes, t.data<T>(), pool, path);
    held = t;
    cur = held.data<T>();
    cur_op = contiguous(keep, p.sizes);
  }
}

}  // namespace

Expected<Tensor> einsum(const EinsumSpec& spec, const std::vector<const Tensor*>& inputs, ThreadPool* pool,
                        EinsumPath path) {
  if (inputs.empty()) return invalid_argument("Einsum needs at least one input");
  const DType dt = inputs[0]->dtype();
  if (dt != DType::kFloat32 && dt != DType::kFloat64 && dt != DType::kInt32 && dt != DType::kInt64)
    return unsupported(std::string("Einsum on dtype ") + dtype_name(dt) +
                       " (implemented: float32, float64, int32, int64)");
  std::vector<Shape> shapes;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i]->dtype() != dt)
      return invalid_argument("Einsum inputs must share a dtype: input 0 is " + std::string(dtype_name(dt)) +
                              ", input " + std::to_string(i) + " is " + dtype_name(inputs[i]->dtype()));
    shapes.push_back(inputs[i]->shape());
  }
  QTK_ASSIGN_OR_RETURN(EinsumPlan plan, plan_einsum(spec, shapes));
  Tensor Y = Tensor::uninitialized(dt, plan.output_shape);  // every element is written
  if (Y.numel() == 0) return Y;
  switch (dt) {
    case DType::kFloat32: run_einsum<float>(plan, inputs, Y, pool, path); break;
    case DType::kFloat64: run_einsum<double>(plan, inputs, Y, pool, path); break;
    case DType::kInt32: run_einsum<int32_t>(plan, inputs, Y, pool, path); break;
    default: run_einsum<int64_t>(plan, inputs, Y, pool, path); break;
  }
  return Y;
}

}  // namespace qtk::rt::ref

namespace qtk::rt {

void register_einsum_op(OpRegistry& r) {
  r.add("Einsum", [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    if (!init.node.has_attr("equation")) return invalid_argument("Einsum has no 'equation' attribute");
    QTK_ASSIGN_OR_RETURN(ref::EinsumSpec spec, ref::parse_einsum(init.node.attr_string("equation", "")));
    return make_fn_kernel([spec](KernelContext& ctx) -> Status {
      std::vector<const Tensor*> in;
      for (size_t i = 0; i < ctx.num_inputs(); ++i) {
        if (!ctx.has_input(i)) return invalid_argument("Einsum input " + std::to_string(i) + " is missing");
        in.push_back(&ctx.input(i));
      }
      QTK_ASSIGN_OR_RETURN(Tensor y, ref::einsum(spec, in, ctx.pool));
      ctx.outputs[0] = std::move(y);
      return Status::Ok();
    });
  }, "", 12);
}

}  // namespace qtk::rt
