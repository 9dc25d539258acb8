#include "engine/data/calibration_data.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_join.h"

namespace llmc {
namespace {

using ::testing::HasSubstr;

// A stand-in tokenizer: one id per byte.
absl::StatusOr<std::vector<int32_t>> ByteEncode(absl::string_view s) {
  std::vector<int32_t> ids;
  for (unsigned char c : s) ids.push_back(c);
  return ids;
}

class CalibrationDataTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& text) {
    std::string p = (dir_ / name).string();
    std::ofstream(p) << text;
    return p;
  }
  void SetUp() override {
    std::string t = (std::filesystem::temp_directory_path() / "llmc-calib-XXXXXX").string();
    dir_ = mkdtemp(t.data());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(CalibrationDataTest, TextDocumentsAreSeparatedByBlankLines) {
  auto d = LoadDocuments(Write("a.txt", "first doc\nline two\n\n\n  \nsecond doc\n\nthird"));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(*d, ::testing::ElementsAre("first doc\nline two", "second doc", "third"));
}

TEST_F(CalibrationDataTest, JsonlTextAndMessages) {
  auto d = LoadDocuments(Write("a.jsonl", "{\"text\": \"hello\"}\n\n{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, "
                                          "{\"role\": \"assistant\", \"content\": \"Hello.\"}]}\n"));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(*d, ::testing::ElementsAre("hello", "user: Hi\n\nassistant: Hello."));
}

TEST_F(CalibrationDataTest, BadInputsNameFileAndLine) {
  auto d = LoadDocuments(Write("b.jsonl", "{\"text\": \"ok\"}\nnot json\n"));
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("b.jsonl:2"));
  d = LoadDocuments(Write("c.jsonl", "{\"title\": \"x\"}\n"));
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("\"text\""));
  d = LoadDocuments(Write("e.txt", "\n\n  \n"));
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("no documents"));
  d = LoadDocuments((dir_ / "missing.txt").string());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kNotFound);
  d = LoadDocuments("s3://bucket/data.txt");
  EXPECT_EQ(d.status().code(), absl::StatusCode::kUnimplemented);
  d = LoadDocuments(Write("bad.txt", std::string("abc\xff\xfe", 5)));
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("UTF-8"));
}

TEST_F(CalibrationDataTest, ConcatChunkIsDeterministicAndSeeded) {
  std::vector<std::string> docs;
  for (int i = 0; i < 50; ++i) docs.push_back(std::string(37, static_cast<char>('a' + i % 26)));
  CalibrationOptions o;
  o.num_samples = 5;
  o.seq_len = 16;
  o.seed = 7;
  auto a = BuildCalibrationSamples(docs, ByteEncode, o);
  auto b = BuildCalibrationSamples(docs, ByteEncode, o);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->samples, b->samples);
  ASSERT_EQ(a->samples.size(), 5u);
  for (const auto& s : a->samples) EXPECT_EQ(s.size(), 16u);
  o.seed = 8;
  auto c = BuildCalibrationSamples(docs, ByteEncode, o);
  EXPECT_NE(a->samples, c->samples);
  EXPECT_TRUE(a->warnings.empty());
}

TEST_F(CalibrationDataTest, FewerWindowsThanAskedWarns) {
  CalibrationOptions o;
  o.num_samples = 10;
  o.seq_len = 8;
  o.bos_id = 1;
  auto s = BuildCalibrationSamples({"abcdefghijklmnopqrstu"}, ByteEncode, o);  // 21 tokens, windows of 7 + BOS
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(s->samples.size(), 3u);
  EXPECT_EQ(s->samples[0][0], 1);
  EXPECT_EQ(s->samples[0][1], 'a');
  EXPECT_EQ(s->samples[1][1], 'h');  // kept in file order
  ASSERT_EQ(s->warnings.size(), 1u);
  EXPECT_THAT(s->warnings[0], HasSubstr("only 3 samples"));
  o.seq_len = 64;
  EXPECT_FALSE(BuildCalibrationSamples({"short"}, ByteEncode, o).ok());
}

TEST_F(CalibrationDataTest, PerDocumentTruncatesAndReportsShortOnes) {
  CalibrationOptions o;
  o.mode = SampleMode::kPerDocument;
  o.num_samples = 3;
  o.seq_len = 4;
  auto s = BuildCalibrationSamples({"abcdefgh", "", "xy", "mnopq"}, ByteEncode, o);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->samples.size(), 3u);
  int short_ones = 0;
  for (const auto& x : s->samples) {
    EXPECT_LE(x.size(), 4u);
    short_ones += x.size() < 4;
  }
  EXPECT_EQ(short_ones, 1);
  EXPECT_THAT(absl::StrJoin(s->warnings, "|"), HasSubstr("shorter than 4"));
}

TEST(SeededPermutationTest, IsAPermutationAndStable) {
  auto p = SeededPermutation(1000, 42);
  std::vector<size_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_EQ(p, SeededPermutation(1000, 42));
  // Pinned values: the permutation must not change across platforms or releases (samples are reproducible).
  EXPECT_EQ(SeededPermutation(8, 1), (std::vector<size_t>{4, 6, 3, 5, 1, 7, 2, 0}));
}

}  // namespace
}  // namespace llmc
