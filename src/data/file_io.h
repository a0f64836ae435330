// Whole-file reads and atomic writes shared by the data readers/writers, and
// zlib inflate with the limits hostile files need.
#pragma once

#include <cstddef>
#include <string>

#include "qtk/status.h"

namespace qtk::data {

// The whole file; kNotFound when it does not exist, kIo on other failures.
Expected<std::string> read_file_bytes(const std::string& path);

// Writes `bytes` to a temporary file next to `path`, then renames it over
// `path`, so a failed write never leaves a half-written file behind.
Status write_file_atomic(const std::string& path, const std::string& bytes);

enum class InflateFormat {
  kRawDeflate,  // zip members
  kGzip,        // .gz files (concatenated members are joined)
};

enum class OverLimit {
  kError,     // output beyond max_output is an error (the size was declared)
  kTruncate,  // stop at max_output and return what is there (reading a prefix)
};

// Inflates `size` bytes at `data`. Fails (kParse) on corrupt or truncated
// input, and (with OverLimit::kError) when the output would grow beyond
// `max_output` bytes, so a declared size bounds the memory a hostile file can
// take. `what` names the input in error messages.
Expected<std::string> inflate_bytes(const char* data, size_t size, InflateFormat format, size_t max_output,
                                    const std::string& what, OverLimit over = OverLimit::kError);

}  // namespace qtk::data
