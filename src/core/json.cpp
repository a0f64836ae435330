#include "core/json.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <set>

namespace qtk {
namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is not one
// (stray continuation bytes, overlong forms, surrogates, > U+10FFFF, truncation).
size_t utf8_sequence_length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) { n = 2; cp = c & 0x1f; }
  else if (c >= 0xe0 && c <= 0xef) { n = 3; cp = c & 0x0f; }
  else if (c >= 0xf0 && c <= 0xf4) { n = 4; cp = c & 0x07; }
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3f);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

}  // namespace

std::string json_quote(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': out += "\\\""; ++i; continue;
      case '\\': out += "\\\\"; ++i; continue;
      case '\n': out += "\\n"; ++i; continue;
      case '\r': out += "\\r"; ++i; continue;
      case '\t': out += "\\t"; ++i; continue;
      case '\b': out += "\\b"; ++i; continue;
      case '\f': out += "\\f"; ++i; continue;
      default: break;
    }
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
      ++i;
      continue;
    }
    const size_t n = utf8_sequence_length(s, i);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out + "\"";
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  if (ec != std::errc()) return "null";
  return std::string(buf, end);
}

std::string json_number(float v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  if (ec != std::errc()) return "null";
  return std::string(buf, end);
}

void JsonWriter::newline_indent(size_t depth) {
  out_ += '\n';
  out_.append(2 * depth, ' ');
}

void JsonWriter::before_value() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (scopes_.empty()) return;
  Scope& s = scopes_.back();
  if (s.count++ > 0) out_ += s.one_line && pretty_ ? ", " : ",";
  if (pretty_ && !s.one_line) newline_indent(scopes_.size());
}

JsonWriter& JsonWriter::key(std::string_view k) {
  before_value();
  out_ += json_quote(k);
  out_ += pretty_ ? ": " : ":";
  after_key_ = true;
  return *this;
}

JsonWriter& JsonWriter::raw(const std::string& text) {
  before_value();
  out_ += text;
  return *this;
}

JsonWriter& JsonWriter::open(char c, bool object, bool one_line) {
  before_value();
  out_ += c;
  // Inside a one-line container everything stays on that line.
  const bool inherited = !scopes_.empty() && scopes_.back().one_line;
  scopes_.push_back({object, one_line || inherited});
  return *this;
}

JsonWriter& JsonWriter::close(char c, bool object) {
  if (scopes_.empty() || scopes_.back().object != object) return *this;  // misuse: keep the output well-formed so far
  const Scope s = scopes_.back();
  scopes_.pop_back();
  if (pretty_ && !s.one_line && s.count > 0) newline_indent(scopes_.size());
  out_ += c;
  if (scopes_.empty() && pretty_) out_ += '\n';
  return *this;
}

JsonWriter& JsonWriter::begin_object(bool one_line) { return open('{', true, one_line); }
JsonWriter& JsonWriter::end_object() { return close('}', true); }
JsonWriter& JsonWriter::begin_array(bool one_line) { return open('[', false, one_line); }
JsonWriter& JsonWriter::end_array() { return close(']', false); }
JsonWriter& JsonWriter::value(std::string_view s) { return raw(json_quote(s)); }
JsonWriter& JsonWriter::value(bool b) { return raw(b ? "true" : "false"); }
JsonWriter& JsonWriter::value(double d) { return raw(json_number(d)); }
JsonWriter& JsonWriter::value(float f) { return raw(json_number(f)); }
JsonWriter& JsonWriter::null() { return raw("null"); }

// --- reading ----------------------------------------------------------------

JsonValue JsonValue::make_bool(bool b) {
  JsonValue v;
  v.type_ = Type::kBool;
  v.bool_ = b;
  return v;
}

JsonValue JsonValue::make_number(std::string text) {
  JsonValue v;
  v.type_ = Type::kNumber;
  v.text_ = std::move(text);
  return v;
}

JsonValue JsonValue::make_string(std::string s) {
  JsonValue v;
  v.type_ = Type::kString;
  v.text_ = std::move(s);
  return v;
}

JsonValue JsonValue::make_array(std::vector<JsonValue> items) {
  JsonValue v;
  v.type_ = Type::kArray;
  v.items_ = std::make_shared<const std::vector<JsonValue>>(std::move(items));
  return v;
}

JsonValue JsonValue::make_object(Members members) {
  JsonValue v;
  v.type_ = Type::kObject;
  v.members_ = std::make_shared<const Members>(std::move(members));
  return v;
}

double JsonValue::as_double() const {
  if (type_ != Type::kNumber) return 0.0;
  double d = 0.0;
  std::from_chars(text_.data(), text_.data() + text_.size(), d);
  return d;
}

float JsonValue::as_float() const {
  if (type_ != Type::kNumber) return 0.f;
  float f = 0.f;
  auto [end, ec] = std::from_chars(text_.data(), text_.data() + text_.size(), f);
  // Beyond float range: the infinity of that sign (a caller checks isfinite);
  // below it: zero.
  if (ec == std::errc::result_out_of_range) {
    const double d = as_double();
    if (std::fabs(d) > 1.0) return d < 0 ? -INFINITY : INFINITY;
    return d < 0 ? -0.f : 0.f;
  }
  return f;
}

bool JsonValue::as_int64(int64_t& out) const {
  if (type_ != Type::kNumber || text_.find_first_of(".eE") != std::string::npos) return false;
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text_.data(), text_.data() + text_.size(), v);
  if (ec != std::errc() || end != text_.data() + text_.size()) return false;
  out = v;
  return true;
}

const std::vector<JsonValue>& JsonValue::items() const {
  static const std::vector<JsonValue> kEmpty;
  return items_ ? *items_ : kEmpty;
}

const JsonValue::Members& JsonValue::members() const {
  static const Members kEmpty;
  return members_ ? *members_ : kEmpty;
}

const JsonValue* JsonValue::find(std::string_view key) const {
  for (const auto& [k, v] : members())
    if (k == key) return &v;
  return nullptr;
}

const char* JsonValue::type_name(Type t) {
  switch (t) {
    case Type::kNull: return "null";
    case Type::kBool: return "a boolean";
    case Type::kNumber: return "a number";
    case Type::kString: return "a string";
    case Type::kArray: return "an array";
    case Type::kObject: return "an object";
  }
  return "?";
}

namespace {

// Recursive descent over the RFC 8259 grammar. Every read is bounds-checked
// and the recursion is capped by limits.max_depth.
class JsonParser {
 public:
  JsonParser(std::string_view text, const std::string& what, const JsonParseLimits& limits)
      : s_(text), what_(what), limits_(limits) {}

  Expected<JsonValue> document() {
    if (s_.size() > limits_.max_bytes)
      return parse_error(what_ + ": " + std::to_string(s_.size()) + " bytes is more than the limit of " +
                         std::to_string(limits_.max_bytes));
    if (s_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;  // a UTF-8 byte order mark, as some editors write
    JsonValue v;
    QTK_RETURN_IF_ERROR(value(v, 0));
    skip_ws();
    if (pos_ != s_.size()) return error("unexpected text after the JSON value");
    return v;
  }

 private:
  Status error(const std::string& msg) const {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < pos_ && i < s_.size(); ++i) {
      if (s_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    return parse_error(what_ + ": line " + std::to_string(line) + ", column " + std::to_string(col) + ": " + msg);
  }

  bool at_end() const { return pos_ >= s_.size(); }
  char peek() const { return at_end() ? '\0' : s_[pos_]; }

  void skip_ws() {
    while (!at_end() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }

  std::string describe_here() const {
    if (at_end()) return "the end of the input";
    const unsigned char c = static_cast<unsigned char>(s_[pos_]);
    if (c >= 0x20 && c < 0x7f) return std::string("'") + static_cast<char>(c) + "'";
    char buf[16];
    std::snprintf(buf, sizeof buf, "byte 0x%02x", c);
    return buf;
  }

  Status value(JsonValue& out, size_t depth) {
    skip_ws();
    if (at_end()) return error("expected a value, found the end of the input");
    const char c = s_[pos_];
    if (c == '{' || c == '[') {
      if (depth >= limits_.max_depth)
        return error("nesting deeper than " + std::to_string(limits_.max_depth) + " levels");
      return c == '{' ? object(out, depth + 1) : array(out, depth + 1);
    }
    if (c == '"') {
      std::string str;
      QTK_RETURN_IF_ERROR(string(str));
      out = JsonValue::make_string(std::move(str));
      return Status::Ok();
    }
    if (c == '-' || (c >= '0' && c <= '9')) return number(out);
    if (literal("true")) {
      out = JsonValue::make_bool(true);
      return Status::Ok();
    }
    if (literal("false")) {
      out = JsonValue::make_bool(false);
      return Status::Ok();
    }
    if (literal("null")) {
      out = JsonValue();
      return Status::Ok();
    }
    return error("expected a value, found " + describe_here());
  }

  bool literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  Status object(JsonValue& out, size_t depth) {
    ++pos_;  // '{'
    JsonValue::Members members;
    std::set<std::string, std::less<>> keys;
    skip_ws();
    if (peek() == '}') {
      ++pos_;
      out = JsonValue::make_object(std::move(members));
      return Status::Ok();
    }
    while (true) {
      skip_ws();
      if (peek() != '"') return error("expected a string key, found " + describe_here());
      const size_t key_pos = pos_;
      std::string key;
      QTK_RETURN_IF_ERROR(string(key));
      if (!keys.insert(key).second) {
        pos_ = key_pos;
        return error("duplicate key " + json_quote(key));
      }
      skip_ws();
      if (peek() != ':') return error("expected ':' after a key, found " + describe_here());
      ++pos_;
      JsonValue v;
      QTK_RETURN_IF_ERROR(value(v, depth));
      members.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        out = JsonValue::make_object(std::move(members));
        return Status::Ok();
      }
      return error("expected ',' or '}' in an object, found " + describe_here());
    }
  }

  Status array(JsonValue& out, size_t depth) {
    ++pos_;  // '['
    std::vector<JsonValue> items;
    skip_ws();
    if (peek() == ']') {
      ++pos_;
      out = JsonValue::make_array(std::move(items));
      return Status::Ok();
    }
    while (true) {
      JsonValue v;
      QTK_RETURN_IF_ERROR(value(v, depth));
      items.push_back(std::move(v));
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        out = JsonValue::make_array(std::move(items));
        return Status::Ok();
      }
      return error("expected ',' or ']' in an array, found " + describe_here());
    }
  }

  static bool is_digit(char c) { return c >= '0' && c <= '9'; }

  Status number(JsonValue& out) {
    const size_t start = pos_;
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
    } else if (is_digit(peek())) {
      while (is_digit(peek())) ++pos_;
    } else {
      return error("expected a digit after '-'");
    }
    if (peek() == '.') {
      ++pos_;
      if (!is_digit(peek())) return error("expected a digit after '.'");
      while (is_digit(peek())) ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!is_digit(peek())) return error("expected a digit in the exponent");
      while (is_digit(peek())) ++pos_;
    }
    // A leading zero followed by more digits ("012") stops the grammar above
    // at the '0'; the caller then sees the '1' as trailing text, an error.
    const std::string_view text = s_.substr(start, pos_ - start);
    if (overflows_double(text)) {
      pos_ = start;
      return error("number " + std::string(text.substr(0, 40)) + " is out of range");
    }
    // Underflow (1e-400) is accepted: it reads as zero.
    out = JsonValue::make_number(std::string(text));
    return Status::Ok();
  }

  // from_chars leaves its output untouched when out of range, so overflow
  // and underflow are told apart with a wider type, then by the exponent.
  static bool overflows_double(std::string_view text) {
    double d = 0.0;
    if (std::from_chars(text.data(), text.data() + text.size(), d).ec != std::errc::result_out_of_range) return false;
    long double wide = 0.0L;
    if (std::from_chars(text.data(), text.data() + text.size(), wide).ec == std::errc())
      return std::fabs(wide) > 1.0L;
    const size_t e = text.find_first_of("eE");
    return e != std::string_view::npos && e + 1 < text.size() && text[e + 1] != '-';
  }

  int hex_digit(char c) const {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // Four hex digits after "\u"; pos_ is at the first digit.
  Status hex4(uint32_t& cp) {
    if (s_.size() - pos_ < 4) return error("truncated \\u escape");
    cp = 0;
    for (int k = 0; k < 4; ++k) {
      const int h = hex_digit(s_[pos_ + k]);
      if (h < 0) return error("bad \\u escape (expected four hex digits)");
      cp = cp * 16 + static_cast<uint32_t>(h);
    }
    pos_ += 4;
    return Status::Ok();
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xc0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xe0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }

  Status string(std::string& out) {
    ++pos_;  // '"'
    while (true) {
      if (at_end()) return error("unterminated string");
      const unsigned char c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return Status::Ok();
      }
      if (c < 0x20) return error("control character in a string (escape it)");
      if (c == '\\') {
        if (s_.size() - pos_ < 2) return error("unterminated string");
        const char e = s_[pos_ + 1];
        pos_ += 2;
        switch (e) {
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case '/': out += '/'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'n': out += '\n'; break;
          case 'r': out += '\r'; break;
          case 't': out += '\t'; break;
          case 'u': {
            uint32_t cp = 0;
            QTK_RETURN_IF_ERROR(hex4(cp));
            if (cp >= 0xdc00 && cp <= 0xdfff) return error("lone low surrogate in a \\u escape");
            if (cp >= 0xd800 && cp <= 0xdbff) {
              if (s_.substr(pos_, 2) != "\\u") return error("high surrogate without a low surrogate");
              pos_ += 2;
              uint32_t lo = 0;
              QTK_RETURN_IF_ERROR(hex4(lo));
              if (lo < 0xdc00 || lo > 0xdfff) return error("high surrogate without a low surrogate");
              cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            append_utf8(out, cp);
            break;
          }
          default:
            pos_ -= 1;
            return error("unknown escape \\" + describe_here());
        }
        continue;
      }
      const size_t n = utf8_sequence_length(s_, pos_);
      if (n == 0) return error("invalid UTF-8 in a string");
      out.append(s_.substr(pos_, n));
      pos_ += n;
    }
  }

  std::string_view s_;
  const std::string& what_;
  JsonParseLimits limits_;
  size_t pos_ = 0;
};

}  // namespace

Expected<JsonValue> parse_json(std::string_view text, const std::string& what, const JsonParseLimits& limits) {
  return JsonParser(text, what, limits).document();
}

}  // namespace qtk
