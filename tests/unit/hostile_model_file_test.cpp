// Model files that parse as protobuf but lie: an initializer's dims
// (negative, huge, overflowing), its data type or its byte count; an
// attribute of the wrong type; an input's element type; an opset. The loader
// and the session must refuse them with a message, or load and run them;
// never crash, allocate without bound or read past the bytes they were
// given. (The truncated and random-byte files are OnnxIo.BadFilesGiveClearErrors.)
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>

#include "onnx/model_io.h"
#include "qtk/session.h"
#include "test_models.h"

namespace qtk {
namespace {

class ProtoMutator {
 public:
  explicit ProtoMutator(uint32_t seed) : rng_(seed) {}

  std::string mutate(onnx::ModelProto& mp) {
    onnx::GraphProto& g = *mp.mutable_graph();
    switch (pick(0, 4)) {
      case 0: return initializer(g);
      case 1: {
        if (g.node_size() == 0) return "no node";
        onnx::NodeProto& n = *g.mutable_node(pick(0, g.node_size() - 1));
        if (n.attribute_size() == 0) return n.name() + ": no attribute";
        onnx::AttributeProto& a = *n.mutable_attribute(pick(0, n.attribute_size() - 1));
        static const onnx::AttributeProto_AttributeType kTypes[] = {
            onnx::AttributeProto::FLOAT, onnx::AttributeProto::INT, onnx::AttributeProto::STRING,
            onnx::AttributeProto::INTS, onnx::AttributeProto::TENSOR, onnx::AttributeProto::GRAPH};
        a.set_type(kTypes[pick(0, 5)]);
        if (pick(0, 1) == 0) a.add_ints(std::numeric_limits<int64_t>::max());
        return n.name() + ": attribute " + a.name() + " retyped";
      }
      case 2: {
        if (g.input_size() == 0) return "no input";
        onnx::TypeProto_Tensor& t = *g.mutable_input(0)->mutable_type()->mutable_tensor_type();
        if (pick(0, 1) == 0) {
          t.set_elem_type(pick(0, 40));
          return "input elem_type " + std::to_string(t.elem_type());
        }
        if (t.shape().dim_size() > 0) t.mutable_shape()->mutable_dim(pick(0, t.shape().dim_size() - 1))->set_dim_value(odd_dim());
        return "input dim changed";
      }
      case 3: {
        if (mp.opset_import_size() == 0) return "no opset";
        mp.mutable_opset_import(0)->set_version(pick(0, 1) ? 0 : 1000);
        return "opset " + std::to_string(mp.opset_import(0).version());
      }
      default: {
        if (g.node_size() == 0) return "no node";
        onnx::NodeProto& n = *g.mutable_node(pick(0, g.node_size() - 1));
        n.set_domain(pick(0, 1) ? "com.microsoft" : "no.such.domain");
        return n.name() + ": domain " + n.domain();
      }
    }
  }

 private:
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  int64_t odd_dim() {
    static const int64_t kDims[] = {-1, 0, 3, int64_t{1} << 40, std::numeric_limits<int64_t>::max()};
    return kDims[pick(0, 4)];
  }

  std::string initializer(onnx::GraphProto& g) {
    if (g.initializer_size() == 0) return "no initializer";
    onnx::TensorProto& t = *g.mutable_initializer(pick(0, g.initializer_size() - 1));
    const std::string what = "initializer " + t.name();
    switch (pick(0, 3)) {
      case 0:
        if (t.dims_size() == 0) t.add_dims(odd_dim());
        else t.set_dims(pick(0, t.dims_size() - 1), odd_dim());
        return what + " dims changed";
      case 1: t.set_data_type(pick(0, 40)); return what + " data_type " + std::to_string(t.data_type());
      case 2: {
        std::string* raw = t.mutable_raw_data();
        if (pick(0, 1) == 0) raw->resize(raw->size() / 2);
        else raw->append(*raw);
        return what + " raw bytes resized";
      }
      default:
        t.clear_raw_data();
        t.add_float_data(1.f);
        return what + " one float value";
    }
  }

  std::mt19937 rng_;
};

TEST(HostileModelFile, LyingProtosAreRefusedOrRunNeverCrash) {
  const auto dir = std::filesystem::temp_directory_path().string();
  const Tensor x = testing::uniform_tensor({2, 1, 28, 28}, 3, 0.f, 1.f);
  uint32_t seed = 31;
  for (const char* name : {"cnn", "resnet20", "mlp"}) {
    SCOPED_TRACE(name);
    std::ifstream f(std::string(QTK_MODELS_DIR) + "/" + name + ".onnx", std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(f)), {});
    onnx::ModelProto original;
    ASSERT_TRUE(original.ParseFromString(bytes));
    ProtoMutator mutator(seed++);
    for (int k = 0; k < 60; ++k) {
      onnx::ModelProto mp = original;
      const std::string change = mutator.mutate(mp);
      SCOPED_TRACE("mutant " + std::to_string(k) + ": " + change);
      std::string mutated;
      ASSERT_TRUE(mp.SerializeToString(&mutated));
      auto m = onnx_io::load_model_from_bytes(mutated, dir);
      if (!m.ok()) {
        EXPECT_FALSE(m.status().message().empty());
        continue;
      }
      auto s = Session::create(*m);
      if (!s.ok()) {
        EXPECT_FALSE(s.status().message().empty());
        continue;
      }
      auto y = (*s)->run(std::vector<Tensor>{x});
      if (!y.ok()) EXPECT_FALSE(y.status().message().empty());
    }
  }
}

}  // namespace
}  // namespace qtk
