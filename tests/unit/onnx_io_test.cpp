#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "onnx/model_io.h"
#include "qtk/model.h"

namespace qtk {
namespace {

const std::string kModels = QTK_MODELS_DIR;

TEST(OnnxIo, LoadsSharedModels) {
  for (const char* name : {"mlp.onnx", "cnn.onnx", "resnet20.onnx"}) {
    auto m = load_model(kModels + "/" + name);
    ASSERT_TRUE(m.ok()) << m.status().message();
    EXPECT_EQ(m->opset(), 17);
    EXPECT_FALSE(m->graph.nodes.empty());
    EXPECT_FALSE(m->graph.initializers.empty());
  }
}

TEST(OnnxIo, SaveLoadRoundTripKeepsEverything) {
  auto m = load_model(kModels + "/cnn.onnx");
  ASSERT_TRUE(m.ok());
  m->metadata.emplace_back("author", "qtk-test");
  auto path = std::filesystem::temp_directory_path() / "qtk_roundtrip.onnx";
  ASSERT_TRUE(save_model(*m, path.string()).ok());
  auto again = load_model(path.string());
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(again->ir_version, m->ir_version);
  EXPECT_EQ(again->producer_name, m->producer_name);
  ASSERT_EQ(again->metadata.size(), m->metadata.size());
  EXPECT_EQ(again->metadata.back().second, "qtk-test");
  ASSERT_EQ(again->graph.nodes.size(), m->graph.nodes.size());
  for (size_t i = 0; i < m->graph.nodes.size(); ++i) {
    EXPECT_EQ(again->graph.nodes[i].name, m->graph.nodes[i].name);
    EXPECT_EQ(again->graph.nodes[i].op_type, m->graph.nodes[i].op_type);
    EXPECT_EQ(again->graph.nodes[i].inputs, m->graph.nodes[i].inputs);
  }
  EXPECT_EQ(again->graph.initializer_order, m->graph.initializer_order);
  for (const auto& [name, t] : m->graph.initializers) {
    const Tensor* u = again->graph.find_initializer(name);
    ASSERT_NE(u, nullptr);
    ASSERT_EQ(u->nbytes(), t.nbytes());
    EXPECT_EQ(0, std::memcmp(u->raw(), t.raw(), t.nbytes()));
  }
  // Byte-identical re-serialisation: same inputs give the same output.
  auto a = onnx_io::serialize_model(*m), b = onnx_io::serialize_model(*again);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  std::filesystem::remove(path);
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

TEST(OnnxIo, BadFilesGiveClearErrors) {
  auto dir = std::filesystem::temp_directory_path();
  EXPECT_EQ(load_model((dir / "does_not_exist.onnx").string()).status().code(), ErrorCode::kNotFound);

  write_file((dir / "qtk_empty.onnx").string(), "");
  auto e = load_model((dir / "qtk_empty.onnx").string());
  EXPECT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("empty"), std::string::npos);

  std::string good;
  {
    std::ifstream f(kModels + "/mlp.onnx", std::ios::binary);
    good.assign(std::istreambuf_iterator<char>(f), {});
  }
  // Every truncation point in the first 4 KiB, and a few later ones.
  for (size_t cut : {size_t{1}, size_t{7}, size_t{100}, size_t{1000}, size_t{4096}, good.size() / 2, good.size() - 1}) {
    auto m = onnx_io::load_model_from_bytes(good.substr(0, cut), dir.string());
    EXPECT_FALSE(m.ok()) << "truncated at " << cut;
  }
  uint32_t seed = 12345;
  for (int trial = 0; trial < 50; ++trial) {
    std::string junk(1 + trial * 37, '\0');
    for (auto& c : junk) c = static_cast<char>((seed = seed * 1664525u + 1013904223u) >> 24);
    auto m = onnx_io::load_model_from_bytes(junk, dir.string());  // must not crash
    if (m.ok()) SUCCEED();
  }
}

}  // namespace
}  // namespace qtk
