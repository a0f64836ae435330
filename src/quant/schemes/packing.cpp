#include "quant/schemes/packing.h"

namespace qtk::quant {

namespace {
template <int kBits>
std::vector<uint8_t> pack(const int32_t* codes, int64_t n) {
  constexpr int kPerByte = 8 / kBits;
  constexpr uint32_t kMask = (1u << kBits) - 1;
  std::vector<uint8_t> out(static_cast<size_t>(packed_bytes(n, kBits)), 0);
  for (int64_t i = 0; i < n; ++i)
    out[i / kPerByte] |= static_cast<uint8_t>((static_cast<uint32_t>(codes[i]) & kMask) << (kBits * (i % kPerByte)));
  return out;
}

template <int kBits>
void unpack(const uint8_t* packed, int64_t n, bool is_signed, int32_t* codes) {
  constexpr int kPerByte = 8 / kBits;
  constexpr int32_t kMask = (1 << kBits) - 1;
  for (int64_t i = 0; i < n; ++i) {
    int32_t v = (packed[i / kPerByte] >> (kBits * (i % kPerByte))) & kMask;
    if (is_signed && v >= (1 << (kBits - 1))) v -= (1 << kBits);  // sign-extend
    codes[i] = v;
  }
}
}  // namespace

std::vector<uint8_t> pack_4bit(const int32_t* codes, int64_t n) { return pack<4>(codes, n); }
void unpack_4bit(const uint8_t* packed, int64_t n, bool is_signed, int32_t* codes) {
  unpack<4>(packed, n, is_signed, codes);
}
std::vector<uint8_t> pack_2bit(const int32_t* codes, int64_t n) { return pack<2>(codes, n); }
void unpack_2bit(const uint8_t* packed, int64_t n, bool is_signed, int32_t* codes) {
  unpack<2>(packed, n, is_signed, codes);
}

}  // namespace qtk::quant
