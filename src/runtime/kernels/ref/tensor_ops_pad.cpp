// Pad: modes constant, reflect, edge and wrap; negative pads crop.
// Opset 1 (paddings attr), 2-10 (pads/value attrs), 11+ (pads and
// constant_value inputs), 18+ (axes input), 19+ (wrap mode).
#include <algorithm>
#include <cstring>

#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/ref/tensor_ops_common.h"

namespace qtk::rt::ref {

namespace {

enum class PadMode { kConstant, kReflect, kEdge, kWrap };

// For each output position along one axis, the input position it copies, or
// -1 for the constant fill. Negative pads crop first and the positive ones
// then pad what is left (as ONNX Runtime does), so edge/reflect/wrap see the
// cropped axis.
Expected<std::vector<int64_t>> axis_source_map(int64_t in, int64_t begin, int64_t end, PadMode mode) {
  const int64_t lo = std::max<int64_t>(0, -begin);
  const int64_t n = in - lo - std::max<int64_t>(0, -end);  // cropped length
  if (n < 0) return invalid_argument("negative pads crop more than the axis holds");
  const int64_t before = std::max<int64_t>(0, begin);
  const int64_t out = n + before + std::max<int64_t>(0, end);
  if (mode != PadMode::kConstant && n == 0 && out > 0)
    return invalid_argument("cannot pad an empty axis in this mode");
  std::vector<int64_t> map(static_cast<size_t>(out));
  for (int64_t o = 0; o < out; ++o) {
    int64_t i = o - before;
    if (i < 0 || i >= n) {
      switch (mode) {
        case PadMode::kConstant: i = -1; break;
        case PadMode::kEdge: i = i < 0 ? 0 : n - 1; break;
        case PadMode::kWrap: i = ((i % n) + n) % n; break;
        case PadMode::kReflect: {
          // Reflection without repeating the edge, folded as often as the
          // pad needs (numpy.pad semantics).
          if (n == 1) {
            i = 0;
            break;
          }
          const int64_t period = 2 * (n - 1);
          i = ((i % period) + period) % period;
          if (i >= n) i = period - i;
          break;
        }
      }
    }
    map[static_cast<size_t>(o)] = i < 0 ? -1 : lo + i;
  }
  return map;
}

Expected<std::unique_ptr<Kernel>> make_pad(const KernelInit& init) {
  const std::string mode_name = init.node.attr_string("mode", "constant");
  PadMode mode;
  if (mode_name == "constant") mode = PadMode::kConstant;
  else if (mode_name == "reflect") mode = PadMode::kReflect;
  else if (mode_name == "edge") mode = PadMode::kEdge;
  else if (mode_name == "wrap") mode = PadMode::kWrap;
  else return invalid_argument("unknown Pad mode '" + mode_name + "'");
  const bool from_attrs = init.opset < 11;
  const std::vector<int64_t> attr_pads = init.node.attr_ints(init.opset < 2 ? "paddings" : "pads");
  const double attr_value = init.node.attr_float("value", 0.f);
  if (from_attrs && !init.node.has_attr(init.opset < 2 ? "paddings" : "pads"))
    return invalid_argument("Pad needs the pads attribute before opset 11");
  return make_fn_kernel([=](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(expect_inputs(ctx, from_attrs ? 1 : 2));
    const Tensor& x = ctx.input(0);
    QTK_RETURN_IF_ERROR(expect_fixed_size(x.dtype()));
    const int r = x.rank();
    std::vector<int64_t> pads = attr_pads;
    std::vector<std::byte> fill;
    if (from_attrs) {
      QTK_ASSIGN_OR_RETURN(fill, scalar_bytes(x.dtype(), attr_value));
    } else {
      QTK_ASSIGN_OR_RETURN(pads, read_int_values(ctx.input(1), "pads"));
      fill.assign(dtype_size(x.dtype()), std::byte{0});
      if (ctx.has_input(2) && ctx.input(2).numel() > 0) {
        if (ctx.input(2).dtype() != x.dtype()) return invalid_argument("constant_value must have the data's dtype");
        std::memcpy(fill.data(), ctx.input(2).raw(), fill.size());
      }
    }
    // Which axes the pads cover: all of them, or the axes input (opset 18).
    std::vector<int> axes;
    if (ctx.has_input(3)) {
      QTK_ASSIGN_OR_RETURN(std::vector<int64_t> a, read_int_values(ctx.input(3), "axes"));
      std::vector<bool> seen(static_cast<size_t>(r), false);
      for (int64_t v : a) {
        QTK_ASSIGN_OR_RETURN(int d, normalize_axis(v, r));
        if (seen[static_cast<size_t>(d)]) return invalid_argument("axis " + std::to_string(v) + " is repeated");
        seen[static_cast<size_t>(d)] = true;
        axes.push_back(d);
      }
    } else {
      for (int d = 0; d < r; ++d) axes.push_back(d);
    }
    if (pads.size() != 2 * axes.size())
      return invalid_argument("pads has " + std::to_string(pads.size()) + " entries, expected " +
                              std::to_string(2 * axes.size()));
    std::vector<int64_t> begin(static_cast<size_t>(r), 0), end(static_cast<size_t>(r), 0);
    for (int64_t v : pads)
      if (v < -(int64_t{1} << 40) || v > (int64_t{1} << 40)) return invalid_argument("pad " + std::to_string(v) + " is out of range");
    for (size_t k = 0; k < axes.size(); ++k) {
      begin[static_cast<size_t>(axes[k])] = pads[k];
      end[static_cast<size_t>(axes[k])] = pads[k + axes.size()];
    }
    if (r == 0) {
      ctx.outputs[0] = x;
      return Status::Ok();
    }
    std::vector<std::vector<int64_t>> maps;
    for (int d = 0; d < r; ++d) {
      const int64_t out = x.dim(d) + begin[static_cast<size_t>(d)] + end[static_cast<size_t>(d)];
      if (out > (int64_t{1} << 40)) return invalid_argument("pads make axis " + std::to_string(d) + " too long");
      auto map = axis_source_map(x.dim(d), begin[static_cast<size_t>(d)], end[static_cast<size_t>(d)], mode);
      if (!map.ok()) return map.status().with_context("axis " + std::to_string(d) + " (" + mode_name + " mode)");
      maps.push_back(std::move(map).value());
    }
    QTK_ASSIGN_OR_RETURN(ctx.outputs[0], copy_by_axis_maps(x, maps, fill, ctx.pool));
    return Status::Ok();
  });
}

}  // namespace

void register_pad_ops(OpRegistry& r) { r.add("Pad", make_pad); }

}  // namespace qtk::rt::ref
