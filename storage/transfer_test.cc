#include "storage/transfer.h"

#include <fcntl.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "tests/support/temp_dir.h"
#include "storage/crypto.h"
#include "storage/file_object_store.h"
#include "storage/memory_object_store.h"
#include "storage/storage_stats.h"

namespace llmc::storage {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

using ::llmc::testing::RandomBytes;

using ::llmc::testing::ReadAll;

absl::StatusOr<UploadResult> Upload(const std::string& path, ObjectStore& store, const std::string& key,
                                    const TransferOptions& o) {
  int fd = ::open(path.c_str(), O_RDONLY);
  auto r = UploadFdToStore(fd, path, store, key, o);
  ::close(fd);
  return r;
}

TransferOptions SmallParts() {
  TransferOptions o;
  o.part_size = 5u << 20;
  o.multipart_threshold = 5u << 20;
  o.parallelism = 3;
  return o;
}

TEST(UploadFile, MultipartInParallelParts) {
  testing::TempDir tmp;
  std::string data = RandomBytes((23u << 20) + 17, 1);  // 5 parts, the last short
  std::string path = tmp.Write("big.bin", data);
  MemoryObjectStore store;
  std::atomic<uint64_t> moved{0};
  TransferOptions o = SmallParts();
  o.on_bytes = [&](uint64_t n) { moved += n; };
  const uint64_t uploaded0 = ProcessStorageStats().bytes_uploaded;
  auto r = Upload(path, store, "out/big.bin", o);
  // Every part stored counts in the process's uploaded bytes (the worker's heartbeats report them).
  EXPECT_EQ(ProcessStorageStats().bytes_uploaded - uploaded0, data.size());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->parts, 5);
  EXPECT_EQ(r->size, data.size());
  EXPECT_EQ(r->sha256, Sha256Hex(data));
  EXPECT_EQ(r->uri, "mem://test/out/big.bin");
  EXPECT_EQ(moved.load(), data.size());
  EXPECT_EQ(store.Objects().at("out/big.bin"), data);
  EXPECT_EQ(store.Calls("UploadPart"), 5);
  EXPECT_EQ(store.PendingUploads(), 0u);
}

TEST(UploadFile, SmallFileIsOnePut) {
  testing::TempDir tmp;
  std::string path = tmp.Write("c.json", "{}");
  MemoryObjectStore store;
  auto r = Upload(path, store, "c.json", SmallParts());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->parts, 0);
  EXPECT_EQ(store.Calls("Put"), 1);
  EXPECT_EQ(store.Calls("CreateMultipartUpload"), 0);
  std::string empty = tmp.Write("empty", "");
  ASSERT_TRUE(Upload(empty, store, "empty", SmallParts()).ok());
  EXPECT_EQ(store.Objects().at("empty"), "");
}

TEST(UploadFile, PartFailureAbortsTheUpload) {
  testing::TempDir tmp;
  std::string path = tmp.Write("big.bin", RandomBytes(21u << 20, 2));
  MemoryObjectStore store;
  store.InjectFault("UploadPart", absl::UnavailableError("injected: HTTP 503 SlowDown after 6 attempts"), /*skip=*/2);
  auto r = Upload(path, store, "big.bin", SmallParts());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("injected"));
  EXPECT_EQ(store.Calls("AbortMultipartUpload"), 1);
  EXPECT_EQ(store.PendingUploads(), 0u);
  EXPECT_TRUE(store.Objects().empty());
}

TEST(UploadFile, CompleteFailureAbortsTheUpload) {
  testing::TempDir tmp;
  std::string path = tmp.Write("big.bin", RandomBytes(11u << 20, 3));
  MemoryObjectStore store;
  store.InjectFault("CompleteMultipartUpload", absl::InvalidArgumentError("injected InvalidPart"));
  EXPECT_FALSE(Upload(path, store, "big.bin", SmallParts()).ok());
  EXPECT_EQ(store.PendingUploads(), 0u);
}

TEST(UploadFile, CancelAbortsTheUpload) {
  testing::TempDir tmp;
  std::string path = tmp.Write("big.bin", RandomBytes(30u << 20, 4));
  MemoryObjectStore store;
  std::atomic<bool> cancel{false};
  TransferOptions o = SmallParts();
  o.parallelism = 1;
  o.cancel = &cancel;
  o.on_bytes = [&](uint64_t) { cancel = true; };  // after the first part
  auto r = Upload(path, store, "big.bin", o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_LT(store.Calls("UploadPart"), 6);
  EXPECT_EQ(store.PendingUploads(), 0u);
  EXPECT_TRUE(store.Objects().empty());
}

TEST(UploadFile, ManyPartsGrowThePartSize) {
  testing::TempDir tmp;
  std::string data = RandomBytes(12u << 20, 5);
  std::string path = tmp.Write("f", data);
  MemoryObjectStore store("t", /*min_part_size=*/1);
  TransferOptions o;
  o.part_size = 1;  // raised to the 5 MiB minimum
  o.multipart_threshold = 1;
  auto r = Upload(path, store, "f", o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->parts, 3);
}

TEST(UploadFile, ToLocalPathsAndS3Uris) {
  testing::TempDir tmp;
  std::string data = RandomBytes(3u << 20, 6);
  std::string src = tmp.Write("src.bin", data);
  auto r = UploadFile(src, "file://" + (tmp / "dst/sub/out.bin"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ReadAll(tmp / "dst/sub/out.bin"), data);
  EXPECT_EQ(r->sha256, Sha256Hex(data));
  EXPECT_EQ(UploadFile(tmp / "missing", tmp / "x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(UploadFile(src, "s3://bucket").status().message(), HasSubstr("name the object"));
}

class DownloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    big_ = RandomBytes((9u << 20) + 3, 7);
    ASSERT_TRUE(store_.Put("m/config.json", "{\"a\": 1}").ok());
    ASSERT_TRUE(store_.Put("m/model.safetensors", big_).ok());
    ASSERT_TRUE(store_.Put("m/sub/tok.json", "tok").ok());
    ASSERT_TRUE(store_.Put("m/empty.txt", "").ok());
    ASSERT_TRUE(store_.Put("m/dirmarker/", "").ok());
    ASSERT_TRUE(store_.Put("m/.llmc-staging-old/x", "leftover").ok());
    ASSERT_TRUE(store_.Put("m2/other", "not under m/").ok());
    options_.transfer.part_size = 1u << 20;
    options_.transfer.parallelism = 4;
  }
  MemoryObjectStore store_;
  testing::TempDir tmp_;
  DownloadOptions options_;
  std::string big_;
};

TEST_F(DownloadTest, FetchesEveryObjectWithRangedReads) {
  auto r = DownloadPrefixFromStore(store_, "m", tmp_ / "out", options_);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->files, 4);
  EXPECT_EQ(r->bytes, big_.size() + 8 + 3);
  EXPECT_EQ(ReadAll(tmp_ / "out/model.safetensors"), big_);
  EXPECT_EQ(ReadAll(tmp_ / "out/config.json"), "{\"a\": 1}");
  EXPECT_EQ(ReadAll(tmp_ / "out/sub/tok.json"), "tok");
  EXPECT_TRUE(fs::is_regular_file(tmp_ / "out/empty.txt"));
  EXPECT_FALSE(fs::exists(tmp_ / "out/.llmc-staging-old"));
  EXPECT_FALSE(fs::exists(tmp_ / "out/other"));
  EXPECT_GE(store_.Calls("Read"), 10);  // 9 MiB in 1 MiB chunks, plus the small files
  for (const auto& e : fs::recursive_directory_iterator(tmp_ / "out"))
    EXPECT_EQ(e.path().string().find("llmc-tmp"), std::string::npos) << e.path();
}

TEST_F(DownloadTest, SecondRunSkipsUnchangedObjects) {
  options_.skip_unchanged = true;
  ASSERT_TRUE(DownloadPrefixFromStore(store_, "m", tmp_ / "out", options_).ok());
  int reads = store_.Calls("Read");
  auto again = DownloadPrefixFromStore(store_, "m", tmp_ / "out", options_);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->files, 0);
  EXPECT_EQ(again->skipped, 4);
  EXPECT_EQ(store_.Calls("Read"), reads);
  ASSERT_TRUE(store_.Put("m/sub/tok.json", "changed").ok());
  auto third = DownloadPrefixFromStore(store_, "m", tmp_ / "out", options_);
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->files, 1);
  EXPECT_EQ(ReadAll(tmp_ / "out/sub/tok.json"), "changed");
}

TEST_F(DownloadTest, ReadFailureLeavesNoTemporaryFiles) {
  store_.InjectFault("Read", absl::UnavailableError("injected read failure"), /*skip=*/3);
  auto r = DownloadPrefixFromStore(store_, "m", tmp_ / "out", options_);
  EXPECT_THAT(r.status().message(), HasSubstr("injected"));
  EXPECT_FALSE(fs::exists(tmp_ / "out/model.safetensors"));
  for (const auto& e : fs::recursive_directory_iterator(tmp_ / "out"))
    EXPECT_EQ(e.path().string().find("llmc-tmp"), std::string::npos) << e.path();
}

TEST_F(DownloadTest, KeysThatAreNotPathsAreRefused) {
  ASSERT_TRUE(store_.Put("m/../../etc/evil", "x").ok());
  auto r = DownloadPrefixFromStore(store_, "m", tmp_ / "out", options_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr(".."));
}

TEST_F(DownloadTest, EmptyPrefixIsNotFound) {
  auto r = DownloadPrefixFromStore(store_, "nothing-here", tmp_ / "out", options_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("mem://test/nothing-here: no objects"));
}

TEST_F(DownloadTest, ObjectChangingMidDownloadFails) {
  // Reads are pinned to the listed etag; an object replaced meanwhile fails instead of mixing versions.
  store_.InjectFault("Read", absl::FailedPreconditionError("mem://test/m/model.safetensors: changed"), 1);
  auto r = DownloadPrefixFromStore(store_, "m", tmp_ / "out", options_);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(DownloadPrefix, FromALocalDirectory) {
  testing::TempDir tmp;
  FileObjectStore src(tmp / "src");
  ASSERT_TRUE(src.Put("a/b.bin", RandomBytes(100000, 8)).ok());
  const uint64_t downloaded0 = ProcessStorageStats().bytes_downloaded;
  auto r = DownloadPrefix(tmp / "src", tmp / "dst");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ProcessStorageStats().bytes_downloaded, downloaded0);  // a local copy is no object-storage traffic
  EXPECT_EQ(ReadAll(tmp / "dst/a/b.bin"), ReadAll(tmp / "src/a/b.bin"));
}

}  // namespace
}  // namespace llmc::storage
