// NumPy .npy / .npz files, so users can feed their own data and read results.
// Supported dtypes: float32, float64, int8, uint8, int16, uint16, int32,
// int64, bool (little-endian, C order).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "qtk/status.h"
#include "qtk/tensor.h"

namespace qtk::data {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

Expected<Tensor> read_npy(const std::string& path);
Expected<Tensor> parse_npy(const std::string& bytes, const std::string& what);
// True for dtypes an .npy file can hold (bfloat16 is written widened to float32).
bool npy_supports(DType t);
// Empty for dtypes npy_supports() rejects; write_npy reports those as errors.
std::string serialize_npy(const Tensor& t);
Status write_npy(const Tensor& t, const std::string& path);  // temp file + rename

// .npz: a zip of .npy members (stored or deflated); names lose the ".npy".
Expected<NamedTensors> read_npz(const std::string& path);
Expected<NamedTensors> parse_npz(const std::string& bytes, const std::string& what);
Status write_npz(const NamedTensors& arrays, const std::string& path);  // stored, temp file + rename

}  // namespace qtk::data
