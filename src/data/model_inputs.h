// Fitting data to a model's inputs: the per-sample shape a model wants for an
// image data set, and calibration inputs read from a spec string (a data set
// or .npy/.npz files), checked against the inputs they feed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qtk/session.h"
#include "qtk/status.h"
#include "qtk/tensor.h"

namespace qtk {
namespace ir { struct Model; }
}

namespace qtk::data {

// What a user must feed a model, from its declarations (no session needed):
// the graph inputs that are not initializers, dynamic dims as -1.
std::vector<TensorInfo> declared_runtime_inputs(const ir::Model& model);

// The shape of one sample as input `info` wants it: the input's own non-batch
// dims when they are all fixed and hold as many values as `data_sample` (e.g.
// [784] for a [1,28,28] image), else `data_sample` itself.
Shape sample_shape_for_input(const TensorInfo& info, const Shape& data_sample);

// "[N,1,28,28]": an input's declared shape, dynamic dims as N (axis 0) or ?.
std::string describe_input_shape(const TensorInfo& info);

// Checks an array of samples (axis 0) against the input it feeds: dtype, rank
// and every fixed dim after the first. `source` names where it came from
// (e.g. "calib.npz:x"); errors name the input and the source.
Status check_input_array(const Tensor& array, const TensorInfo& info, const std::string& source);

// True when `spec` names a file load_calibration_inputs reads (.npy / .npz).
bool is_array_file_spec(const std::string& spec);

// Calibration inputs for a model, one tensor per entry of `inputs`, all with
// the same number of samples along axis 0:
//  - a data set spec (known_dataset_specs()): its images, reshaped to what a
//    one-input float32 model wants;
//  - FILE.npy: one array, for a one-input model;
//  - FILE.npz: one array per input, matched by name when every input has an
//    array of its name, else in input order (the counts must then agree).
// Keeps at most `max_samples` samples (0: all), a seeded random subset (the
// same rows of every array), so runs are reproducible. When an input has a
// fixed batch B, the count is rounded down to a multiple of B.
Expected<std::vector<Tensor>> load_calibration_inputs(const std::string& spec, const std::vector<TensorInfo>& inputs,
                                                      int64_t max_samples, uint64_t seed);

}  // namespace qtk::data
