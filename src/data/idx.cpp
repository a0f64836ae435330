// idx files (http://yann.lecun.com/exdb/mnist/): magic 0x00 0x00 <type> <ndims>,
// ndims big-endian uint32 dims, then the data in big-endian C order.
#include <algorithm>
#include <cstring>

#include "data/dataset.h"
#include "data/file_io.h"

namespace qtk::data {
namespace {

// Real idx files are tens of MB; anything claiming more is refused before
// memory is spent on it.
constexpr uint64_t kMaxIdxBytes = uint64_t{1} << 33;

Expected<DType> idx_dtype(unsigned char code, const std::string& path) {
  switch (code) {
    case 0x08: return DType::kUInt8;
    case 0x09: return DType::kInt8;
    case 0x0B: return DType::kInt16;
    case 0x0C: return DType::kInt32;
    case 0x0D: return DType::kFloat32;
    case 0x0E: return DType::kFloat64;
    default: return parse_error(path + ": not an idx file (unknown type code " + std::to_string(code) + ")");
  }
}

// Reads the first `want` bytes of the (maybe gzip-compressed) file contents.
// `exact` also requires that nothing follows them.
Expected<std::string> content_prefix(const std::string& file, bool gz, uint64_t want, bool exact,
                                     const std::string& path) {
  std::string out;
  if (gz) {
    QTK_ASSIGN_OR_RETURN(out, inflate_bytes(file.data(), file.size(), InflateFormat::kGzip, want, path,
                                            exact ? OverLimit::kError : OverLimit::kTruncate));
  } else {
    if (exact && file.size() > want)
      return parse_error(path + ": " + std::to_string(file.size() - want) + " unexpected bytes after the idx data");
    out = file.substr(0, std::min<uint64_t>(want, file.size()));
  }
  if (out.size() < want)
    return parse_error(path + ": truncated idx file (" + std::to_string(out.size()) + " of " + std::to_string(want) +
                       " bytes)");
  return out;
}

}  // namespace

Expected<Tensor> read_idx(const std::string& path, int64_t max_items) {
  QTK_ASSIGN_OR_RETURN(std::string file, read_file_bytes(path));
  const bool gz = file.size() >= 2 && static_cast<unsigned char>(file[0]) == 0x1f &&
                  static_cast<unsigned char>(file[1]) == 0x8b;
  QTK_ASSIGN_OR_RETURN(std::string magic, content_prefix(file, gz, 4, false, path));
  if (magic[0] != 0 || magic[1] != 0) return parse_error(path + ": not an idx file (bad magic)");
  QTK_ASSIGN_OR_RETURN(DType dtype, idx_dtype(static_cast<unsigned char>(magic[2]), path));
  const int ndims = static_cast<unsigned char>(magic[3]);
  if (ndims == 0) return parse_error(path + ": idx file with no dimensions");
  const uint64_t header_size = 4 + 4 * static_cast<uint64_t>(ndims);
  QTK_ASSIGN_OR_RETURN(std::string header, content_prefix(file, gz, header_size, false, path));

  Shape shape;
  uint64_t numel = 1;
  const uint64_t item = dtype_size(dtype);
  for (int i = 0; i < ndims; ++i) {
    uint64_t d = 0;
    for (int k = 0; k < 4; ++k) d = (d << 8) | static_cast<unsigned char>(header[4 + 4 * i + k]);
    shape.push_back(static_cast<int64_t>(d));
    if (d != 0 && numel > kMaxIdxBytes / d) return parse_error(path + ": idx dims " + shape_to_string(shape) + "... are too large");
    numel *= d;
  }
  if (numel * item > kMaxIdxBytes) return parse_error(path + ": idx dims " + shape_to_string(shape) + " are too large");
  const uint64_t row = shape[0] > 0 ? numel / static_cast<uint64_t>(shape[0]) : 0;
  const bool all = max_items <= 0 || max_items >= shape[0];
  if (!all) shape[0] = max_items;
  const uint64_t keep = static_cast<uint64_t>(shape[0]) * row;
  QTK_ASSIGN_OR_RETURN(std::string content, content_prefix(file, gz, header_size + keep * item, all, path));

  Tensor t(dtype, shape);
  auto* dst = static_cast<unsigned char*>(t.raw());
  const char* src = content.data() + header_size;
  if (item == 1) {
    std::memcpy(dst, src, keep);
  } else {
    for (uint64_t i = 0; i < keep; ++i)
      for (uint64_t k = 0; k < item; ++k) dst[i * item + k] = static_cast<unsigned char>(src[i * item + item - 1 - k]);
  }
  return t;
}

}  // namespace qtk::data
