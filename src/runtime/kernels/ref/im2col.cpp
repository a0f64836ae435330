#include "runtime/kernels/ref/im2col.h"

#include <algorithm>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#define QTK_IM2COL_SSE 1
#endif

// GCC turns short copy loops back into memmove calls, one per row; the rows
// here are too short for that to pay.
#if defined(__GNUC__) && !defined(__clang__)
#define QTK_NO_LIBCALL_LOOPS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define QTK_NO_LIBCALL_LOOPS
#endif


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

// Padded extent of a dim: the begin pad plus the farthest any window reaches.
int64_t padded_extent(const WinDim& d) { return std::max(d.in + d.p, (d.out - 1) * d.s + (d.k - 1) * d.d + 1); }

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

PaddedImage padded_image_layout(const ConvGeometry& g, int64_t channels, int64_t images) {
  const std::vector<WinDim> dims = window_dims(g);
  const int nd = static_cast<int>(dims.size());
  const WinDim& last = dims[nd - 1];
  // Per dim: phase-plane extent ceil(padded extent / stride), the stride of
  // an index within a phase plane, and of a phase among the phase planes.
  std::vector<int64_t> ext(nd), stride(nd), phase_stride(nd);
  int64_t phase_plane = 1, phases = 1;
  // Along a last dim of stride 1, consecutive rows share their padding: the
  // zeros after a row's data are the zeros before the next row's, so a row
  // takes seg = max(p + in, ext - p) floats instead of ext (and at least its
  // outputs, so that grid rows stay apart), and the GEMM grid computes
  // max(begin, end pad) dropped columns per row instead of their sum. Images side by side share it the same way: image i's part of
  // a row starts i * seg after image 0's. The last row of a plane reads up
  // to ext - seg <= p floats into the next plane, which are the begin pad of
  // that plane's first row; after the last plane they are the tail.
  const bool shared = last.s == 1;
  images = shared ? std::max<int64_t>(images, 1) : 1;
  int64_t seg = 0, tail = 0;
  for (int t = nd; t-- > 0;) {
    ext[t] = (padded_extent(dims[t]) + dims[t].s - 1) / dims[t].s;
    int64_t pitch = ext[t];  // floats between index steps of the next dim out
    if (t == nd - 1 && shared) {
      seg = std::max({last.p + last.in, ext[t] - last.p, last.out});
      tail = ext[t] - seg;
      pitch = images * seg;
    }
    stride[t] = phase_plane;
    phase_plane *= pitch;
    phase_stride[t] = phases;
    phases *= dims[t].s;
  }
  PaddedImage l;
  l.plane = phases * phase_plane;
  l.tail = tail;
  l.images = images;
  l.image_shift = seg;
  // Where padded position `pos` of dim t lands, relative to its plane.
  auto place = [&](int t, int64_t pos) {
    return (pos % dims[t].s) * phase_stride[t] * phase_plane + (pos / dims[t].s) * stride[t];
  };
  int64_t taps = 1;
  for (const WinDim& d : dims) taps *= d.k;
  l.k_off.resize(channels * taps);
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t tap = 0; tap < taps; ++tap) {
      int64_t off = c * l.plane;
      for (int64_t rem = tap, t = nd - 1; t >= 0; --t) {
        off += place(static_cast<int>(t), (rem % dims[t].k) * dims[t].d);
        rem /= dims[t].k;
      }
      l.k_off[c * taps + tap] = off;
    }
  l.ow_n = dims[nd - 1].out;
  const int64_t out_rows = l.ow_n > 0 ? g.out_size() / l.ow_n : 0;
  l.row_off.resize(out_rows * images);
  for (int64_t r = 0; r < out_rows; ++r) {
    int64_t off = 0;
    for (int64_t rem = r, t = nd - 2; t >= 0; --t) {
      off += (rem % dims[t].out) * stride[t];
      rem /= dims[t].out;
    }
    for (int64_t i = 0; i < images; ++i) l.row_off[r * images + i] = off + i * seg;
  }
  l.grid_cols = out_rows > 0 ? l.row_off.back() + l.ow_n : 0;
  l.in_row_len = last.in;
  l.last_pad = last.p;
  l.last_stride = last.s;
  l.last_phase_stride = phase_plane;  // phase_stride of the last dim is 1
  const int64_t in_rows = l.in_row_len > 0 ? g.in_size() / l.in_row_len : 0;
  l.in_row_off.resize(in_rows);
  for (int64_t r = 0; r < in_rows; ++r) {
    int64_t off = 0;
    for (int64_t rem = r, t = nd - 2; t >= 0; --t) {
      off += place(static_cast<int>(t), rem % dims[t].in + dims[t].p);
      rem /= dims[t].in;
    }
    l.in_row_off[r] = off;
  }
  return l;
}

namespace {

// Copies n floats. Rows here are short (7 to 32 floats in the small CNNs), so
// inline 16-byte moves beat a call to memmove per row (which is what the
// compiler makes of a plain copy loop); the last chunk may overlap the one
// before it.
QTK_NO_LIBCALL_LOOPS inline void copy_row(float* __restrict dst, const float* __restrict src, int64_t n) {
#if QTK_IM2COL_SSE
  if (n >= 4) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) _mm_storeu_ps(dst + i, _mm_loadu_ps(src + i));
    if (i < n) _mm_storeu_ps(dst + n - 4, _mm_loadu_ps(src + n - 4));
    return;
  }
#endif
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

// Stride 2 along the row: input i lands in phase (i + p) % 2 at index
// (i + p) / 2. One pass over pairs, which compilers turn into shuffles (the
// plain loop per phase strides through src one float at a time).
QTK_NO_LIBCALL_LOOPS inline void split_even_odd(float* row, int64_t phase_stride, const float* __restrict src, int64_t n, int64_t p) {
  int64_t i = p & 1;  // the first input of an even padded position
  if (i == 1 && n > 0) row[phase_stride + p / 2] = src[0];
  float* __restrict even = row + (i + p) / 2;
  float* __restrict odd = row + phase_stride + (i + p) / 2;
  const int64_t pairs = (n - i) / 2;
  const float* s = src + i;
  for (int64_t j = 0; j < pairs; ++j) {
    even[j] = s[2 * j];
    odd[j] = s[2 * j + 1];
  }
  if (i + 2 * pairs < n) even[pairs] = src[n - 1];
}

inline void zero_floats(float* dst, int64_t n) {
  if (n >= 16) {
    std::memset(dst, 0, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  for (int64_t i = 0; i < n; ++i) dst[i] = 0.f;
}

}  // namespace

QTK_NO_LIBCALL_LOOPS void fill_padded_image(const float* image, int64_t channels, const ConvGeometry& g,
                                            const PaddedImage& layout, float* dst, bool zeros_in_place,
                                            int64_t image_stride) {
  const int64_t in_plane = g.in_size(), in_row = layout.in_row_len;
  const size_t rows = layout.in_row_off.size();
  const int64_t s = layout.last_stride, p = layout.last_pad;
  bool unit_stride = true;
  for (int64_t st : g.strides) unit_stride = unit_stride && st == 1;
  if (!unit_stride) {
    // Zero everything, then scatter the rows (along the last dim too, when
    // its stride splits a row over phase planes).
    if (!zeros_in_place) std::fill(dst, dst + layout.floats(channels), 0.f);
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t im = 0; im < layout.images; ++im) {
        float* plane = dst + c * layout.plane + im * layout.image_shift;
        const float* src = image + im * image_stride + c * in_plane;
        for (size_t r = 0; r < rows; ++r, src += in_row) {
          float* row = plane + layout.in_row_off[r];
          if (s == 1) {
            copy_row(row + p, src, in_row);
            continue;
          }
          // Padded position i + p goes to phase (i + p) % s at index (i + p) / s.
          if (s == 2) {
            split_even_odd(row, layout.last_phase_stride, src, in_row, p);
            continue;
          }
          // Phase by phase, every s-th input to consecutive slots.
          for (int64_t ph = 0; ph < s; ++ph) {
            const int64_t i0 = ((ph - p) % s + s) % s;  // first i with (i + p) % s == ph
            float* out = row + ph * layout.last_phase_stride + (i0 + p) / s;
            for (int64_t i = i0; i < in_row; i += s) *out++ = src[i];
          }
        }
      }
    return;
  }
  // Rows back to back in the buffer as in the image (a 1x1 conv's, no pads,
  // one image): the plane is one copy, not one per row.
  bool rows_adjoin = layout.images == 1 && p == 0;
  for (size_t r = 0; r < rows && rows_adjoin; ++r) rows_adjoin = layout.in_row_off[r] == static_cast<int64_t>(r) * in_row;
  if (rows_adjoin) {
    const int64_t len = static_cast<int64_t>(rows) * in_row;
    for (int64_t c = 0; c < channels; ++c) {
      float* plane = dst + c * layout.plane;
      copy_row(plane, image + c * in_plane, len);
      if (!zeros_in_place) zero_floats(plane + len, layout.plane - len);
    }
    if (!zeros_in_place) std::fill(dst + channels * layout.plane, dst + layout.floats(channels), 0.f);
    return;
  }
  // One phase: one pass per plane, each float written once, the zeros before
  // an input row and then the row (the offsets ascend: row by row, image by
  // image within a row).
  for (int64_t c = 0; c < channels; ++c) {
    float* plane = dst + c * layout.plane;
    const float* src = image + c * in_plane;
    int64_t pos = 0;
    for (size_t r = 0; r < rows; ++r)
      for (int64_t im = 0; im < layout.images; ++im) {
        const int64_t at = layout.in_row_off[r] + im * layout.image_shift + p;
        if (!zeros_in_place) zero_floats(plane + pos, at - pos);
        copy_row(plane + at, src + im * image_stride + static_cast<int64_t>(r) * in_row, in_row);
        pos = at + in_row;
      }
    if (!zeros_in_place) zero_floats(plane + pos, layout.plane - pos);
  }
  if (!zeros_in_place) std::fill(dst + channels * layout.plane, dst + layout.floats(channels), 0.f);
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
