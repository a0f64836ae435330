#include "runtime/kernels/ref/im2col.h"

#include <algorithm>
#include <cstring>

#include "runtime/kernels/ref/sgemm.h"

namespace qtk::rt::ref {

Expected<AutoPad> parse_auto_pad(const std::string& s) {
  if (s.empty() || s == "NOTSET") return AutoPad::kNotSet;
  if (s == "SAME_UPPER") return AutoPad::kSameUpper;
  if (s == "SAME_LOWER") return AutoPad::kSameLower;
  if (s == "VALID") return AutoPad::kValid;
  return invalid_argument("auto_pad '" + s + "' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID");
}

namespace {

std::string ints_to_string(const std::vector<int64_t>& v) { return shape_to_string(v); }

Status fill_positive(const char* what, const std::vector<int64_t>& attr, int d, Shape& out) {
  if (attr.empty()) {
    out.assign(d, 1);
    return Status::Ok();
  }
  if (static_cast<int>(attr.size()) != d)
    return invalid_argument(std::string(what) + " " + ints_to_string(attr) + " must have " + std::to_string(d) +
                            " entries, one per spatial dim");
  for (int64_t v : attr)
    if (v <= 0) return invalid_argument(std::string(what) + " " + ints_to_string(attr) + " must all be positive");
  out = attr;
  return Status::Ok();
}

int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

}  // namespace

Status resolve_window_geometry(AutoPad auto_pad, const std::vector<int64_t>& strides,
                               const std::vector<int64_t>& dilations, const std::vector<int64_t>& pads,
                               bool ceil_mode, ConvGeometry& g) {
  const int d = g.rank();
  if (d < 1) return invalid_argument("expected at least one spatial dim");
  if (static_cast<int>(g.kernel.size()) != d)
    return invalid_argument("kernel_shape " + shape_to_string(g.kernel) + " must have " + std::to_string(d) +
                            " entries for input spatial shape " + shape_to_string(g.in));
  for (int64_t k : g.kernel)
    if (k <= 0) return invalid_argument("kernel_shape " + shape_to_string(g.kernel) + " must be positive");
  QTK_RETURN_IF_ERROR(fill_positive("strides", strides, d, g.strides));
  QTK_RETURN_IF_ERROR(fill_positive("dilations", dilations, d, g.dilations));
  if (!pads.empty() && static_cast<int>(pads.size()) != 2 * d)
    return invalid_argument("pads " + ints_to_string(pads) + " must have " + std::to_string(2 * d) + " entries");
  for (int64_t p : pads)
    if (p < 0) return invalid_argument("pads " + ints_to_string(pads) + " must not be negative");

  g.out.assign(d, 0);
  g.pads_begin.assign(d, 0);
  g.pads_end.assign(d, 0);
  for (int i = 0; i < d; ++i) {
    const int64_t in = g.in[i], s = g.strides[i];
    const int64_t span = (g.kernel[i] - 1) * g.dilations[i] + 1;  // dilated window extent
    if (auto_pad == AutoPad::kSameUpper || auto_pad == AutoPad::kSameLower) {
      g.out[i] = ceil_div(in, s);
      const int64_t total = std::max<int64_t>(0, (g.out[i] - 1) * s + span - in);
      // The odd pad goes at the end for SAME_UPPER, at the start for SAME_LOWER.
      g.pads_begin[i] = auto_pad == AutoPad::kSameUpper ? total / 2 : total - total / 2;
      g.pads_end[i] = total - g.pads_begin[i];
      continue;
    }
    if (auto_pad == AutoPad::kNotSet && !pads.empty()) {
      g.pads_begin[i] = pads[i];
      g.pads_end[i] = pads[i + d];
    }
    const int64_t room = in + g.pads_begin[i] + g.pads_end[i] - span;
    if (room < 0)
      return invalid_argument("window of extent " + std::to_string(span) + " (kernel_shape " +
                              shape_to_string(g.kernel) + ", dilations " + shape_to_string(g.dilations) +
                              ") does not fit input spatial shape " + shape_to_string(g.in) + " with pads " +
                              ints_to_string(pads));
    if (ceil_mode && auto_pad == AutoPad::kNotSet) {
      g.out[i] = ceil_div(room, s) + 1;
      if ((g.out[i] - 1) * s >= in + g.pads_begin[i]) --g.out[i];
    } else {
      g.out[i] = room / s + 1;
    }
  }
  return Status::Ok();
}

namespace {

// One spatial dim of the window walk.
struct WinDim {
  int64_t in, out, k, s, d, p;
};

// The geometry as (outer dims..., H, W) with at least two dims: a 1-D window
// gets a trivial H so the 2-D loops below serve every rank.
std::vector<WinDim> window_dims(const ConvGeometry& g) {
  std::vector<WinDim> dims;
  if (g.rank() == 1) dims.push_back({1, 1, 1, 1, 1, 0});
  for (int i = 0; i < g.rank(); ++i)
    dims.push_back({g.in[i], g.out[i], g.kernel[i], g.strides[i], g.dilations[i], g.pads_begin[i]});
  return dims;
}

// ---------------------------------------------------------------------------
// im2col_packed reads a zero-padded copy of the image in which every window
// lies inside, so the input offset of (row p, column j) splits into a
// kernel-tap part and an output-position part, k_off[p] + o_off[j], and every
// copy is unchecked.

struct PaddedPlan {
  const float* data = nullptr;   // padded image, kIm2colPackedSlack floats of slack at the end
  std::vector<int64_t> k_off;    // per column-matrix row p: channel + tap offset
  std::vector<int64_t> row_off;  // per output row (all dims but the last): offset of ow = 0
  int64_t ow_n = 0, sw = 1;      // output row length and input stride along it
};

// Padded extent of a dim: the begin pad plus the farthest any window reaches.
int64_t padded_extent(const WinDim& d) { return std::max(d.in + d.p, (d.out - 1) * d.s + (d.k - 1) * d.d + 1); }

// False if the padded copy cannot be allocated.
bool make_padded_plan(const float* image, int64_t channels, const ConvGeometry& g, PaddedPlan& plan) {
  const std::vector<WinDim> dims = window_dims(g);
  const int nd = static_cast<int>(dims.size());
  std::vector<int64_t> ext(nd), stride(nd);
  int64_t plane = 1;
  for (int t = nd; t-- > 0;) {
    const WinDim& d = dims[t];
    ext[t] = padded_extent(d);
    stride[t] = plane;
    plane *= ext[t];
  }
  thread_local AlignedFloats buf;
  float* dst = buf.get(channels * plane + kIm2colPackedSlack);
  if (dst == nullptr) return false;
  std::fill(dst, dst + channels * plane + kIm2colPackedSlack, 0.f);
  // Copy each input row (last dim) to its padded place.
  const int64_t in_row = dims[nd - 1].in, in_plane = g.in_size();
  const int64_t rows_per_plane = in_row > 0 ? in_plane / in_row : 0;
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t r = 0; r < rows_per_plane; ++r) {
      int64_t off = dims[nd - 1].p;
      for (int64_t rem = r, t = nd - 2; t >= 0; --t) {
        off += (rem % dims[t].in + dims[t].p) * stride[t];
        rem /= dims[t].in;
      }
      std::memcpy(dst + c * plane + off, image + c * in_plane + r * in_row, static_cast<size_t>(in_row) * 4);
    }
  plan.data = dst;
  // k_off: channel-major, then row-major kernel taps (the column-matrix row order).
  int64_t taps = 1;
  for (const WinDim& d : dims) taps *= d.k;
  plan.k_off.resize(channels * taps);
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t tap = 0; tap < taps; ++tap) {
      int64_t off = c * plane;
      for (int64_t rem = tap, t = nd - 1; t >= 0; --t) {
        off += (rem % dims[t].k) * dims[t].d * stride[t];
        rem /= dims[t].k;
      }
      plan.k_off[c * taps + tap] = off;
    }
  // row_off: every output position but the last dim.
  plan.ow_n = dims[nd - 1].out;
  plan.sw = dims[nd - 1].s;
  const int64_t out_rows = plan.ow_n > 0 ? g.out_size() / plan.ow_n : 0;
  plan.row_off.resize(out_rows);
  for (int64_t r = 0; r < out_rows; ++r) {
    int64_t off = 0;
    for (int64_t rem = r, t = nd - 2; t >= 0; --t) {
      off += (rem % dims[t].out) * dims[t].s * stride[t];
      rem /= dims[t].out;
    }
    plan.row_off[r] = off;
  }
  return true;
}

// ---------------------------------------------------------------------------
// col2im walks the column matrix row by row with bounds checks (its image is
// the real output, which has no padding to spare).

// Output columns [lo, hi) of a row whose input index ow * s + off is in [0, in).
void valid_range(int64_t in, int64_t out, int64_t s, int64_t off, int64_t& lo, int64_t& hi) {
  lo = off >= 0 ? 0 : (-off + s - 1) / s;
  hi = off > in - 1 ? 0 : (in - 1 - off) / s + 1;
  lo = std::min(lo, out);
  hi = std::clamp(hi, lo, out);
}

// One output row of the column matrix: row p (channel, tap), columns
// [j0, j0 + W.out). dst is the image row it lands on (W.in elements), or null
// when that row lies outside the image. Column ow lands on dst[ow * W.s + w_off],
// inside the row exactly for ow in [lo, hi).
struct ColRow {
  int64_t p, j0;
  float* dst;
  int64_t lo, hi, w_off;
};

template <class RowFn>
void for_each_row(const ConvGeometry& g, int64_t channels, float* image, RowFn&& row) {
  const std::vector<WinDim> dims = window_dims(g);
  const int nd = static_cast<int>(dims.size());
  const int no = nd - 2;  // outer dims (3-D and up)
  const WinDim& H = dims[nd - 2];
  const WinDim& W = dims[nd - 1];
  int64_t outer_k = 1, outer_out = 1;
  for (int t = 0; t < no; ++t) {
    outer_k *= dims[t].k;
    outer_out *= dims[t].out;
  }
  const int64_t in_plane = H.in * W.in;
  const int64_t image_size = g.in_size();
  // Valid output range along W per kernel column (independent of everything else).
  std::vector<int64_t> w_lo(W.k), w_hi(W.k);
  for (int64_t kw = 0; kw < W.k; ++kw) valid_range(W.in, W.out, W.s, kw * W.d - W.p, w_lo[kw], w_hi[kw]);
  std::vector<int64_t> kpos(no), opos(no);
  int64_t p = 0;  // column-matrix row: channel-major, then row-major kernel tap
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t ko = 0; ko < outer_k; ++ko) {
      for (int64_t r = ko, t = no - 1; t >= 0; --t) {
        kpos[t] = r % dims[t].k;
        r /= dims[t].k;
      }
      for (int64_t kh = 0; kh < H.k; ++kh) {
        for (int64_t kw = 0; kw < W.k; ++kw, ++p) {
          ColRow cr{p, 0, nullptr, w_lo[kw], w_hi[kw], kw * W.d - W.p};
          for (int64_t oo = 0; oo < outer_out; ++oo) {
            // Image plane offset of this outer output position, or -1 outside.
            int64_t plane = 0;
            for (int64_t r = oo, t = no - 1; t >= 0; --t) {
              opos[t] = r % dims[t].out;
              r /= dims[t].out;
            }
            for (int t = 0; t < no && plane >= 0; ++t) {
              const int64_t i = opos[t] * dims[t].s - dims[t].p + kpos[t] * dims[t].d;
              plane = (i < 0 || i >= dims[t].in) ? -1 : plane * dims[t].in + i;
            }
            float* plane_base = plane >= 0 ? image + c * image_size + plane * in_plane : nullptr;
            for (int64_t oh = 0; oh < H.out; ++oh, cr.j0 += W.out) {
              const int64_t ih = oh * H.s - H.p + kh * H.d;
              cr.dst = plane_base != nullptr && ih >= 0 && ih < H.in ? plane_base + ih * W.in : nullptr;
              row(cr);
            }
          }
        }
      }
    }
  }
}

}  // namespace

bool im2col_packed(const float* image, int64_t channels, const ConvGeometry& g, int64_t nr, float* packed) {
  PaddedPlan plan;
  if (!make_padded_plan(image, channels, g, plan)) return false;
  const int64_t cols = g.out_size(), rows = static_cast<int64_t>(plan.k_off.size());
  // Sliver by sliver so the writes are sequential. A sliver's nr columns are a
  // few runs along output rows; with stride 1 each run is copied as a whole
  // 16-float block. The part of a block past its run lands on slots that a
  // later run (or row, or sliver) writes, or in the slack: the packed matrix
  // is filled in address order, so the last write to every slot is the right one.
  struct Run {
    int64_t src_off, len, within;
  };
  std::vector<Run> runs;
  for (int64_t s0 = 0; s0 < cols; s0 += nr) {
    runs.clear();
    for (int64_t j = s0; j < std::min(cols, s0 + nr);) {
      const int64_t r = j / plan.ow_n, ow = j - r * plan.ow_n;
      const int64_t len = std::min(plan.ow_n - ow, s0 + nr - j);
      runs.push_back({plan.row_off[r] + ow * plan.sw, len, j - s0});
      j += len;
    }
    float* sliver = packed + (s0 / nr) * rows * nr;
    for (int64_t p = 0; p < rows; ++p) {
      const float* base = plan.data + plan.k_off[p];
      float* dst = sliver + p * nr;
      for (const Run& run : runs) {
        const float* src = base + run.src_off;
        float* out = dst + run.within;
        if (plan.sw == 1) {
          for (int64_t t = 0; t < run.len; t += kIm2colPackedSlack)
            std::memcpy(out + t, src + t, kIm2colPackedSlack * sizeof(float));
        } else {
          for (int64_t t = 0; t < run.len; ++t) out[t] = src[t * plan.sw];
        }
      }
    }
  }
  // Zero the columns of the last sliver past the end.
  if (cols % nr != 0) {
    float* last = packed + (cols / nr) * rows * nr;
    for (int64_t p = 0; p < rows; ++p) std::fill(last + p * nr + cols % nr, last + (p + 1) * nr, 0.f);
  }
  return true;
}

bool shifted_columns(const ConvGeometry& g, ShiftedColumns& sc) {
  for (int64_t s : g.strides)
    if (s != 1) return false;
  // The grid index of an output position is its input offset in the padded
  // image (stride 1).
  const std::vector<WinDim> dims = window_dims(g);
  const int nd = static_cast<int>(dims.size());
  int64_t plane = 1;
  std::vector<int64_t> stride(nd);
  for (int t = nd; t-- > 0;) {
    stride[t] = plane;
    plane *= padded_extent(dims[t]);
  }
  sc.row_len = dims[nd - 1].out;
  const int64_t out_rows = sc.row_len > 0 ? g.out_size() / sc.row_len : 0;
  sc.row_start.resize(out_rows);
  for (int64_t r = 0; r < out_rows; ++r) {
    int64_t off = 0;
    for (int64_t rem = r, t = nd - 2; t >= 0; --t) {
      off += (rem % dims[t].out) * stride[t];
      rem /= dims[t].out;
    }
    sc.row_start[r] = off;
  }
  sc.cols = out_rows > 0 ? sc.row_start.back() + sc.row_len : 0;
  return true;
}

bool pack_shifted_columns(const float* image, int64_t channels, const ConvGeometry& g, int64_t cols, int64_t nr,
                          float* packed) {
  PaddedPlan plan;
  if (!make_padded_plan(image, channels, g, plan)) return false;
  // Column q of row p is padded[k_off[p] + q]: every sliver row is one
  // contiguous block (reads stay inside the padded image plus its slack).
  const int64_t rows = static_cast<int64_t>(plan.k_off.size());
  for (int64_t s0 = 0; s0 < cols; s0 += nr) {
    float* sliver = packed + (s0 / nr) * rows * nr;
    if (nr == kIm2colPackedSlack) {  // the usual width: a fixed-size copy the compiler inlines
      for (int64_t p = 0; p < rows; ++p)
        std::memcpy(sliver + p * nr, plan.data + plan.k_off[p] + s0, kIm2colPackedSlack * sizeof(float));
    } else {
      for (int64_t p = 0; p < rows; ++p)
        std::memcpy(sliver + p * nr, plan.data + plan.k_off[p] + s0, static_cast<size_t>(nr) * sizeof(float));
    }
  }
  return true;
}

void col2im(const float* col, int64_t channels, const ConvGeometry& g, float* image) {
  const int64_t cols = g.out_size(), stride = g.strides.back();
  for_each_row(g, channels, image, [&](const ColRow& r) {
    if (r.dst == nullptr) return;
    const float* src = col + r.p * cols + r.j0;
    float* out = r.dst + r.w_off;
    for (int64_t ow = r.lo; ow < r.hi; ++ow) out[ow * stride] += src[ow];
  });
}

}  // namespace qtk::rt::ref
