// The table of integer formats qtk quantizes to. Library code and tests
// iterate kQFormats, so adding a format is one row here.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

#include "qtk/tensor.h"

namespace qtk::quant {

enum class QFormat : uint8_t { kInt8, kUInt8, kInt16, kUInt16, kInt4, kUInt4, kInt3, kInt2, kInt7 };

struct QFormatTraits {
  QFormat format;
  const char* name;
  int bits;
  bool is_signed;
  int32_t qmin;
  int32_t qmax;
  DType container;  // dtype holding one unpacked value in memory / in QDQ graphs
  DType onnx_type;  // narrowest ONNX type for the codes (4-bit types need opset 21)
};

inline constexpr std::array<QFormatTraits, 9> kQFormats = {{
    {QFormat::kInt8, "int8", 8, true, -128, 127, DType::kInt8, DType::kInt8},
    {QFormat::kUInt8, "uint8", 8, false, 0, 255, DType::kUInt8, DType::kUInt8},
    {QFormat::kInt16, "int16", 16, true, -32768, 32767, DType::kInt16, DType::kInt16},
    {QFormat::kUInt16, "uint16", 16, false, 0, 65535, DType::kUInt16, DType::kUInt16},
    {QFormat::kInt4, "int4", 4, true, -8, 7, DType::kInt8, DType::kInt4},
    {QFormat::kUInt4, "uint4", 4, false, 0, 15, DType::kUInt8, DType::kUInt4},
    {QFormat::kInt3, "int3", 3, true, -4, 3, DType::kInt8, DType::kInt8},
    {QFormat::kInt2, "int2", 2, true, -2, 1, DType::kInt8, DType::kInt8},
    // 7-bit weights: any two of them sum below 129 in magnitude, so AVX2's
    // vpmaddubsw (u8 x s8 pairs into a saturating int16) multiplies them
    // exactly (255 * 128 < 32768); ONNX Runtime calls this reduce_range.
    {QFormat::kInt7, "int7", 7, true, -64, 63, DType::kInt8, DType::kInt8},
}};

constexpr const QFormatTraits& traits(QFormat f) { return kQFormats[static_cast<size_t>(f)]; }
// Formats only for weights: int7 exists for what AVX2 multiplies exactly
// (a weight's range); activations keep 8 bits or the narrower ONNX types.
constexpr bool weight_only_format(QFormat f) { return f == QFormat::kInt7; }
static_assert(kQFormats[static_cast<size_t>(QFormat::kInt2)].format == QFormat::kInt2, "table order = enum order");
static_assert(kQFormats[static_cast<size_t>(QFormat::kUInt4)].qmax == 15);

std::optional<QFormat> qformat_from_name(std::string_view name);

}  // namespace qtk::quant
