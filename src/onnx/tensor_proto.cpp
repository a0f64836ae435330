#include "onnx/tensor_proto.h"

#include <filesystem>
#include <fstream>
#include <limits>

namespace qtk::onnx_io {

namespace {

constexpr int64_t kMaxElements = int64_t{1} << 36;  // 64 Gi elements: beyond is a hostile header

Status read_external(const onnx::TensorProto& p, const std::string& base_dir, Tensor& t) {
  std::string location;
  int64_t offset = 0, length = -1;
  for (const auto& kv : p.external_data()) {
    try {
      if (kv.key() == "location") location = kv.value();
      else if (kv.key() == "offset") offset = std::stoll(kv.value());
      else if (kv.key() == "length") length = std::stoll(kv.value());
    } catch (const std::exception&) {
      return parse_error("tensor '" + p.name() + "': bad external_data entry '" + kv.key() + "'");
    }
  }
  if (location.empty()) return parse_error("tensor '" + p.name() + "': external data without a location");
  if (base_dir.empty()) return unsupported("tensor '" + p.name() + "': external data needs the model's folder");
  std::filesystem::path rel(location);
  if (rel.is_absolute()) return parse_error("tensor '" + p.name() + "': external data path must be relative: " + location);
  for (const auto& part : rel)
    if (part == "..") return parse_error("tensor '" + p.name() + "': external data path leaves the model folder: " + location);
  std::filesystem::path full = std::filesystem::path(base_dir) / rel;
  std::ifstream f(full, std::ios::binary);
  if (!f) return not_found("tensor '" + p.name() + "': external data file not found: " + full.string());
  f.seekg(0, std::ios::end);
  const int64_t size = static_cast<int64_t>(f.tellg());
  const int64_t want = static_cast<int64_t>(t.nbytes());
  if (length >= 0 && length != want)
    return parse_error("tensor '" + p.name() + "': external data length " + std::to_string(length) +
                       " does not match its shape (" + std::to_string(want) + " bytes)");
  if (offset < 0 || offset > size || size - offset < want)
    return parse_error("tensor '" + p.name() + "': external data file " + full.string() + " is too short");
  f.seekg(offset);
  f.read(static_cast<char*>(t.raw()), want);
  if (!f) return io_error("tensor '" + p.name() + "': cannot read " + full.string());
  return Status::Ok();
}

template <class Dst, class Field>
Status copy_field(const Field& field, Tensor& t, const std::string& name) {
  if (static_cast<int64_t>(field.size()) != t.numel())
    return parse_error("tensor '" + name + "' has " + std::to_string(field.size()) + " values for shape " +
                       shape_to_string(t.shape()));
  Dst* d = t.data<Dst>();
  for (int i = 0; i < field.size(); ++i) d[i] = static_cast<Dst>(field.Get(i));
  return Status::Ok();
}

bool is_4bit(DType t) { return t == DType::kUInt4 || t == DType::kInt4; }

// ONNX packs 4-bit values two per byte, the first in the low nibble; qtk holds
// them one per byte. Unpacks `packed` ((numel + 1) / 2 bytes) into t.
void unpack_4bit(const uint8_t* packed, Tensor& t) {
  const bool sign = t.dtype() == DType::kInt4;
  uint8_t* d = t.data<uint8_t>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    uint8_t v = (packed[i / 2] >> (4 * (i % 2))) & 0xF;
    if (sign && (v & 0x8)) v |= 0xF0;  // sign-extend into the byte
    d[i] = v;
  }
}

std::string pack_4bit(const Tensor& t) {
  std::string out(static_cast<size_t>((t.numel() + 1) / 2), '\0');
  const uint8_t* s = t.data<uint8_t>();
  for (int64_t i = 0; i < t.numel(); ++i) out[i / 2] = static_cast<char>(out[i / 2] | ((s[i] & 0xF) << (4 * (i % 2))));
  return out;
}

// A 4-bit tensor: reads its packed bytes (raw, external or int32_data) and unpacks them.
Expected<Tensor> tensor_4bit_from_proto(const onnx::TensorProto& p, const std::string& base_dir, Tensor t) {
  const int64_t packed = (t.numel() + 1) / 2;
  Tensor bytes(DType::kUInt8, {packed});
  if (p.data_location() == onnx::TensorProto::EXTERNAL) {
    QTK_RETURN_IF_ERROR(read_external(p, base_dir, bytes));
  } else if (p.has_raw_data()) {
    if (static_cast<int64_t>(p.raw_data().size()) != packed)
      return parse_error("tensor '" + p.name() + "' has " + std::to_string(p.raw_data().size()) +
                         " bytes of raw data for shape " + shape_to_string(t.shape()) + " " + dtype_name(t.dtype()) +
                         " (two values per byte: " + std::to_string(packed) + " expected)");
    if (packed) std::memcpy(bytes.raw(), p.raw_data().data(), static_cast<size_t>(packed));
  } else if (t.numel() > 0) {
    QTK_RETURN_IF_ERROR(copy_field<uint8_t>(p.int32_data(), bytes, p.name()));
  }
  unpack_4bit(bytes.data<uint8_t>(), t);
  return t;
}

}  // namespace

Expected<Tensor> tensor_from_proto(const onnx::TensorProto& p, const std::string& base_dir) {
  if (!dtype_is_known(p.data_type()))
    return unsupported("tensor '" + p.name() + "' has data type " + std::to_string(p.data_type()) +
                       ", which qtk does not support");
  const auto dtype = static_cast<DType>(p.data_type());
  Shape shape;
  int64_t numel = 1;
  for (int64_t d : p.dims()) {
    if (d < 0 || (d > 0 && numel > kMaxElements / d))
      return parse_error("tensor '" + p.name() + "' has an invalid dimension " + std::to_string(d));
    numel *= d;
    shape.push_back(d);
  }
  Tensor t(dtype, shape);
  if (is_4bit(dtype)) return tensor_4bit_from_proto(p, base_dir, t);
  const std::string& name = p.name();
  if (p.data_location() == onnx::TensorProto::EXTERNAL) {
    QTK_RETURN_IF_ERROR(read_external(p, base_dir, t));
    return t;
  }
  if (p.has_raw_data()) {
    if (p.raw_data().size() != t.nbytes())
      return parse_error("tensor '" + name + "' has " + std::to_string(p.raw_data().size()) +
                         " bytes of raw data for shape " + shape_to_string(shape) + " " + dtype_name(dtype));
    if (t.nbytes()) std::memcpy(t.raw(), p.raw_data().data(), t.nbytes());
    return t;
  }
  if (numel == 0) return t;
  switch (dtype) {
    case DType::kFloat32: QTK_RETURN_IF_ERROR(copy_field<float>(p.float_data(), t, name)); break;
    case DType::kFloat64: QTK_RETURN_IF_ERROR(copy_field<double>(p.double_data(), t, name)); break;
    case DType::kInt64: QTK_RETURN_IF_ERROR(copy_field<int64_t>(p.int64_data(), t, name)); break;
    case DType::kUInt64: QTK_RETURN_IF_ERROR(copy_field<uint64_t>(p.uint64_data(), t, name)); break;
    case DType::kUInt32: QTK_RETURN_IF_ERROR(copy_field<uint32_t>(p.uint64_data(), t, name)); break;
    case DType::kInt32: QTK_RETURN_IF_ERROR(copy_field<int32_t>(p.int32_data(), t, name)); break;
    case DType::kInt16: QTK_RETURN_IF_ERROR(copy_field<int16_t>(p.int32_data(), t, name)); break;
    case DType::kUInt16: case DType::kFloat16: case DType::kBFloat16:
      QTK_RETURN_IF_ERROR(copy_field<uint16_t>(p.int32_data(), t, name));
      break;
    case DType::kInt8: QTK_RETURN_IF_ERROR(copy_field<int8_t>(p.int32_data(), t, name)); break;
    case DType::kUInt8: case DType::kBool: QTK_RETURN_IF_ERROR(copy_field<uint8_t>(p.int32_data(), t, name)); break;
    default: return unsupported("tensor '" + name + "': data type " + dtype_name(dtype));
  }
  return t;
}

void tensor_to_proto(const Tensor& t, const std::string& name, onnx::TensorProto* p) {
  p->set_name(name);
  p->set_data_type(static_cast<int32_t>(t.dtype()));
  for (int64_t d : t.shape()) p->add_dims(d);
  if (is_4bit(t.dtype())) p->set_raw_data(pack_4bit(t));
  else p->set_raw_data(std::string(static_cast<const char*>(t.raw()), t.nbytes()));
}

}  // namespace qtk::onnx_io
