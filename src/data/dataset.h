// Labelled image data sets addressed by a spec string.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qtk/status.h"
#include "qtk/tensor.h"

namespace qtk::data {

struct Dataset {
  Tensor images;                         // float32 [N,1,28,28] for Fashion-MNIST, pixel/255
  std::vector<int64_t> labels;           // N class ids
  int num_classes = 0;
  std::vector<std::string> class_names;  // num_classes human-readable names
};

// "fashion-mnist:train" | "fashion-mnist:test" (Debian's dataset-fashion-mnist,
// /usr/share/datasets/fashion-mnist/*.gz; override the folder with env
// QTK_FASHION_MNIST_DIR). limit > 0 keeps the first `limit` samples.
Expected<Dataset> load_dataset(const std::string& spec, int64_t limit = 0);

// The spec strings load_dataset understands, for help texts and errors.
std::vector<std::string> known_dataset_specs();

// `n` distinct indices drawn from [0, total) without replacement, in
// increasing order; all of them when n >= total. The generator is qtk's own
// (splitmix64 + rejection sampling), so a seed picks the same subset on every
// platform and standard library.
std::vector<int64_t> sample_indices(int64_t total, int64_t n, uint64_t seed);

// Rows `rows` of `t` along axis 0, in that order (a copy).
Tensor take_rows(const Tensor& t, const std::vector<int64_t>& rows);

// A fixed, seeded random subset of `n` samples (all of them, in order, when
// n >= the data set's size), e.g. for calibration.
Dataset sample_subset(const Dataset& ds, int64_t n, uint64_t seed);

// Equal to sample_subset(load_dataset(spec), n, seed) (n == 0: all), but only
// the chosen samples are decoded to float.
Expected<Dataset> load_dataset_sample(const std::string& spec, int64_t n, uint64_t seed);

// idx files (optionally gzip-compressed) as used by MNIST-style data sets: a
// tensor with the file's dims and dtype (uint8 for MNIST; the big-endian
// int8/int16/int32/float32/float64 variants are converted to host order).
// max_items > 0 keeps only the first max_items entries of dimension 0 and
// decompresses no further than needed.
Expected<Tensor> read_idx(const std::string& path, int64_t max_items = 0);

}  // namespace qtk::data
