// Progress bars on stderr for long commands, only when a person is watching.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "cli.h"

namespace qtk::cli {

std::function<void(int64_t, int64_t)> terminal_progress(std::string label, std::string unit) {
  if (::isatty(STDERR_FILENO) != 1) return nullptr;
  struct State {
    std::chrono::steady_clock::time_point last{};
    bool drawn = false;
  };
  auto state = std::make_shared<State>();
  return [state, label = std::move(label), unit = std::move(unit)](int64_t done, int64_t total) {
    if (done >= total) {
      if (state->drawn) std::fprintf(stderr, "\r\033[K");
      std::fflush(stderr);
      state->drawn = false;
      return;
    }
    const auto now = std::chrono::steady_clock::now();
    if (state->drawn && now - state->last < std::chrono::milliseconds(100)) return;
    state->last = now;
    state->drawn = true;
    constexpr int kWidth = 30;
    const int filled = total > 0 ? static_cast<int>(kWidth * done / total) : 0;
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, ' ');
    std::fprintf(stderr, "\r\033[K%s [%s] %lld/%lld %s", label.c_str(), bar.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total), unit.c_str());
    std::fflush(stderr);
  };
}

}  // namespace qtk::cli
