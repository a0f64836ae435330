// Calibration caches (quant/calib_cache.h): exact round trips, strict reading
// of damaged files, and a cached run that reproduces the calibrated one.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include "qtk/model.h"
#include "qtk/quantize.h"
#include "quant/calib_cache.h"

namespace qtk::quant {
namespace {

namespace fs = std::filesystem;

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("qtk_calib_cache_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

void expect_same_ranges(const ActivationRanges& got, const ActivationRanges& want) {
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, r] : want) {
    auto it = got.find(name);
    ASSERT_NE(it, got.end()) << name;
    EXPECT_EQ(bits_of(it->second.min), bits_of(r.min)) << name << " min " << r.min;
    EXPECT_EQ(bits_of(it->second.max), bits_of(r.max)) << name << " max " << r.max;
  }
}

CalibrationCache sample_cache() {
  CalibrationCache c;
  c.method = "percentile:99.99";
  c.samples = 512;
  c.model = "cnn \"v2\".onnx";
  c.activations = "uint8";
  c.ranges["input"] = {0.f, 1.f};
  c.ranges["/conv1/Conv_output_0"] = {-3.1415927f, 7.389056f};
  c.ranges["tiny"] = {-std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min()};
  c.ranges["huge"] = {-std::numeric_limits<float>::max(), std::numeric_limits<float>::max()};
  c.ranges["point"] = {0.1f, 0.1f};
  c.ranges["unicode é/\\"] = {-0.f, 0.f};
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> d(-100.f, 100.f);
  for (int i = 0; i < 500; ++i) {
    float a = d(rng) * std::pow(10.f, static_cast<float>(static_cast<int>(rng() % 20) - 10)), b = d(rng);
    if (a > b) std::swap(a, b);
    c.ranges["t" + std::to_string(i)] = {a, b};
  }
  return c;
}

TEST(CalibCache, RoundTripIsExact) {
  const CalibrationCache c = sample_cache();
  auto text = serialize_calibration_cache(c);
  ASSERT_TRUE(text.ok()) << text.status().message();
  auto back = parse_calibration_cache(*text, "cache.json");
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->method, c.method);
  EXPECT_EQ(back->samples, c.samples);
  EXPECT_EQ(back->model, c.model);
  EXPECT_EQ(back->activations, c.activations);
  expect_same_ranges(back->ranges, c.ranges);
  // And again through a file; same content, same bytes.
  const std::string path = temp_path("rt.json");
  ASSERT_TRUE(write_calibration_cache(c, path).ok());
  EXPECT_EQ(read_bytes(path), *text);
  auto file = read_calibration_cache(path);
  ASSERT_TRUE(file.ok()) << file.status().message();
  expect_same_ranges(file->ranges, c.ranges);
  fs::remove(path);
}

TEST(CalibCache, TheDocumentedLayout) {
  CalibrationCache c;
  c.method = "minmax";
  c.samples = 64;
  c.model = "mlp.onnx";
  c.ranges["input"] = {0.f, 1.f};
  auto text = serialize_calibration_cache(c);
  ASSERT_TRUE(text.ok());
  for (const char* part : {"\"qtk_calibration\": 1", "\"method\": \"minmax\"", "\"samples\": 64",
                           "\"model\": \"mlp.onnx\"", "\"input\": [0, 1]"})
    EXPECT_NE(text->find(part), std::string::npos) << part << " in " << *text;
  EXPECT_EQ(text->find("activations"), std::string::npos) << "optional, left out when unknown";
  // A hand-written cache without the optional fields reads.
  auto hand = parse_calibration_cache(R"({"qtk_calibration":1,"method":"mse","samples":0,"ranges":{}})", "h");
  ASSERT_TRUE(hand.ok()) << hand.status().message();
  EXPECT_TRUE(hand->ranges.empty());
  EXPECT_TRUE(hand->model.empty());
}

TEST(CalibCache, RefusesRangesNoReaderWouldAccept) {
  CalibrationCache c;
  c.method = "minmax";
  c.ranges["nan"] = {NAN, 1.f};
  EXPECT_FALSE(serialize_calibration_cache(c).ok());
  c.ranges.clear();
  c.ranges["backwards"] = {2.f, 1.f};
  EXPECT_FALSE(serialize_calibration_cache(c).ok());
  c.ranges.clear();
  c.ranges["inf"] = {0.f, INFINITY};
  const std::string path = temp_path("inf.json");
  EXPECT_FALSE(write_calibration_cache(c, path).ok());
  EXPECT_FALSE(fs::exists(path)) << "nothing written on error";
}

TEST(CalibCache, DamagedFilesAreErrors) {
  const std::string good = *serialize_calibration_cache(sample_cache());
  // Every truncation fails cleanly.
  for (size_t n = 0; n + 1 < good.size(); n += 37) {
    auto r = parse_calibration_cache(good.substr(0, n), "c.json");
    ASSERT_FALSE(r.ok()) << "accepted a cache cut at " << n;
  }
  const std::string head = R"({"qtk_calibration": 1, "method": "minmax", "samples": 8, )";
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"[1, 2]", "not an object"},
      {R"({"method": "minmax", "samples": 1, "ranges": {}})", "version"},
      {R"({"qtk_calibration": "1", "method": "minmax", "samples": 1, "ranges": {}})", "version"},
      {R"({"qtk_calibration": 1, "samples": 1, "ranges": {}})", "method"},
      {R"({"qtk_calibration": 1, "method": 3, "samples": 1, "ranges": {}})", "method"},
      {R"({"qtk_calibration": 1, "method": "minmax", "ranges": {}})", "samples"},
      {R"({"qtk_calibration": 1, "method": "minmax", "samples": -1, "ranges": {}})", "samples"},
      {R"({"qtk_calibration": 1, "method": "minmax", "samples": 1.5, "ranges": {}})", "samples"},
      {R"({"qtk_calibration": 1, "method": "minmax", "samples": 1})", "ranges"},
      {head + R"("ranges": []})", "ranges"},
      {head + R"("ranges": {"a": [1]}})", "'a'"},
      {head + R"("ranges": {"a": [1, 2, 3]}})", "'a'"},
      {head + R"("ranges": {"a": ["0", 1]}})", "'a'"},
      {head + R"("ranges": {"a": [null, 1]}})", "'a'"},
      {head + R"("ranges": {"a": 1}})", "'a'"},
      {head + R"("ranges": {"a": [2, 1]}})", "min <= max"},
      {head + R"("ranges": {"a": [0, 1e39]}})", "finite"},
      {head + R"("ranges": {"a": [0, 1], "a": [0, 2]}})", "duplicate"},
      {head + R"("model": 5, "ranges": {}})", "model"},
      {head + R"("ranges": {}} trailing)", "after"},
      {"\x89PNG\r\n\x1a\n", "c.json"},
  };
  for (const auto& [text, want] : bad) {
    auto r = parse_calibration_cache(text, "c.json");
    ASSERT_FALSE(r.ok()) << "accepted: " << text;
    EXPECT_NE(r.status().message().find(want), std::string::npos) << text << ": " << r.status().message();
    EXPECT_NE(r.status().message().find("c.json"), std::string::npos) << r.status().message();
  }
  auto future = parse_calibration_cache(R"({"qtk_calibration": 2, "method": "x", "samples": 1, "ranges": {}})", "f");
  ASSERT_FALSE(future.ok());
  EXPECT_EQ(future.status().code(), ErrorCode::kUnsupported);
  auto missing = read_calibration_cache(temp_path("missing.json"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);
}

// Uniform [0,1) "images" for the mlp: enough to calibrate, no data set needed.
CalibrationData random_images(int64_t n) {
  CalibrationData d;
  Tensor t(DType::kFloat32, {n, 1, 28, 28});
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = u(rng);
  d.inputs.push_back(t);
  return d;
}

TEST(CalibCache, CachedRangesReproduceTheCalibratedModel) {
  auto model = load_model(std::string(QTK_MODELS_DIR) + "/mlp.onnx");
  ASSERT_TRUE(model.ok()) << model.status().message();
  QuantConfig cfg;
  const CalibrationData calib = random_images(32);
  auto first = quantize(*model, cfg, calib);
  ASSERT_TRUE(first.ok()) << first.status().message();
  ASSERT_FALSE(first->ranges.empty());
  EXPECT_EQ(first->report.calib_samples, 32);

  CalibrationCache cache;
  cache.method = calib_method_name(cfg.calibration);
  cache.samples = first->report.calib_samples;
  cache.model = "mlp.onnx";
  cache.ranges = first->ranges;
  const std::string cache_path = temp_path("mlp.json");
  ASSERT_TRUE(write_calibration_cache(cache, cache_path).ok());
  auto loaded = read_calibration_cache(cache_path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  expect_same_ranges(loaded->ranges, first->ranges);

  // Same data, ranges from the cache: the same bytes on disk.
  auto second = quantize(*model, cfg, calib, &loaded->ranges);
  ASSERT_TRUE(second.ok()) << second.status().message();
  const std::string a = temp_path("a.onnx"), b = temp_path("b.onnx");
  ASSERT_TRUE(save_model(first->model, a).ok());
  ASSERT_TRUE(save_model(second->model, b).ok());
  EXPECT_EQ(read_bytes(a), read_bytes(b));

  // Without the data-driven weight steps, a complete cache needs no data at all.
  cfg.weight_clip_search = false;
  cfg.bias_correction = false;
  auto plain = quantize(*model, cfg, calib);
  ASSERT_TRUE(plain.ok()) << plain.status().message();
  auto cached = quantize(*model, cfg, CalibrationData{}, &loaded->ranges);
  ASSERT_TRUE(cached.ok()) << cached.status().message();
  EXPECT_EQ(cached->report.calib_samples, 0);
  ASSERT_TRUE(save_model(plain->model, a).ok());
  ASSERT_TRUE(save_model(cached->model, b).ok());
  EXPECT_EQ(read_bytes(a), read_bytes(b));
  for (const auto& p : {cache_path, a, b}) fs::remove(p);
}

}  // namespace
}  // namespace qtk::quant
