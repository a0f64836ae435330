// The VNNI tier's B quads (qgemm.h, QgemmQuadB) from a row-major source,
// 16 columns × 4 rows per step: the per-matrix packing of an activation B
// (attention's Kᵀ and V), where the column-at-a-time loop took a third of
// the matmul's time.
#pragma once

#include <cstdint>

namespace qtk::rt::x86::detail {

// Packs B [k x n] (row i at src + i * ld, columns contiguous) into `panels`
// panels of `panel_len` bytes at dst: panel p, quad q, column j at byte
// q * 64 + 4j + (row % 4), codes as signed bytes (u8 - 128), zeros where
// no code lands; colsum[c] = Σ_k of column c's signed codes (c < panels * 16).
// AVX-512 VNNI CPUs only; the same bytes as the column-at-a-time loop.
void qgemm_pack_quads_rows_avx512(const uint8_t* src, int64_t ld, bool is_signed, int64_t k, int64_t n,
                                  int64_t panels, int64_t panel_len, int8_t* dst, int32_t* colsum);

}  // namespace qtk::rt::x86::detail
