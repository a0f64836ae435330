// The classifier evaluation loop (eval/classifier_eval.h), seeded subsets of
// data sets, and calibration inputs fitted to a model (data/model_inputs.h).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>

#include "data/dataset.h"
#include "data/model_inputs.h"
#include "data/npy.h"
#include "eval/classifier_eval.h"
#include "ir/graph.h"
#include "qtk/model.h"
#include "qtk/session.h"

namespace qtk {
namespace {

namespace fs = std::filesystem;

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("qtk_eval_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

ir::ValueInfo value(const std::string& name, DType dt, std::vector<int64_t> dims) {
  ir::ValueInfo v;
  v.name = name;
  v.dtype = dt;
  v.has_shape = true;
  for (int64_t d : dims) {
    ir::Dim dim;
    if (d >= 0) dim.value = d;
    else dim.param = "batch";
    v.shape.push_back(dim);
  }
  return v;
}

// y = Identity(x): the scores are the inputs, so each row's argmax is known
// by construction.
std::unique_ptr<Session> identity_session(std::vector<int64_t> input_dims, DType dt = DType::kFloat32) {
  ir::Model m;
  m.opsets = {{"", 17}};
  m.graph.inputs.push_back(value("x", dt, input_dims));
  m.graph.outputs.push_back(value("y", dt, input_dims));
  ir::Node n;
  n.name = "id";
  n.op_type = "Identity";
  n.inputs = {"x"};
  n.outputs = {"y"};
  m.graph.nodes.push_back(n);
  SessionOptions so;
  so.optimize = false;
  auto s = Session::create(m, so);
  EXPECT_TRUE(s.ok()) << s.status().message();
  return s.ok() ? std::move(s).value() : nullptr;
}

// n samples of `classes` scores; sample i scores highest on class i % classes.
// Labels agree except for the samples listed in `wrong`.
data::Dataset scored_dataset(int64_t n, int classes, const std::set<int64_t>& wrong) {
  data::Dataset ds;
  ds.num_classes = classes;
  for (int c = 0; c < classes; ++c) ds.class_names.push_back("class" + std::to_string(c));
  ds.images = Tensor(DType::kFloat32, {n, classes});
  for (int64_t i = 0; i < n; ++i) {
    for (int c = 0; c < classes; ++c) ds.images.data<float>()[i * classes + c] = 0.1f * static_cast<float>(c);
    ds.images.data<float>()[i * classes + i % classes] = 5.f;
    ds.labels.push_back(wrong.count(i) ? (i + 1) % classes : i % classes);
  }
  return ds;
}

TEST(EvalClassifier, CountsCorrectAndPerClassForAnyBatch) {
  auto session = identity_session({-1, 3});
  ASSERT_NE(session, nullptr);
  const data::Dataset ds = scored_dataset(10, 3, {2, 7});
  for (int64_t batch : {1, 3, 4, 64}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    eval::EvalOptions o;
    o.batch = batch;
    std::vector<int64_t> seen;
    o.progress = [&](int64_t done, int64_t total) {
      EXPECT_EQ(total, 10);
      seen.push_back(done);
    };
    auto r = eval::evaluate_classifier(*session, ds, o);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(r->samples, 10);
    EXPECT_EQ(r->correct, 8);
    EXPECT_DOUBLE_EQ(r->accuracy, 0.8);
    EXPECT_EQ(r->batch, batch);
    // Labels 0,1,0,0,1,2,0,2,2,0: sample 2 (argmax 2) is labelled 0, sample
    // 7 (argmax 1) is labelled 2.
    EXPECT_EQ(r->class_samples, (std::vector<int64_t>{5, 2, 3}));
    EXPECT_EQ(r->class_correct, (std::vector<int64_t>{4, 2, 2}));
    EXPECT_DOUBLE_EQ(r->class_accuracy[0], 0.8);
    EXPECT_DOUBLE_EQ(r->class_accuracy[2], 2.0 / 3.0);
    ASSERT_FALSE(seen.empty());
    EXPECT_EQ(seen.back(), 10);
    for (size_t i = 1; i < seen.size(); ++i) EXPECT_GT(seen[i], seen[i - 1]);
    EXPECT_GE(r->seconds, 0.0);
  }
}

TEST(EvalClassifier, FixedBatchModelsGetPaddedBatches) {
  auto session = identity_session({4, 3});
  ASSERT_NE(session, nullptr);
  const data::Dataset ds = scored_dataset(10, 3, {0});
  auto r = eval::evaluate_classifier(*session, ds);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->batch, 4);
  EXPECT_EQ(r->samples, 10);  // the padding rows of the last batch are not counted
  EXPECT_EQ(r->correct, 9);
  eval::EvalOptions o;
  o.batch = 5;
  auto bad = eval::evaluate_classifier(*session, ds, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("fixed batch of 4"), std::string::npos) << bad.status().message();
}

TEST(EvalClassifier, ReshapesSamplesToTheModelsShape) {
  // The model wants [N,1,3]; the data set holds [N,3].
  auto session = identity_session({-1, 1, 3});
  ASSERT_NE(session, nullptr);
  auto r = eval::evaluate_classifier(*session, scored_dataset(6, 3, {}));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->correct, 6);
}

TEST(EvalClassifier, NaNScoresNeverWin) {
  auto session = identity_session({-1, 3});
  ASSERT_NE(session, nullptr);
  data::Dataset ds = scored_dataset(2, 3, {});
  ds.images.data<float>()[0] = NAN;  // sample 0: [NaN, 0.1, 0.2] -> class 2
  ds.images.data<float>()[1] = 0.1f;
  ds.images.data<float>()[2] = 0.2f;
  ds.labels[0] = 2;
  auto r = eval::evaluate_classifier(*session, ds);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->correct, 2);
}

TEST(EvalClassifier, ClearErrors) {
  auto session = identity_session({-1, 3});
  ASSERT_NE(session, nullptr);
  data::Dataset empty = scored_dataset(0, 3, {});
  EXPECT_FALSE(eval::evaluate_classifier(*session, empty).ok());
  data::Dataset bad_label = scored_dataset(4, 3, {});
  bad_label.labels[3] = 7;
  auto r = eval::evaluate_classifier(*session, bad_label);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("label 7"), std::string::npos) << r.status().message();
  data::Dataset short_images = scored_dataset(4, 3, {});
  short_images.labels.push_back(0);  // 5 labels, 4 images
  EXPECT_FALSE(eval::evaluate_classifier(*session, short_images).ok());

  auto int_session = identity_session({-1, 3}, DType::kInt64);
  ASSERT_NE(int_session, nullptr);
  auto wrong_dtype = eval::evaluate_classifier(*int_session, scored_dataset(3, 3, {}));
  ASSERT_FALSE(wrong_dtype.ok());
  EXPECT_NE(wrong_dtype.status().message().find("int64"), std::string::npos) << wrong_dtype.status().message();

  ir::Model two;
  two.opsets = {{"", 17}};
  two.graph.inputs = {value("a", DType::kFloat32, {-1, 3}), value("b", DType::kFloat32, {-1, 3})};
  two.graph.outputs = {value("c", DType::kFloat32, {-1, 3})};
  ir::Node add;
  add.name = "add";
  add.op_type = "Add";
  add.inputs = {"a", "b"};
  add.outputs = {"c"};
  two.graph.nodes.push_back(add);
  auto two_session = Session::create(two);
  ASSERT_TRUE(two_session.ok()) << two_session.status().message();
  auto two_inputs = eval::evaluate_classifier(**two_session, scored_dataset(3, 3, {}));
  ASSERT_FALSE(two_inputs.ok());
  EXPECT_NE(two_inputs.status().message().find("one input"), std::string::npos);
}

TEST(SampleSubset, SeededDistinctSortedAndConsistent) {
  const data::Dataset ds = scored_dataset(1000, 10, {});
  const data::Dataset a = data::sample_subset(ds, 100, 42);
  const data::Dataset b = data::sample_subset(ds, 100, 42);
  const data::Dataset c = data::sample_subset(ds, 100, 43);
  ASSERT_EQ(a.labels.size(), 100u);
  ASSERT_EQ(a.images.shape(), (Shape{100, 10}));
  EXPECT_EQ(a.num_classes, 10);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(0, std::memcmp(a.images.raw(), b.images.raw(), a.images.nbytes()));
  const auto rows = data::sample_indices(1000, 100, 42);
  ASSERT_EQ(rows.size(), 100u);
  EXPECT_TRUE(std::is_sorted(rows.begin(), rows.end()));
  EXPECT_EQ(std::set<int64_t>(rows.begin(), rows.end()).size(), 100u) << "without replacement";
  // Each picked row carries its own image and label.
  for (size_t i = 0; i < rows.size(); ++i) {
    ASSERT_EQ(a.labels[i], ds.labels[rows[i]]);
    ASSERT_EQ(0, std::memcmp(a.images.data<float>() + i * 10, ds.images.data<float>() + rows[i] * 10, 10 * sizeof(float)));
  }
  EXPECT_NE(rows, data::sample_indices(1000, 100, 43)) << "another seed, another subset";
  EXPECT_NE(0, std::memcmp(a.images.raw(), c.images.raw(), a.images.nbytes()));
  // n >= size: everything, in order; n == 0: nothing.
  const data::Dataset all = data::sample_subset(ds, 5000, 1);
  EXPECT_EQ(all.labels, ds.labels);
  EXPECT_EQ(data::sample_indices(5, 5, 9), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_TRUE(data::sample_indices(5, 0, 9).empty());
  EXPECT_TRUE(data::sample_subset(ds, 0, 1).labels.empty());
}

TEST(SampleSubset, EveryRowIsEquallyLikely) {
  // 3 of 10 over 20,000 seeds: each row should be picked ~6,000 times
  // (binomial sd ~65); a biased draw (e.g. modulo or off-by-one) shows up.
  std::vector<int> count(10, 0);
  for (uint64_t seed = 0; seed < 20000; ++seed)
    for (int64_t r : data::sample_indices(10, 3, seed)) ++count[r];
  for (int i = 0; i < 10; ++i) EXPECT_NEAR(count[i], 6000, 400) << "row " << i;
}

bool fashion_mnist_installed() {
  const char* env = std::getenv("QTK_FASHION_MNIST_DIR");
  return fs::exists(std::string(env && *env ? env : "/usr/share/datasets/fashion-mnist") + "/t10k-images-idx3-ubyte.gz");
}

TEST(SampleSubset, LoadingASampleEqualsSamplingTheLoadedSet) {
  if (!fashion_mnist_installed()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  auto full = data::load_dataset("fashion-mnist:test");
  auto part = data::load_dataset_sample("fashion-mnist:test", 300, 5);
  ASSERT_TRUE(full.ok() && part.ok());
  const data::Dataset want = data::sample_subset(*full, 300, 5);
  EXPECT_EQ(part->labels, want.labels);
  ASSERT_EQ(part->images.shape(), want.images.shape());
  EXPECT_EQ(0, std::memcmp(part->images.raw(), want.images.raw(), want.images.nbytes()));
  EXPECT_FALSE(data::load_dataset_sample("cifar:test", 3, 1).ok());
}

TEST(EvalClassifier, MlpOnFashionMnist) {
  if (!fashion_mnist_installed()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  auto ds = data::load_dataset("fashion-mnist:test", 500);
  ASSERT_TRUE(ds.ok()) << ds.status().message();
  auto session = Session::load(std::string(QTK_MODELS_DIR) + "/mlp.onnx");
  ASSERT_TRUE(session.ok()) << session.status().message();
  auto r = eval::evaluate_classifier(**session, *ds);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->samples, 500);
  EXPECT_GT(r->accuracy, 0.8);  // the model reaches 0.886 on the whole test set
  int64_t sum = 0;
  for (int64_t c : r->class_correct) sum += c;
  EXPECT_EQ(sum, r->correct);
}

// --- calibration inputs fitted to a model --------------------------------------

TensorInfo info(const std::string& name, DType dt, std::vector<int64_t> shape) {
  TensorInfo t;
  t.name = name;
  t.dtype = dt;
  t.shape = std::move(shape);
  t.has_shape = true;
  return t;
}

Tensor ramp(Shape shape, float offset = 0.f) {
  Tensor t(DType::kFloat32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = offset + static_cast<float>(i);
  return t;
}

TEST(CalibrationInputs, NpyIsCheckedAgainstTheInput) {
  const std::string path = temp_path("x.npy");
  ASSERT_TRUE(data::write_npy(ramp({20, 1, 2, 2}), path).ok());
  const std::vector<TensorInfo> in = {info("input", DType::kFloat32, {-1, 1, 2, 2})};
  auto all = data::load_calibration_inputs(path, in, 0, 0);
  ASSERT_TRUE(all.ok()) << all.status().message();
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].shape(), (Shape{20, 1, 2, 2}));
  auto some = data::load_calibration_inputs(path, in, 8, 0);
  ASSERT_TRUE(some.ok());
  EXPECT_EQ((*some)[0].shape(), (Shape{8, 1, 2, 2}));
  auto again = data::load_calibration_inputs(path, in, 8, 0);
  EXPECT_EQ(0, std::memcmp((*some)[0].raw(), (*again)[0].raw(), (*some)[0].nbytes())) << "seeded";

  auto shape = data::load_calibration_inputs(path, {info("input", DType::kFloat32, {-1, 1, 3, 2})}, 0, 0);
  ASSERT_FALSE(shape.ok());
  EXPECT_NE(shape.status().message().find("input 'input'"), std::string::npos) << shape.status().message();
  EXPECT_NE(shape.status().message().find("[20,1,2,2]"), std::string::npos) << shape.status().message();
  EXPECT_NE(shape.status().message().find("[N,1,3,2]"), std::string::npos) << shape.status().message();
  auto rank = data::load_calibration_inputs(path, {info("input", DType::kFloat32, {-1, 4})}, 0, 0);
  EXPECT_FALSE(rank.ok());
  auto dtype = data::load_calibration_inputs(path, {info("input", DType::kInt8, {-1, 1, 2, 2})}, 0, 0);
  ASSERT_FALSE(dtype.ok());
  EXPECT_NE(dtype.status().message().find("float32"), std::string::npos);
  auto two = data::load_calibration_inputs(path, {in[0], info("y", DType::kFloat32, {-1})}, 0, 0);
  EXPECT_FALSE(two.ok()) << "an .npy is one array";
  EXPECT_FALSE(data::load_calibration_inputs(temp_path("missing.npy"), in, 0, 0).ok());
  EXPECT_FALSE(data::load_calibration_inputs("data.csv", in, 0, 0).ok());
  fs::remove(path);
}

TEST(CalibrationInputs, NpzByNameOrByOrder) {
  const std::string named = temp_path("named.npz"), ordered = temp_path("ordered.npz"), odd = temp_path("odd.npz");
  const std::vector<TensorInfo> in = {info("a", DType::kFloat32, {-1, 2}), info("b", DType::kFloat32, {-1, 3})};
  // By name, whatever the order in the file.
  ASSERT_TRUE(data::write_npz({{"b", ramp({6, 3}, 100.f)}, {"a", ramp({6, 2})}}, named).ok());
  auto r = data::load_calibration_inputs(named, in, 0, 0);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ((*r)[0].shape(), (Shape{6, 2}));
  EXPECT_EQ((*r)[1].data<float>()[0], 100.f);
  // Subsets take the same rows of every array.
  auto sub = data::load_calibration_inputs(named, in, 3, 9);
  ASSERT_TRUE(sub.ok());
  for (int64_t i = 0; i < 3; ++i) {
    const float row_a = (*sub)[0].data<float>()[i * 2] / 2.f;
    const float row_b = ((*sub)[1].data<float>()[i * 3] - 100.f) / 3.f;
    EXPECT_EQ(row_a, row_b);
  }
  // In input order (numpy's arr_0, arr_1 names).
  ASSERT_TRUE(data::write_npz({{"arr_0", ramp({6, 2})}, {"arr_1", ramp({6, 3})}}, ordered).ok());
  EXPECT_TRUE(data::load_calibration_inputs(ordered, in, 0, 0).ok());
  // Wrong count, or disagreeing sample counts.
  ASSERT_TRUE(data::write_npz({{"arr_0", ramp({6, 2})}}, odd).ok());
  auto few = data::load_calibration_inputs(odd, in, 0, 0);
  ASSERT_FALSE(few.ok());
  EXPECT_NE(few.status().message().find("'a', 'b'"), std::string::npos) << few.status().message();
  ASSERT_TRUE(data::write_npz({{"a", ramp({6, 2})}, {"b", ramp({5, 3})}}, odd).ok());
  auto counts = data::load_calibration_inputs(odd, in, 0, 0);
  ASSERT_FALSE(counts.ok());
  EXPECT_NE(counts.status().message().find("sample count"), std::string::npos) << counts.status().message();
  for (const auto& p : {named, ordered, odd}) fs::remove(p);
}

TEST(CalibrationInputs, FixedBatchRoundsTheSampleCount) {
  const std::string path = temp_path("fixed.npy");
  ASSERT_TRUE(data::write_npy(ramp({10, 2}), path).ok());
  auto r = data::load_calibration_inputs(path, {info("x", DType::kFloat32, {4, 2})}, 0, 0);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ((*r)[0].dim(0), 8);
  EXPECT_FALSE(data::load_calibration_inputs(path, {info("x", DType::kFloat32, {16, 2})}, 0, 0).ok());
  fs::remove(path);
}

TEST(CalibrationInputs, DataSetImagesFitTheInput) {
  if (!fashion_mnist_installed()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  auto flat = data::load_calibration_inputs("fashion-mnist:test", {info("x", DType::kFloat32, {-1, 784})}, 16, 0);
  ASSERT_TRUE(flat.ok()) << flat.status().message();
  EXPECT_EQ((*flat)[0].shape(), (Shape{16, 784}));
  auto image = data::load_calibration_inputs("fashion-mnist:test", {info("x", DType::kFloat32, {-1, 1, 28, 28})}, 16, 0);
  ASSERT_TRUE(image.ok());
  EXPECT_EQ(0, std::memcmp((*flat)[0].raw(), (*image)[0].raw(), (*flat)[0].nbytes()));
  EXPECT_FALSE(data::load_calibration_inputs("fashion-mnist:test", {info("x", DType::kFloat32, {-1, 3, 28, 28})}, 16, 0).ok());
  EXPECT_FALSE(data::load_calibration_inputs("fashion-mnist:test", {info("x", DType::kInt64, {-1, 784})}, 16, 0).ok());
}

}  // namespace
}  // namespace qtk
