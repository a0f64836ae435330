// Labelled image data sets addressed by a spec string.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qtk/status.h"
#include "qtk/tensor.h"

namespace qtk::data {

struct Dataset {
  Tensor images;                // float32 [N,1,28,28] for Fashion-MNIST, pixel/255
  std::vector<int64_t> labels;  // N class ids
  int num_classes = 0;
};

// "fashion-mnist:train" | "fashion-mnist:test" (Debian's dataset-fashion-mnist,
// /usr/share/datasets/fashion-mnist/*.gz; override the folder with env
// QTK_FASHION_MNIST_DIR). limit > 0 keeps the first `limit` samples.
Expected<Dataset> load_dataset(const std::string& spec, int64_t limit = 0);

// idx (optionally gzip-compressed) files as used by MNIST-style data sets.
Expected<Tensor> read_idx(const std::string& path);  // uint8 tensor with the idx dims

}  // namespace qtk::data
