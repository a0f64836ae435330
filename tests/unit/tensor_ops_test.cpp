// Shape and data-movement reference kernels (shape_ops.cpp, tensor_ops*.cpp,
// resize.cpp), each run as a one-node model through qtk::Session and checked
// against index arithmetic written here, numpy-documented results, or
// properties (round trips), over several dtypes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include "ir/graph.h"
#include "qtk/session.h"

namespace qtk {
namespace {

ir::Attribute attr_int(const std::string& n, int64_t v) { return ir::attr_int(n, v); }
ir::Attribute attr_str(const std::string& n, const std::string& v) { return ir::attr_string(n, v); }
ir::Attribute attr_list(const std::string& n, std::vector<int64_t> v) { return ir::attr_ints(n, std::move(v)); }

// Runs one node of `op` on `inputs` (an undefined Tensor is an absent
// optional input) with `num_outputs` outputs, under the given default-domain
// opset.
Expected<std::vector<Tensor>> run_node(const std::string& op, const std::vector<Tensor>& inputs,
                                       std::vector<ir::Attribute> attrs = {}, int num_outputs = 1,
                                       int64_t opset = 17, int threads = 1) {
  ir::Model m;
  m.opsets = {{"", opset}};
  ir::Node n;
  n.name = "node";
  n.op_type = op;
  n.attrs = std::move(attrs);
  std::vector<Tensor> feeds;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) {
      n.inputs.push_back("");
      continue;
    }
    const std::string name = "x" + std::to_string(i);
    n.inputs.push_back(name);
    ir::ValueInfo v;
    v.name = name;
    v.dtype = inputs[i].dtype();
    m.graph.inputs.push_back(v);
    feeds.push_back(inputs[i]);
  }
  for (int i = 0; i < num_outputs; ++i) {
    const std::string name = "y" + std::to_string(i);
    n.outputs.push_back(name);
    ir::ValueInfo v;
    v.name = name;
    m.graph.outputs.push_back(v);
  }
  m.graph.nodes.push_back(n);
  SessionOptions options;
  options.threads = threads;
  auto s = Session::create(m, options);
  if (!s.ok()) return s.status();
  return (*s)->run(feeds);
}

Tensor i64(Shape shape, std::vector<int64_t> v) { return Tensor::from_vector<int64_t>(std::move(shape), v); }
Tensor i64(std::vector<int64_t> v) {
  const int64_t n = static_cast<int64_t>(v.size());
  return i64({n}, std::move(v));
}

// A tensor of `dt` whose element i holds a value derived from i (so every
// element is distinguishable up to the dtype's width).
Tensor iota(DType dt, Shape shape) {
  Tensor t(dt, shape);
  auto* b = static_cast<unsigned char*>(t.raw());
  const size_t es = dtype_size(dt);
  for (int64_t i = 0; i < t.numel(); ++i) {
    uint64_t v = static_cast<uint64_t>(i) * 2654435761u + 17;
    if (dt == DType::kBool) v &= 1;
    std::memcpy(b + static_cast<size_t>(i) * es, &v, es);
  }
  return t;
}

bool same_element(const Tensor& a, int64_t i, const Tensor& b, int64_t j) {
  const size_t es = dtype_size(a.dtype());
  return std::memcmp(static_cast<const char*>(a.raw()) + i * es, static_cast<const char*>(b.raw()) + j * es, es) == 0;
}

std::vector<int64_t> strides_of(const Shape& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (size_t d = s.size(); d-- > 1;) st[d - 1] = st[d] * s[d];
  return st;
}

// Unravels flat index i of `shape`.
std::vector<int64_t> unravel(int64_t i, const Shape& shape) {
  std::vector<int64_t> idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = i % shape[d];
    i /= shape[d];
  }
  return idx;
}

const DType kMoveTypes[] = {DType::kFloat32, DType::kInt64, DType::kUInt8, DType::kFloat16, DType::kBool,
                            DType::kInt32};

TEST(TensorOps, TransposeMatchesIndexArithmeticOnRandomShapes) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    const int rank = 1 + static_cast<int>(rng() % 5);
    Shape shape(static_cast<size_t>(rank));
    for (auto& d : shape) d = 1 + static_cast<int64_t>(rng() % 4);
    std::vector<int64_t> perm(static_cast<size_t>(rank));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    const DType dt = kMoveTypes[trial % std::size(kMoveTypes)];
    Tensor x = iota(dt, shape);
    auto out = run_node("Transpose", {x}, {attr_list("perm", perm)});
    ASSERT_TRUE(out.ok()) << out.status().message();
    const Tensor& y = (*out)[0];
    ASSERT_EQ(y.dtype(), dt);
    ASSERT_EQ(y.rank(), rank);
    for (int d = 0; d < rank; ++d) ASSERT_EQ(y.dim(d), shape[static_cast<size_t>(perm[static_cast<size_t>(d)])]);
    const auto xs = strides_of(shape);
    for (int64_t i = 0; i < y.numel(); ++i) {
      auto oi = unravel(i, y.shape());
      int64_t src = 0;
      for (int d = 0; d < rank; ++d) src += oi[static_cast<size_t>(d)] * xs[static_cast<size_t>(perm[static_cast<size_t>(d)])];
      ASSERT_TRUE(same_element(y, i, x, src)) << "trial " << trial << " shape " << shape_to_string(shape) << " element " << i;
    }
  }
}

TEST(TensorOps, TransposeDefaultReversesAxes) {
  Tensor x = iota(DType::kInt64, {2, 3, 4});
  auto out = run_node("Transpose", {x});
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_EQ((*out)[0].shape(), (Shape{4, 3, 2}));
  EXPECT_TRUE(same_element((*out)[0], 1, x, 12));  // y[0,0,1] = x[1,0,0]
}

TEST(TensorOps, SliceWithNegativeStepsAndExtremeEnds) {
  Tensor x = iota(DType::kInt64, {5, 6});
  const int64_t kMin = std::numeric_limits<int64_t>::min();
  // Rows from the last one backwards two at a time; columns 4 down to 1.
  auto out = run_node("Slice", {x, i64({-1, 4}), i64({kMin, 0}), i64({0, 1}), i64({-2, -1})});
  ASSERT_TRUE(out.ok()) << out.status().message();
  const Tensor& y = (*out)[0];
  ASSERT_EQ(y.shape(), (Shape{3, 4}));
  const int64_t rows[] = {4, 2, 0}, cols[] = {4, 3, 2, 1};
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c) EXPECT_TRUE(same_element(y, r * 4 + c, x, rows[r] * 6 + cols[c]));
}

TEST(TensorOps, SliceClampsAndAllowsEmptyResults) {
  Tensor x = iota(DType::kFloat32, {10});
  const int64_t kMax = std::numeric_limits<int64_t>::max();
  auto all = run_node("Slice", {x, i64({-100}), i64({kMax})});
  ASSERT_TRUE(all.ok()) << all.status().message();
  EXPECT_EQ((*all)[0].shape(), (Shape{10}));
  auto empty = run_node("Slice", {x, i64({7}), i64({3})});
  ASSERT_TRUE(empty.ok()) << empty.status().message();
  EXPECT_EQ((*empty)[0].shape(), (Shape{0}));
  auto zero_step = run_node("Slice", {x, i64({0}), i64({3}), i64({0}), i64({0})});
  EXPECT_FALSE(zero_step.ok());
}

TEST(TensorOps, SliceOpset1ReadsAttributes) {
  Tensor x = iota(DType::kUInt8, {4, 5});
  auto out = run_node("Slice", {x}, {attr_list("starts", {1, -2}), attr_list("ends", {3, 1000}), attr_list("axes", {0, 1})},
                      1, 9);
  ASSERT_TRUE(out.ok()) << out.status().message();
  const Tensor& y = (*out)[0];
  ASSERT_EQ(y.shape(), (Shape{2, 2}));
  EXPECT_TRUE(same_element(y, 0, x, 1 * 5 + 3));
  EXPECT_TRUE(same_element(y, 3, x, 2 * 5 + 4));
}

TEST(TensorOps, GatherOutOfRangeIndexIsAnErrorNotACrash) {
  Tensor x = iota(DType::kFloat32, {3, 4});
  auto bad = run_node("Gather", {x, i64({0, 3})}, {attr_int("axis", 0)});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("out of range"), std::string::npos) << bad.status().message();
  auto bad_neg = run_node("Gather", {x, i64({-5})}, {attr_int("axis", 1)});
  EXPECT_FALSE(bad_neg.ok());
}

TEST(TensorOps, GatherNegativeAndInt32IndicesOnAnyAxis) {
  Tensor x = iota(DType::kInt64, {2, 3, 4});
  Tensor idx = Tensor::from_vector<int32_t>({2, 2}, {-1, 0, 2, 1});
  auto out = run_node("Gather", {x, idx}, {attr_int("axis", -1)});
  ASSERT_TRUE(out.ok()) << out.status().message();
  const Tensor& y = (*out)[0];
  ASSERT_EQ(y.shape(), (Shape{2, 3, 2, 2}));
  const int64_t cols[] = {3, 0, 2, 1};
  for (int64_t i = 0; i < y.numel(); ++i) {
    auto o = unravel(i, y.shape());
    const int64_t src = o[0] * 12 + o[1] * 4 + cols[o[2] * 2 + o[3]];
    ASSERT_TRUE(same_element(y, i, x, src)) << i;
  }
}

TEST(TensorOps, GatherElementsAndScatterElementsAreInverse) {
  // A permutation along axis 1: scatter then gather returns the updates.
  Tensor data = iota(DType::kFloat32, {2, 3});
  Tensor idx = i64({2, 3}, {2, 0, 1, 1, 2, 0});
  Tensor upd = iota(DType::kFloat32, {2, 3});
  for (int64_t i = 0; i < upd.numel(); ++i) upd.data<float>()[i] = static_cast<float>(100 + i);
  auto sc = run_node("ScatterElements", {data, idx, upd}, {attr_int("axis", 1)});
  ASSERT_TRUE(sc.ok()) << sc.status().message();
  auto ga = run_node("GatherElements", {(*sc)[0], idx}, {attr_int("axis", 1)});
  ASSERT_TRUE(ga.ok()) << ga.status().message();
  for (int64_t i = 0; i < upd.numel(); ++i) EXPECT_EQ((*ga)[0].data<float>()[i], upd.data<float>()[i]);
  EXPECT_FALSE(run_node("GatherElements", {data, i64({1, 1}, {3})}, {attr_int("axis", 1)}).ok());
}

TEST(TensorOps, ReshapeWithWrongElementCountIsAnError) {
  Tensor x = iota(DType::kFloat32, {2, 3, 4});
  auto bad = run_node("Reshape", {x, i64({5, -1})});
  EXPECT_FALSE(bad.ok());
  auto bad2 = run_node("Reshape", {x, i64({4, 4})});
  EXPECT_FALSE(bad2.ok());
  auto two_minus_one = run_node("Reshape", {x, i64({-1, -1})});
  EXPECT_FALSE(two_minus_one.ok());
  auto ok = run_node("Reshape", {x, i64({0, -1})});
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ((*ok)[0].shape(), (Shape{2, 12}));
}

TEST(TensorOps, ReshapeAllowZeroKeepsZeroDims) {
  Tensor x(DType::kFloat32, {0, 3});
  auto out = run_node("Reshape", {x, i64({3, 0})}, {attr_int("allowzero", 1)}, 1, 14);
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_EQ((*out)[0].shape(), (Shape{3, 0}));
  // Without allowzero, 0 copies the input dim: [0, 3] -> [0, 3].
  auto copy = run_node("Reshape", {x, i64({0, 3})}, {}, 1, 14);
  ASSERT_TRUE(copy.ok()) << copy.status().message();
  EXPECT_EQ((*copy)[0].shape(), (Shape{0, 3}));
}

TEST(TensorOps, SqueezeAndUnsqueezeAcrossOpsets) {
  Tensor x = iota(DType::kBool, {1, 3, 1});
  auto sq11 = run_node("Squeeze", {x}, {attr_list("axes", {-1})}, 1, 11);
  ASSERT_TRUE(sq11.ok()) << sq11.status().message();
  EXPECT_EQ((*sq11)[0].shape(), (Shape{1, 3}));
  auto sq13 = run_node("Squeeze", {x}, {}, 1, 13);
  ASSERT_TRUE(sq13.ok()) << sq13.status().message();
  EXPECT_EQ((*sq13)[0].shape(), (Shape{3}));
  EXPECT_FALSE(run_node("Squeeze", {x, i64({1})}, {}, 1, 13).ok());  // dim 3 is not 1
  auto un11 = run_node("Unsqueeze", {x}, {attr_list("axes", {0, 4})}, 1, 11);
  ASSERT_TRUE(un11.ok()) << un11.status().message();
  EXPECT_EQ((*un11)[0].shape(), (Shape{1, 1, 3, 1, 1}));
  auto un13 = run_node("Unsqueeze", {x, i64({-1, 1})}, {}, 1, 13);
  ASSERT_TRUE(un13.ok()) << un13.status().message();
  EXPECT_EQ((*un13)[0].shape(), (Shape{1, 1, 3, 1, 1}));
}

TEST(TensorOps, ShapeStartEndAndSize) {
  Tensor x(DType::kUInt8, {2, 3, 4, 5});
  auto out = run_node("Shape", {x}, {attr_int("start", 1), attr_int("end", -1)}, 1, 15);
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_EQ((*out)[0].to_int64_vector(), (std::vector<int64_t>{3, 4}));
  auto size = run_node("Size", {x});
  ASSERT_TRUE(size.ok()) << size.status().message();
  EXPECT_EQ((*size)[0].rank(), 0);
  EXPECT_EQ((*size)[0].get_as_int64(0), 120);
}

TEST(TensorOps, ConcatThenSplitRoundTripsEveryDtype) {
  for (DType dt : kMoveTypes) {
    Tensor a = iota(dt, {2, 1, 3}), b = iota(dt, {2, 4, 3});
    auto cat = run_node("Concat", {a, b}, {attr_int("axis", 1)});
    ASSERT_TRUE(cat.ok()) << cat.status().message();
    ASSERT_EQ((*cat)[0].shape(), (Shape{2, 5, 3}));
    auto parts = run_node("Split", {(*cat)[0], i64({1, 4})}, {attr_int("axis", -2)}, 2, 13);
    ASSERT_TRUE(parts.ok()) << parts.status().message();
    ASSERT_EQ((*parts)[0].shape(), a.shape());
    ASSERT_EQ((*parts)[1].shape(), b.shape());
    EXPECT_EQ(std::memcmp((*parts)[0].raw(), a.raw(), a.nbytes()), 0) << dtype_name(dt);
    EXPECT_EQ(std::memcmp((*parts)[1].raw(), b.raw(), b.nbytes()), 0) << dtype_name(dt);
  }
}

TEST(TensorOps, SplitVersions) {
  Tensor x = iota(DType::kInt64, {5});
  // Opset 18 num_outputs: chunks of ceil(5/3) = 2, the last one smaller.
  auto n18 = run_node("Split", {x}, {attr_int("num_outputs", 3)}, 3, 18);
  ASSERT_TRUE(n18.ok()) << n18.status().message();
  EXPECT_EQ((*n18)[0].numel(), 2);
  EXPECT_EQ((*n18)[1].numel(), 2);
  EXPECT_EQ((*n18)[2].numel(), 1);
  EXPECT_TRUE(same_element((*n18)[2], 0, x, 4));
  // Opset 11: split attribute.
  auto a11 = run_node("Split", {x}, {attr_list("split", {4, 1})}, 2, 11);
  ASSERT_TRUE(a11.ok()) << a11.status().message();
  EXPECT_EQ((*a11)[0].numel(), 4);
  // Uneven equal split without num_outputs is an error; so is a bad sum.
  EXPECT_FALSE(run_node("Split", {x}, {}, 2, 13).ok());
  EXPECT_FALSE(run_node("Split", {x, i64({2, 2})}, {}, 2, 13).ok());
}

TEST(TensorOps, ExpandAndTileMatchIndexArithmetic) {
  Tensor x = iota(DType::kFloat16, {3, 1});
  auto ex = run_node("Expand", {x, i64({2, 1, 4})});
  ASSERT_TRUE(ex.ok()) << ex.status().message();
  const Tensor& e = (*ex)[0];
  ASSERT_EQ(e.shape(), (Shape{2, 3, 4}));
  for (int64_t i = 0; i < e.numel(); ++i) ASSERT_TRUE(same_element(e, i, x, unravel(i, e.shape())[1]));
  EXPECT_FALSE(run_node("Expand", {x, i64({2, 4})}).ok());  // 3 vs 2 do not broadcast

  Tensor t = iota(DType::kInt32, {2, 3});
  auto ti = run_node("Tile", {t, i64({3, 2})});
  ASSERT_TRUE(ti.ok()) << ti.status().message();
  const Tensor& y = (*ti)[0];
  ASSERT_EQ(y.shape(), (Shape{6, 6}));
  for (int64_t i = 0; i < y.numel(); ++i) {
    auto o = unravel(i, y.shape());
    ASSERT_TRUE(same_element(y, i, t, (o[0] % 2) * 3 + o[1] % 3));
  }
}

// numpy.pad's documented results for [1, 2, 3] padded by (2, 2).
TEST(TensorOps, PadModesMatchNumpy) {
  Tensor x = Tensor::from_vector<float>({3}, {1, 2, 3});
  const std::pair<const char*, std::vector<float>> cases[] = {
      {"reflect", {3, 2, 1, 2, 3, 2, 1}},
      {"edge", {1, 1, 1, 2, 3, 3, 3}},
      {"wrap", {2, 3, 1, 2, 3, 1, 2}},
      {"constant", {7, 7, 1, 2, 3, 7, 7}},
  };
  for (const auto& [mode, want] : cases) {
    auto out = run_node("Pad", {x, i64({2, 2}), Tensor::scalar<float>(7)}, {attr_str("mode", mode)}, 1, 19);
    ASSERT_TRUE(out.ok()) << mode << ": " << out.status().message();
    EXPECT_EQ((*out)[0].to_float_vector(), want) << mode;
  }
  // Opset 2 attributes, and negative pads crop.
  ir::Attribute value;
  value.name = "value";
  value.type = ir::AttrType::kFloat;
  value.f = -1.f;
  auto v2 = run_node("Pad", {x}, {attr_list("pads", {-1, 1}), value}, 1, 2);
  ASSERT_TRUE(v2.ok()) << v2.status().message();
  EXPECT_EQ((*v2)[0].to_float_vector(), (std::vector<float>{2, 3, -1}));
  // A crop on one side happens before padding the other: wrap sees [2, 3].
  auto crop_wrap = run_node("Pad", {x, i64({-1, 2})}, {attr_str("mode", "wrap")}, 1, 19);
  ASSERT_TRUE(crop_wrap.ok()) << crop_wrap.status().message();
  EXPECT_EQ((*crop_wrap)[0].to_float_vector(), (std::vector<float>{2, 3, 2, 3}));
  EXPECT_FALSE(run_node("Pad", {x, i64({-4, 2})}, {attr_str("mode", "constant")}, 1, 19).ok());
}

TEST(TensorOps, PadAxesInputOpset18) {
  Tensor x = iota(DType::kInt64, {2, 3});
  auto out = run_node("Pad", {x, i64({1, 0}), Tensor(), i64({-1})}, {}, 1, 18);
  ASSERT_TRUE(out.ok()) << out.status().message();
  const Tensor& y = (*out)[0];
  ASSERT_EQ(y.shape(), (Shape{2, 4}));
  EXPECT_EQ(y.data<int64_t>()[0], 0);
  EXPECT_TRUE(same_element(y, 1, x, 0));
  EXPECT_TRUE(same_element(y, 7, x, 5));
}

TEST(TensorOps, ResizeNearest2x2To4x4) {
  Tensor x = Tensor::from_vector<float>({1, 1, 2, 2}, {1, 2, 3, 4});
  Tensor scales = Tensor::from_vector<float>({4}, {1, 1, 2, 2});
  auto out = run_node("Resize", {x, Tensor(), scales}, {attr_str("mode", "nearest")}, 1, 13);
  ASSERT_TRUE(out.ok()) << out.status().message();
  const Tensor& y = (*out)[0];
  ASSERT_EQ(y.shape(), (Shape{1, 1, 4, 4}));
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t c = 0; c < 4; ++c) EXPECT_EQ(y.data<float>()[r * 4 + c], x.data<float>()[(r / 2) * 2 + c / 2]);
  // The same through sizes, for a dtype that is only moved.
  Tensor xi = iota(DType::kInt64, {1, 1, 2, 2});
  auto outi = run_node("Resize", {xi, Tensor(), Tensor(), i64({1, 1, 4, 4})}, {attr_str("mode", "nearest")}, 1, 13);
  ASSERT_TRUE(outi.ok()) << outi.status().message();
  for (int64_t i = 0; i < 16; ++i) EXPECT_TRUE(same_element((*outi)[0], i, xi, ((i / 4) / 2) * 2 + (i % 4) / 2));
}

TEST(TensorOps, ResizeLinearAlignCornersMatchesOnnxExample) {
  // From the ONNX operator docs (resize_downsample_scales_linear_align_corners).
  Tensor x = Tensor::from_vector<float>({1, 1, 2, 4}, {1, 2, 3, 4, 5, 6, 7, 8});
  Tensor scales = Tensor::from_vector<float>({4}, {1, 1, 0.6f, 0.6f});
  auto out = run_node("Resize", {x, Tensor(), scales},
                      {attr_str("mode", "linear"), attr_str("coordinate_transformation_mode", "align_corners")}, 1, 13);
  ASSERT_TRUE(out.ok()) << out.status().message();
  ASSERT_EQ((*out)[0].shape(), (Shape{1, 1, 1, 2}));
  EXPECT_NEAR((*out)[0].data<float>()[0], 1.0f, 1e-6);
  EXPECT_NEAR((*out)[0].data<float>()[1], 3.142857f, 1e-5);
}

// Resize-10's documented examples (ONNX 1.5 operator docs): asymmetric
// coordinates, nearest rounds down when growing and up when shrinking.
TEST(TensorOps, ResizeOpset10MatchesOnnxExamples) {
  Tensor x24 = Tensor::from_vector<float>({1, 1, 2, 4}, {1, 2, 3, 4, 5, 6, 7, 8});
  Tensor down = Tensor::from_vector<float>({4}, {1, 1, 0.6f, 0.6f});
  auto nearest = run_node("Resize", {x24, down}, {attr_str("mode", "nearest")}, 1, 10);
  ASSERT_TRUE(nearest.ok()) << nearest.status().message();
  EXPECT_EQ((*nearest)[0].to_float_vector(), (std::vector<float>{1, 3}));
  auto linear = run_node("Resize", {x24, down}, {attr_str("mode", "linear")}, 1, 10);
  ASSERT_TRUE(linear.ok()) << linear.status().message();
  ASSERT_EQ((*linear)[0].numel(), 2);
  EXPECT_NEAR((*linear)[0].data<float>()[1], 2.6666665f, 1e-5);

  Tensor x22 = Tensor::from_vector<float>({1, 1, 2, 2}, {1, 2, 3, 4});
  Tensor up = Tensor::from_vector<float>({4}, {1, 1, 2, 2});
  auto up_linear = run_node("Resize", {x22, up}, {attr_str("mode", "linear")}, 1, 10);
  ASSERT_TRUE(up_linear.ok()) << up_linear.status().message();
  EXPECT_EQ((*up_linear)[0].to_float_vector(),
            (std::vector<float>{1, 1.5f, 2, 2, 2, 2.5f, 3, 3, 3, 3.5f, 4, 4, 3, 3.5f, 4, 4}));
  // Upsample-9 is the same operation.
  auto upsample = run_node("Upsample", {x22, up}, {attr_str("mode", "linear")}, 1, 9);
  ASSERT_TRUE(upsample.ok()) << upsample.status().message();
  EXPECT_EQ((*upsample)[0].to_float_vector(), (*up_linear)[0].to_float_vector());
}

TEST(TensorOps, ResizeRejectsBadInputs) {
  Tensor x = iota(DType::kFloat32, {1, 1, 2, 2});
  // Both scales and sizes, then neither, then a wrong count.
  EXPECT_FALSE(run_node("Resize", {x, Tensor(), Tensor::from_vector<float>({4}, {1, 1, 2, 2}), i64({1, 1, 4, 4})}, {}, 1, 13).ok());
  EXPECT_FALSE(run_node("Resize", {x}, {}, 1, 13).ok());
  EXPECT_FALSE(run_node("Resize", {x, Tensor(), Tensor::from_vector<float>({2}, {2, 2})}, {}, 1, 13).ok());
}

TEST(TensorOps, DepthToSpaceInvertsSpaceToDepth) {
  for (DType dt : {DType::kFloat32, DType::kUInt8, DType::kInt64}) {
    Tensor x = iota(dt, {2, 3, 4, 6});
    auto s2d = run_node("SpaceToDepth", {x}, {attr_int("blocksize", 2)});
    ASSERT_TRUE(s2d.ok()) << s2d.status().message();
    ASSERT_EQ((*s2d)[0].shape(), (Shape{2, 12, 2, 3}));
    auto d2s = run_node("DepthToSpace", {(*s2d)[0]}, {attr_int("blocksize", 2), attr_str("mode", "DCR")});
    ASSERT_TRUE(d2s.ok()) << d2s.status().message();
    ASSERT_EQ((*d2s)[0].shape(), x.shape());
    EXPECT_EQ(std::memcmp((*d2s)[0].raw(), x.raw(), x.nbytes()), 0) << dtype_name(dt);
  }
  // CRD: output channel c, block (i, j) reads input channel c * 4 + i * 2 + j.
  Tensor x = iota(DType::kInt32, {1, 8, 2, 3});
  auto crd = run_node("DepthToSpace", {x}, {attr_int("blocksize", 2), attr_str("mode", "CRD")});
  ASSERT_TRUE(crd.ok()) << crd.status().message();
  const Tensor& y = (*crd)[0];
  ASSERT_EQ(y.shape(), (Shape{1, 2, 4, 6}));
  for (int64_t i = 0; i < y.numel(); ++i) {
    auto o = unravel(i, y.shape());
    const int64_t c = o[1] * 4 + (o[2] % 2) * 2 + o[3] % 2;
    ASSERT_TRUE(same_element(y, i, x, c * 6 + (o[2] / 2) * 3 + o[3] / 2)) << i;
  }
}

TEST(TensorOps, AbsurdSizesAreErrorsNotCrashes) {
  Tensor x = iota(DType::kFloat32, {2, 3});
  const int64_t big = int64_t{1} << 40;
  EXPECT_FALSE(run_node("Expand", {x, i64({big, big, 1})}).ok());
  EXPECT_FALSE(run_node("Tile", {x, i64({big, big})}).ok());
  EXPECT_FALSE(run_node("Pad", {x, i64({0, 0, big * 64, 0})}).ok());
  EXPECT_FALSE(run_node("Resize", {iota(DType::kFloat32, {1, 1, 2, 2}), Tensor(), Tensor(), i64({1, 1, big, big})}, {}, 1, 13).ok());
  EXPECT_FALSE(run_node("Resize", {x, Tensor(), Tensor::from_vector<float>({2}, {1e30f, 1e30f})}, {}, 1, 13).ok());
  EXPECT_FALSE(run_node("Reshape", {x, i64({big, big, big, 0})}).ok());
  // A step far longer than the axis takes one element.
  const int64_t kMax = std::numeric_limits<int64_t>::max(), kMin = std::numeric_limits<int64_t>::min();
  auto fwd = run_node("Slice", {x, i64({0}), i64({kMax}), i64({1}), i64({kMax})});
  ASSERT_TRUE(fwd.ok()) << fwd.status().message();
  EXPECT_EQ((*fwd)[0].shape(), (Shape{2, 1}));
  auto back = run_node("Slice", {x, i64({-1}), i64({kMin}), i64({1}), i64({kMin})});
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ((*back)[0].shape(), (Shape{2, 1}));
  EXPECT_TRUE(same_element((*back)[0], 0, x, 2));
}

// The threaded loops must give the same bytes as the single-threaded ones.
TEST(TensorOps, ThreadedRunsMatchSingleThreaded) {
  Tensor x = iota(DType::kFloat32, {3, 40, 33, 17});
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = static_cast<float>((i * 7919) % 1013) * 0.01f;
  struct Case {
    std::string op;
    std::vector<Tensor> inputs;
    std::vector<ir::Attribute> attrs;
    int64_t opset;
  };
  const Case cases[] = {
      {"Transpose", {x}, {attr_list("perm", {2, 0, 3, 1})}, 17},
      {"Gather", {x, i64({5, 0, 39, 5, 7})}, {attr_int("axis", 1)}, 17},
      {"Pad", {x, i64({0, 2, 1, 3, 1, 0, 2, 1}), Tensor()}, {attr_str("mode", "reflect")}, 17},
      {"Slice", {x, i64({-1, 3}), i64({0, 30}), i64({1, 2}), i64({-3, 2})}, {}, 17},
      {"Resize", {x, Tensor(), Tensor::from_vector<float>({4}, {1, 1, 1.7f, 0.6f})}, {attr_str("mode", "linear")}, 13},
      {"Resize", {x, Tensor(), Tensor::from_vector<float>({4}, {1, 1, 2.f, 1.5f})}, {attr_str("mode", "nearest")}, 13},
  };
  for (const Case& c : cases) {
    auto one = run_node(c.op, c.inputs, c.attrs, 1, c.opset, 1);
    auto four = run_node(c.op, c.inputs, c.attrs, 1, c.opset, 4);
    ASSERT_TRUE(one.ok() && four.ok()) << c.op;
    ASSERT_EQ((*one)[0].shape(), (*four)[0].shape()) << c.op;
    EXPECT_EQ(std::memcmp((*one)[0].raw(), (*four)[0].raw(), (*one)[0].nbytes()), 0) << c.op;
  }
}

}  // namespace
}  // namespace qtk
