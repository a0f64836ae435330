// Text formatting shared by the commands.
#include <algorithm>
#include <cstdio>

#include "cli.h"

namespace qtk::cli {

std::string format_shape(const Shape& shape) { return shape_to_string(shape); }

std::string format_values(const Tensor& t, int64_t count) {
  std::string s;
  const int64_t n = std::min(count, t.numel());
  for (int64_t i = 0; i < n; ++i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", t.get_as_double(i));
    s += (i ? ", " : "") + std::string(buf);
  }
  if (t.numel() > n) s += n ? ", ..." : "...";
  return s;
}

std::string format_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  else
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

std::string format_count(uint64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

Outcome print_out(const std::string& text) {
  if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() || std::fflush(stdout) != 0)
    return Outcome::failure("cannot write to standard output");
  return Outcome::ok();
}

void print_warning(const std::string& text) {
  std::string line = text;
  for (char& c : line)
    if (c == '\n' || c == '\r') c = ' ';
  std::fprintf(stderr, "qtk: warning: %s\n", line.c_str());
}

}  // namespace qtk::cli
