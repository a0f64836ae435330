// float32 Softmax over many contiguous rows. A row is: its maximum
// (row_max_f32), x - max, exp (vector_math.h), the sum in double
// (row_sum_f32), times float(1 / sum). Rows of attention are short (17 in a
// ViT): one row at a time, exp runs on 2 vectors of which one is nearly
// empty, and its long dependency chain is not overlapped with anything. The
// block form runs exp once over many rows (every op is per element or per
// row, so the bits do not change); rows of 8 to 63 take their reductions in
// registers, with stores exactly a row wide (AVX-512 F/BW/VL; the same
// bits, see softmax_rows.cpp).
#pragma once

#include <cstdint>

namespace qtk::rt::x86 {

// rows rows of n floats each, x and y contiguous (y may equal x).
void softmax_rows_f32(const float* x, float* y, int64_t rows, int64_t n);

// One row at a time: the reference the block form is tested against.
void softmax_row_by_row_f32(const float* x, float* y, int64_t rows, int64_t n);

}  // namespace qtk::rt::x86
