// Data readers and writers: .npy, .npz, idx, the Fashion-MNIST loader, and the
// JSON writer the CLI prints with.
#include <gtest/gtest.h>
#include <zlib.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include "core/json.h"
#include "data/dataset.h"
#include "data/npy.h"

namespace qtk::data {
namespace {

namespace fs = std::filesystem;

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("qtk_data_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// A tensor whose bytes differ per element, for any dtype.
Tensor patterned(DType dtype, Shape shape) {
  Tensor t(dtype, std::move(shape));
  auto* p = static_cast<unsigned char*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<unsigned char>(i * 37 + 11);
  if (dtype == DType::kBool)
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = i % 3 == 0;
  return t;
}

void expect_same_tensor(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.dtype(), b.dtype()) << dtype_name(a.dtype()) << " vs " << dtype_name(b.dtype());
  ASSERT_EQ(a.shape(), b.shape()) << shape_to_string(a.shape()) << " vs " << shape_to_string(b.shape());
  ASSERT_EQ(a.nbytes(), b.nbytes());
  EXPECT_EQ(0, std::memcmp(a.raw(), b.raw(), a.nbytes()));
}

// "\x93NUMPY" + version + header length + header text padded to `align`.
std::string npy_with_header(int major, const std::string& dict, const std::string& data, size_t align = 64) {
  const size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((prefix + header.size() + 1) % align != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  for (size_t i = 0; i < (major == 1 ? 2u : 4u); ++i) out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string le_int32s(std::initializer_list<int32_t> values) {
  std::string s;
  for (int32_t v : values)
    for (int i = 0; i < 4; ++i) s += static_cast<char>((static_cast<uint32_t>(v) >> (8 * i)) & 0xff);
  return s;
}

const DType kNpyDTypes[] = {DType::kFloat32, DType::kFloat64, DType::kInt8,   DType::kUInt8,  DType::kInt16,
                            DType::kUInt16,  DType::kInt32,   DType::kInt64,  DType::kBool,   DType::kFloat16,
                            DType::kUInt32,  DType::kUInt64};

TEST(Npy, RoundTripEveryDTypeAndRank) {
  for (DType dt : kNpyDTypes) {
    for (const Shape& shape : {Shape{}, Shape{5}, Shape{2, 3}, Shape{2, 1, 3, 4}, Shape{0, 3}}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " " + shape_to_string(shape));
      Tensor t = patterned(dt, shape);
      const std::string bytes = serialize_npy(t);
      ASSERT_FALSE(bytes.empty());
      auto back = parse_npy(bytes, "memory");
      ASSERT_TRUE(back.ok()) << back.status().message();
      expect_same_tensor(t, *back);
    }
  }
}

TEST(Npy, WritesNumpysHeaderLayout) {
  const std::string bytes = serialize_npy(patterned(DType::kFloat32, {2, 3}));
  ASSERT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_len = static_cast<unsigned char>(bytes[8]) | static_cast<unsigned char>(bytes[9]) << 8;
  EXPECT_EQ((10 + header_len) % 64, 0u);  // numpy aligns the data to 64 bytes
  EXPECT_EQ(bytes[10 + header_len - 1], '\n');
  const std::string header = bytes.substr(10, header_len);
  EXPECT_NE(header.find("'descr': '<f4'"), std::string::npos) << header;
  EXPECT_NE(header.find("'fortran_order': False"), std::string::npos) << header;
  EXPECT_NE(header.find("'shape': (2, 3)"), std::string::npos) << header;
  EXPECT_EQ(bytes.size(), 10 + header_len + 6 * 4);
  // One-element tuples need Python's trailing comma; scalars are "()".
  EXPECT_NE(serialize_npy(patterned(DType::kInt64, {7})).find("'shape': (7,)"), std::string::npos);
  EXPECT_NE(serialize_npy(Tensor::scalar<double>(1.5)).find("'shape': ()"), std::string::npos);
  EXPECT_NE(serialize_npy(patterned(DType::kBool, {2})).find("'descr': '|b1'"), std::string::npos);
  EXPECT_NE(serialize_npy(patterned(DType::kUInt8, {2})).find("'descr': '|u1'"), std::string::npos);
}

TEST(Npy, ParsesHandWrittenHeaders) {
  const std::string data = le_int32s({1, -2, 3, 400000});
  // Version 1.0 as numpy writes it.
  auto a = parse_npy(npy_with_header(1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }", data), "a");
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ(a->dtype(), DType::kInt32);
  EXPECT_EQ(a->shape(), (Shape{2, 2}));
  EXPECT_EQ(a->to_int64_vector(), (std::vector<int64_t>{1, -2, 3, 400000}));
  // Versions 2.0 and 3.0 (4-byte length), other key order, double quotes,
  // no trailing comma, 16-byte alignment as old numpy wrote it.
  for (int major : {2, 3}) {
    auto b = parse_npy(npy_with_header(major, "{\"shape\": (4,), \"fortran_order\": False, \"descr\": \"<i4\"}", data, 16), "b");
    ASSERT_TRUE(b.ok()) << b.status().message();
    EXPECT_EQ(b->shape(), (Shape{4}));
    EXPECT_EQ(b->to_int64_vector(), (std::vector<int64_t>{1, -2, 3, 400000}));
  }
  // Single-byte types may carry any byte-order mark.
  auto c = parse_npy(npy_with_header(1, "{'descr': '<u1', 'fortran_order': False, 'shape': (3,), }", "\x01\x02\xff"), "c");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->dtype(), DType::kUInt8);
  EXPECT_EQ(c->get_as_int64(2), 255);
  // Fortran order is harmless when at most one dimension exceeds 1.
  auto d = parse_npy(npy_with_header(1, "{'descr': '<i4', 'fortran_order': True, 'shape': (1, 4), }", data), "d");
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->shape(), (Shape{1, 4}));
}

TEST(Npy, RejectsWhatItCannotRepresent) {
  const std::string data = le_int32s({1, 2, 3, 4});
  struct Case {
    const char* dict;
    ErrorCode code;
  } cases[] = {
      {"{'descr': '<i4', 'fortran_order': True, 'shape': (2, 2), }", ErrorCode::kUnsupported},
      {"{'descr': '>i4', 'fortran_order': False, 'shape': (2, 2), }", ErrorCode::kUnsupported},
      {"{'descr': '|O', 'fortran_order': False, 'shape': (2, 2), }", ErrorCode::kUnsupported},
      {"{'descr': '<c8', 'fortran_order': False, 'shape': (2, 1), }", ErrorCode::kUnsupported},
      {"{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (4,), }", ErrorCode::kParse},
      {"{'descr': '<i4', 'fortran_order': False, 'shape': (-1,), }", ErrorCode::kParse},
      {"{'descr': '<i4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 99999999999), }", ErrorCode::kParse},
      {"{'descr': '<i4', 'fortran_order': False, 'shape': (5,), }", ErrorCode::kParse},    // data too short
      {"{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", ErrorCode::kParse},    // data too long
      {"{'descr': '<i4', 'fortran_order': False, }", ErrorCode::kParse},                  // no shape
      {"{'descr': '<i4', 'fortran_order': 0, 'shape': (4,), }", ErrorCode::kParse},
      {"{'descr': '<i4', 'fortran_order': False, 'shape': (4,), 'extra': 1}", ErrorCode::kParse},
      {"{'descr': '<i4', 'fortran_order': False, 'shape': (4,)", ErrorCode::kParse},
      {"not a dict at all", ErrorCode::kParse},
  };
  for (const auto& c : cases) {
    auto r = parse_npy(npy_with_header(1, c.dict, data), "case");
    ASSERT_FALSE(r.ok()) << c.dict;
    EXPECT_EQ(r.status().code(), c.code) << c.dict << ": " << r.status().message();
    EXPECT_NE(r.status().message().find("case"), std::string::npos) << "error should name the input";
  }
  // Bool arrays hold only 0 and 1.
  EXPECT_FALSE(parse_npy(npy_with_header(1, "{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", "\x01\x07"), "b").ok());
  // Bad magic and an unknown format version.
  EXPECT_FALSE(parse_npy("\x93NUMPX\x01\x00\x00\x00", "m").ok());
  EXPECT_EQ(parse_npy(npy_with_header(9, "{}", ""), "v").status().code(), ErrorCode::kUnsupported);
}

TEST(Npy, EveryTruncationIsAnError) {
  const std::string bytes = serialize_npy(patterned(DType::kInt16, {3, 5}));
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto r = parse_npy(bytes.substr(0, n), "cut");
    EXPECT_FALSE(r.ok()) << "prefix of " << n << " bytes parsed";
  }
}

TEST(Npy, FileRoundTripAndMissingFile) {
  const std::string path = temp_path("t.npy");
  Tensor t = patterned(DType::kFloat32, {4, 4});
  ASSERT_TRUE(write_npy(t, path).ok());
  auto back = read_npy(path);
  ASSERT_TRUE(back.ok()) << back.status().message();
  expect_same_tensor(t, *back);
  fs::remove(path);
  EXPECT_EQ(read_npy(path).status().code(), ErrorCode::kNotFound);
  EXPECT_FALSE(write_npy(Tensor(DType::kString, {1}), path).ok());
  EXPECT_FALSE(fs::exists(path));
}

TEST(Npy, BFloat16IsWidenedExactly) {
  Tensor t(DType::kBFloat16, {3});
  const float values[] = {1.5f, -2.25f, 65536.f};
  for (int i = 0; i < 3; ++i) t.data<uint16_t>()[i] = float_to_bfloat16(values[i]);
  auto back = parse_npy(serialize_npy(t), "bf16");
  ASSERT_TRUE(back.ok()) << back.status().message();
  ASSERT_EQ(back->dtype(), DType::kFloat32);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(back->data<float>()[i], values[i]);
}

// np.savez(f, a=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.array([-1, 2, 300], dtype=np.int16)), numpy 1.24.2
const std::string kNumpySavez(
    "\x50\x4b\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x21\x00\x4f\xe9\x00\x2a\x98\x00\x00\x00\x98\x00"
    "\x00\x00\x05\x00\x14\x00\x61\x2e\x6e\x70\x79\x01\x00\x10\x00\x98\x00\x00\x00\x00\x00\x00\x00\x98"
    "\x00\x00\x00\x00\x00\x00\x00\x93\x4e\x55\x4d\x50\x59\x01\x00\x76\x00\x7b\x27\x64\x65\x73\x63\x72"
    "\x27\x3a\x20\x27\x3c\x66\x34\x27\x2c\x20\x27\x66\x6f\x72\x74\x72\x61\x6e\x5f\x6f\x72\x64\x65\x72"
    "\x27\x3a\x20\x46\x61\x6c\x73\x65\x2c\x20\x27\x73\x68\x61\x70\x65\x27\x3a\x20\x28\x32\x2c\x20\x33"
    "\x29\x2c\x20\x7d\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20"
    "\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20"
    "\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x0a\x00\x00\x00\x00\x00\x00\x80\x3f\x00"
    "\x00\x00\x40\x00\x00\x40\x40\x00\x00\x80\x40\x00\x00\xa0\x40\x50\x4b\x03\x04\x14\x00\x00\x00\x00"
    "\x00\x00\x00\x21\x00\x7e\x35\xe7\x11\x86\x00\x00\x00\x86\x00\x00\x00\x05\x00\x14\x00\x62\x2e\x6e"
    "\x70\x79\x01\x00\x10\x00\x86\x00\x00\x00\x00\x00\x00\x00\x86\x00\x00\x00\x00\x00\x00\x00\x93\x4e"
    "\x55\x4d\x50\x59\x01\x00\x76\x00\x7b\x27\x64\x65\x73\x63\x72\x27\x3a\x20\x27\x3c\x69\x32\x27\x2c"
    "\x20\x27\x66\x6f\x72\x74\x72\x61\x6e\x5f\x6f\x72\x64\x65\x72\x27\x3a\x20\x46\x61\x6c\x73\x65\x2c"
    "\x20\x27\x73\x68\x61\x70\x65\x27\x3a\x20\x28\x33\x2c\x29\x2c\x20\x7d\x20\x20\x20\x20\x20\x20\x20"
    "\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20"
    "\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20\x20"
    "\x20\x20\x20\x20\x20\x0a\xff\xff\x02\x00\x2c\x01\x50\x4b\x01\x02\x14\x03\x14\x00\x00\x00\x00\x00"
    "\x00\x00\x21\x00\x4f\xe9\x00\x2a\x98\x00\x00\x00\x98\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x80\x01\x00\x00\x00\x00\x61\x2e\x6e\x70\x79\x50\x4b\x01\x02\x14\x03\x14\x00\x00"
    "\x00\x00\x00\x00\x00\x21\x00\x7e\x35\xe7\x11\x86\x00\x00\x00\x86\x00\x00\x00\x05\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x80\x01\xcf\x00\x00\x00\x62\x2e\x6e\x70\x79\x50\x4b\x05\x06\x00\x00"
    "\x00\x00\x02\x00\x02\x00\x66\x00\x00\x00\x8c\x01\x00\x00\x00\x00",
    520);
// np.savez_compressed(f, x=np.arange(100, dtype=np.int64), y=np.array([True, False])), numpy 1.24.2
const std::string kNumpySavezCompressed(
    "\x50\x4b\x03\x04\x14\x00\x00\x00\x08\x00\x00\x00\x21\x00\xf4\x01\x70\xf0\xff\x00\x00\x00\xa0\x03"
    "\x00\x00\x05\x00\x14\x00\x78\x2e\x6e\x70\x79\x01\x00\x10\x00\xa0\x03\x00\x00\x00\x00\x00\x00\xff"
    "\x00\x00\x00\x00\x00\x00\x00\x9d\xcc\x69\x33\x42\x61\x00\xc5\xf1\x5b\x48\x24\x4b\x76\x15\x8f\xf5"
    "\x29\x2e\x6e\xd6\xa4\x94\x2d\x4b\x8b\x8a\x90\x2d\x57\x5d\x93\x19\x23\x73\xaf\xf1\xc6\xf4\x29\x7c"
    "\x61\x99\xf9\xfb\x02\xce\x9b\xdf\x9c\xf3\xe2\x7c\x67\x8b\x99\x5c\xc9\xa6\x7c\x2a\x5f\xb2\x6a\x58"
    "\x15\x53\x46\x84\x8c\xbe\x84\xa5\x2a\xe4\x73\xdd\xfc\x30\xf5\xb7\x72\xdd\xac\x1a\xbf\x7b\x52\x7f"
    "\xb5\x8c\xe6\x6e\xd5\xf4\x77\xa3\xd9\x03\x21\x4d\x53\x83\xaa\x68\x88\x7f\xa7\x53\x21\x36\xb4\x63"
    "\x0b\xb6\x62\x1b\x3a\xb0\x1d\x9d\xd8\x81\x7f\x87\x2e\xec\x42\x37\x76\x63\x0f\xf6\x62\x1f\x7a\xb0"
    "\x1f\x07\x70\x10\x87\x70\x18\x47\x70\x14\xc7\xd0\x8b\x3e\xf4\xe3\x38\x4e\xa0\xc0\x49\x9c\xc2\x69"
    "\x9c\xc1\x59\x9c\x43\x89\x01\x0c\xe2\x3c\x2e\xa0\x8a\x8b\xb8\x84\xcb\xa8\x61\x08\x57\x70\x15\xd7"
    "\x70\x1d\x37\x70\x13\xc3\xb8\x85\x11\xdc\xc6\x28\xc6\x70\x07\xe3\x98\xc0\x5d\xdc\xc3\x7d\x3c\xc0"
    "\x43\x4c\xe2\x11\x1e\xe3\x09\x9e\x62\x0a\xd3\x98\xc1\x2c\x9e\x61\x0e\xf3\x58\xc0\x73\xbc\xc0\x22"
    "\x5e\xe2\x15\x5e\x63\x09\x6f\xf0\x16\xef\xf0\x1e\x1f\xb0\x8c\x8f\xa8\xe3\x13\x56\xf0\x07\x50\x4b"
    "\x03\x04\x14\x00\x00\x00\x08\x00\x00\x00\x21\x00\xee\x19\xbb\x5d\x46\x00\x00\x00\x82\x00\x00\x00"
    "\x05\x00\x14\x00\x79\x2e\x6e\x70\x79\x01\x00\x10\x00\x82\x00\x00\x00\x00\x00\x00\x00\x46\x00\x00"
    "\x00\x00\x00\x00\x00\x9b\xec\x17\xea\x1b\x10\xc9\xc8\x50\xc6\x50\xad\x9e\x92\x5a\x9c\x5c\xa4\x6e"
    "\xa5\xa0\x5e\x93\x64\xa8\xae\xa3\xa0\x9e\x96\x5f\x54\x52\x94\x98\x17\x9f\x5f\x94\x92\x0a\x12\x77"
    "\x4b\xcc\x29\x4e\x05\x8a\x17\x67\x24\x16\xa4\x02\xf9\x1a\x46\x3a\x9a\x3a\x0a\xb5\x0a\x14\x00\x2e"
    "\x46\x06\x00\x50\x4b\x01\x02\x14\x03\x14\x00\x00\x00\x08\x00\x00\x00\x21\x00\xf4\x01\x70\xf0\xff"
    "\x00\x00\x00\xa0\x03\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x01\x00\x00\x00"
    "\x00\x78\x2e\x6e\x70\x79\x50\x4b\x01\x02\x14\x03\x14\x00\x00\x00\x08\x00\x00\x00\x21\x00\xee\x19"
    "\xbb\x5d\x46\x00\x00\x00\x82\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x01"
    "\x36\x01\x00\x00\x79\x2e\x6e\x70\x79\x50\x4b\x05\x06\x00\x00\x00\x00\x02\x00\x02\x00\x66\x00\x00"
    "\x00\xb3\x01\x00\x00\x00\x00",
    559);

TEST(Npz, RoundTripKeepsNamesOrderAndValues) {
  const std::string path = temp_path("rt.npz");
  NamedTensors arrays;
  for (DType dt : kNpyDTypes) arrays.emplace_back(std::string("arr_") + dtype_name(dt), patterned(dt, {3, 2}));
  arrays.emplace_back("scalar", Tensor::scalar<float>(3.25f));
  arrays.emplace_back("empty", Tensor(DType::kInt64, {0}));
  ASSERT_TRUE(write_npz(arrays, path).ok());
  const std::string first = read_bytes(path);
  auto back = read_npz(path);
  ASSERT_TRUE(back.ok()) << back.status().message();
  ASSERT_EQ(back->size(), arrays.size());
  for (size_t i = 0; i < arrays.size(); ++i) {
    SCOPED_TRACE(arrays[i].first);
    EXPECT_EQ((*back)[i].first, arrays[i].first);
    expect_same_tensor((*back)[i].second, arrays[i].second);
  }
  // Same inputs, same bytes.
  ASSERT_TRUE(write_npz(arrays, path).ok());
  EXPECT_EQ(read_bytes(path), first);
  fs::remove(path);
}

TEST(Npz, RejectsBadArrayLists) {
  const std::string path = temp_path("bad.npz");
  NamedTensors dup = {{"a", Tensor::scalar<float>(1)}, {"a", Tensor::scalar<float>(2)}};
  EXPECT_FALSE(write_npz(dup, path).ok());
  NamedTensors unnamed = {{"", Tensor::scalar<float>(1)}};
  EXPECT_FALSE(write_npz(unnamed, path).ok());
  EXPECT_FALSE(fs::exists(path));
}

TEST(Npz, ReadsNumpysOwnFiles) {
  const std::string path = temp_path("np.npz");
  write_bytes(path, kNumpySavez);
  auto a = read_npz(path);
  ASSERT_TRUE(a.ok()) << a.status().message();
  ASSERT_EQ(a->size(), 2u);
  EXPECT_EQ((*a)[0].first, "a");
  EXPECT_EQ((*a)[0].second.shape(), (Shape{2, 3}));
  EXPECT_EQ((*a)[0].second.to_float_vector(), (std::vector<float>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ((*a)[1].first, "b");
  EXPECT_EQ((*a)[1].second.dtype(), DType::kInt16);
  EXPECT_EQ((*a)[1].second.to_int64_vector(), (std::vector<int64_t>{-1, 2, 300}));

  write_bytes(path, kNumpySavezCompressed);  // deflated members
  auto c = read_npz(path);
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->size(), 2u);
  EXPECT_EQ((*c)[0].first, "x");
  ASSERT_EQ((*c)[0].second.numel(), 100);
  for (int64_t i = 0; i < 100; ++i) EXPECT_EQ((*c)[0].second.get_as_int64(i), i);
  EXPECT_EQ((*c)[1].second.dtype(), DType::kBool);
  EXPECT_EQ((*c)[1].second.to_int64_vector(), (std::vector<int64_t>{1, 0}));
  fs::remove(path);
}

// Hostile archives: every truncation and many single-byte corruptions must
// give an error or (for harmless bytes) a result, never a crash or a hang.
TEST(Npz, CorruptArchivesGiveErrorsNotCrashes) {
  for (const std::string* fixture : {&kNumpySavez, &kNumpySavezCompressed}) {
    for (size_t n = 0; n < fixture->size(); ++n)
      EXPECT_FALSE(parse_npz(fixture->substr(0, n), "cut").ok()) << "prefix of " << n << " bytes read";
    std::mt19937 rng(1234);
    for (size_t pos = 0; pos < fixture->size(); ++pos) {
      for (int trial = 0; trial < 4; ++trial) {
        std::string bad = *fixture;
        bad[pos] = static_cast<char>(bad[pos] ^ (1 + rng() % 255));
        auto r = parse_npz(bad, "flipped");
        if (r.ok()) continue;  // e.g. a timestamp byte
        EXPECT_FALSE(r.status().message().empty());
      }
    }
  }
  const std::string path = temp_path("corrupt.npz");
  // A flipped data byte in a stored member is caught by the CRC.
  std::string bad = kNumpySavez;
  bad[30 + 5 + 20 + 128 + 4] ^= 0x40;  // member a's second float: local header, name, zip64 extra, npy header
  write_bytes(path, bad);
  auto r = read_npz(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("CRC"), std::string::npos) << r.status().message();

  std::mt19937 rng(42);
  std::string noise(4096, '\0');
  for (char& ch : noise) ch = static_cast<char>(rng());
  write_bytes(path, noise);
  EXPECT_FALSE(read_npz(path).ok());
  write_bytes(path, "");
  EXPECT_FALSE(read_npz(path).ok());
  fs::remove(path);
  EXPECT_EQ(read_npz(path).status().code(), ErrorCode::kNotFound);
}

// An end record that points the central directory past the end of the file.
TEST(Npz, OffsetsBeyondTheFileAreRejected) {
  const std::string path = temp_path("offsets.npz");
  std::string bad = kNumpySavez;
  const size_t end = bad.size() - 22;
  bad[end + 16] = '\x7f';  // central directory offset high byte
  write_bytes(path, bad);
  auto r = read_npz(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kParse);
  fs::remove(path);
}

std::string idx_bytes(unsigned char type, const std::vector<uint32_t>& dims, const std::string& data) {
  std::string s = {'\0', '\0', static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims)
    for (int i = 3; i >= 0; --i) s += static_cast<char>((d >> (8 * i)) & 0xff);
  return s + data;
}

void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  gzclose(f);
}

TEST(Idx, ReadsRawAndGzipped) {
  std::string pixels;
  for (int i = 0; i < 2 * 3 * 4; ++i) pixels += static_cast<char>(i * 10);
  const std::string bytes = idx_bytes(0x08, {2, 3, 4}, pixels);
  const std::string raw = temp_path("a.idx"), gz = temp_path("a.idx.gz");
  write_bytes(raw, bytes);
  write_gz(gz, bytes);
  for (const auto& path : {raw, gz}) {
    SCOPED_TRACE(path);
    auto t = read_idx(path);
    ASSERT_TRUE(t.ok()) << t.status().message();
    EXPECT_EQ(t->dtype(), DType::kUInt8);
    EXPECT_EQ(t->shape(), (Shape{2, 3, 4}));
    EXPECT_EQ(t->get_as_int64(23), 230);
    auto first = read_idx(path, 1);
    ASSERT_TRUE(first.ok()) << first.status().message();
    EXPECT_EQ(first->shape(), (Shape{1, 3, 4}));
    EXPECT_EQ(first->get_as_int64(11), 110);
  }
  fs::remove(raw);
  fs::remove(gz);
}

TEST(Idx, ConvertsBigEndianTypes) {
  const std::string path = temp_path("i32.idx");
  write_bytes(path, idx_bytes(0x0C, {2}, std::string("\x00\x00\x01\x02\xff\xff\xff\xfe", 8)));
  auto t = read_idx(path);
  ASSERT_TRUE(t.ok()) << t.status().message();
  EXPECT_EQ(t->dtype(), DType::kInt32);
  EXPECT_EQ(t->to_int64_vector(), (std::vector<int64_t>{258, -2}));
  fs::remove(path);
}

TEST(Idx, TruncatedAndCorruptFilesGiveErrors) {
  const std::string bytes = idx_bytes(0x08, {10, 28, 28}, std::string(10 * 28 * 28, '\x05'));
  const std::string raw = temp_path("t.idx"), gz = temp_path("t.idx.gz");
  for (size_t n : {size_t{0}, size_t{3}, size_t{9}, size_t{16}, bytes.size() - 1}) {
    write_bytes(raw, bytes.substr(0, n));
    EXPECT_FALSE(read_idx(raw).ok()) << n;
  }
  write_bytes(raw, bytes + "x");
  EXPECT_FALSE(read_idx(raw).ok()) << "trailing bytes";
  write_bytes(raw, idx_bytes(0x42, {1}, "a"));
  EXPECT_FALSE(read_idx(raw).ok()) << "unknown type";
  write_bytes(raw, idx_bytes(0x08, {0xffffffffu, 0xffffffffu}, ""));
  EXPECT_FALSE(read_idx(raw).ok()) << "absurd dims";
  // A gzip stream cut short, and one with garbage in the middle.
  write_gz(gz, bytes);
  const std::string compressed = read_bytes(gz);
  for (size_t n : {size_t{5}, compressed.size() / 2, compressed.size() - 9}) {
    write_bytes(gz, compressed.substr(0, n));
    auto r = read_idx(gz);
    EXPECT_FALSE(r.ok()) << n;
  }
  std::string garbled = compressed;
  for (size_t i = 12; i < garbled.size() - 8; i += 3) garbled[i] = static_cast<char>(garbled[i] ^ 0x5a);
  write_bytes(gz, garbled);
  EXPECT_FALSE(read_idx(gz).ok());
  fs::remove(raw);
  fs::remove(gz);
}

bool fashion_mnist_installed() {
  const char* env = std::getenv("QTK_FASHION_MNIST_DIR");
  return fs::exists(std::string(env && *env ? env : "/usr/share/datasets/fashion-mnist") + "/t10k-images-idx3-ubyte.gz");
}

TEST(Dataset, FashionMnistTestSet) {
  if (!fashion_mnist_installed()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  auto ds = load_dataset("fashion-mnist:test");
  ASSERT_TRUE(ds.ok()) << ds.status().message();
  EXPECT_EQ(ds->images.dtype(), DType::kFloat32);
  EXPECT_EQ(ds->images.shape(), (Shape{10000, 1, 28, 28}));
  ASSERT_EQ(ds->labels.size(), 10000u);
  EXPECT_EQ(ds->num_classes, 10);
  EXPECT_EQ(ds->class_names.size(), 10u);
  const float* px = ds->images.data<float>();
  float lo = 1, hi = 0;
  for (int64_t i = 0; i < ds->images.numel(); ++i) {
    lo = std::min(lo, px[i]);
    hi = std::max(hi, px[i]);
  }
  EXPECT_EQ(lo, 0.0f);
  EXPECT_EQ(hi, 1.0f);
  // The test split is balanced: 1000 images per class.
  std::vector<int> per_class(10, 0);
  for (int64_t label : ds->labels) {
    ASSERT_GE(label, 0);
    ASSERT_LT(label, 10);
    ++per_class[label];
  }
  for (int c = 0; c < 10; ++c) EXPECT_EQ(per_class[c], 1000) << "class " << c;

  auto few = load_dataset("fashion-mnist:test", 100);
  ASSERT_TRUE(few.ok()) << few.status().message();
  EXPECT_EQ(few->images.shape(), (Shape{100, 1, 28, 28}));
  ASSERT_EQ(few->labels.size(), 100u);
  EXPECT_TRUE(std::equal(few->labels.begin(), few->labels.end(), ds->labels.begin()));
  EXPECT_EQ(0, std::memcmp(few->images.raw(), ds->images.raw(), few->images.nbytes()));
}

TEST(Dataset, ClearErrors) {
  auto unknown = load_dataset("mnist:test");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("fashion-mnist:test"), std::string::npos);
  EXPECT_FALSE(load_dataset("fashion-mnist:test", -1).ok());

  const char* old = std::getenv("QTK_FASHION_MNIST_DIR");
  const std::string saved = old ? old : "";
  const std::string dir = temp_path("fmnist");
  fs::create_directories(dir);
  ::setenv("QTK_FASHION_MNIST_DIR", dir.c_str(), 1);
  auto missing = load_dataset("fashion-mnist:test");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(missing.status().message().find("apt-get install dataset-fashion-mnist"), std::string::npos);
  // Labels that do not match the images in number.
  write_gz(dir + "/t10k-images-idx3-ubyte.gz", idx_bytes(0x08, {2, 28, 28}, std::string(2 * 28 * 28, '\x10')));
  write_gz(dir + "/t10k-labels-idx1-ubyte.gz", idx_bytes(0x08, {3}, std::string("\x01\x02\x03", 3)));
  EXPECT_FALSE(load_dataset("fashion-mnist:test").ok());
  // A truncated image file.
  write_gz(dir + "/t10k-images-idx3-ubyte.gz", idx_bytes(0x08, {3, 28, 28}, std::string(100, '\x10')));
  auto truncated = load_dataset("fashion-mnist:test");
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.status().message().find("truncated"), std::string::npos) << truncated.status().message();
  // A label out of range.
  write_gz(dir + "/t10k-images-idx3-ubyte.gz", idx_bytes(0x08, {3, 28, 28}, std::string(3 * 28 * 28, '\x10')));
  write_gz(dir + "/t10k-labels-idx1-ubyte.gz", idx_bytes(0x08, {3}, std::string("\x01\x0a\x03", 3)));
  EXPECT_FALSE(load_dataset("fashion-mnist:test").ok());
  // And a good small one: pixel / 255.
  write_gz(dir + "/t10k-labels-idx1-ubyte.gz", idx_bytes(0x08, {3}, std::string("\x01\x09\x03", 3)));
  auto good = load_dataset("fashion-mnist:test");
  ASSERT_TRUE(good.ok()) << good.status().message();
  EXPECT_EQ(good->labels, (std::vector<int64_t>{1, 9, 3}));
  EXPECT_EQ(good->images.data<float>()[0], 16.0f / 255.0f);

  if (old) ::setenv("QTK_FASHION_MNIST_DIR", saved.c_str(), 1);
  else ::unsetenv("QTK_FASHION_MNIST_DIR");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace qtk::data

namespace qtk {
namespace {

TEST(Json, QuotesAndEscapesStrings) {
  EXPECT_EQ(json_quote("plain"), "\"plain\"");
  EXPECT_EQ(json_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(json_quote("line\nnext\ttab\r"), "\"line\\nnext\\ttab\\r\"");
  EXPECT_EQ(json_quote(std::string("\x01\x1f\x7f", 3)), "\"\\u0001\\u001f\\u007f\"");
  EXPECT_EQ(json_quote(std::string("nul\0x", 5)), "\"nul\\u0000x\"");
  EXPECT_EQ(json_quote("caf\xc3\xa9 \xe2\x82\xac"), "\"caf\xc3\xa9 \xe2\x82\xac\"");  // valid UTF-8 passes through
  EXPECT_EQ(json_quote("bad\xff\xc3"), "\"bad\\ufffd\\ufffd\"");                     // invalid bytes do not
  EXPECT_EQ(json_quote("\xc0\xaf"), "\"\\ufffd\\ufffd\"");                            // overlong '/'
  EXPECT_EQ(json_quote("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");                 // a surrogate
}

TEST(Json, NumbersRoundTripAndNonFiniteIsNull) {
  EXPECT_EQ(json_number(0.886), "0.886");
  EXPECT_EQ(json_number(1.0), "1");
  EXPECT_EQ(json_number(-2.5e-7), "-2.5e-07");
  EXPECT_EQ(std::stod(json_number(0.1 + 0.2)), 0.1 + 0.2);
  EXPECT_EQ(json_number(std::numeric_limits<double>::quiet_NaN()), "null");
  EXPECT_EQ(json_number(std::numeric_limits<double>::infinity()), "null");
}

TEST(Json, WriterProducesWellFormedDocuments) {
  JsonWriter compact(false);
  compact.begin_object().key("a").value(1).key("b").begin_array().value("x").value(true).null().value(2.5).end_array();
  compact.key("c").begin_object().end_object().key("d").begin_array().end_array().end_object();
  EXPECT_EQ(compact.str(), "{\"a\":1,\"b\":[\"x\",true,null,2.5],\"c\":{},\"d\":[]}");

  JsonWriter pretty;
  pretty.begin_object().key("shape").begin_array(true).value(int64_t{1}).value("batch").end_array();
  pretty.key("k\"ey").value(uint64_t{18446744073709551615u}).end_object();
  EXPECT_EQ(pretty.str(), "{\n  \"shape\": [1, \"batch\"],\n  \"k\\\"ey\": 18446744073709551615\n}\n");
}

}  // namespace
}  // namespace qtk
