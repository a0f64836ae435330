#include "data/file_io.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <climits>
#include <filesystem>
#include <fstream>

namespace qtk::data {

Expected<std::string> read_file_bytes(const std::string& path) {
  std::error_code ec;
  auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st)) return not_found(path + " not found");
  if (std::filesystem::is_directory(st)) return io_error(path + " is a directory, not a file");
  std::ifstream f(path, std::ios::binary);
  if (!f) return io_error("cannot open " + path);
  f.seekg(0, std::ios::end);
  std::streamoff size = f.tellg();
  if (size < 0) return io_error("cannot determine the size of " + path);
  f.seekg(0, std::ios::beg);
  std::string bytes(static_cast<size_t>(size), '\0');
  if (size > 0 && !f.read(bytes.data(), size)) return io_error("read failed: " + path);
  return bytes;
}

Status write_file_atomic(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return io_error("cannot write " + path + " (cannot create " + tmp + ")");
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    f.flush();
    if (!f) {
      f.close();
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      return io_error("write failed: " + path);
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ec2;
    std::filesystem::remove(tmp, ec2);
    return io_error("cannot write " + path + ": " + ec.message());
  }
  return Status::Ok();
}

Expected<std::string> inflate_bytes(const char* data, size_t size, InflateFormat format, size_t max_output,
                                    const std::string& what, OverLimit over) {
  z_stream zs{};
  const int window_bits = format == InflateFormat::kGzip ? 16 + MAX_WBITS : -MAX_WBITS;
  if (inflateInit2(&zs, window_bits) != Z_OK) return internal_error("zlib inflateInit2 failed");
  std::string out;
  const auto* next = reinterpret_cast<const Bytef*>(data);
  size_t left = size;
  Status error;
  bool done = false;
  while (!done) {
    // zlib counts in uInt; feed large inputs in pieces.
    if (zs.avail_in == 0 && left > 0) {
      zs.next_in = const_cast<Bytef*>(next);
      zs.avail_in = static_cast<uInt>(std::min<size_t>(left, UINT_MAX / 2));
      next += zs.avail_in;
      left -= zs.avail_in;
    }
    if (out.size() >= max_output && over == OverLimit::kTruncate) { done = true; break; }
    if (out.size() >= max_output) {
      // Any further output would pass the cap: probe with one byte.
      char probe;
      zs.next_out = reinterpret_cast<Bytef*>(&probe);
      zs.avail_out = 1;
      int rc = inflate(&zs, Z_NO_FLUSH);
      if (zs.avail_out == 0) {
        error = parse_error(what + ": decompressed data is larger than expected (" + std::to_string(max_output) +
                            " bytes)");
        break;
      }
      if (rc == Z_STREAM_END) { done = true; break; }
      if (rc != Z_OK && rc != Z_BUF_ERROR) { error = parse_error(what + ": corrupt compressed data"); break; }
      if (zs.avail_in == 0 && left == 0) { error = parse_error(what + ": compressed data is truncated"); break; }
      continue;
    }
    const size_t old = out.size();
    const size_t chunk = std::min<size_t>({max_output - old, size_t{1} << 20, UINT_MAX / 2});
    out.resize(old + chunk);
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + old);
    zs.avail_out = static_cast<uInt>(chunk);
    int rc = inflate(&zs, Z_NO_FLUSH);
    out.resize(old + chunk - zs.avail_out);
    if (rc == Z_STREAM_END) {
      // A gzip file may hold several members back to back; skip trailing padding zeros.
      if (format == InflateFormat::kGzip && (zs.avail_in > 0 || left > 0)) {
        while (zs.avail_in > 0 && *zs.next_in == 0) { ++zs.next_in; --zs.avail_in; }
        if (zs.avail_in > 0 || left > 0) {
          if (inflateReset(&zs) != Z_OK) { error = internal_error("zlib inflateReset failed"); break; }
          continue;
        }
      }
      done = true;
    } else if (rc == Z_BUF_ERROR) {
      if (zs.avail_in == 0 && left == 0) { error = parse_error(what + ": compressed data is truncated"); break; }
    } else if (rc != Z_OK) {
      error = parse_error(what + ": corrupt compressed data" + (zs.msg ? std::string(" (") + zs.msg + ")" : ""));
      break;
    } else if (zs.avail_in == 0 && left == 0 && zs.avail_out > 0) {
      error = parse_error(what + ": compressed data is truncated");
      break;
    }
  }
  inflateEnd(&zs);
  if (!error.ok()) return error;
  return out;
}

}  // namespace qtk::data
