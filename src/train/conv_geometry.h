// 2-D window geometry shared by the training Conv and pooling ops, and the
// plain im2col / col2im pair (col[K, P], K = channel-major then row-major
// taps, P = output positions).
#pragma once

#include <cstdint>
#include <functional>

#include "ir/graph.h"
#include "qtk/status.h"

namespace qtk::rt {
class ThreadPool;
}

namespace qtk::train {

struct Window2d {
  int64_t ih = 0, iw = 0, kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1;
  int64_t pt = 0, pl = 0, pb = 0, pr = 0, oh = 0, ow = 0;
};

// Reads kernel_shape (or the given kernel), strides, dilations, pads and
// auto_pad from `node` for an input of spatial size ih x iw. ceil_mode
// applies to pooling.
Expected<Window2d> window_2d(const ir::Node& node, int64_t ih, int64_t iw, int64_t kh, int64_t kw, bool ceil_mode);

void im2col_2d(const float* image, int64_t channels, const Window2d& w, float* col);
// The same matrix written straight into sgemm's packed-B layout of width nr
// (see rt::ref::sgemm_pack_b): sliver s holds positions [s*nr, s*nr + nr)
// row by row, positions past the end zero; the buffer holds
// ceil(P / nr) * nr * K floats.
void im2col_2d_packed(const float* image, int64_t channels, const Window2d& w, int64_t nr, float* packed);
// Its transpose (P x K) in the packed-B layout: sliver s holds taps
// [s*nr, s*nr + nr) position by position, taps past K zero; the buffer holds
// ceil(K / nr) * nr * P floats. (The B operand of dW = dY col^T.)
void im2col_2d_packed_t(const float* image, int64_t channels, const Window2d& w, int64_t nr, float* packed);
// Adds col back into image (which the caller initialises).
void col2im_2d(const float* col, int64_t channels, const Window2d& w, float* image);

// Runs fn(chunk, begin, end) over [0, n) split into at most the pool's
// size contiguous chunks (chunk ids 0..chunks-1), inline when pool is null.
int64_t num_chunks(rt::ThreadPool* pool, int64_t n);
void parallel_chunks(rt::ThreadPool* pool, int64_t n, const std::function<void(int64_t, int64_t, int64_t)>& fn);
// Element-wise loops: fn(begin, end) over [0, n), split over the pool only
// when n is large enough to pay for waking the workers (a few microseconds).
inline constexpr int64_t kParallelElements = int64_t{1} << 15;
void parallel_elements(rt::ThreadPool* pool, int64_t n, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace qtk::train
