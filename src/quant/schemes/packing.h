// Sub-byte packing of quantized codes. int4/uint4: two codes per byte, the
// first element in the low nibble (ONNX's INT4/UINT4 layout). int2: four codes
// per byte, first element in the lowest two bits. int3 is kept one code per
// byte (no standard packed layout exists).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace qtk::quant {

// codes hold values already in range ([-8,7] signed / [0,15] unsigned).
std::vector<uint8_t> pack_4bit(const int32_t* codes, int64_t n);
void unpack_4bit(const uint8_t* packed, int64_t n, bool is_signed, int32_t* codes);
std::vector<uint8_t> pack_2bit(const int32_t* codes, int64_t n);
void unpack_2bit(const uint8_t* packed, int64_t n, bool is_signed, int32_t* codes);

constexpr int64_t packed_bytes(int64_t n, int bits) { return (n * bits + 7) / 8; }
static_assert(packed_bytes(3, 4) == 2 && packed_bytes(5, 2) == 2);

}  // namespace qtk::quant
