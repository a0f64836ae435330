#include "train/labelled_data.h"

#include <algorithm>

#include "data/npy.h"

namespace qtk::train {
namespace {

const Tensor* member(const data::NamedTensors& arrays, std::initializer_list<const char*> names) {
  for (const char* n : names)
    for (const auto& [k, v] : arrays)
      if (k == n) return &v;
  return nullptr;
}

}  // namespace

bool is_npz_spec(const std::string& spec) { return spec.size() > 4 && spec.ends_with(".npz"); }

Expected<data::Dataset> load_labelled_data(const std::string& spec, int64_t limit) {
  if (!is_npz_spec(spec)) return data::load_dataset(spec, limit);
  QTK_ASSIGN_OR_RETURN(data::NamedTensors arrays, data::read_npz(spec));
  const Tensor* x = member(arrays, {"inputs", "images", "x"});
  const Tensor* y = member(arrays, {"labels", "y"});
  if (!x || !y) return invalid_argument(spec + ": needs an 'inputs' array and a 'labels' array");
  if (x->rank() < 2) return invalid_argument(spec + ": inputs must have a batch dimension and at least one more");
  if (y->numel() != x->dim(0))
    return invalid_argument(spec + ": " + std::to_string(y->numel()) + " labels for " + std::to_string(x->dim(0)) +
                            " inputs");
  if (x->dtype() != DType::kFloat32 && x->dtype() != DType::kUInt8)
    return invalid_argument(spec + ": inputs must be float32 or uint8, got " + dtype_name(x->dtype()));
  if (y->dtype() == DType::kFloat32 || y->dtype() == DType::kFloat64 || y->dtype() == DType::kBool)
    return invalid_argument(spec + ": labels must be integers, got " + dtype_name(y->dtype()));
  const int64_t n = limit > 0 ? std::min(limit, x->dim(0)) : x->dim(0);
  data::Dataset ds;
  Shape s = x->shape();
  s[0] = n;
  ds.images = Tensor(DType::kFloat32, s);
  const int64_t per = x->numel() / x->dim(0);
  for (int64_t i = 0; i < n * per; ++i)
    ds.images.data<float>()[i] = x->dtype() == DType::kUInt8 ? x->data<uint8_t>()[i] / 255.f : x->data<float>()[i];
  int64_t max_label = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t l = y->get_as_int64(i);
    if (l < 0) return invalid_argument(spec + ": label " + std::to_string(l) + " of sample " + std::to_string(i) +
                                       " is negative");
    ds.labels.push_back(l);
    max_label = std::max(max_label, l);
  }
  ds.num_classes = static_cast<int>(max_label + 1);
  for (int c = 0; c < ds.num_classes; ++c) ds.class_names.push_back(std::to_string(c));
  return ds;
}

}  // namespace qtk::train
