// .npy reading and writing. Format reference: numpy/lib/format.py. The header
// is a Python dict literal; we parse exactly the subset numpy writes (string
// keys; string, bool and int-tuple values) and reject anything else.
#include "data/npy.h"

#include <cctype>
#include <cstring>
#include <limits>
#include <map>
#include <optional>

#include "data/file_io.h"

namespace qtk::data {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;

struct NpyDType {
  const char* descr;  // as numpy writes it
  DType dtype;
};

// One row per supported dtype; reading and writing both use this table.
constexpr NpyDType kNpyDTypes[] = {
    {"<f4", DType::kFloat32}, {"<f8", DType::kFloat64}, {"<f2", DType::kFloat16}, {"|i1", DType::kInt8},
    {"|u1", DType::kUInt8},   {"<i2", DType::kInt16},   {"<u2", DType::kUInt16},  {"<i4", DType::kInt32},
    {"<u4", DType::kUInt32},  {"<i8", DType::kInt64},   {"<u8", DType::kUInt64},  {"|b1", DType::kBool},
};

const char* npy_descr(DType t) {
  for (const auto& row : kNpyDTypes)
    if (row.dtype == t) return row.descr;
  return nullptr;
}

Expected<DType> dtype_from_descr(const std::string& descr, const std::string& what) {
  if (descr.size() < 3) return unsupported(what + ": unsupported dtype '" + descr + "'");
  const char order = descr[0];
  const std::string kind = descr.substr(1);
  for (const auto& row : kNpyDTypes) {
    if (kind != row.descr + 1) continue;
    if (dtype_size(row.dtype) == 1) {
      if (order == '|' || order == '<' || order == '>' || order == '=') return row.dtype;
    } else if (order == '<' || order == '=') {  // '=' is native: qtk runs on little-endian hosts
      return row.dtype;
    } else if (order == '>') {
      return unsupported(what + ": big-endian dtype '" + descr + "' is not supported (save it little-endian)");
    }
  }
  return unsupported(what + ": unsupported dtype '" + descr +
                     "' (supported: float32, float64, float16, int8, uint8, int16, uint16, int32, uint32, int64, "
                     "uint64, bool)");
}

// A tiny parser for the header's dict literal.
struct HeaderValue {
  enum Kind { kString, kBool, kTuple } kind = kString;
  std::string s;
  bool b = false;
  std::vector<int64_t> ints;
};

class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& what) : t_(text), what_(what) {}

  Expected<std::map<std::string, HeaderValue>> parse() {
    std::map<std::string, HeaderValue> out;
    skip_ws();
    if (!eat('{')) return fail("expected '{'");
    skip_ws();
    while (!peek('}')) {
      QTK_ASSIGN_OR_RETURN(std::string key, parse_string());
      skip_ws();
      if (!eat(':')) return fail("expected ':' after key '" + key + "'");
      skip_ws();
      QTK_ASSIGN_OR_RETURN(HeaderValue v, parse_value());
      if (out.count(key)) return fail("duplicate key '" + key + "'");
      out[key] = std::move(v);
      skip_ws();
      if (eat(',')) { skip_ws(); continue; }
      if (!peek('}')) return fail("expected ',' or '}'");
    }
    eat('}');
    skip_ws();
    if (pos_ != t_.size()) return fail("unexpected text after the header dict");
    return out;
  }

 private:
  Status fail(const std::string& m) const {
    return parse_error(what_ + ": bad .npy header (" + m + " at offset " + std::to_string(pos_) + ")");
  }
  void skip_ws() {
    while (pos_ < t_.size() && (t_[pos_] == ' ' || t_[pos_] == '\t' || t_[pos_] == '\n' || t_[pos_] == '\r')) ++pos_;
  }
  bool peek(char c) const { return pos_ < t_.size() && t_[pos_] == c; }
  bool eat(char c) {
    if (!peek(c)) return false;
    ++pos_;
    return true;
  }
  bool eat_word(const char* w) {
    size_t n = std::strlen(w);
    if (t_.compare(pos_, n, w) != 0) return false;
    pos_ += n;
    return true;
  }
  Expected<std::string> parse_string() {
    if (pos_ >= t_.size() || (t_[pos_] != '\'' && t_[pos_] != '"')) return fail("expected a quoted string");
    const char q = t_[pos_++];
    std::string s;
    while (pos_ < t_.size() && t_[pos_] != q) {
      if (t_[pos_] == '\\') return fail("escapes in strings are not supported");
      s += t_[pos_++];
    }
    if (!eat(q)) return fail("unterminated string");
    return s;
  }
  Expected<int64_t> parse_int() {
    size_t start = pos_;
    int64_t v = 0;
    while (pos_ < t_.size() && std::isdigit(static_cast<unsigned char>(t_[pos_]))) {
      int digit = t_[pos_] - '0';
      if (v > (std::numeric_limits<int64_t>::max() - digit) / 10) return fail("dimension too large");
      v = v * 10 + digit;
      ++pos_;
    }
    if (pos_ == start) return fail("expected a non-negative integer");
    eat('L');  // Python 2 longs, as old numpy wrote them
    return v;
  }
  Expected<HeaderValue> parse_value() {
    HeaderValue v;
    if (peek('\'') || peek('"')) {
      v.kind = HeaderValue::kString;
      QTK_ASSIGN_OR_RETURN(v.s, parse_string());
      return v;
    }
    if (eat_word("True")) { v.kind = HeaderValue::kBool; v.b = true; return v; }
    if (eat_word("False")) { v.kind = HeaderValue::kBool; v.b = false; return v; }
    if (eat('(')) {
      v.kind = HeaderValue::kTuple;
      skip_ws();
      while (!peek(')')) {
        QTK_ASSIGN_OR_RETURN(int64_t d, parse_int());
        v.ints.push_back(d);
        skip_ws();
        if (eat(',')) { skip_ws(); continue; }
        if (!peek(')')) return fail("expected ',' or ')' in shape");
      }
      eat(')');
      return v;
    }
    if (peek('[')) return fail("structured dtypes are not supported");
    return fail("unexpected value");
  }

  const std::string& t_;
  const std::string& what_;
  size_t pos_ = 0;
};

uint32_t read_le(const std::string& b, size_t off, int nbytes) {
  uint32_t v = 0;
  for (int i = nbytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[off + i]);
  return v;
}

}  // namespace

bool npy_supports(DType t) { return npy_descr(t) != nullptr || t == DType::kBFloat16; }

Expected<Tensor> parse_npy(const std::string& bytes, const std::string& what) {
  if (bytes.size() < kMagicLen + 2 || bytes.compare(0, kMagicLen, kMagic) != 0)
    return parse_error(what + ": not an .npy file (bad magic)");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    if (bytes.size() < 10) return parse_error(what + ": truncated .npy header");
    header_len = read_le(bytes, 8, 2);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return parse_error(what + ": truncated .npy header");
    header_len = read_le(bytes, 8, 4);
    header_start = 12;
  } else {
    return unsupported(what + ": .npy format version " + std::to_string(major) + " is not supported (1, 2, 3 are)");
  }
  if (header_len > bytes.size() - header_start) return parse_error(what + ": truncated .npy header");
  const std::string header = bytes.substr(header_start, header_len);
  QTK_ASSIGN_OR_RETURN(auto dict, HeaderParser(header, what).parse());

  auto descr = dict.find("descr");
  auto fortran = dict.find("fortran_order");
  auto shape_it = dict.find("shape");
  if (descr == dict.end() || fortran == dict.end() || shape_it == dict.end())
    return parse_error(what + ": .npy header lacks one of 'descr', 'fortran_order', 'shape'");
  if (descr->second.kind != HeaderValue::kString) return parse_error(what + ": .npy 'descr' must be a string");
  if (fortran->second.kind != HeaderValue::kBool) return parse_error(what + ": .npy 'fortran_order' must be a bool");
  if (shape_it->second.kind != HeaderValue::kTuple) return parse_error(what + ": .npy 'shape' must be a tuple");
  if (dict.size() != 3) return parse_error(what + ": unexpected keys in the .npy header");

  QTK_ASSIGN_OR_RETURN(DType dtype, dtype_from_descr(descr->second.s, what));
  const Shape shape = shape_it->second.ints;
  if (fortran->second.b) {
    // A Fortran-ordered array with at most one dimension above 1 has the same bytes as C order.
    int big = 0;
    for (int64_t d : shape) big += d > 1;
    if (big > 1)
      return unsupported(what + ": Fortran-ordered arrays are not supported (save with np.ascontiguousarray)");
  }

  const size_t item = dtype_size(dtype);
  const size_t available = bytes.size() - header_start - header_len;
  uint64_t numel = 1;
  for (int64_t d : shape) {
    if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / 8 / static_cast<uint64_t>(d))
      return parse_error(what + ": shape " + shape_to_string(shape) + " is too large");
    numel *= static_cast<uint64_t>(d);
  }
  const uint64_t need = numel * item;
  if (need > available)
    return parse_error(what + ": truncated .npy data (shape " + shape_to_string(shape) + " needs " +
                       std::to_string(need) + " bytes, file has " + std::to_string(available) + ")");
  if (need < available)
    return parse_error(what + ": " + std::to_string(available - need) + " unexpected bytes after the .npy data");

  Tensor t(dtype, shape);
  if (need) std::memcpy(t.raw(), bytes.data() + header_start + header_len, need);
  if (dtype == DType::kBool) {
    auto* p = t.data<uint8_t>();
    for (uint64_t i = 0; i < numel; ++i)
      if (p[i] > 1) return parse_error(what + ": bool array holds a byte that is neither 0 nor 1");
  }
  return t;
}

Expected<Tensor> read_npy(const std::string& path) {
  QTK_ASSIGN_OR_RETURN(std::string bytes, read_file_bytes(path));
  return parse_npy(bytes, path);
}

std::string serialize_npy(const Tensor& t) {
  // bfloat16 has no numpy dtype; widening to float32 is exact.
  if (t.dtype() == DType::kBFloat16) {
    Tensor f(DType::kFloat32, t.shape());
    for (int64_t i = 0; i < t.numel(); ++i) f.data<float>()[i] = bfloat16_to_float(t.data<uint16_t>()[i]);
    return serialize_npy(f);
  }
  const char* descr = npy_descr(t.dtype());
  if (!descr) return {};
  // Python tuple syntax: "()", "(3,)", "(3, 4)".
  std::string shape = "(";
  for (size_t i = 0; i < t.shape().size(); ++i) shape += (i ? ", " : "") + std::to_string(t.shape()[i]);
  if (t.shape().size() == 1) shape += ",";
  shape += ")";
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Version 1.0 holds headers up to 65535 bytes; the total header is padded to 64 bytes.
  size_t prefix = 10;
  size_t total = prefix + dict.size() + 1;
  size_t padded = (total + 63) / 64 * 64;
  int major = 1;
  if (padded - prefix > 65535) {
    major = 2;
    prefix = 12;
    total = prefix + dict.size() + 1;
    padded = (total + 63) / 64 * 64;
  }
  const size_t header_len = padded - prefix;
  std::string out(kMagic, kMagicLen);
  out += static_cast<char>(major);
  out += '\0';
  for (int i = 0; i < (major == 1 ? 2 : 4); ++i) out += static_cast<char>((header_len >> (8 * i)) & 0xff);
  out += dict;
  out.append(padded - total, ' ');
  out += '\n';
  out.append(static_cast<const char*>(t.raw()), t.nbytes());
  return out;
}

Status write_npy(const Tensor& t, const std::string& path) {
  if (!t.defined()) return invalid_argument("cannot write an undefined tensor to " + path);
  if (!npy_supports(t.dtype()))
    return unsupported(std::string("cannot write ") + dtype_name(t.dtype()) + " tensors to .npy (" + path + ")");
  return write_file_atomic(path, serialize_npy(t));
}

}  // namespace qtk::data
