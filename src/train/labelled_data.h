// Labelled training data for qtk train: the named data sets of
// data/dataset.h, or an .npz holding an "inputs" array (float32, or uint8
// scaled by 1/255; batch first) and a "labels" array (integers, one per
// input). "images"/"x" and "y" are accepted as the names too.
#pragma once

#include <string>

#include "data/dataset.h"
#include "qtk/status.h"

namespace qtk::train {

bool is_npz_spec(const std::string& spec);
// limit > 0 keeps the first `limit` samples.
Expected<data::Dataset> load_labelled_data(const std::string& spec, int64_t limit = 0);

}  // namespace qtk::train
