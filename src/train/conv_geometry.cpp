#include "train/conv_geometry.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "runtime/thread_pool.h"

namespace qtk::train {

Expected<Window2d> window_2d(const ir::Node& node, int64_t ih, int64_t iw, int64_t kh, int64_t kw, bool ceil_mode) {
  const std::string who = "node '" + node.name + "' (" + node.op_type + ")";
  Window2d w;
  w.ih = ih;
  w.iw = iw;
  w.kh = kh;
  w.kw = kw;
  const auto st = node.attr_ints("strides", {1, 1}), di = node.attr_ints("dilations", {1, 1});
  const auto pads = node.attr_ints("pads", {0, 0, 0, 0});
  if (st.size() != 2 || di.size() != 2 || pads.size() != 4)
    return unsupported(who + ": training supports 2-D windows only (strides/dilations/pads of rank 2)");
  w.sh = st[0];
  w.sw = st[1];
  w.dh = di[0];
  w.dw = di[1];
  if (w.sh < 1 || w.sw < 1 || w.dh < 1 || w.dw < 1) return invalid_argument(who + ": strides and dilations must be >= 1");
  const std::string ap = node.attr_string("auto_pad", "NOTSET");
  const int64_t ekh = (kh - 1) * w.dh + 1, ekw = (kw - 1) * w.dw + 1;
  if (ap == "SAME_UPPER" || ap == "SAME_LOWER") {
    w.oh = (ih + w.sh - 1) / w.sh;
    w.ow = (iw + w.sw - 1) / w.sw;
    const int64_t th = std::max<int64_t>(0, (w.oh - 1) * w.sh + ekh - ih),
                  tw = std::max<int64_t>(0, (w.ow - 1) * w.sw + ekw - iw);
    const bool upper = ap == "SAME_UPPER";
    w.pt = upper ? th / 2 : th - th / 2;
    w.pb = th - w.pt;
    w.pl = upper ? tw / 2 : tw - tw / 2;
    w.pr = tw - w.pl;
    return w;
  }
  if (ap != "NOTSET" && ap != "VALID") return invalid_argument(who + ": unknown auto_pad '" + ap + "'");
  if (ap == "NOTSET") {
    w.pt = pads[0];
    w.pl = pads[1];
    w.pb = pads[2];
    w.pr = pads[3];
  }
  auto out_dim = [&](int64_t in, int64_t p0, int64_t p1, int64_t ek, int64_t s) {
    const int64_t span = in + p0 + p1 - ek;
    if (span < 0) return int64_t{-1};
    int64_t o = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
    if (ceil_mode && (o - 1) * s >= in + p0) --o;  // last window must start inside the image or its begin pad
    return o;
  };
  w.oh = out_dim(ih, w.pt, w.pb, ekh, w.sh);
  w.ow = out_dim(iw, w.pl, w.pr, ekw, w.sw);
  if (w.oh < 1 || w.ow < 1)
    return invalid_argument(who + ": window larger than the padded input " + std::to_string(ih) + "x" +
                            std::to_string(iw));
  return w;
}

namespace {
// Output columns [lo, hi) whose tap kx reads inside the row: 0 <= ox*sw - pl + kx*dw < iw.
void valid_cols(const Window2d& w, int64_t kx, int64_t& lo, int64_t& hi) {
  const int64_t off = kx * w.dw - w.pl;  // input x of output 0
  lo = off >= 0 ? 0 : (-off + w.sw - 1) / w.sw;
  hi = w.iw - off <= 0 ? 0 : (w.iw - off + w.sw - 1) / w.sw;
  lo = std::min(lo, w.ow);
  hi = std::max(lo, std::min(hi, w.ow));
}


// Row (c, ky, kx) of the im2col matrix: the tap's value for every output position.
void im2col_row(const float* image, const Window2d& w, int64_t c, int64_t ky, int64_t kx, int64_t lo, int64_t hi,
                float* dst) {
  const int64_t off = kx * w.dw - w.pl;
  const float* src = image + c * w.ih * w.iw;
  for (int64_t oy = 0; oy < w.oh; ++oy) {
    const int64_t y = oy * w.sh - w.pt + ky * w.dh;
    float* d = dst + oy * w.ow;
    if (y < 0 || y >= w.ih) {
      std::fill(d, d + w.ow, 0.f);
      continue;
    }
    const float* row = src + y * w.iw;  // row[off + ox * sw] is the tap of output ox
    // Plain loops, not std::copy / fill: rows are a few dozen floats, where
    // a libc call per row cost more than the copy.
    for (int64_t ox = 0; ox < lo; ++ox) d[ox] = 0.f;
    if (w.sw == 1)
      for (int64_t ox = lo; ox < hi; ++ox) d[ox] = row[off + ox];
    else
      for (int64_t ox = lo; ox < hi; ++ox) d[ox] = row[off + ox * w.sw];
    for (int64_t ox = hi; ox < w.ow; ++ox) d[ox] = 0.f;
  }
}
}  // namespace

void im2col_2d(const float* image, int64_t channels, const Window2d& w, float* col) {
  const int64_t p = w.oh * w.ow;
  for (int64_t kx = 0; kx < w.kw; ++kx) {
    int64_t lo, hi;
    valid_cols(w, kx, lo, hi);
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t ky = 0; ky < w.kh; ++ky) im2col_row(image, w, c, ky, kx, lo, hi, col + ((c * w.kh + ky) * w.kw + kx) * p);
  }
}

void im2col_2d_packed(const float* image, int64_t channels, const Window2d& w, int64_t nr, float* packed) {
  const int64_t p = w.oh * w.ow, k = channels * w.kh * w.kw, slivers = (p + nr - 1) / nr;
  // One row at a time through a small buffer (in L1), then dealt out to the
  // slivers; the zero tail pads the last sliver.
  thread_local std::vector<float> row;
  row.assign(static_cast<size_t>(slivers * nr), 0.f);
  for (int64_t kx = 0; kx < w.kw; ++kx) {
    int64_t lo, hi;
    valid_cols(w, kx, lo, hi);
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t ky = 0; ky < w.kh; ++ky) {
        const int64_t r = (c * w.kh + ky) * w.kw + kx;
        im2col_row(image, w, c, ky, kx, lo, hi, row.data());
        if (nr == 32)  // the AVX-512 width: a fixed-size copy the compiler inlines
          for (int64_t s = 0; s < slivers; ++s)
            std::memcpy(packed + (s * k + r) * 32, row.data() + s * 32, 32 * sizeof(float));
        else
          for (int64_t s = 0; s < slivers; ++s) std::copy_n(row.data() + s * nr, nr, packed + (s * k + r) * nr);
      }
  }
}

void im2col_2d_packed_t(const float* image, int64_t channels, const Window2d& w, int64_t nr, float* packed) {
  const int64_t p = w.oh * w.ow, k = channels * w.kh * w.kw;
  // nr rows (one sliver's taps) at a time into a buffer, then transposed in
  // blocks of 16 positions so that both sides stay in L1.
  thread_local std::vector<float> rows;
  rows.resize(static_cast<size_t>(nr * p));
  constexpr int64_t kBlock = 16;
  for (int64_t r0 = 0; r0 < k; r0 += nr) {
    const int64_t taps = std::min(nr, k - r0);
    for (int64_t t = 0; t < taps; ++t) {
      const int64_t r = r0 + t, kx = r % w.kw, ky = r / w.kw % w.kh, c = r / (w.kw * w.kh);
      int64_t lo, hi;
      valid_cols(w, kx, lo, hi);
      im2col_row(image, w, c, ky, kx, lo, hi, rows.data() + t * p);
    }
    float* sliver = packed + (r0 / nr) * p * nr;
    for (int64_t j0 = 0; j0 < p; j0 += kBlock) {
      const int64_t jn = std::min(kBlock, p - j0);
      for (int64_t jj = 0; jj < jn; ++jj) {  // contiguous writes; the reads stay in L1
        const float* src = rows.data() + j0 + jj;
        float* dst = sliver + (j0 + jj) * nr;
        for (int64_t t = 0; t < taps; ++t) dst[t] = src[t * p];
      }
      for (int64_t jj = 0; jj < jn && taps < nr; ++jj)  // taps past K in the last sliver
        std::fill_n(sliver + (j0 + jj) * nr + taps, nr - taps, 0.f);
    }
  }
}

void col2im_2d(const float* col, int64_t channels, const Window2d& w, float* image) {
  const int64_t p = w.oh * w.ow;
  for (int64_t kx = 0; kx < w.kw; ++kx) {
    int64_t lo, hi;
    valid_cols(w, kx, lo, hi);
    const int64_t off = kx * w.dw - w.pl;
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t ky = 0; ky < w.kh; ++ky) {
        const float* src = col + ((c * w.kh + ky) * w.kw + kx) * p;
        float* dst = image + c * w.ih * w.iw;
        for (int64_t oy = 0; oy < w.oh; ++oy) {
          const int64_t y = oy * w.sh - w.pt + ky * w.dh;
          if (y < 0 || y >= w.ih) continue;
          float* row = dst + y * w.iw;
          const float* s = src + oy * w.ow;
          for (int64_t ox = lo; ox < hi; ++ox) row[off + ox * w.sw] += s[ox];
        }
      }
  }
}

int64_t num_chunks(rt::ThreadPool* pool, int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>(n, pool ? pool->size() : 1));
}

void parallel_chunks(rt::ThreadPool* pool, int64_t n, const std::function<void(int64_t, int64_t, int64_t)>& fn) {
  const int64_t chunks = num_chunks(pool, n);
  auto body = [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) fn(c, n * c / chunks, n * (c + 1) / chunks);
  };
  if (chunks == 1 || !pool) body(0, chunks);
  else pool->parallel_for(chunks, body);
}

void parallel_elements(rt::ThreadPool* pool, int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  if (n < kParallelElements || !pool || pool->size() < 2) {
    fn(0, n);
    return;
  }
  // Chunk borders on multiples of 16 floats (whole cache lines, aligned vectors).
  const int64_t blocks = (n + 15) / 16;
  parallel_chunks(pool, blocks, [&](int64_t, int64_t b, int64_t e) { fn(b * 16, std::min(n, e * 16)); });
}

}  // namespace qtk::train
