// The AVX2 tier's exact u8 x s8 GEMM (qgemm.h), for a constant B whose k
// pairs fit vpmaddubsw: the scheme of qgemm_conv_u8s8.h with the roles of
// the operands swapped. B is held as the VNNI tier's signed quads
// (QgemmPackedB::quads(): panel p, quad q, column j at 64q + 4j, codes made
// signed, with column sums), A is packed per block as u8 quads (int8 codes
// xor 0x80, i.e. + 128), and the MR x 16 micro-kernel broadcasts a row's
// quad against the panel's two vectors:
//   Σ_k (a - a_zp)·(b - b_zp) = Σ_k a_u·b' - a_zp_u·Σ_k b'[n]
// (b' = b - b_zp: B's zero point is 0 once made signed; a_u, a_zp_u: A's
// codes and zero point as u8). The accumulator tile and the output stage
// are the int16 path's.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/kernels/x86/qgemm.h"

namespace qtk::rt::x86::detail {

// Whether qgemm_pack_b makes the u8s8 layout of b ([k x n] codes, zero
// points per column padded as QgemmPackedB's): the CPU has AVX2,
// QTK_QGEMM_NO_U8S8 is not set, the zero points are 0 (int8) or 128 (uint8)
// and every column's k pairs (2j, 2j + 1) of signed codes (an odd k's last
// paired with 0) satisfy |b0| + |b1| <= 128.
bool qgemm_u8s8_wanted(const QgemmCodes& b, int64_t k, int64_t n, const std::vector<int32_t>& zero_points);
// Whether every k pair of b's columns, made signed, fits the bound.
bool qgemm_u8s8_pairs_fit(const QgemmCodes& b, int64_t k, int64_t n);

// qgemm on the u8 x s8 path (b.u8s8, AVX2).
void qgemm_u8s8(int64_t m, const QgemmCodes& a, int32_t a_zero_point, const QgemmPackedB& b, const QgemmOutput& out,
                ThreadPool* pool);
// Rows [m0, m0 + rows) of A as one tile of u8 quads: quad q, row i at bytes
// 4(q·MR + i).., codes xor flip; rows past `rows` and k past k are 0. The
// scalar form writes quads from first_quad on; the AVX2 one all of them.
void qgemm_u8s8_pack_a_tile(const QgemmCodes& a, int64_t m0, int rows, int64_t k, uint8_t flip, uint8_t* tile,
                            int64_t first_quad = 0);
void qgemm_u8s8_pack_a_tile_avx2(const QgemmCodes& a, int64_t m0, int rows, int64_t k, uint8_t flip, uint8_t* tile);
// acc[i * NR + j] = Σ_q Σ_b a[q·4MR + 4i + b] (u8) · panel[q·64 + 4j + b] (s8)
// - corr[j], for i < rows <= MR (int32, wrapping; 5 rows run the 6-row kernel and
// write all MR rows of acc: the tile's pad rows are 0). panel: 32-byte aligned.
void qgemm_ukernel_u8s8_avx2(int rows, int64_t kquads, const uint8_t* a, const int8_t* panel, const int32_t* corr,
                             int32_t* acc);

}  // namespace qtk::rt::x86::detail
