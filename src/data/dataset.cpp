#include "data/dataset.h"

#include <cstdlib>
#include <filesystem>

namespace qtk::data {
namespace {

constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
constexpr int kImageSide = 28;

const std::vector<std::string>& fashion_mnist_classes() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                 "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

Expected<std::string> fashion_mnist_file(const std::string& name) {
  const char* env = std::getenv("QTK_FASHION_MNIST_DIR");
  const std::string dir = env && *env ? env : kFashionMnistDir;
  const std::string path = dir + "/" + name;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    return not_found(path + " not found (apt-get install dataset-fashion-mnist" +
                     std::string(env && *env ? ", or fix QTK_FASHION_MNIST_DIR" : "") + ")");
  return path;
}

Expected<Dataset> load_fashion_mnist(const std::string& split, int64_t limit) {
  const std::string prefix = split == "train" ? "train" : "t10k";
  QTK_ASSIGN_OR_RETURN(std::string images_path, fashion_mnist_file(prefix + "-images-idx3-ubyte.gz"));
  QTK_ASSIGN_OR_RETURN(std::string labels_path, fashion_mnist_file(prefix + "-labels-idx1-ubyte.gz"));
  QTK_ASSIGN_OR_RETURN(Tensor pixels, read_idx(images_path, limit));
  QTK_ASSIGN_OR_RETURN(Tensor labels, read_idx(labels_path, limit));
  if (pixels.dtype() != DType::kUInt8 || pixels.rank() != 3 || pixels.dim(1) != kImageSide ||
      pixels.dim(2) != kImageSide)
    return parse_error(images_path + ": expected uint8 images [N,28,28], got " + dtype_name(pixels.dtype()) + " " +
                       shape_to_string(pixels.shape()));
  if (labels.dtype() != DType::kUInt8 || labels.rank() != 1)
    return parse_error(labels_path + ": expected uint8 labels [N], got " + dtype_name(labels.dtype()) + " " +
                       shape_to_string(labels.shape()));
  if (labels.dim(0) != pixels.dim(0))
    return parse_error(images_path + " holds " + std::to_string(pixels.dim(0)) + " images but " + labels_path +
                       " holds " + std::to_string(labels.dim(0)) + " labels");

  Dataset ds;
  ds.class_names = fashion_mnist_classes();
  ds.num_classes = static_cast<int>(ds.class_names.size());
  const int64_t n = pixels.dim(0);
  ds.labels.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t label = labels.data<uint8_t>()[i];
    if (label >= ds.num_classes)
      return parse_error(labels_path + ": label " + std::to_string(label) + " at index " + std::to_string(i) +
                         " is out of range 0.." + std::to_string(ds.num_classes - 1));
    ds.labels[static_cast<size_t>(i)] = label;
  }
  ds.images = Tensor(DType::kFloat32, {n, 1, kImageSide, kImageSide});
  const uint8_t* src = pixels.data<uint8_t>();
  float* dst = ds.images.data<float>();
  for (int64_t i = 0; i < pixels.numel(); ++i) dst[i] = static_cast<float>(src[i]) / 255.0f;
  return ds;
}

}  // namespace

std::vector<std::string> known_dataset_specs() { return {"fashion-mnist:train", "fashion-mnist:test"}; }

Expected<Dataset> load_dataset(const std::string& spec, int64_t limit) {
  if (limit < 0) return invalid_argument("data set limit must be >= 0, got " + std::to_string(limit));
  if (spec == "fashion-mnist:train") return load_fashion_mnist("train", limit);
  if (spec == "fashion-mnist:test") return load_fashion_mnist("test", limit);
  std::string known;
  for (const auto& s : known_dataset_specs()) known += (known.empty() ? "" : ", ") + s;
  return invalid_argument("unknown data set '" + spec + "' (known: " + known + ")");
}

}  // namespace qtk::data
