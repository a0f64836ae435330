// A small streaming JSON writer for machine-readable CLI output, and a strict
// reader for the JSON files qtk reads back (calibration caches). Strings are
// escaped and made valid UTF-8 (bad bytes become U+FFFD); NaN and infinities,
// which JSON cannot hold, are written as null.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "qtk/status.h"

namespace qtk {

// `s` as a quoted JSON string literal.
std::string json_quote(std::string_view s);
// Shortest text that reads back as the same double; "null" for NaN/inf.
std::string json_number(double v);
// Shortest text that reads back as the same float (with JsonValue::as_float).
std::string json_number(float v);

class JsonWriter {
 public:
  // pretty: newlines and two-space indents; containers opened with
  // `one_line = true` stay on one line (handy for shapes).
  explicit JsonWriter(bool pretty = true) : pretty_(pretty) {}

  JsonWriter& begin_object(bool one_line = false);
  JsonWriter& end_object();
  JsonWriter& begin_array(bool one_line = false);
  JsonWriter& end_array();
  // In an object: the key of the next value.
  JsonWriter& key(std::string_view k);

  JsonWriter& value(std::string_view s);
  JsonWriter& value(const std::string& s) { return value(std::string_view(s)); }
  JsonWriter& value(const char* s) { return value(std::string_view(s)); }
  JsonWriter& value(bool b);
  JsonWriter& value(double d);
  JsonWriter& value(float f);  // shortest text that reads back as the same float
  template <class T>
    requires(std::is_integral_v<T> && !std::is_same_v<T, bool>)
  JsonWriter& value(T v) {
    return raw(std::to_string(v));
  }
  JsonWriter& null();

  // The document so far (complete once every container is closed).
  const std::string& str() const { return out_; }

 private:
  struct Scope {
    bool object;
    bool one_line;
    int count = 0;
  };
  JsonWriter& raw(const std::string& text);
  void before_value();
  void newline_indent(size_t depth);
  JsonWriter& open(char c, bool object, bool one_line);
  JsonWriter& close(char c, bool object);

  bool pretty_;
  bool after_key_ = false;
  std::vector<Scope> scopes_;
  std::string out_;
};

// A parsed JSON document. Objects keep their keys in document order; numbers
// keep their text, so a float written by json_number(float) reads back
// bit-exactly through as_float() (no double rounding on the way).
class JsonValue {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  using Members = std::vector<std::pair<std::string, JsonValue>>;

  JsonValue() = default;
  static JsonValue make_bool(bool b);
  static JsonValue make_number(std::string text);  // text must be a JSON number
  static JsonValue make_string(std::string s);
  static JsonValue make_array(std::vector<JsonValue> items);
  static JsonValue make_object(Members members);

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }

  // Accessors return a neutral value (false, 0, "", empty) for the wrong type;
  // check the type first where it matters.
  bool as_bool() const { return bool_; }
  double as_double() const;
  float as_float() const;
  // The number as an integer, when it is one exactly (no fraction, no exponent
  // beyond int64 range); false otherwise.
  bool as_int64(int64_t& out) const;
  const std::string& as_string() const { return text_; }  // string value, or a number's text
  const std::vector<JsonValue>& items() const;
  const Members& members() const;
  // The member `key` of an object, or nullptr.
  const JsonValue* find(std::string_view key) const;

  static const char* type_name(Type t);

 private:
  Type type_ = Type::kNull;
  bool bool_ = false;
  std::string text_;
  // Shared so copies stay cheap; a parsed document is immutable.
  std::shared_ptr<const std::vector<JsonValue>> items_;
  std::shared_ptr<const Members> members_;
};

struct JsonParseLimits {
  size_t max_depth = 256;              // nesting of arrays/objects (keeps the recursion bounded)
  size_t max_bytes = size_t{1} << 30;  // whole document
};

// Parses one JSON document (RFC 8259, UTF-8): anything else, trailing text,
// invalid UTF-8, lone surrogates, duplicate object keys, numbers out of double
// range and nesting beyond the limit are kParse errors naming `what`, the
// line and the column. Never crashes on hostile input.
Expected<JsonValue> parse_json(std::string_view text, const std::string& what = "JSON",
                               const JsonParseLimits& limits = {});

}  // namespace qtk
