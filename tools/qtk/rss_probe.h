// Resident-memory readings for qtk bench: the process's RSS and its peak.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

namespace qtk::cli {

// A "VmRSS:" / "VmHWM:" line of /proc/self/status in bytes; 0 when unavailable.
uint64_t proc_status_bytes(const char* key);

// Maps in every page of the process's file-backed mappings (the program's
// code and read-only data, the shared libraries), so that the code a session
// runs for the first time is resident before the "before" reading: the
// session's growth is then the memory it allocated, not kernel code that any
// process running these ops pays once (about 3 MB of qtk's code otherwise).
void prefault_file_mappings();

// Resets VmHWM to the current RSS (Linux >= 4.0), so that the next VmHWM
// reading is the peak of what follows. False when the kernel refuses.
bool reset_peak_rss();

// Reads the RSS every 50 us on a thread of its own while it lives. VmHWM
// alone misses peaks that are given back by madvise(MADV_DONTNEED) (how
// malloc_trim returns freed heap pages): the kernel does not raise the
// high-water mark for them. Start it before the "before" reading, so that
// its own stack is part of the baseline; stop it before timing anything.
class RssSampler {
 public:
  RssSampler();
  ~RssSampler() { stop(); }
  RssSampler(const RssSampler&) = delete;
  RssSampler& operator=(const RssSampler&) = delete;
  // Restarts the maximum from the RSS now (after the "before" reading: what
  // was resident before it, e.g. heap freed since, must not count).
  void rebase();
  // Ends sampling; the largest RSS seen in bytes (0 when unreadable).
  uint64_t stop();

 private:
  std::atomic<bool> running_{true};
  std::atomic<uint64_t> max_pages_{0};
  long page_bytes_ = 4096;
  int fd_ = -1;
  std::thread thread_;
};

}  // namespace qtk::cli
