#include "data/dataset.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
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

struct Subset {
  int64_t n;
  uint64_t seed;
};

// With `subset`, only the chosen images are converted to float, so drawing
// 512 calibration images from the 60,000 training images stays cheap.
Expected<Dataset> load_fashion_mnist(const std::string& split, int64_t limit, const Subset* subset = nullptr) {
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
  for (int64_t i = 0; i < labels.numel(); ++i) {
    const int64_t label = labels.data<uint8_t>()[i];
    if (label >= ds.num_classes)
      return parse_error(labels_path + ": label " + std::to_string(label) + " at index " + std::to_string(i) +
                         " is out of range 0.." + std::to_string(ds.num_classes - 1));
  }
  if (subset && subset->n < pixels.dim(0)) {
    const std::vector<int64_t> rows = sample_indices(pixels.dim(0), subset->n, subset->seed);
    pixels = take_rows(pixels, rows);
    labels = take_rows(labels, rows);
  }
  const int64_t n = pixels.dim(0);
  ds.labels.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ds.labels[static_cast<size_t>(i)] = labels.data<uint8_t>()[i];
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

Expected<Dataset> load_dataset_sample(const std::string& spec, int64_t n, uint64_t seed) {
  if (n < 0) return invalid_argument("sample count must be >= 0, got " + std::to_string(n));
  if (n == 0) return load_dataset(spec);
  const Subset subset{n, seed};
  if (spec == "fashion-mnist:train") return load_fashion_mnist("train", 0, &subset);
  if (spec == "fashion-mnist:test") return load_fashion_mnist("test", 0, &subset);
  return load_dataset(spec);  // the same error for an unknown spec
}

namespace {

// splitmix64 (Steele, Lea, Flood 2014): tiny, well mixed, and its output is
// fixed by definition, unlike std::uniform_int_distribution's.
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound), bound > 0, without modulo bias.
  uint64_t below(uint64_t bound) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t x;
    do x = next();
    while (x >= limit);
    return x % bound;
  }
};

}  // namespace

std::vector<int64_t> sample_indices(int64_t total, int64_t n, uint64_t seed) {
  std::vector<int64_t> all(static_cast<size_t>(std::max<int64_t>(total, 0)));
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
  if (n >= total) return all;
  if (n <= 0) return {};
  // Partial Fisher-Yates: the first n slots end up a uniform random subset.
  SplitMix64 rng{seed};
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = i + static_cast<int64_t>(rng.below(static_cast<uint64_t>(total - i)));
    std::swap(all[i], all[j]);
  }
  all.resize(static_cast<size_t>(n));
  std::sort(all.begin(), all.end());  // keep the data set's order: same result, friendlier memory access
  return all;
}

Tensor take_rows(const Tensor& t, const std::vector<int64_t>& rows) {
  Shape shape = t.shape();
  if (shape.empty()) return t;
  const int64_t n = shape[0];
  const size_t row_bytes = n > 0 ? t.nbytes() / static_cast<size_t>(n) : 0;
  shape[0] = static_cast<int64_t>(rows.size());
  Tensor out(t.dtype(), shape);
  const auto* src = static_cast<const char*>(t.raw());
  auto* dst = static_cast<char*>(out.raw());
  for (size_t i = 0; i < rows.size(); ++i)
    if (rows[i] >= 0 && rows[i] < n) std::memcpy(dst + i * row_bytes, src + rows[i] * row_bytes, row_bytes);
  return out;
}

Dataset sample_subset(const Dataset& ds, int64_t n, uint64_t seed) {
  const int64_t total = static_cast<int64_t>(ds.labels.size());
  if (n >= total) return ds;
  const std::vector<int64_t> rows = sample_indices(total, n, seed);
  Dataset out;
  out.num_classes = ds.num_classes;
  out.class_names = ds.class_names;
  out.images = take_rows(ds.images, rows);
  out.labels.reserve(rows.size());
  for (int64_t r : rows) out.labels.push_back(ds.labels[static_cast<size_t>(r)]);
  return out;
}

}  // namespace qtk::data
