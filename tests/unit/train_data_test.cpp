// Labelled .npz data for qtk train.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "data/npy.h"
#include "train/labelled_data.h"

namespace qtk::train {
namespace {

std::string temp_npz(const std::string& name, const data::NamedTensors& arrays) {
  const std::string path = (std::filesystem::temp_directory_path() / ("qtk_train_data_" + name + ".npz")).string();
  EXPECT_TRUE(data::write_npz(arrays, path).ok());
  return path;
}

TEST(TrainData, NpzInputsAndLabels) {
  Tensor x(DType::kUInt8, {3, 2, 2});
  for (int i = 0; i < 12; ++i) x.data<uint8_t>()[i] = static_cast<uint8_t>(i * 20);
  const std::string path = temp_npz("ok", {{"inputs", x}, {"labels", Tensor::from_vector<int64_t>({3}, {2, 0, 4})}});
  auto ds = load_labelled_data(path, 2);
  ASSERT_TRUE(ds.ok()) << ds.status().message();
  EXPECT_EQ(ds->images.shape(), (Shape{2, 2, 2}));
  EXPECT_FLOAT_EQ(ds->images.data<float>()[5], 100.f / 255.f);
  EXPECT_EQ(ds->labels, (std::vector<int64_t>{2, 0}));
  EXPECT_EQ(ds->num_classes, 3);
  std::remove(path.c_str());
}

TEST(TrainData, NpzProblemsAreNamed) {
  const Tensor x(DType::kFloat32, {3, 4});
  const std::string no_labels = temp_npz("nolabels", {{"inputs", x}});
  auto a = load_labelled_data(no_labels);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("'labels'"), std::string::npos) << a.status().message();
  const std::string short_labels = temp_npz("short", {{"x", x}, {"y", Tensor::from_vector<int32_t>({2}, {0, 1})}});
  auto b = load_labelled_data(short_labels);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("2 labels for 3 inputs"), std::string::npos) << b.status().message();
  const std::string negative = temp_npz("neg", {{"x", x}, {"y", Tensor::from_vector<int64_t>({3}, {0, -1, 1})}});
  EXPECT_FALSE(load_labelled_data(negative).ok());
  for (const auto& p : {no_labels, short_labels, negative}) std::remove(p.c_str());
}

}  // namespace
}  // namespace qtk::train
