// The Resize (opset 10, 11, 13, 18, 19) and Upsample (opset 1, 7, 9) kernels:
// they turn each version's inputs and attributes into ResizeParams and call
// resize_ref (resize.cpp).
#include <cmath>

#include "runtime/kernels/ref/common.h"
#include "runtime/kernels/ref/resize.h"
#include "runtime/kernels/ref/tensor_ops_common.h"

namespace qtk::rt::ref {

namespace {

Expected<ResizeMode> parse_mode(const std::string& s) {
  if (s == "nearest") return ResizeMode::kNearest;
  if (s == "linear" || s == "bilinear") return ResizeMode::kLinear;  // "bilinear": Upsample-1
  if (s == "cubic") return ResizeMode::kCubic;
  return invalid_argument("unknown resize mode '" + s + "'");
}

Expected<ResizeCoordMode> parse_coord(const std::string& s) {
  if (s == "half_pixel") return ResizeCoordMode::kHalfPixel;
  if (s == "half_pixel_symmetric") return ResizeCoordMode::kHalfPixelSymmetric;
  if (s == "pytorch_half_pixel") return ResizeCoordMode::kPytorchHalfPixel;
  if (s == "align_corners") return ResizeCoordMode::kAlignCorners;
  if (s == "asymmetric") return ResizeCoordMode::kAsymmetric;
  if (s == "tf_half_pixel_for_nn") return ResizeCoordMode::kTfHalfPixelForNn;
  if (s == "tf_crop_and_resize") return ResizeCoordMode::kTfCropAndResize;
  return invalid_argument("unknown coordinate_transformation_mode '" + s + "'");
}

Expected<ResizeNearestMode> parse_nearest(const std::string& s) {
  if (s == "round_prefer_floor") return ResizeNearestMode::kRoundPreferFloor;
  if (s == "round_prefer_ceil") return ResizeNearestMode::kRoundPreferCeil;
  if (s == "floor") return ResizeNearestMode::kFloor;
  if (s == "ceil") return ResizeNearestMode::kCeil;
  return invalid_argument("unknown nearest_mode '" + s + "'");
}

// Converts a computed output length to int64, refusing values no tensor could have.
Expected<int64_t> output_length(double v) {
  if (!(v >= 0) || v > 1e15) return invalid_argument("resize output length " + std::to_string(v) + " is invalid");
  return static_cast<int64_t>(v);
}

// Output sizes for explicit scales: floor(scale * length).
Status sizes_from_scales(const Shape& in, ResizeParams& p) {
  p.out_shape.resize(in.size());
  for (size_t d = 0; d < in.size(); ++d) {
    if (!(p.scales[d] > 0) || !std::isfinite(p.scales[d]))
      return invalid_argument("scales must be positive and finite, got " + std::to_string(p.scales[d]));
    QTK_ASSIGN_OR_RETURN(p.out_shape[d], output_length(std::floor(p.scales[d] * static_cast<double>(in[d]))));
  }
  return Status::Ok();
}

struct ResizeAttrs {
  ResizeParams base;  // mode and coordinate options; scales/sizes filled per run
  std::vector<int64_t> axes;
  std::string keep_aspect_ratio_policy = "stretch";
  int64_t opset = 0;
};

Status run_resize(const ResizeAttrs& a, KernelContext& ctx) {
  QTK_RETURN_IF_ERROR(expect_inputs(ctx, 1));
  const Tensor& x = ctx.input(0);
  const int r = x.rank();
  // Resize-10: (X, scales). Resize-11+: (X, roi, scales, sizes), empty tensors count as absent.
  auto present = [&](size_t i) { return ctx.has_input(i) && ctx.input(i).numel() > 0; };
  const size_t scales_at = a.opset < 11 ? 1 : 2;
  const bool has_scales = present(scales_at);
  const bool has_sizes = a.opset >= 11 && present(3);
  if (has_scales == has_sizes) return invalid_argument("Resize needs exactly one of scales and sizes");

  std::vector<int> axes;
  if (a.axes.empty()) {
    for (int d = 0; d < r; ++d) axes.push_back(d);
  } else {
    std::vector<bool> seen(static_cast<size_t>(r), false);
    for (int64_t v : a.axes) {
      QTK_ASSIGN_OR_RETURN(int d, normalize_axis(v, r));
      if (seen[static_cast<size_t>(d)]) return invalid_argument("axis " + std::to_string(v) + " is repeated");
      seen[static_cast<size_t>(d)] = true;
      axes.push_back(d);
    }
  }
  const size_t k = axes.size();

  ResizeParams p = a.base;
  p.scales.assign(static_cast<size_t>(r), 1.0);
  if (has_scales) {
    QTK_ASSIGN_OR_RETURN(std::vector<double> s, read_float_values(ctx.input(scales_at), "scales"));
    if (s.size() != k)
      return invalid_argument("scales has " + std::to_string(s.size()) + " values, expected " + std::to_string(k));
    for (size_t i = 0; i < k; ++i) p.scales[static_cast<size_t>(axes[i])] = s[i];
    QTK_RETURN_IF_ERROR(sizes_from_scales(x.shape(), p));
  } else {
    QTK_ASSIGN_OR_RETURN(std::vector<int64_t> sz, read_int_values(ctx.input(3), "sizes"));
    if (sz.size() != k)
      return invalid_argument("sizes has " + std::to_string(sz.size()) + " values, expected " + std::to_string(k));
    p.out_shape = x.shape();
    for (size_t i = 0; i < k; ++i) {
      const int d = axes[i];
      if (sz[i] < 0) return invalid_argument("sizes has a negative value");
      p.out_shape[static_cast<size_t>(d)] = sz[i];
      p.scales[static_cast<size_t>(d)] =
          x.dim(d) == 0 ? 1.0 : static_cast<double>(sz[i]) / static_cast<double>(x.dim(d));
    }
    if (a.keep_aspect_ratio_policy != "stretch") {
      // One scale for all resized axes, the output rounded half up.
      const bool not_larger = a.keep_aspect_ratio_policy == "not_larger";
      double s = p.scales[static_cast<size_t>(axes[0])];
      for (int d : axes) s = not_larger ? std::min(s, p.scales[static_cast<size_t>(d)]) : std::max(s, p.scales[static_cast<size_t>(d)]);
      for (int d : axes) {
        p.scales[static_cast<size_t>(d)] = s;
        QTK_ASSIGN_OR_RETURN(p.out_shape[static_cast<size_t>(d)], output_length(s * static_cast<double>(x.dim(d)) + 0.5));
      }
    }
  }

  if (p.coord == ResizeCoordMode::kTfCropAndResize) {
    if (!present(1)) return invalid_argument("tf_crop_and_resize needs the roi input");
    QTK_ASSIGN_OR_RETURN(std::vector<double> roi, read_float_values(ctx.input(1), "roi"));
    if (roi.size() != 2 * k)
      return invalid_argument("roi has " + std::to_string(roi.size()) + " values, expected " + std::to_string(2 * k));
    p.roi.assign(static_cast<size_t>(r), 0.0);
    p.roi.resize(2 * static_cast<size_t>(r), 1.0);
    for (size_t i = 0; i < k; ++i) {
      p.roi[static_cast<size_t>(axes[i])] = roi[i];
      p.roi[static_cast<size_t>(r + axes[i])] = roi[k + i];
    }
  }
  QTK_ASSIGN_OR_RETURN(ctx.outputs[0], resize_ref(x, p, ctx.pool));
  return Status::Ok();
}

Expected<std::unique_ptr<Kernel>> make_resize(const KernelInit& init) {
  const ir::Node& n = init.node;
  ResizeAttrs a;
  a.opset = init.opset;
  QTK_ASSIGN_OR_RETURN(a.base.mode, parse_mode(n.attr_string("mode", "nearest")));
  if (init.opset >= 11) {
    QTK_ASSIGN_OR_RETURN(a.base.coord, parse_coord(n.attr_string("coordinate_transformation_mode", "half_pixel")));
    QTK_ASSIGN_OR_RETURN(a.base.nearest, parse_nearest(n.attr_string("nearest_mode", "round_prefer_floor")));
    a.base.cubic_coeff_a = n.attr_float("cubic_coeff_a", -0.75f);
    a.base.exclude_outside = n.attr_int("exclude_outside", 0) != 0;
    a.base.extrapolation_value = n.attr_float("extrapolation_value", 0.f);
  } else {
    // Resize-10 had only `mode`; it behaved as asymmetric coordinates.
    a.base.coord = ResizeCoordMode::kAsymmetric;
    a.base.nearest = ResizeNearestMode::kLegacy;
  }
  if (init.opset >= 18) {
    a.base.antialias = n.attr_int("antialias", 0) != 0;
    a.axes = n.attr_ints("axes");
    a.keep_aspect_ratio_policy = n.attr_string("keep_aspect_ratio_policy", "stretch");
    if (a.keep_aspect_ratio_policy != "stretch" && a.keep_aspect_ratio_policy != "not_larger" &&
        a.keep_aspect_ratio_policy != "not_smaller")
      return invalid_argument("unknown keep_aspect_ratio_policy '" + a.keep_aspect_ratio_policy + "'");
  }
  return make_fn_kernel([a](KernelContext& ctx) { return run_resize(a, ctx); });
}

Expected<std::unique_ptr<Kernel>> make_upsample(const KernelInit& init) {
  const ir::Node& n = init.node;
  ResizeParams base;
  QTK_ASSIGN_OR_RETURN(base.mode, parse_mode(n.attr_string("mode", "nearest")));
  if (base.mode == ResizeMode::kCubic) return invalid_argument("Upsample has no cubic mode");
  base.coord = ResizeCoordMode::kAsymmetric;
  base.nearest = ResizeNearestMode::kLegacy;
  // Upsample-1: height_scale/width_scale on NCHW; 7: scales attribute; 9: scales input.
  const int64_t opset = init.opset;
  std::vector<double> attr_scales;
  if (opset < 7) {
    attr_scales = {1.0, 1.0, n.attr_float("height_scale", 1.f), n.attr_float("width_scale", 1.f)};
  } else if (opset < 9) {
    for (float f : n.attr_floats("scales")) attr_scales.push_back(f);
    if (attr_scales.empty()) return invalid_argument("Upsample needs the scales attribute");
  }
  return make_fn_kernel([=](KernelContext& ctx) -> Status {
    QTK_RETURN_IF_ERROR(expect_inputs(ctx, opset >= 9 ? 2 : 1));
    const Tensor& x = ctx.input(0);
    ResizeParams p = base;
    if (opset >= 9) {
      QTK_ASSIGN_OR_RETURN(p.scales, read_float_values(ctx.input(1), "scales"));
    } else {
      p.scales = attr_scales;
    }
    if (p.scales.size() != static_cast<size_t>(x.rank()))
      return invalid_argument("scales has " + std::to_string(p.scales.size()) + " values for rank " +
                              std::to_string(x.rank()));
    QTK_RETURN_IF_ERROR(sizes_from_scales(x.shape(), p));
    QTK_ASSIGN_OR_RETURN(ctx.outputs[0], resize_ref(x, p, ctx.pool));
    return Status::Ok();
  });
}

}  // namespace

void register_resize_ops(OpRegistry& r) {
  r.add("Resize", make_resize);
  r.add("Upsample", make_upsample);
}

}  // namespace qtk::rt::ref
