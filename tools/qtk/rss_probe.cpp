#include "rss_probe.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

namespace qtk::cli {

uint64_t proc_status_bytes(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return std::strtoull(line.c_str() + std::strlen(key), nullptr, 10) * 1024;
  return 0;
}

void prefault_file_mappings() {
#ifdef MADV_POPULATE_READ
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    unsigned long lo = 0, hi = 0;
    char perms[8] = {};
    int path_at = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx %7s %*s %*s %*s %n", &lo, &hi, perms, &path_at) < 3) continue;
    if (perms[0] != 'r' || path_at <= 0 || line.c_str()[path_at] != '/') continue;
    madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_POPULATE_READ);  // pages past a file's end: refused, fine
  }
#endif
}

bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

namespace {
// Resident pages from /proc/self/statm ("size resident ..."), with no heap
// allocation: the sampler must not change what it measures.
uint64_t resident_pages(int fd) {
  char buf[128];
  const ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return 0;
  buf[n] = '\0';
  const char* p = std::strchr(buf, ' ');
  return p ? std::strtoull(p + 1, nullptr, 10) : 0;
}
}  // namespace

RssSampler::RssSampler() {
  page_bytes_ = sysconf(_SC_PAGESIZE);
  fd_ = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    running_ = false;
    return;
  }
  max_pages_ = resident_pages(fd_);
  thread_ = std::thread([this] {
    while (running_.load(std::memory_order_relaxed)) {
      const uint64_t pages = resident_pages(fd_);
      if (pages > max_pages_.load(std::memory_order_relaxed)) max_pages_.store(pages, std::memory_order_relaxed);
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  });
}

void RssSampler::rebase() {
  if (fd_ >= 0) max_pages_.store(resident_pages(fd_), std::memory_order_relaxed);
}

uint64_t RssSampler::stop() {
  running_ = false;
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) {
    const uint64_t last = resident_pages(fd_);  // the state now, in case no sample came after the peak
    if (last > max_pages_) max_pages_ = last;
    close(fd_);
    fd_ = -1;
  }
  return max_pages_ * static_cast<uint64_t>(page_bytes_);
}

}  // namespace qtk::cli
