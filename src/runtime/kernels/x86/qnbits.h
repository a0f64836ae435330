// Weight-only 2/4/8-bit GEMM for com.microsoft MatMulNBits at
// accuracy_level 4 ("A may be quantized to int8 with the same block_size"),
// reading the packed weight codes and unpacking them in registers.
//
// Arithmetic (the same in every tier and in the scalar reference,
// rt::matmul_nbits_int8_reference in kernels/ref/matmul_nbits.h, bit for bit):
//   A is quantized per row and per K-block (matmul_nbits_quantize_a_block):
//     sa = max|a| / 127, qa = rint(clamp(a / sa, -127, 127)) as int8,
//     asum = Σ qa (a block with a non-finite value: sa = NaN, qa = 0).
//   Then for each output, blocks in increasing order, from y = bias (or 0):
//     idot = Σ_k qa[m, k] · code[n, k] - z[n, blk] · asum[m, blk]    (int32)
//     y    = fma(float(idot), sa[m, blk] · sw[n, blk], y)
// The integer part is exact (|idot| < 2^31 for block_size <=
// kMatMulNBitsMaxInt8Block). A is scaled per K-block rather than per row: an
// outlier then coarsens one block's grid, not the whole row's, for one more
// float multiply per (row, column, block) than a per-row scale, and it is
// what ONNX Runtime does ("quantized with the same block_size"): ORT 1.30's
// level-4 outputs and qtk's differed by at most 2e-7 of the largest output on
// single random 2/4/8-bit MatMulNBits nodes, 7e-4 on mlp quantized W4 g32
// (three layers; same top-1 on 64 of 64 inputs).
//
// Tiers (qgemm_resolve_path, so QTK_QGEMM_SCALAR=1 / QTK_QGEMM_NO_VNNI=1
// apply): AVX-512 VNNI (vpdpbusd, u8 codes x s8 activations), AVX2
// (vpmaddubsw + vpmaddwd, qnbits_avx2.cpp says why it is exact), portable
// scalar. The float part of every tier is the same IEEE operations in the
// same order, so all tiers give the same bits.
//
// Packed layout (one for all tiers): ceil(N/16) panels of 16 columns; panel
// p, block b holds block·bits/32 groups of 64 bytes; in group g, byte 4j + t
// (column j, t < 4) carries 8/bits codes, code s (bits·s up) being the weight
// at k = b·block + (g·8/bits + s)·4 + t. One 64-byte load thus gives 8/bits
// vpdpbusd operands (16 columns x 4 k each) after a shift and a mask. Codes
// past K and columns past N are 0. Scales: [panel][block][16] floats; zero
// points: [panel][block][16] bytes (2^(bits-1) where the node has none).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/kernels/x86/qgemm.h"

namespace qtk::rt {
class ThreadPool;
}

namespace qtk::rt::x86 {

inline constexpr int kQnbitsNR = 16;  // columns per panel

struct QnbitsPacked {
  int64_t k = 0, n = 0, bits = 4, block = 0, blocks = 0, panels = 0;
  int64_t groups = 0;      // 64-byte groups per (panel, block)
  bool has_zero_points = false;
  AlignedBuffer<uint8_t> codes;  // panels · blocks · groups · 64
  AlignedBuffer<float> scales;   // panels · blocks · 16
  std::vector<uint8_t> zero_points;  // panels · blocks · 16
  int64_t held_bytes() const;    // what the packed weights keep in memory
  const uint8_t* panel_codes(int64_t p) const { return codes.data() + p * blocks * groups * 64; }
};

// MatMulNBits operands: b [N, blocks, block·bits/8] codes, scales [N·blocks],
// zero_points null or packed uint8 [N · ceil(blocks·bits/8)]. The caller
// checks the sizes (rt::check_matmul_nbits_operands).
void qnbits_pack(int64_t k, int64_t n, int64_t bits, int64_t block, const uint8_t* b, const float* scales,
                 const uint8_t* zero_points, QnbitsPacked& out);

// y [M, N] (row stride N) = A [M, K] (row stride K) · W, as described above.
// bias: null or N values. From detail::kQgemmMinParallelMacs multiply-adds
// (as the int8 GEMM), the panels are split over `pool` (may be null) in
// chunks of 64 columns; A is quantized on the calling thread first.
void qnbits_gemm(int64_t m, const float* a, const QnbitsPacked& w, const float* bias, float* y, ThreadPool* pool,
                 QgemmPath path = QgemmPath::kAuto);

namespace detail {
// Quantized A rows: row r at qa + r·kpad (kpad = blocks·block, zero past K),
// sa/asum at r·blocks.
struct QnbitsA {
  int64_t m = 0, kpad = 0, blocks = 0;
  AlignedBuffer<int8_t> qa;
  std::vector<float> sa;
  std::vector<int32_t> asum;
};
void qnbits_quantize_a(int64_t m, int64_t k, int64_t block, const float* a, QgemmPath resolved, QnbitsA& out);
// One row: blocks of `block` values (the last may be partial), qa zero-filled past k.
void qnbits_quantize_a_scalar(const float* a, int64_t k, int64_t block, int64_t blocks, int8_t* qa, float* sa,
                              int32_t* asum);
void qnbits_quantize_a_avx2(const float* a, int64_t k, int64_t block, int64_t blocks, int8_t* qa, float* sa,
                            int32_t* asum);
void qnbits_quantize_a_avx512(const float* a, int64_t k, int64_t block, int64_t blocks, int8_t* qa, float* sa,
                              int32_t* asum);

// Rows [m0, m0 + rows) x panels [p0, p1) of y; rows <= 4.
using QnbitsKernel = void (*)(int rows, const QnbitsA& a, int64_t m0, const QnbitsPacked& w, int64_t p0, int64_t p1,
                              const float* bias, float* y);
void qnbits_kernel_scalar(int rows, const QnbitsA& a, int64_t m0, const QnbitsPacked& w, int64_t p0, int64_t p1,
                          const float* bias, float* y);
void qnbits_kernel_avx2(int rows, const QnbitsA& a, int64_t m0, const QnbitsPacked& w, int64_t p0, int64_t p1,
                        const float* bias, float* y);
void qnbits_kernel_vnni(int rows, const QnbitsA& a, int64_t m0, const QnbitsPacked& w, int64_t p0, int64_t p1,
                        const float* bias, float* y);
}  // namespace detail

}  // namespace qtk::rt::x86
