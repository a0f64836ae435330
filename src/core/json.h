// A small streaming JSON writer for machine-readable CLI output. Strings are
// escaped and made valid UTF-8 (bad bytes become U+FFFD); NaN and infinities,
// which JSON cannot hold, are written as null.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace qtk {

// `s` as a quoted JSON string literal.
std::string json_quote(std::string_view s);
// Shortest text that reads back as the same double; "null" for NaN/inf.
std::string json_number(double v);

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

}  // namespace qtk
