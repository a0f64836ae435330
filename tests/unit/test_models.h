// Helpers the quantization tests share: typed value declarations for graphs
// built in code, and top-1 accuracy of a model on a labelled data set.
#pragma once

#include <gtest/gtest.h>

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

}  // namespace qtk::testing
