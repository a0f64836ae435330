#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "onnx/model_io.h"
#include "onnx/tensor_proto.h"
#include "qtk/model.h"
#include "qtk/session.h"

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

// ONNX packs INT4/UINT4 two per byte, low nibble first; qtk holds one per
// byte, sign-extended. Odd counts leave the last high nibble zero.
TEST(OnnxIo, FourBitTensorsPackTwoPerByte) {
  Tensor s(DType::kInt4, {5});
  const int8_t sv[5] = {-8, 7, -1, 0, 3};
  std::memcpy(s.raw(), sv, 5);
  onnx::TensorProto p;
  onnx_io::tensor_to_proto(s, "s", &p);
  EXPECT_EQ(p.data_type(), 22);
  ASSERT_EQ(p.raw_data().size(), 3u);
  EXPECT_EQ(static_cast<uint8_t>(p.raw_data()[0]), 0x78);  // 7 << 4 | (-8 & 0xF)
  EXPECT_EQ(static_cast<uint8_t>(p.raw_data()[1]), 0x0F);  // 0 << 4 | (-1 & 0xF)
  EXPECT_EQ(static_cast<uint8_t>(p.raw_data()[2]), 0x03);
  auto back = onnx_io::tensor_from_proto(p, "");
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->dtype(), DType::kInt4);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(back->data<int8_t>()[i], sv[i]) << i;

  Tensor u(DType::kUInt4, {3});
  const uint8_t uv[3] = {15, 0, 9};
  std::memcpy(u.raw(), uv, 3);
  onnx::TensorProto pu;
  onnx_io::tensor_to_proto(u, "u", &pu);
  back = onnx_io::tensor_from_proto(pu, "");
  ASSERT_TRUE(back.ok()) << back.status().message();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(back->data<uint8_t>()[i], uv[i]) << i;
  EXPECT_EQ(back->get_as_int64(0), 15);

  // int32_data carries one packed byte per entry; a wrong byte count is an error.
  onnx::TensorProto q;
  q.set_name("q");
  q.set_data_type(22);
  q.add_dims(3);
  q.add_int32_data(0x9F);  // -1, -7
  q.add_int32_data(0x01);  // 1
  back = onnx_io::tensor_from_proto(q, "");
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->get_as_int64(0), -1);
  EXPECT_EQ(back->get_as_int64(1), -7);
  EXPECT_EQ(back->get_as_int64(2), 1);
  q.set_raw_data(std::string(1, '\0'));  // 3 values need 2 bytes
  back = onnx_io::tensor_from_proto(q, "");
  ASSERT_FALSE(back.ok());
  EXPECT_NE(back.status().message().find("two values per byte"), std::string::npos);
}

// libonnx 1.12's shape inference divides by a conv's strides: a model with
// a zero stride killed the process (SIGFPE) in every session build. Such a
// graph is not inferred, and the session refuses it, naming the node.
TEST(OnnxIo, ZeroStridesSkipShapeInference) {
  ir::Model m;
  m.opsets = {{"", 17}};
  ir::ValueInfo x;
  x.name = "x";
  x.dtype = DType::kFloat32;
  x.has_shape = true;
  for (int64_t d : {1, 1, 5, 5}) x.shape.push_back(ir::Dim{d, {}});
  m.graph.inputs.push_back(x);
  ir::ValueInfo y;
  y.name = "y";
  y.dtype = DType::kFloat32;
  m.graph.outputs.push_back(y);
  m.graph.initializers["w"] = Tensor(DType::kFloat32, {1, 1, 3, 3});
  ir::Node conv;
  conv.name = "conv";
  conv.op_type = "Conv";
  conv.inputs = {"x", "w"};
  conv.outputs = {"y"};
  conv.attrs = {ir::attr_ints("strides", {0, 1})};
  m.graph.nodes.push_back(conv);
  const auto problems = onnx_io::infer_shapes(m);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("node 'conv' (Conv) has strides 0"), std::string::npos) << problems[0];
  auto s = Session::create(m);
  ASSERT_TRUE(s.ok()) << s.status().message();
  auto out = (*s)->run(std::vector<Tensor>{Tensor(DType::kFloat32, {1, 1, 5, 5})});
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("node 'conv'"), std::string::npos) << out.status().message();
  EXPECT_NE(out.status().message().find("stride"), std::string::npos) << out.status().message();
}

}  // namespace
}  // namespace qtk
