#include "tests/support/temp_dir.h"
#include "engine/io/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace llmc {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

using ::llmc::testing::TempDir;

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// 8-byte little-endian length (by default the JSON's length) + JSON + `data_bytes` bytes of data.
std::string RawFile(const std::string& json, uint64_t data_bytes, std::optional<uint64_t> declared_len = {}) {
  uint64_t n = declared_len.value_or(json.size());
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += json;
  out.append(data_bytes, '\x5a');
  return out;
}

std::vector<uint8_t> Iota(size_t n, uint8_t start) {
  std::vector<uint8_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// ---------------------------------------------------------------------------------------------------------------
// Writer + reader round trip
// ---------------------------------------------------------------------------------------------------------------

TEST(SafetensorsRoundTripTest, WrittenTensorsReadBackExactly) {
  TempDir dir;
  const std::string path = dir / "model.safetensors";
  std::vector<TensorSpec> specs = {
      {"a.weight", DType::kBF16, {2, 3}},      // 12 bytes
      {"b.bias", DType::kI32, {4}},            // 16 bytes
      {"c.scale", DType::kF8E4M3, {5}},        // 5 bytes
      {"d.empty", DType::kF32, {0, 4}},        // 0 bytes
      {"e.scalar", DType::kF64, {}},           // 8 bytes, rank 0
  };
  auto w = SafetensorsWriter::Create(path, specs, {{"format", "pt"}, {"producer", "llmc-test"}});
  ASSERT_TRUE(w.ok()) << w.status();
  std::vector<std::vector<uint8_t>> data;
  for (size_t i = 0; i < specs.size(); ++i) data.push_back(Iota(specs[i].nbytes(), static_cast<uint8_t>(16 * i)));

  // Write out of order, each tensor in two pieces, from several threads.
  std::vector<std::thread> threads;
  std::vector<absl::Status> results(specs.size());
  for (int i = static_cast<int>(specs.size()) - 1; i >= 0; --i) {
    threads.emplace_back([&, i] {
      const auto& d = data[i];
      size_t half = d.size() / 2;
      absl::Status s = (*w)->Write(i, half, absl::MakeConstSpan(d).subspan(half));
      if (s.ok()) s = (*w)->Write(i, 0, absl::MakeConstSpan(d).subspan(0, half));
      results[i] = s;
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& s : results) ASSERT_TRUE(s.ok()) << s;
  const uint64_t total = (*w)->total_size();
  ASSERT_TRUE((*w)->Close().ok());

  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->file_size(), total);
  EXPECT_EQ(fs::file_size(path), total);
  ASSERT_EQ((*f)->tensors().size(), specs.size());
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  EXPECT_EQ((*f)->metadata().at("producer"), "llmc-test");
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorInfo* t = (*f)->Find(specs[i].name);
    ASSERT_NE(t, nullptr) << specs[i].name;
    EXPECT_EQ(t->dtype, specs[i].dtype) << specs[i].name;
    EXPECT_EQ(t->shape, specs[i].shape) << specs[i].name;
    EXPECT_EQ(t->nbytes(), specs[i].nbytes()) << specs[i].name;
    auto bytes = (*f)->Data(*t);
    EXPECT_EQ(std::vector<uint8_t>(bytes.begin(), bytes.end()), data[i]) << specs[i].name;
  }
  EXPECT_EQ((*f)->Find("e.scalar")->numel(), 1u);
  EXPECT_EQ((*f)->Find("d.empty")->numel(), 0u);
  EXPECT_EQ((*f)->Find("missing"), nullptr);
  // Tensors are listed in data order, which is the order they were specified in.
  for (size_t i = 1; i < (*f)->tensors().size(); ++i)
    EXPECT_LE((*f)->tensors()[i - 1].end, (*f)->tensors()[i].begin);
}

TEST(SafetensorsRoundTripTest, HeaderIsPaddedToEightBytes) {
  for (int name_len = 1; name_len <= 9; ++name_len) {
    std::vector<TensorSpec> specs = {{std::string(name_len, 'x'), DType::kU8, {3}}};
    std::vector<uint64_t> offsets;
    uint64_t total = 0;
    std::string header = BuildSafetensorsHeader(specs, {}, &offsets, &total);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(header[i]);
    EXPECT_EQ(n + 8, header.size());
    EXPECT_EQ(header.size() % 8, 0u) << name_len;
    ASSERT_EQ(offsets.size(), 1u);
    EXPECT_EQ(offsets[0], header.size());  // absolute offset of the first tensor
    EXPECT_EQ(total, header.size() + 3);
    // The padded JSON still parses and describes the tensor.
    auto h = ParseSafetensorsHeader(header.substr(8), 3, "mem");
    ASSERT_TRUE(h.ok()) << h.status();
    ASSERT_EQ(h->tensors.size(), 1u);
    EXPECT_EQ(h->tensors[0].name, specs[0].name);
  }
}

TEST(SafetensorsRoundTripTest, ReleaseKeepsDataReadable) {
  TempDir dir;
  const std::string path = dir / "big.safetensors";
  std::vector<TensorSpec> specs = {{"w", DType::kU8, {3, 10000}}};
  auto w = SafetensorsWriter::Create(path, specs);
  ASSERT_TRUE(w.ok()) << w.status();
  std::vector<uint8_t> data(30000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7 + 3);
  ASSERT_TRUE((*w)->Write(0, 0, data).ok());
  ASSERT_TRUE((*w)->Close().ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  const TensorInfo* t = (*f)->Find("w");
  ASSERT_NE(t, nullptr);
  (*f)->Release(*t, 5000, 10000);
  (*f)->Release(*t);
  auto bytes = (*f)->Data(*t);
  EXPECT_EQ(std::vector<uint8_t>(bytes.begin(), bytes.end()), data);
}

TEST(SafetensorsRoundTripTest, EmptyFileWithNoTensors) {
  TempDir dir;
  const std::string path = dir / "empty.safetensors";
  auto w = SafetensorsWriter::Create(path, {});
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE((*w)->Close().ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE((*f)->tensors().empty());
}

// ---------------------------------------------------------------------------------------------------------------
// Writer errors
// ---------------------------------------------------------------------------------------------------------------

TEST(SafetensorsWriterTest, DuplicateNameIsRejected) {
  TempDir dir;
  auto w = SafetensorsWriter::Create(dir / "x.safetensors", {{"t", DType::kU8, {1}}, {"t", DType::kU8, {2}}});
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(w.status()), HasSubstr("'t'"));
  EXPECT_THAT(Msg(w.status()), HasSubstr("x.safetensors"));
}

TEST(SafetensorsWriterTest, WritesOutsideTheTensorAreRejected) {
  TempDir dir;
  const std::string path = dir / "x.safetensors";
  auto w = SafetensorsWriter::Create(path, {{"t", DType::kI32, {2}}});  // 8 bytes
  ASSERT_TRUE(w.ok()) << w.status();
  std::vector<uint8_t> nine(9), four(4);
  absl::Status s = (*w)->Write(0, 0, nine);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(Msg(s), HasSubstr("'t'"));
  EXPECT_FALSE((*w)->Write(0, 5, four).ok());
  EXPECT_FALSE((*w)->Write(0, 9, {}).ok());
  EXPECT_FALSE((*w)->Write(1, 0, four).ok());
  EXPECT_FALSE((*w)->Write(-1, 0, four).ok());
  EXPECT_EQ((*w)->IndexOf("t"), 0);
  EXPECT_EQ((*w)->IndexOf("u"), -1);
}

TEST(SafetensorsWriterTest, CloseReportsIncompleteTensors) {
  TempDir dir;
  auto w = SafetensorsWriter::Create(dir / "x.safetensors", {{"full", DType::kU8, {2}}, {"partial", DType::kU8, {4}}});
  ASSERT_TRUE(w.ok()) << w.status();
  std::vector<uint8_t> two(2);
  ASSERT_TRUE((*w)->Write(0, 0, two).ok());
  ASSERT_TRUE((*w)->Write(1, 0, two).ok());
  absl::Status s = (*w)->Close();
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(Msg(s), HasSubstr("'partial'"));
  EXPECT_THAT(Msg(s), HasSubstr("2 of 4"));
}

TEST(SafetensorsWriterTest, CreateInMissingDirectoryNamesThePath) {
  TempDir dir;
  const std::string path = dir / "no/such/dir/x.safetensors";
  auto w = SafetensorsWriter::Create(path, {{"t", DType::kU8, {1}}});
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(Msg(w.status()), HasSubstr(path));
}

// ---------------------------------------------------------------------------------------------------------------
// Header validation (ParseSafetensorsHeader): every bad header is a DATA_LOSS naming the source.
// ---------------------------------------------------------------------------------------------------------------

struct BadHeaderCase {
  std::string name;
  std::string json;
  uint64_t data_size;
  std::string expected;  // substring of the message
};

class BadHeaderTest : public ::testing::TestWithParam<BadHeaderCase> {};

TEST_P(BadHeaderTest, IsRejectedWithAMessageNamingTheFile) {
  const auto& c = GetParam();
  auto h = ParseSafetensorsHeader(c.json, c.data_size, "dir/shard-7.safetensors");
  ASSERT_FALSE(h.ok()) << c.json;
  EXPECT_EQ(h.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Msg(h.status()), HasSubstr("dir/shard-7.safetensors"));
  EXPECT_THAT(Msg(h.status()), HasSubstr(c.expected));
}

INSTANTIATE_TEST_SUITE_P(
    Headers, BadHeaderTest,
    ::testing::Values(
        BadHeaderCase{"InvalidJson", R"({"a": {"dtype": "F32", )", 4, "not valid JSON"},
        BadHeaderCase{"EmptyText", "", 0, "not valid JSON"},
        BadHeaderCase{"NotAnObject", R"([1, 2, 3])", 0, "not a JSON object"},
        BadHeaderCase{"EntryNotAnObject", R"({"a": 5})", 0, "'a'"},
        BadHeaderCase{"UnknownDType", R"({"a": {"dtype": "F7", "shape": [1], "data_offsets": [0, 1]}})", 1,
                      "unknown dtype 'F7'"},
        BadHeaderCase{"MissingDType", R"({"a": {"shape": [1], "data_offsets": [0, 4]}})", 4, "dtype"},
        BadHeaderCase{"MissingShape", R"({"a": {"dtype": "F32", "data_offsets": [0, 4]}})", 4, "shape"},
        BadHeaderCase{"OffsetsNotAPair", R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})", 8,
                      "data_offsets"},
        BadHeaderCase{"NegativeShape", R"({"a": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]}})", 16,
                      "non-negative"},
        BadHeaderCase{"FractionalShape", R"({"a": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", 4,
                      "non-negative"},
        BadHeaderCase{"NegativeOffset", R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", 4,
                      "non-negative"},
        BadHeaderCase{"StringOffset", R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": ["0", 4]}})", 4,
                      "non-negative"},
        BadHeaderCase{"OffsetsOutsideData", R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8,
                      "outside the data section"},
        BadHeaderCase{"BeginAfterEnd", R"({"a": {"dtype": "U8", "shape": [0], "data_offsets": [8, 4]}})", 16,
                      "'a'"},
        BadHeaderCase{"SizeMismatch", R"({"a": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 8]}})", 16,
                      "needs 12"},
        BadHeaderCase{"Overlap",
                      R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
                          "b": {"dtype": "U8", "shape": [8], "data_offsets": [4, 12]}})",
                      16, "overlap"},
        BadHeaderCase{"ShapeOverflow",
                      R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 4294967296], "data_offsets": [0, 4]}})",
                      4, "'a'"},
        BadHeaderCase{"ByteSizeOverflow",
                      R"({"a": {"dtype": "F64", "shape": [4611686018427387904], "data_offsets": [0, 0]}})", 4,
                      "'a'"},
        BadHeaderCase{"MetadataNotAnObject", R"({"__metadata__": [1]})", 0, "__metadata__"},
        BadHeaderCase{"MetadataValueNotAString", R"({"__metadata__": {"format": 1}})", 0, "'format'"}),
    [](const ::testing::TestParamInfo<BadHeaderCase>& info) { return info.param.name; });

TEST(SafetensorsHeaderTest, ValidHeaderIsSortedByOffset) {
  auto h = ParseSafetensorsHeader(
      R"({"__metadata__": {"format": "pt"},
          "z": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "a": {"dtype": "I8", "shape": [2, 2], "data_offsets": [8, 12]},
          "gap": {"dtype": "U8", "shape": [], "data_offsets": [20, 21]}})",
      21, "mem");
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->tensors.size(), 3u);
  EXPECT_EQ(h->tensors[0].name, "z");
  EXPECT_EQ(h->tensors[1].name, "a");
  EXPECT_EQ(h->tensors[1].shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(h->tensors[1].dtype, DType::kI8);
  EXPECT_EQ(h->tensors[2].name, "gap");
  EXPECT_TRUE(h->tensors[2].shape.empty());
  EXPECT_EQ(h->metadata.at("format"), "pt");
}

TEST(SafetensorsHeaderTest, ZeroSizedTensorsMayShareAnOffset) {
  auto h = ParseSafetensorsHeader(
      R"({"a": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},
          "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
          "c": {"dtype": "F32", "shape": [0, 7], "data_offsets": [4, 4]}})",
      4, "mem");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->tensors.size(), 3u);
}

// ---------------------------------------------------------------------------------------------------------------
// File-level validation (SafetensorsFile::Open)
// ---------------------------------------------------------------------------------------------------------------

TEST(SafetensorsFileTest, MissingFileIsNotFoundNamingThePath) {
  TempDir dir;
  const std::string path = dir / "absent.safetensors";
  auto f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(f.status()), HasSubstr(path));
}

TEST(SafetensorsFileTest, DirectoryIsRejected) {
  TempDir dir;
  auto f = SafetensorsFile::Open(dir.path());
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(Msg(f.status()), HasSubstr(dir.path()));
}

TEST(SafetensorsFileTest, FileShorterThanTheLengthPrefix) {
  TempDir dir;
  for (int size : {0, 1, 7}) {
    const std::string path = dir / ("short" + std::to_string(size) + ".safetensors");
    WriteBytes(path, std::string(size, '\x01'));
    auto f = SafetensorsFile::Open(path);
    ASSERT_FALSE(f.ok()) << size;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(Msg(f.status()), HasSubstr(path));
    EXPECT_THAT(Msg(f.status()), HasSubstr("truncated"));
  }
}

TEST(SafetensorsFileTest, HeaderLengthBeyondTheFile) {
  TempDir dir;
  const std::string path = dir / "long.safetensors";
  const std::string json = R"({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}})";
  WriteBytes(path, RawFile(json, 1, json.size() + 100));
  auto f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Msg(f.status()), HasSubstr(path));
  EXPECT_THAT(Msg(f.status()), HasSubstr("header length"));
}

TEST(SafetensorsFileTest, HugeHeaderLengthIsRejectedWithoutAllocating) {
  TempDir dir;
  const std::string path = dir / "huge.safetensors";
  WriteBytes(path, RawFile("{}", 0, ~uint64_t{0}));
  auto f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(Msg(f.status()), HasSubstr(path));
}

TEST(SafetensorsFileTest, TruncatedDataSection) {
  // A valid file with its last bytes cut off.
  TempDir dir;
  const std::string path = dir / "cut.safetensors";
  auto w = SafetensorsWriter::Create(path, {{"t", DType::kF32, {16}}});
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE((*w)->Write(0, 0, std::vector<uint8_t>(64, 1)).ok());
  ASSERT_TRUE((*w)->Close().ok());
  fs::resize_file(path, fs::file_size(path) - 10);
  auto f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Msg(f.status()), HasSubstr(path));
  EXPECT_THAT(Msg(f.status()), HasSubstr("'t'"));
}

TEST(SafetensorsFileTest, InvalidJsonNamesTheFile) {
  TempDir dir;
  const std::string path = dir / "garbage.safetensors";
  WriteBytes(path, RawFile("this is not json", 0));
  auto f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Msg(f.status()), HasSubstr(path));
}

TEST(SafetensorsFileTest, UnknownDTypeNamesTheFileAndTensor) {
  TempDir dir;
  const std::string path = dir / "dtype.safetensors";
  WriteBytes(path, RawFile(R"({"w": {"dtype": "Q4_K", "shape": [2], "data_offsets": [0, 2]}})", 2));
  auto f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(Msg(f.status()), HasSubstr(path));
  EXPECT_THAT(Msg(f.status()), HasSubstr("Q4_K"));
}

TEST(SafetensorsFileTest, TrailingBytesAfterTheLastTensorAreAllowed) {
  TempDir dir;
  const std::string path = dir / "trailing.safetensors";
  WriteBytes(path, RawFile(R"({"w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}})", 6));
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  auto bytes = (*f)->Data(*(*f)->Find("w"));
  EXPECT_EQ(std::vector<uint8_t>(bytes.begin(), bytes.end()), (std::vector<uint8_t>{0x5a, 0x5a}));
}

}  // namespace
}  // namespace llmc
