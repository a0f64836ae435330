// .npz = a zip archive of .npy members. Reading trusts nothing in the file:
// every offset and size is checked against the archive's size before use, and
// member contents are checked against their CRC. Writing uses stored (not
// compressed) members with a fixed timestamp, so the output is reproducible.
#include <zlib.h>

#include <cstring>
#include <set>

#include "data/file_io.h"
#include "data/npy.h"

namespace qtk::data {
namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50, kZip64EndSig = 0x06064b50;
constexpr size_t kLocalSize = 30, kCentralSize = 46, kEndSize = 22, kZip64LocatorSize = 20, kZip64EndSize = 56;
constexpr uint32_t k32Max = 0xffffffffu;
constexpr uint16_t kMethodStored = 0, kMethodDeflate = 8;

// Bounds-checked little-endian reads; callers check the range first, these
// only read inside `bytes`.
uint64_t le(const std::string& b, uint64_t off, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[off + i]);
  return v;
}
bool fits(uint64_t off, uint64_t len, uint64_t size) { return off <= size && len <= size - off; }

struct CentralEntry {
  std::string name;
  uint16_t flags = 0, method = 0;
  uint32_t crc = 0;
  uint64_t csize = 0, usize = 0, local_offset = 0;
};

struct EndRecord {
  uint64_t entries = 0, cd_size = 0, cd_offset = 0;
};

Expected<EndRecord> find_end_record(const std::string& b, const std::string& what) {
  const uint64_t size = b.size();
  if (size < kEndSize) return parse_error(what + ": not a zip/.npz file (too small)");
  // The end record sits at the very end, followed only by a comment of up to 64 KiB.
  const uint64_t lowest = size - kEndSize > 0xffff ? size - kEndSize - 0xffff : 0;
  for (uint64_t pos = size - kEndSize + 1; pos-- > lowest;) {
    if (le(b, pos, 4) != kEndSig) continue;
    const uint64_t comment = le(b, pos + 20, 2);
    if (pos + kEndSize + comment > size) continue;
    EndRecord e;
    const uint64_t disk = le(b, pos + 4, 2), cd_disk = le(b, pos + 6, 2);
    e.entries = le(b, pos + 10, 2);
    e.cd_size = le(b, pos + 12, 4);
    e.cd_offset = le(b, pos + 16, 4);
    const bool zip64 = e.entries == 0xffff || e.cd_size == k32Max || e.cd_offset == k32Max;
    if (zip64 && pos >= kZip64LocatorSize && le(b, pos - kZip64LocatorSize, 4) == kZip64LocatorSig) {
      const uint64_t z_end = le(b, pos - kZip64LocatorSize + 8, 8);
      if (!fits(z_end, kZip64EndSize, size) || le(b, z_end, 4) != kZip64EndSig)
        return parse_error(what + ": corrupt zip64 end record");
      e.entries = le(b, z_end + 32, 8);
      e.cd_size = le(b, z_end + 40, 8);
      e.cd_offset = le(b, z_end + 48, 8);
    } else if (disk != 0 || cd_disk != 0) {
      return unsupported(what + ": multi-volume zip archives are not supported");
    }
    if (!fits(e.cd_offset, e.cd_size, size))
      return parse_error(what + ": corrupt zip (central directory lies outside the file)");
    return e;
  }
  return parse_error(what + ": not a zip/.npz file (no end-of-central-directory record)");
}

// Sizes or offsets set to 0xffffffff in a central entry live in its zip64 extra field.
Status apply_zip64_extra(const std::string& b, uint64_t extra, uint64_t extra_len, CentralEntry& e,
                         const std::string& what) {
  const bool need_u = e.usize == k32Max, need_c = e.csize == k32Max, need_o = e.local_offset == k32Max;
  if (!need_u && !need_c && !need_o) return Status::Ok();
  uint64_t p = extra;
  const uint64_t end = extra + extra_len;
  while (p + 4 <= end) {
    const uint64_t id = le(b, p, 2), len = le(b, p + 2, 2);
    if (p + 4 + len > end) break;
    if (id == 0x0001) {
      uint64_t q = p + 4;
      const uint64_t q_end = q + len;
      for (auto [need, field] : {std::pair{need_u, &e.usize}, {need_c, &e.csize}, {need_o, &e.local_offset}}) {
        if (!need) continue;
        if (q + 8 > q_end) return parse_error(what + ": corrupt zip64 extra field for '" + e.name + "'");
        *field = le(b, q, 8);
        q += 8;
      }
      return Status::Ok();
    }
    p += 4 + len;
  }
  return parse_error(what + ": member '" + e.name + "' needs a zip64 extra field that is missing");
}

Expected<std::vector<CentralEntry>> read_central_directory(const std::string& b, const EndRecord& end,
                                                           const std::string& what) {
  std::vector<CentralEntry> entries;
  uint64_t p = end.cd_offset;
  const uint64_t cd_end = end.cd_offset + end.cd_size;
  for (uint64_t i = 0; i < end.entries; ++i) {
    if (!fits(p, kCentralSize, cd_end) || le(b, p, 4) != kCentralSig)
      return parse_error(what + ": corrupt zip central directory (entry " + std::to_string(i) + ")");
    CentralEntry e;
    e.flags = static_cast<uint16_t>(le(b, p + 8, 2));
    e.method = static_cast<uint16_t>(le(b, p + 10, 2));
    e.crc = static_cast<uint32_t>(le(b, p + 16, 4));
    e.csize = le(b, p + 20, 4);
    e.usize = le(b, p + 24, 4);
    const uint64_t name_len = le(b, p + 28, 2), extra_len = le(b, p + 30, 2), comment_len = le(b, p + 32, 2);
    e.local_offset = le(b, p + 42, 4);
    const uint64_t total = kCentralSize + name_len + extra_len + comment_len;
    if (!fits(p, total, cd_end))
      return parse_error(what + ": corrupt zip central directory (entry " + std::to_string(i) + ")");
    e.name = b.substr(p + kCentralSize, name_len);
    QTK_RETURN_IF_ERROR(apply_zip64_extra(b, p + kCentralSize + name_len, extra_len, e, what));
    entries.push_back(std::move(e));
    p += total;
  }
  return entries;
}

Expected<std::string> member_bytes(const std::string& b, const CentralEntry& e, const std::string& what) {
  const std::string where = what + ": member '" + e.name + "'";
  if (e.flags & 0x1) return unsupported(where + " is encrypted");
  const uint64_t size = b.size();
  if (!fits(e.local_offset, kLocalSize, size) || le(b, e.local_offset, 4) != kLocalSig)
    return parse_error(where + ": bad local header offset");
  // The local header's sizes may be placeholders (data descriptors, zip64):
  // only its name and extra lengths are used, the central directory is authoritative.
  const uint64_t data = e.local_offset + kLocalSize + le(b, e.local_offset + 26, 2) + le(b, e.local_offset + 28, 2);
  if (!fits(data, e.csize, size)) return parse_error(where + " extends past the end of the file");
  std::string out;
  if (e.method == kMethodStored) {
    if (e.csize != e.usize) return parse_error(where + ": stored member with differing sizes");
    out = b.substr(data, e.csize);
  } else if (e.method == kMethodDeflate) {
    QTK_ASSIGN_OR_RETURN(out, inflate_bytes(b.data() + data, e.csize, InflateFormat::kRawDeflate, e.usize, where));
    if (out.size() != e.usize)
      return parse_error(where + ": inflated to " + std::to_string(out.size()) + " bytes, expected " +
                         std::to_string(e.usize));
  } else {
    return unsupported(where + " uses zip compression method " + std::to_string(e.method) +
                       " (only stored and deflate are supported)");
  }
  const uLong crc = crc32_z(0L, reinterpret_cast<const Bytef*>(out.data()), out.size());
  if (static_cast<uint32_t>(crc) != e.crc) return parse_error(where + ": CRC mismatch (corrupt data)");
  return out;
}

void put_le(std::string& out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

}  // namespace

Expected<NamedTensors> read_npz(const std::string& path) {
  QTK_ASSIGN_OR_RETURN(std::string b, read_file_bytes(path));
  return parse_npz(b, path);
}

Expected<NamedTensors> parse_npz(const std::string& b, const std::string& path) {
  QTK_ASSIGN_OR_RETURN(EndRecord end, find_end_record(b, path));
  QTK_ASSIGN_OR_RETURN(auto entries, read_central_directory(b, end, path));
  NamedTensors out;
  std::set<std::string> seen;
  for (const auto& e : entries) {
    if (!e.name.empty() && e.name.back() == '/') continue;  // a directory entry
    QTK_ASSIGN_OR_RETURN(std::string bytes, member_bytes(b, e, path));
    std::string name = e.name;
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".npy") == 0) name.resize(name.size() - 4);
    if (!seen.insert(name).second) return parse_error(path + ": duplicate member '" + e.name + "'");
    QTK_ASSIGN_OR_RETURN(Tensor t, parse_npy(bytes, path + ":" + e.name));
    out.emplace_back(std::move(name), std::move(t));
  }
  return out;
}

Status write_npz(const NamedTensors& arrays, const std::string& path) {
  // DOS date 1980-01-01 00:00: a fixed stamp keeps the output byte-identical.
  constexpr uint16_t kDosTime = 0, kDosDate = (0 << 9) | (1 << 5) | 1;
  std::string out, central;
  std::set<std::string> seen;
  for (const auto& [name, t] : arrays) {
    if (name.empty()) return invalid_argument("cannot write an unnamed array to " + path);
    if (!seen.insert(name).second) return invalid_argument("array name '" + name + "' appears twice in " + path);
    if (!t.defined() || !npy_supports(t.dtype()))
      return unsupported("array '" + name + "': cannot write " + dtype_name(t.dtype()) + " tensors to .npz");
    const std::string member = name + ".npy";
    if (member.size() > 0xffff) return invalid_argument("array name too long for a zip member: " + name);
    const std::string data = serialize_npy(t);
    const uint64_t offset = out.size();
    if (data.size() >= k32Max || offset >= k32Max || offset + data.size() >= k32Max)
      return unsupported(path + ": .npz files over 4 GiB are not supported");
    const uint32_t crc = static_cast<uint32_t>(crc32_z(0L, reinterpret_cast<const Bytef*>(data.data()), data.size()));
    auto common = [&](std::string& h) {
      put_le(h, 20, 2);  // version needed: 2.0
      put_le(h, 0, 2);   // flags
      put_le(h, kMethodStored, 2);
      put_le(h, kDosTime, 2);
      put_le(h, kDosDate, 2);
      put_le(h, crc, 4);
      put_le(h, data.size(), 4);
      put_le(h, data.size(), 4);
      put_le(h, member.size(), 2);
      put_le(h, 0, 2);  // extra length
    };
    put_le(out, kLocalSig, 4);
    common(out);
    out += member;
    out += data;
    put_le(central, kCentralSig, 4);
    put_le(central, (3 << 8) | 20, 2);  // made by: Unix, zip 2.0
    common(central);
    put_le(central, 0, 2);                     // comment length
    put_le(central, 0, 2);                     // disk number
    put_le(central, 0, 2);                     // internal attributes
    put_le(central, uint64_t{0100644} << 16, 4);  // external attributes: a regular file, rw-r--r--
    put_le(central, offset, 4);
    central += member;
  }
  if (arrays.size() > 0xfffe) return unsupported(path + ": too many arrays for a zip without zip64");
  const uint64_t cd_offset = out.size();
  if (cd_offset + central.size() >= k32Max) return unsupported(path + ": .npz files over 4 GiB are not supported");
  out += central;
  put_le(out, kEndSig, 4);
  put_le(out, 0, 2);
  put_le(out, 0, 2);
  put_le(out, arrays.size(), 2);
  put_le(out, arrays.size(), 2);
  put_le(out, central.size(), 4);
  put_le(out, cd_offset, 4);
  put_le(out, 0, 2);
  return write_file_atomic(path, out);
}

}  // namespace qtk::data
