// The JSON reader (core/json.h): what it accepts, what it refuses, exact
// number round trips with the writer, and no crash on hostile input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/json.h"

namespace qtk {
namespace {

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

TEST(JsonParse, ReadsEveryKindOfValue) {
  auto doc = parse_json(R"( {"b": true, "f": false, "n": null, "i": -12, "d": 2.5e-3,
                            "s": "a\"b\\c\/d\b\f\n\r\t", "arr": [1, [2, []], {}], "o": {"z": 1, "a": 2}} )");
  ASSERT_TRUE(doc.ok()) << doc.status().message();
  ASSERT_TRUE(doc->is_object());
  EXPECT_TRUE(doc->find("b")->is_bool());
  EXPECT_TRUE(doc->find("b")->as_bool());
  EXPECT_FALSE(doc->find("f")->as_bool());
  EXPECT_TRUE(doc->find("n")->is_null());
  int64_t i = 0;
  EXPECT_TRUE(doc->find("i")->as_int64(i));
  EXPECT_EQ(i, -12);
  EXPECT_DOUBLE_EQ(doc->find("d")->as_double(), 2.5e-3);
  EXPECT_FALSE(doc->find("d")->as_int64(i));
  EXPECT_EQ(doc->find("s")->as_string(), "a\"b\\c/d\b\f\n\r\t");
  const JsonValue& arr = *doc->find("arr");
  ASSERT_EQ(arr.items().size(), 3u);
  EXPECT_EQ(arr.items()[1].items()[1].items().size(), 0u);
  EXPECT_TRUE(arr.items()[2].is_object());
  // Keys keep document order.
  const auto& o = doc->find("o")->members();
  ASSERT_EQ(o.size(), 2u);
  EXPECT_EQ(o[0].first, "z");
  EXPECT_EQ(o[1].first, "a");
  EXPECT_EQ(doc->find("missing"), nullptr);
  EXPECT_EQ(doc->find("s")->find("x"), nullptr);  // find on a non-object
}

TEST(JsonParse, UnicodeEscapesAndUtf8) {
  auto doc = parse_json(R"(["\u00e9", "\ud83d\ude00", "\u0000x", "é😀"])");
  ASSERT_TRUE(doc.ok()) << doc.status().message();
  EXPECT_EQ(doc->items()[0].as_string(), "\xc3\xa9");
  EXPECT_EQ(doc->items()[1].as_string(), "\xf0\x9f\x98\x80");
  EXPECT_EQ(doc->items()[2].as_string(), std::string("\0x", 2));
  EXPECT_EQ(doc->items()[3].as_string(), "\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_TRUE(parse_json("\xEF\xBB\xBF[1]").ok()) << "a byte order mark is skipped";
}

TEST(JsonParse, IntegersAndRanges) {
  int64_t v = 0;
  EXPECT_TRUE(parse_json("9223372036854775807")->as_int64(v));
  EXPECT_EQ(v, INT64_MAX);
  EXPECT_FALSE(parse_json("9223372036854775808")->as_int64(v));
  EXPECT_FALSE(parse_json("1e3")->as_int64(v));
  EXPECT_FALSE(parse_json("\"1\"")->as_int64(v));
  EXPECT_TRUE(parse_json("-0")->as_int64(v));
  EXPECT_EQ(v, 0);
  // Underflow reads as zero; overflow is an error.
  auto tiny = parse_json("1e-400");
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ(tiny->as_double(), 0.0);
  EXPECT_FALSE(parse_json("1e400").ok());
  EXPECT_FALSE(parse_json("-1e400").ok());
  // Within double but beyond float range: as_float saturates to infinity.
  EXPECT_TRUE(std::isinf(parse_json("1e300")->as_float()));
  EXPECT_EQ(parse_json("1e-300")->as_float(), 0.f);
}

TEST(JsonParse, RefusesMalformedDocuments) {
  const std::vector<std::string> bad = {
      "", " ", "{", "}", "[", "[1,]", "[,1]", "{\"a\":1,}", "{\"a\"}", "{\"a\" 1}", "{1:2}", "{'a':1}", "[1 2]",
      "1 2", "01", "-01", "1.", ".5", "-", "+1", "1e", "1e+", "0x10", "tru", "nul", "True", "NaN", "Infinity",
      "-Infinity", "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\u12g4\"", "\"\\ud800\"", "\"\\ud800\\u0041\"",
      "\"\\udc00\"", "\"a\x01\"", "\"tab\there\"", "\"\xff\"", "\"\xc3\"", "\"\xed\xa0\x80\"", "\"\xc0\xaf\"",
      "{\"a\":1,\"a\":2}", "[1]]", "// comment\n1", "[1] x", std::string("[1\0]", 4)};
  for (const auto& text : bad) {
    auto r = parse_json(text, "doc.json");
    EXPECT_FALSE(r.ok()) << "accepted: '" << text << "'";
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), ErrorCode::kParse) << text;
      EXPECT_NE(r.status().message().find("doc.json"), std::string::npos) << r.status().message();
    }
  }
}

TEST(JsonParse, ErrorsNameLineAndColumn) {
  auto r = parse_json("{\n  \"a\": 1,\n  \"b\": x\n}", "cache.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("cache.json: line 3, column 8"), std::string::npos) << r.status().message();
  auto dup = parse_json("{\"k\": 1, \"k\": 2}");
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("duplicate key \"k\""), std::string::npos) << dup.status().message();
}

TEST(JsonParse, NestingIsBounded) {
  JsonParseLimits limits;
  limits.max_depth = 64;
  const std::string ok = std::string(64, '[') + std::string(64, ']');
  EXPECT_TRUE(parse_json(ok, "x", limits).ok());
  const std::string deep = std::string(65, '[') + std::string(65, ']');
  auto r = parse_json(deep, "x", limits);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nesting"), std::string::npos);
  // The default limit holds against a document far deeper than any stack.
  EXPECT_FALSE(parse_json(std::string(1'000'000, '[')).ok());
  EXPECT_FALSE(parse_json(std::string(500'000, '{') ).ok());
  limits.max_bytes = 4;
  EXPECT_FALSE(parse_json("[1,2]", "x", limits).ok());
}

TEST(JsonParse, FloatsRoundTripBitExactly) {
  std::mt19937 rng(7);
  std::vector<float> values = {0.f,
                               -0.f,
                               1.f,
                               0.1f,
                               -3.4028235e38f,
                               std::numeric_limits<float>::max(),
                               std::numeric_limits<float>::min(),
                               std::numeric_limits<float>::denorm_min(),
                               -std::numeric_limits<float>::denorm_min(),
                               1e-40f,
                               16777217.f,
                               0.003921569f};
  std::uniform_int_distribution<uint32_t> any;
  while (values.size() < 20000) {
    const uint32_t u = any(rng);
    float f;
    std::memcpy(&f, &u, sizeof f);
    if (std::isfinite(f)) values.push_back(f);
  }
  JsonWriter w(false);
  w.begin_array();
  for (float f : values) w.value(f);
  w.end_array();
  auto doc = parse_json(w.str());
  ASSERT_TRUE(doc.ok()) << doc.status().message();
  ASSERT_EQ(doc->items().size(), values.size());
  for (size_t i = 0; i < values.size(); ++i)
    ASSERT_EQ(bits_of(doc->items()[i].as_float()), bits_of(values[i]))
        << "value " << values[i] << " written as " << json_number(values[i]);
  EXPECT_EQ(json_number(0.1f), "0.1") << "shortest text, not the widened double";
  EXPECT_EQ(json_number(std::nanf("")), "null");
}

TEST(JsonParse, DoublesAndStringsRoundTripThroughTheWriter) {
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<uint64_t> any;
  JsonWriter w;
  w.begin_object();
  std::vector<double> doubles;
  for (int i = 0; i < 2000; ++i) {
    const uint64_t u = any(rng);
    double d;
    std::memcpy(&d, &u, sizeof d);
    if (std::isfinite(d)) doubles.push_back(d);
  }
  w.key("doubles").begin_array(true);
  for (double d : doubles) w.value(d);
  w.end_array();
  const std::string tricky = std::string("quote\" back\\ nl\n ctl\x01 del\x7f é 😀 ") + "\xff";
  w.key(tricky).value(tricky);
  w.end_object();
  auto doc = parse_json(w.str());
  ASSERT_TRUE(doc.ok()) << doc.status().message();
  const auto& got = doc->find("doubles")->items();
  ASSERT_EQ(got.size(), doubles.size());
  for (size_t i = 0; i < doubles.size(); ++i) ASSERT_EQ(got[i].as_double(), doubles[i]);
  // The writer replaced the invalid byte with U+FFFD; everything else survives.
  const std::string want = std::string("quote\" back\\ nl\n ctl\x01 del\x7f é 😀 ") + "\xef\xbf\xbd";
  ASSERT_EQ(doc->members().size(), 2u);
  EXPECT_EQ(doc->members()[1].first, want);
  EXPECT_EQ(doc->members()[1].second.as_string(), want);
}

TEST(JsonParse, HostileMutationsNeverCrash) {
  const std::string valid =
      R"({"qtk_calibration": 1, "ranges": {"a\u00e9": [-1.5e-3, 2], "b": [0, 1]}, "x": [true, false, null, "s"]})";
  ASSERT_TRUE(parse_json(valid).ok());
  for (size_t n = 0; n < valid.size(); ++n) EXPECT_FALSE(parse_json(valid.substr(0, n)).ok()) << n;
  std::mt19937 rng(11);
  const std::string alphabet = "{}[]\",:\\u0123456789eE+-.tfn \x80\xff\xc3\xed";
  int accepted = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string s = valid;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % s.size();
      switch (rng() % 3) {
        case 0: s[at] = alphabet[rng() % alphabet.size()]; break;
        case 1: s.erase(at, 1 + rng() % 3); break;
        default: s.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
      }
      if (s.empty()) s = "[";
    }
    auto r = parse_json(s);
    if (r.ok()) ++accepted;
    else EXPECT_EQ(r.status().code(), ErrorCode::kParse);
  }
  EXPECT_LT(accepted, 20000);
}

}  // namespace
}  // namespace qtk
