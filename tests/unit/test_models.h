// Helpers the quantization tests share: typed value declarations for graphs
// built in code, and top-1 accuracy of a model on a labelled data set.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "ir/graph.h"
#include "qtk/session.h"

namespace qtk::testing {

inline ir::ValueInfo float_info(const std::string& name) {
  ir::ValueInfo v;
  v.name = name;
  v.dtype = DType::kFloat32;
  return v;
}

// A one-output node named after its op and output ("Relu_a").
inline ir::Node op_node(const std::string& op, std::vector<std::string> in, std::string out) {
  ir::Node n;
  n.name = op + "_" + out;
  n.op_type = op;
  n.inputs = std::move(in);
  n.outputs = {std::move(out)};
  return n;
}

// A node with any number of outputs and attributes, named after its op and
// first output.
inline ir::Node attr_node(const std::string& op, std::vector<std::string> in, std::vector<std::string> out,
                          std::vector<ir::Attribute> attrs = {}) {
  ir::Node n;
  n.name = op + "_" + out[0];
  n.op_type = op;
  n.inputs = std::move(in);
  n.outputs = std::move(out);
  n.attrs = std::move(attrs);
  return n;
}

// The outputs of `m` (a float session) on the one input x; empty, with the
// test failed, when it does not build or run.
inline std::vector<Tensor> run_model(const ir::Model& m, const Tensor& x) {
  auto s = Session::create(m);
  EXPECT_TRUE(s.ok()) << s.status().message();
  if (!s.ok()) return {};
  auto out = (*s)->run(std::vector<Tensor>{x});
  EXPECT_TRUE(out.ok()) << out.status().message();
  return out.ok() ? *out : std::vector<Tensor>{};
}

// Top-1 accuracy of `m` on `d` (10 classes, first output); -1 when the model
// does not run (and the test fails).
inline double top1_accuracy(const ir::Model& m, const data::Dataset& d, bool integer = false) {
  SessionOptions so;
  so.integer = integer;
  auto s = Session::create(m, so);
  EXPECT_TRUE(s.ok()) << s.status().message();
  if (!s.ok()) return -1;
  auto out = (*s)->run(std::vector<Tensor>{d.images});
  EXPECT_TRUE(out.ok()) << out.status().message();
  if (!out.ok()) return -1;
  const float* l = (*out)[0].data<float>();
  int64_t correct = 0;
  for (size_t i = 0; i < d.labels.size(); ++i) {
    int best = 0;
    for (int k = 1; k < 10; ++k)
      if (l[i * 10 + k] > l[i * 10 + best]) best = k;
    correct += best == d.labels[i];
  }
  return static_cast<double>(correct) / static_cast<double>(d.labels.size());
}

// Where two tensors' bytes first differ ("" when they are the same).
inline std::string first_difference(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype()) return "dtypes differ";
  if (a.shape() != b.shape()) return "shapes " + shape_to_string(a.shape()) + " vs " + shape_to_string(b.shape());
  const size_t es = dtype_size(a.dtype());
  for (int64_t i = 0; i < a.numel(); ++i)
    if (std::memcmp(static_cast<const char*>(a.raw()) + i * es, static_cast<const char*>(b.raw()) + i * es, es) != 0)
      return "element " + std::to_string(i) + ": " + std::to_string(a.get_as_double(i)) + " vs " +
             std::to_string(b.get_as_double(i));
  return "";
}

// Float32 tensor of `shape` with values uniform in [lo, hi), seeded.
inline Tensor uniform_tensor(const Shape& shape, uint32_t seed, float lo, float hi) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  Tensor t(DType::kFloat32, shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = u(g);
  return t;
}

// Residual joins where a residual is still needed after a join (outputs y
// and t): r is read again by an Add that needs s (the join of conv c2 and r),
// and s is both the next joining conv's input and its residual. 4 channels,
// 3x3 convs with pads 1; input x [N, 4, H, W].
inline ir::Model residual_still_needed_model() {
  ir::Model m;
  m.opsets = {{"", 17}};
  ir::Graph& g = m.graph;
  g.inputs.push_back(float_info("x"));
  g.outputs.push_back(float_info("y"));
  g.outputs.push_back(float_info("t"));
  auto conv = [&](const std::string& in, const std::string& out, int k) {
    const std::string w = out + "_w", b = out + "_b";
    g.initializers[w] = uniform_tensor({4, 4, 3, 3}, 20 + static_cast<uint32_t>(k), -0.3f, 0.3f);
    g.initializers[b] = uniform_tensor({4}, 40 + static_cast<uint32_t>(k), -0.1f, 0.1f);
    ir::Node n = op_node("Conv", {in, w, b}, out);
    n.set_attr(ir::attr_ints("pads", {1, 1, 1, 1}));
    return n;
  };
  g.nodes = {conv("x", "a", 1),
             op_node("Relu", {"a"}, "r"),
             conv("r", "c2", 2),
             op_node("Add", {"c2", "r"}, "s"),
             conv("s", "c3", 3),
             op_node("Add", {"c3", "s"}, "y"),
             op_node("Add", {"r", "s"}, "rs"),
             conv("rs", "t", 4)};
  return m;
}

// Three well-separated classes in `dim` features (class c lights every third
// feature from c), plus Gaussian noise: a data set small nets learn fast.
inline data::Dataset blobs(int64_t n, int64_t dim, uint32_t seed, float noise_sd = 0.3f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> noise(0.f, noise_sd);
  data::Dataset ds;
  ds.num_classes = 3;
  ds.class_names = {"a", "b", "c"};
  ds.images = Tensor(DType::kFloat32, {n, dim});
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = i % 3;
    ds.labels.push_back(c);
    for (int64_t j = 0; j < dim; ++j) ds.images.data<float>()[i * dim + j] = (j % 3 == c ? 1.f : 0.f) + noise(g);
  }
  return ds;
}

}  // namespace qtk::testing
