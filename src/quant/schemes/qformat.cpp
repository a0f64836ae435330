#include "quant/schemes/qformat.h"

namespace qtk::quant {

std::optional<QFormat> qformat_from_name(std::string_view name) {
  for (const auto& t : kQFormats)
    if (name == t.name) return t.format;
  return std::nullopt;
}

}  // namespace qtk::quant
