// The ONNX Runtime drivers run node through std::system: paths go into the
// command line single-quoted.
#pragma once

#include <string>

namespace qtk::ort_driver {

inline std::string quote(const std::string& s) {
  std::string r = "'";
  for (char c : s) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return r + "'";
}

}  // namespace qtk::ort_driver
