#include "train_progress.h"

#include <unistd.h>

#include <cstdio>

namespace qtk::cli {

std::string format_seconds(double s) {
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.1f s", s);
  else std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  return buf;
}

TrainProgress::TrainProgress(std::string label, int64_t epochs, bool live)
    : label_(std::move(label)),
      epochs_(epochs),
      tty_(live && ::isatty(STDERR_FILENO) == 1),
      t0_(std::chrono::steady_clock::now()),
      last_draw_(t0_) {}

void TrainProgress::step(int64_t epoch, int64_t done, int64_t total, double loss, double acc,
                         const std::string& extra) {
  if (!tty_ || total <= 0) return;
  const auto now = std::chrono::steady_clock::now();
  if (done < total && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - t0_).count();
  const double frac = (static_cast<double>(epoch - 1) + static_cast<double>(done) / total) / epochs_;
  std::string bar(static_cast<size_t>(30.0 * done / total), '#');
  bar.resize(30, ' ');
  std::fprintf(stderr, "\r\033[K%s %lld/%lld [%s] loss %.4f acc %.4f%s ETA %s", label_.c_str(),
               static_cast<long long>(epoch), static_cast<long long>(epochs_), bar.c_str(), loss, acc, extra.c_str(),
               format_seconds(frac > 0 ? elapsed / frac - elapsed : 0).c_str());
  std::fflush(stderr);
}

void TrainProgress::epoch(const train::EpochStats& e) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  const double eta = elapsed / static_cast<double>(e.epoch) * static_cast<double>(epochs_ - e.epoch);
  char val[64] = "";
  if (e.val_accuracy >= 0) std::snprintf(val, sizeof val, "  %s %.4f", val_label_.c_str(), e.val_accuracy);
  std::fprintf(stderr, "%s%s %lld/%lld  loss %.4f  acc %.4f%s  %s  ETA %s\n", tty_ ? "\r\033[K" : "", label_.c_str(),
               static_cast<long long>(e.epoch), static_cast<long long>(epochs_), e.loss, e.accuracy, val,
               format_seconds(e.seconds).c_str(), format_seconds(eta).c_str());
}

}  // namespace qtk::cli
