// Generator and pass-through reference kernels: Constant, ConstantOfShape,
// Range, EyeLike, Identity, Dropout (inference only).
#include <cmath>
#include <cstring>
#include <string>

#include "runtime/kernels/ref/elementwise_common.h"
#include "runtime/op_registry.h"

namespace qtk::rt {
namespace {

using namespace ref;

// Outputs beyond this many elements are refused rather than attempted: a
// shape computed from bad data should give an error, not exhaust memory.
constexpr int64_t kMaxGeneratedElements = int64_t{1} << 34;

// ---------------------------------------------------------------------------
// Constant: the value is built once, when the session is created.

Expected<Tensor> constant_value(const ir::Node& node) {
  for (const char* name : {"sparse_value", "value_string", "value_strings"})
    if (node.has_attr(name)) return unsupported(std::string("Constant with attribute '") + name + "' is not supported");
  if (const ir::Attribute* a = node.attr("value")) {
    if (a->type != ir::AttrType::kTensor) return invalid_argument("Constant 'value' must be a tensor attribute");
    if (!a->t.defined()) return unsupported("Constant 'value' has a dtype qtk cannot hold");
    return a->t;
  }
  if (const ir::Attribute* a = node.attr("value_float")) return Tensor::scalar<float>(a->f);
  if (const ir::Attribute* a = node.attr("value_floats"))
    return Tensor::from_vector<float>({static_cast<int64_t>(a->floats.size())}, a->floats);
  if (const ir::Attribute* a = node.attr("value_int")) return Tensor::scalar<int64_t>(a->i);
  if (const ir::Attribute* a = node.attr("value_ints"))
    return Tensor::from_vector<int64_t>({static_cast<int64_t>(a->ints.size())}, a->ints);
  return invalid_argument("Constant has no value attribute");
}

KernelFactory constant_factory() {
  return [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    QTK_ASSIGN_OR_RETURN(Tensor value, constant_value(init.node));
    return make_fn_kernel([value](KernelContext& ctx) -> Status { return set_single_output(ctx, value); });
  };
}

// Copies one element (elem_bytes) into every element of `out`.
void fill_with_element(Tensor& out, const void* elem, size_t elem_bytes) {
  auto* dst = static_cast<std::byte*>(out.raw());
  for (int64_t i = 0; i < out.numel(); ++i) std::memcpy(dst + i * elem_bytes, elem, elem_bytes);
}

Expected<Shape> shape_from_tensor(const Tensor& t, const char* what) {
  if (t.dtype() != DType::kInt64) return invalid_argument(std::string(what) + " must be int64, got " + dtype_name(t.dtype()));
  if (t.rank() > 1) return invalid_argument(std::string(what) + " must be 1-D, has shape " + shape_to_string(t.shape()));
  Shape s = t.to_int64_vector();
  int64_t n = 1;
  for (int64_t d : s) {
    if (d < 0) return invalid_argument(std::string(what) + " has a negative dimension: " + shape_to_string(s));
    if (d > 0 && n > kMaxGeneratedElements / d)
      return invalid_argument(std::string(what) + " " + shape_to_string(s) + " is too large");
    n *= d;
  }
  return s;
}

KernelFactory constant_of_shape_factory() {
  return [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    Tensor value = Tensor::scalar<float>(0.f);
    if (const ir::Attribute* a = init.node.attr("value")) {
      if (a->type != ir::AttrType::kTensor || !a->t.defined())
        return unsupported("ConstantOfShape 'value' must be a tensor of a dtype qtk can hold");
      if (a->t.numel() != 1)
        return invalid_argument("ConstantOfShape 'value' must have one element, has shape " +
                                shape_to_string(a->t.shape()));
      value = a->t;
    }
    return make_fn_kernel([value](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
      QTK_ASSIGN_OR_RETURN(Shape shape, shape_from_tensor(ctx.input(0), "ConstantOfShape input"));
      Tensor out(value.dtype(), shape);
      fill_with_element(out, value.raw(), dtype_size(value.dtype()));
      return set_single_output(ctx, out);
    });
  };
}

// ---------------------------------------------------------------------------
// Range: max(ceil((limit - start) / delta), 0) elements start + i * delta.

template <class T>
Expected<Tensor> range_of(T start, T limit, T delta) {
  if (delta == T(0)) return invalid_argument("Range delta must not be zero");
  int64_t n;
  if constexpr (std::is_floating_point_v<T>) {
    const double count = std::ceil((static_cast<double>(limit) - static_cast<double>(start)) / static_cast<double>(delta));
    if (std::isnan(count)) return invalid_argument("Range bounds are not finite");
    if (count > static_cast<double>(kMaxGeneratedElements)) return invalid_argument("Range has too many elements");
    n = count > 0 ? static_cast<int64_t>(count) : 0;
  } else {
    // Integer ceil division on int64 (inputs are at most int64).
    const __int128 span = static_cast<__int128>(limit) - static_cast<__int128>(start);
    const __int128 d = delta;
    __int128 q = span / d;
    if (span % d != 0 && ((span < 0) == (d < 0))) ++q;
    if (q > kMaxGeneratedElements) return invalid_argument("Range has too many elements");
    n = q > 0 ? static_cast<int64_t>(q) : 0;
  }
  Tensor out(dtype_of<T>, {n});
  T* p = out.data<T>();
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (std::is_floating_point_v<T>) p[i] = static_cast<T>(start + static_cast<T>(i) * delta);
    else p[i] = static_cast<T>(wrap_add<int64_t>(start, wrap_mul<int64_t>(i, delta)));
  }
  return out;
}

Status run_range(KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(expect_inputs(ctx, 3));
  const Tensor &s = ctx.input(0), &l = ctx.input(1), &d = ctx.input(2);
  if (s.dtype() != l.dtype() || s.dtype() != d.dtype())
    return invalid_argument(std::string("Range inputs must share a dtype, got ") + dtype_name(s.dtype()) + ", " +
                            dtype_name(l.dtype()) + ", " + dtype_name(d.dtype()));
  for (const Tensor* t : {&s, &l, &d})
    if (t->numel() != 1) return invalid_argument("Range inputs must be scalars, got shape " + shape_to_string(t->shape()));
  switch (s.dtype()) {
    case DType::kFloat32: return set_single_output(ctx, range_of(s.data<float>()[0], l.data<float>()[0], d.data<float>()[0]));
    case DType::kFloat64: return set_single_output(ctx, range_of(s.data<double>()[0], l.data<double>()[0], d.data<double>()[0]));
    case DType::kInt16: return set_single_output(ctx, range_of(s.data<int16_t>()[0], l.data<int16_t>()[0], d.data<int16_t>()[0]));
    case DType::kInt32: return set_single_output(ctx, range_of(s.data<int32_t>()[0], l.data<int32_t>()[0], d.data<int32_t>()[0]));
    case DType::kInt64: return set_single_output(ctx, range_of(s.data<int64_t>()[0], l.data<int64_t>()[0], d.data<int64_t>()[0]));
    default: return invalid_argument(std::string("Range does not take ") + dtype_name(s.dtype()) + " inputs");
  }
}

// ---------------------------------------------------------------------------
// EyeLike: ones on the k-th diagonal of a 2-D tensor shaped like the input.

KernelFactory eyelike_factory() {
  return [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    const int64_t k = init.node.attr_int("k", 0);
    const bool has_dtype = init.node.has_attr("dtype");
    const int64_t dtype_attr = init.node.attr_int("dtype", 0);
    if (has_dtype && !dtype_is_known(static_cast<int32_t>(dtype_attr)))
      return unsupported("EyeLike dtype " + std::to_string(dtype_attr) + " is not supported");
    return make_fn_kernel([k, has_dtype, dtype_attr](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
      const Tensor& x = ctx.input(0);
      if (x.rank() != 2) return invalid_argument("EyeLike input must be 2-D, has shape " + shape_to_string(x.shape()));
      const DType dt = has_dtype ? static_cast<DType>(dtype_attr) : x.dtype();
      QTK_ASSIGN_OR_RETURN(Tensor one, one_of_dtype(dt));
      Tensor out(dt, x.shape());
      const size_t es = dtype_size(dt);
      auto* dst = static_cast<std::byte*>(out.raw());
      const int64_t rows = x.dim(0), cols = x.dim(1);
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t j = i + k;
        if (j >= 0 && j < cols) std::memcpy(dst + (i * cols + j) * es, one.raw(), es);
      }
      return set_single_output(ctx, out);
    });
  };
}

// ---------------------------------------------------------------------------
// Identity and Dropout share the input's storage: tensors are immutable once
// produced, so no copy is needed.

Status run_identity(KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
  return set_single_output(ctx, ctx.input(0));
}

// Dropout at inference is the identity; the optional mask is all true (bool
// from opset 10, the input's dtype before). Opset >= 12 takes ratio and
// training_mode as inputs: training_mode true with a non-zero ratio would
// need random masking, which qtk does not do. Before opset 7, is_test=0 also
// meant training; qtk runs such models in inference mode like other runtimes.
KernelFactory dropout_factory() {
  return [](const KernelInit& init) -> Expected<std::unique_ptr<Kernel>> {
    const int64_t opset = init.opset;
    const bool mask_is_bool = opset <= 0 || opset >= 10;
    return make_fn_kernel([opset, mask_is_bool](KernelContext& ctx) -> Status {
      QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
      const Tensor& x = ctx.input(0);
      if ((opset <= 0 || opset >= 12) && ctx.has_input(2)) {
        const Tensor& tm = ctx.input(2);
        if (tm.dtype() != DType::kBool || tm.numel() != 1)
          return invalid_argument("Dropout training_mode must be a bool scalar, got " + std::string(dtype_name(tm.dtype())) +
                                  " " + shape_to_string(tm.shape()));
        const bool training = tm.data<uint8_t>()[0] != 0;
        const double ratio = ctx.has_input(1) && ctx.input(1).numel() == 1 ? ctx.input(1).get_as_double(0) : 0.5;
        if (training && ratio != 0.0)
          return unsupported("Dropout in training mode (random masking, ratio " + std::to_string(ratio) +
                             ") is not supported");
      }
      if (ctx.outputs.empty()) return invalid_argument("node has no output");
      ctx.outputs[0] = x;
      if (ctx.outputs.size() >= 2) {
        Tensor mask(DType::kBool, x.shape());
        std::memset(mask.raw(), 1, mask.nbytes());
        if (mask_is_bool) {
          ctx.outputs[1] = mask;
        } else {
          QTK_ASSIGN_OR_RETURN(ctx.outputs[1], convert_dtype(mask, x.dtype(), ctx.pool));
        }
      }
      return Status::Ok();
    });
  };
}

template <class Fn>
KernelFactory plain(Fn fn) {
  return [fn](const KernelInit&) -> Expected<std::unique_ptr<Kernel>> { return make_fn_kernel(fn); };
}

}  // namespace

void register_generator_ops(OpRegistry& r) {
  r.add("Constant", constant_factory());
  r.add("ConstantOfShape", constant_of_shape_factory());
  r.add("Range", plain(run_range));
  r.add("EyeLike", eyelike_factory());
  r.add("Identity", plain(run_identity));
  r.add("Dropout", dropout_factory());
}

}  // namespace qtk::rt
