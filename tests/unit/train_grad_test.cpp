// Every training op's gradient against central finite differences, and its
// forward against the runtime's kernel on the same node.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "one_node.h"
#include "train/grad_op.h"
#include "test_models.h"

namespace qtk::train {
namespace {

struct OpCase {
  std::string op;
  std::vector<Tensor> inputs;  // undefined = absent optional input
  std::vector<ir::Attribute> attrs;
  std::vector<int> check;       // inputs whose gradient is checked
  bool training = false;
  bool compare_runtime = true;  // forward == qtk::Session on the same node
  int64_t opset = 17;
};

Tensor random_tensor(const Shape& s, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  return testing::uniform_tensor(s, seed, lo, hi);
}

// Values at least `margin` away from every point in `kinks` (Relu at 0, Clip at its bounds).
Tensor away_from(Tensor t, std::vector<float> kinks, float margin) {
  for (int64_t i = 0; i < t.numel(); ++i)
    for (float k : kinks) {
      float& v = t.data<float>()[i];
      if (std::fabs(v - k) < margin) v = v < k ? k - margin : k + margin;
    }
  return t;
}

// Distinct values (a shuffled ramp with step 0.1): no near-ties for MaxPool.
Tensor distinct_tensor(const Shape& s, uint32_t seed) {
  Tensor t(DType::kFloat32, s);
  std::vector<int64_t> idx(t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) idx[i] = i;
  std::shuffle(idx.begin(), idx.end(), std::mt19937(seed));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = 0.1f * static_cast<float>(idx[i]) - 2.f;
  return t;
}

ir::Node make_node(const OpCase& c) {
  ir::Node n;
  n.name = "n0";
  n.op_type = c.op;
  for (size_t i = 0; i < c.inputs.size(); ++i) n.inputs.push_back(c.inputs[i].defined() ? "x" + std::to_string(i) : "");
  n.outputs.push_back("y0");
  n.attrs = c.attrs;
  return n;
}

Expected<ForwardContext> run_forward(const OpCase& c, const ir::Node& n, const std::vector<Tensor>& in) {
  ForwardContext f{n, in, {}, {}, c.training, nullptr, {}};
  QTK_RETURN_IF_ERROR(find_grad_op(c.op)->forward(f));
  return f;
}

double weighted_sum(const Tensor& y, const Tensor& r) {
  double s = 0;
  for (int64_t i = 0; i < y.numel(); ++i) s += static_cast<double>(y.data<float>()[i]) * r.data<float>()[i];
  return s;
}

void check_op(const OpCase& c) {
  SCOPED_TRACE(c.op);
  const GradOp* op = find_grad_op(c.op);
  ASSERT_NE(op, nullptr);
  const ir::Node n = make_node(c);
  auto fwd = run_forward(c, n, c.inputs);
  ASSERT_TRUE(fwd.ok()) << fwd.status().message();
  const Tensor y = fwd->out[0];

  if (c.compare_runtime) {
    std::vector<std::string> names = n.inputs;
    testing::OneNodeOptions oo;
    oo.opset = c.opset;
    auto rt = testing::run_one_node(c.op, names, c.inputs, c.attrs, 1, oo);
    ASSERT_TRUE(rt.ok()) << rt.status().message();
    ASSERT_EQ((*rt)[0].shape(), y.shape());
    ASSERT_EQ((*rt)[0].dtype(), y.dtype());
    for (int64_t i = 0; i < y.numel(); ++i)
      ASSERT_NEAR((*rt)[0].get_as_double(i), y.get_as_double(i), 1e-5 + 1e-5 * std::fabs(y.get_as_double(i)))
          << "forward differs from the runtime at " << i;
  }

  if (c.check.empty()) return;
  // loss = sum(y * r): dloss/dy = r.
  const Tensor r = random_tensor(y.shape(), 77);
  BackwardContext b{n, fwd->in, fwd->out, fwd->saved, {}, {}, {}, nullptr};
  b.dout.assign(n.outputs.size(), Tensor());
  b.dout[0] = r;
  b.need.assign(c.inputs.size(), false);
  b.din.resize(c.inputs.size());
  for (int i : c.check) b.need[i] = true;
  Status st = op->backward(b);
  ASSERT_TRUE(st.ok()) << st.message();

  const double eps = 1e-2;
  for (int i : c.check) {
    SCOPED_TRACE("input " + std::to_string(i));
    ASSERT_TRUE(b.din[i].defined());
    ASSERT_EQ(b.din[i].shape(), c.inputs[i].shape());
    const int64_t count = c.inputs[i].numel();
    const int64_t stride = std::max<int64_t>(1, count / 48);  // at most ~48 elements per input
    for (int64_t j = 0; j < count; j += stride) {
      std::vector<Tensor> in = c.inputs;
      in[i] = c.inputs[i].clone();
      float* p = in[i].data<float>();
      const float v0 = p[j];
      // Views (Reshape, Flatten) share the input's storage: sum before the next change.
      p[j] = static_cast<float>(v0 + eps);
      auto up = run_forward(c, n, in);
      ASSERT_TRUE(up.ok());
      const double f_up = weighted_sum(up->out[0], r);
      p[j] = static_cast<float>(v0 - eps);
      auto down = run_forward(c, n, in);
      ASSERT_TRUE(down.ok());
      const double numeric = (f_up - weighted_sum(down->out[0], r)) / (2 * eps);
      const double analytic = b.din[i].data<float>()[j];
      EXPECT_NEAR(analytic, numeric, 1e-3 + 1e-2 * std::fabs(numeric)) << "element " << j;
    }
  }
}

TEST(TrainGrad, Gemm) {
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      Tensor a = random_tensor(ta ? Shape{5, 3} : Shape{3, 5}, 1), bm = random_tensor(tb ? Shape{4, 5} : Shape{5, 4}, 2);
      check_op({"Gemm", {a, bm, random_tensor({4}, 3)},
                {ir::attr_int("transA", ta), ir::attr_int("transB", tb), ir::attr_float("alpha", 0.7f),
                 ir::attr_float("beta", 1.3f)},
                {0, 1, 2}});
    }
  check_op({"Gemm", {random_tensor({3, 5}, 4), random_tensor({5, 4}, 5), random_tensor({3, 1}, 6)}, {}, {0, 1, 2}});
}

TEST(TrainGrad, MatMul) {
  check_op({"MatMul", {random_tensor({3, 5}, 1), random_tensor({5, 4}, 2)}, {}, {0, 1}});
  check_op({"MatMul", {random_tensor({2, 3, 5}, 3), random_tensor({5, 4}, 4)}, {}, {0, 1}});
  check_op({"MatMul", {random_tensor({2, 3, 5}, 5), random_tensor({2, 5, 4}, 6)}, {}, {0, 1}});
}

TEST(TrainGrad, BroadcastArithmetic) {
  for (const char* op : {"Add", "Sub", "Mul"}) {
    check_op({op, {random_tensor({2, 3, 4}, 1), random_tensor({3, 1}, 2)}, {}, {0, 1}});
    check_op({op, {random_tensor({1, 4}, 3), random_tensor({2, 3, 4}, 4)}, {}, {0, 1}});
  }
  check_op({"Div", {random_tensor({2, 3}, 5), random_tensor({3}, 6, 0.5f, 2.f)}, {}, {0, 1}});
}

TEST(TrainGrad, Activations) {
  const Tensor x = away_from(random_tensor({2, 3, 4}, 9, -3.f, 3.f), {0.f}, 0.05f);
  check_op({"Relu", {x}, {}, {0}});
  check_op({"LeakyRelu", {x}, {ir::attr_float("alpha", 0.2f)}, {0}});
  check_op({"Sigmoid", {x}, {}, {0}});
  check_op({"Tanh", {x}, {}, {0}});
  check_op({"Erf", {x}, {}, {0}});
  check_op({"Gelu", {x}, {}, {0}, false, true, 20});
  check_op({"Gelu", {x}, {ir::attr_string("approximate", "tanh")}, {0}, false, true, 20});
  const Tensor xc = away_from(random_tensor({3, 8}, 10, -1.f, 7.f), {0.f, 6.f}, 0.05f);
  check_op({"Clip", {xc, Tensor::scalar<float>(0.f), Tensor::scalar<float>(6.f)}, {}, {0}});
  check_op({"Softmax", {random_tensor({3, 5}, 11, -2.f, 2.f)}, {ir::attr_int("axis", 1)}, {0}});
  check_op({"Softmax", {random_tensor({2, 3, 4}, 12, -2.f, 2.f)}, {ir::attr_int("axis", 1)}, {0}});
}

TEST(TrainGrad, ConvPlainStridedGroupedDepthwise) {
  check_op({"Conv", {random_tensor({2, 3, 6, 5}, 1), random_tensor({4, 3, 3, 3}, 2)},
            {ir::attr_ints("pads", {1, 1, 1, 1})}, {0, 1}});
  check_op({"Conv", {random_tensor({2, 3, 7, 6}, 3), random_tensor({4, 3, 3, 2}, 4), random_tensor({4}, 5)},
            {ir::attr_ints("strides", {2, 2}), ir::attr_ints("pads", {1, 0, 0, 1})}, {0, 1, 2}});
  check_op({"Conv", {random_tensor({2, 4, 5, 5}, 6), random_tensor({6, 2, 3, 3}, 7), random_tensor({6}, 8)},
            {ir::attr_int("group", 2), ir::attr_ints("pads", {1, 1, 1, 1})}, {0, 1, 2}});
  check_op({"Conv", {random_tensor({2, 3, 8, 8}, 9), random_tensor({3, 1, 3, 3}, 10)},
            {ir::attr_int("group", 3), ir::attr_ints("strides", {2, 2}), ir::attr_ints("dilations", {2, 1}),
             ir::attr_ints("pads", {2, 1, 1, 1})},
            {0, 1}});
  check_op({"Conv", {random_tensor({1, 2, 5, 5}, 11), random_tensor({3, 2, 3, 3}, 12)},
            {ir::attr_string("auto_pad", "SAME_UPPER"), ir::attr_ints("strides", {2, 2})}, {0, 1}});
}

TEST(TrainGrad, BatchNormalizationTrainingAndInference) {
  const Tensor x = random_tensor({3, 4, 3, 2}, 1, -2.f, 2.f);
  const Tensor scale = random_tensor({4}, 2, 0.5f, 1.5f), bias = random_tensor({4}, 3);
  const Tensor mean = random_tensor({4}, 4), var = random_tensor({4}, 5, 0.5f, 2.f);
  check_op({"BatchNormalization", {x, scale, bias, mean, var}, {}, {0, 1, 2}, true, false});
  check_op({"BatchNormalization", {x, scale, bias, mean, var}, {}, {0, 1, 2}, false, true});
}

TEST(TrainGrad, BatchNormalizationUpdatesRunningStats) {
  Tensor x = random_tensor({4, 2, 3, 3}, 1);
  ir::Node n;
  n.name = "bn";
  n.op_type = "BatchNormalization";
  n.inputs = {"x", "s", "b", "m", "v"};
  n.outputs = {"y"};
  n.attrs = {ir::attr_float("momentum", 0.8f)};
  ForwardContext f{n, {x, random_tensor({2}, 2), random_tensor({2}, 3), Tensor(DType::kFloat32, {2}),
                       Tensor::from_vector<float>({2}, {1.f, 1.f})}, {}, {}, true, nullptr, {}};
  ASSERT_TRUE(find_grad_op("BatchNormalization")->forward(f).ok());
  ASSERT_EQ(f.state_updates.size(), 2u);
  for (int c = 0; c < 2; ++c) {
    double s = 0, s2 = 0;
    const int64_t cnt = 4 * 9;
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 9; ++j) s += x.data<float>()[(i * 2 + c) * 9 + j];
    const double mu = s / cnt;
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 9; ++j) s2 += std::pow(x.data<float>()[(i * 2 + c) * 9 + j] - mu, 2);
    EXPECT_NEAR(f.state_updates[0].second.data<float>()[c], 0.2 * mu, 1e-6);
    EXPECT_NEAR(f.state_updates[1].second.data<float>()[c], 0.8 + 0.2 * s2 / (cnt - 1), 1e-5);
  }
}

TEST(TrainGrad, LayerNormalization) {
  check_op({"LayerNormalization", {random_tensor({2, 3, 5}, 1, -2.f, 2.f), random_tensor({5}, 2), random_tensor({5}, 3)},
            {ir::attr_int("axis", -1)}, {0, 1, 2}});
  check_op({"LayerNormalization", {random_tensor({2, 3, 4}, 4, -2.f, 2.f), random_tensor({3, 4}, 5)},
            {ir::attr_int("axis", 1)}, {0, 1}});
}

TEST(TrainGrad, Pools) {
  check_op({"MaxPool", {distinct_tensor({2, 2, 6, 6}, 1)},
            {ir::attr_ints("kernel_shape", {2, 2}), ir::attr_ints("strides", {2, 2})}, {0}});
  check_op({"MaxPool", {distinct_tensor({1, 2, 7, 7}, 2)},
            {ir::attr_ints("kernel_shape", {3, 3}), ir::attr_ints("strides", {2, 2}), ir::attr_ints("pads", {1, 1, 1, 1})},
            {0}});
  for (int include = 0; include < 2; ++include)
    check_op({"AveragePool", {random_tensor({2, 2, 5, 5}, 3)},
              {ir::attr_ints("kernel_shape", {3, 3}), ir::attr_ints("strides", {2, 2}),
               ir::attr_ints("pads", {1, 1, 1, 1}), ir::attr_int("count_include_pad", include)},
              {0}});
  check_op({"GlobalAveragePool", {random_tensor({2, 3, 4, 5}, 4)}, {}, {0}});
}

TEST(TrainGrad, ShapeOps) {
  check_op({"Flatten", {random_tensor({2, 3, 2, 2}, 1)}, {ir::attr_int("axis", 2)}, {0}});
  check_op({"Reshape", {random_tensor({2, 3, 4}, 2), Tensor::from_vector<int64_t>({2}, {0, -1})}, {}, {0}});
  check_op({"Transpose", {random_tensor({2, 3, 4}, 3)}, {ir::attr_ints("perm", {1, 2, 0})}, {0}});
  check_op({"Concat", {random_tensor({2, 3, 2}, 4), random_tensor({2, 1, 2}, 5), random_tensor({2, 2, 2}, 6)},
            {ir::attr_int("axis", 1)}, {0, 1, 2}});
  check_op({"Slice",
            {random_tensor({4, 6}, 7), Tensor::from_vector<int64_t>({2}, {1, -1}), Tensor::from_vector<int64_t>({2}, {4, 0}),
             Tensor::from_vector<int64_t>({2}, {0, 1}), Tensor::from_vector<int64_t>({2}, {2, -2})},
            {}, {0}});
  check_op({"Gather", {random_tensor({3, 5, 2}, 8), Tensor::from_vector<int64_t>({2, 2}, {4, 0, -1, 4})},
            {ir::attr_int("axis", 1)}, {0}});
  check_op({"Unsqueeze", {random_tensor({2, 3}, 9), Tensor::from_vector<int64_t>({1}, {1})}, {}, {0}});
  check_op({"Squeeze", {random_tensor({2, 1, 3}, 10), Tensor::from_vector<int64_t>({1}, {1})}, {}, {0}});
}

TEST(TrainGrad, ExpandAndWhere) {
  check_op({"Expand", {random_tensor({1, 3, 1}, 1), Tensor::from_vector<int64_t>({3}, {2, 3, 4})}, {}, {0}});
  Tensor cond = Tensor::from_vector<bool>({2, 3}, {true, false, true, false, false, true});
  check_op({"Where", {cond, random_tensor({2, 3}, 2), random_tensor({3}, 3)}, {}, {1, 2}});
}

// Shape chains: integer Shape/Gather/Unsqueeze/Concat/Equal/Where/ConstantOfShape
// forwards agree with the runtime.
TEST(TrainGrad, IntegerShapeChainForwards) {
  const Tensor ints = Tensor::from_vector<int64_t>({4}, {8, 3, -1, 5});
  check_op({"Gather", {ints, Tensor::from_vector<int64_t>({2}, {2, 0})}, {ir::attr_int("axis", 0)}, {}});
  check_op({"Concat", {ints, Tensor::from_vector<int64_t>({1}, {7})}, {ir::attr_int("axis", 0)}, {}});
  check_op({"Slice", {ints, Tensor::from_vector<int64_t>({1}, {1}), Tensor::from_vector<int64_t>({1}, {3})}, {}, {}});
  check_op({"Equal", {ints, Tensor::from_vector<int64_t>({1}, {-1})}, {}, {}});
  check_op({"Mul", {ints, Tensor::from_vector<int64_t>({1}, {3})}, {}, {}});
  check_op({"ConstantOfShape", {Tensor::from_vector<int64_t>({2}, {2, 3})},
            {ir::attr_tensor("value", Tensor::from_vector<int64_t>({1}, {4}))}, {}});
  check_op({"Where", {Tensor::from_vector<bool>({4}, {true, false, false, true}), ints,
                      Tensor::from_vector<int64_t>({1}, {1})}, {}, {}});
}

}  // namespace
}  // namespace qtk::train
