#include "storage/output_publisher.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "tests/support/temp_dir.h"
#include "storage/crypto.h"
#include "storage/file_object_store.h"
#include "storage/memory_object_store.h"

namespace llmc::storage {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

using ::llmc::testing::RandomBytes;

std::vector<std::string> KeysOf(const std::map<std::string, std::string>& m) {
  std::vector<std::string> out;
  for (const auto& [k, v] : m) out.push_back(k);
  return out;
}

class PublisherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    shard_ = RandomBytes(12u << 20, 1);
    tmp_.Write("model.safetensors", shard_);
    tmp_.Write("config.json", "{\"x\": 1}");
    options_.job_id = "job-1";
    options_.transfer.part_size = 5u << 20;
    options_.transfer.multipart_threshold = 5u << 20;
  }
  // A publisher on a memory store it shares with the test.
  std::unique_ptr<OutputPublisher> Open(MemoryObjectStore* store) {
    auto p = OutputPublisher::OpenStore(std::unique_ptr<ObjectStore>(new Shared(store)), options_);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : nullptr;
  }
  // Forwards to a store the test keeps.
  class Shared final : public ObjectStore {
   public:
    explicit Shared(ObjectStore* s) : s_(s) {}
    std::string uri() const override { return s_->uri(); }
    absl::StatusOr<ObjectInfo> Stat(absl::string_view k) override { return s_->Stat(k); }
    absl::Status Read(absl::string_view k, uint64_t o, absl::Span<uint8_t> out, absl::string_view m) override {
      return s_->Read(k, o, out, m);
    }
    absl::StatusOr<std::string> Get(absl::string_view k, uint64_t o, uint64_t l) override { return s_->Get(k, o, l); }
    absl::Status Put(absl::string_view k, absl::string_view d) override { return s_->Put(k, d); }
    absl::StatusOr<std::string> CreateMultipartUpload(absl::string_view k) override { return s_->CreateMultipartUpload(k); }
    absl::StatusOr<std::string> UploadPart(absl::string_view k, absl::string_view u, int n, absl::string_view d) override {
      return s_->UploadPart(k, u, n, d);
    }
    absl::Status CompleteMultipartUpload(absl::string_view k, absl::string_view u,
                                         const std::vector<CompletedPart>& p) override {
      return s_->CompleteMultipartUpload(k, u, p);
    }
    absl::Status AbortMultipartUpload(absl::string_view k, absl::string_view u) override {
      return s_->AbortMultipartUpload(k, u);
    }
    absl::StatusOr<ListResult> ListPage(absl::string_view p, absl::string_view t, int m) override {
      return s_->ListPage(p, t, m);
    }
    absl::Status Delete(absl::string_view k) override { return s_->Delete(k); }
    absl::Status Copy(absl::string_view a, absl::string_view b) override { return s_->Copy(a, b); }

   private:
    ObjectStore* s_;
  };
  testing::TempDir tmp_;
  PublisherOptions options_;
  std::string shard_;
};

TEST_F(PublisherTest, StagesWhileRunningThenCommitsWithManifestLast) {
  MemoryObjectStore store;
  auto pub = Open(&store);
  ASSERT_TRUE(pub->AddFile("model.safetensors", tmp_ / "model.safetensors").ok());
  ASSERT_TRUE(pub->AddFile("config.json", tmp_ / "config.json").ok());
  ASSERT_TRUE(pub->AddBytes("sub/report.json", "{}").ok());
  ASSERT_TRUE(pub->Wait().ok());
  // While the job runs: only staging objects, no manifest, so the output is not complete.
  EXPECT_THAT(KeysOf(store.Objects()),
              ElementsAre(".llmc-staging-job-1/config.json", ".llmc-staging-job-1/model.safetensors",
                          ".llmc-staging-job-1/sub/report.json"));
  EXPECT_EQ(ReadOutputManifestFromStore(store).status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(ReadOutputManifestFromStore(store).status().message(), HasSubstr("incomplete"));
  EXPECT_EQ(pub->staging_uri(), "mem://test/.llmc-staging-job-1/");

  auto m = pub->Commit();
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_THAT(KeysOf(store.Objects()),
              ElementsAre("config.json", "llmc_manifest.json", "model.safetensors", "sub/report.json"));
  EXPECT_EQ(store.Objects().at("model.safetensors"), shard_);
  ASSERT_EQ(m->files.size(), 3u);
  EXPECT_EQ(m->files[1].name, "model.safetensors");
  EXPECT_EQ(m->files[1].size, shard_.size());
  EXPECT_EQ(m->files[1].sha256, Sha256Hex(shard_));
  EXPECT_EQ(m->total_bytes(), shard_.size() + 8 + 2);
  auto read = ReadOutputManifestFromStore(store);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->job_id, "job-1");
  EXPECT_EQ(read->files.size(), 3u);
  EXPECT_EQ(read->files[0].sha256, Sha256Hex("{\"x\": 1}"));
  EXPECT_TRUE(VerifyOutputSizes(store, *read).ok());
  EXPECT_EQ(store.PendingUploads(), 0u);
  // Committed is final.
  EXPECT_EQ(pub->AddBytes("late", "x").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(pub->Commit().ok());
}

TEST_F(PublisherTest, AbortLeavesNothing) {
  MemoryObjectStore store;
  auto pub = Open(&store);
  ASSERT_TRUE(pub->AddFile("model.safetensors", tmp_ / "model.safetensors").ok());
  ASSERT_TRUE(pub->AddBytes("config.json", "{}").ok());
  ASSERT_TRUE(pub->Abort().ok());
  EXPECT_THAT(store.Objects(), IsEmpty());
  EXPECT_EQ(store.PendingUploads(), 0u);
  EXPECT_TRUE(pub->Abort().ok());
  EXPECT_FALSE(pub->Commit().ok());
}

TEST_F(PublisherTest, DestructorAborts) {
  MemoryObjectStore store;
  {
    auto pub = Open(&store);
    ASSERT_TRUE(pub->AddFile("model.safetensors", tmp_ / "model.safetensors").ok());
  }
  EXPECT_THAT(store.Objects(), IsEmpty());
  EXPECT_EQ(store.PendingUploads(), 0u);
}

TEST_F(PublisherTest, FailedUploadFailsCommitAndCleansUp) {
  MemoryObjectStore store;
  store.InjectFault("UploadPart", absl::UnavailableError("injected: HTTP 500 after 6 attempts"), 1);
  auto pub = Open(&store);
  ASSERT_TRUE(pub->AddFile("config.json", tmp_ / "config.json").ok());
  ASSERT_TRUE(pub->AddFile("model.safetensors", tmp_ / "model.safetensors").ok());
  auto m = pub->Commit();
  EXPECT_EQ(m.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(store.Objects(), IsEmpty());
  EXPECT_EQ(store.PendingUploads(), 0u);
  // Later additions report the failure.
  EXPECT_FALSE(pub->AddBytes("x", "y").ok());
}

TEST_F(PublisherTest, FailureWhileCopyingLeavesNoManifestAndNoFiles) {
  MemoryObjectStore store;
  store.InjectFault("Copy", absl::UnavailableError("injected copy failure"), /*skip=*/1);
  auto pub = Open(&store);
  ASSERT_TRUE(pub->AddBytes("a", "1").ok());
  ASSERT_TRUE(pub->AddBytes("b", "2").ok());
  ASSERT_TRUE(pub->AddBytes("c", "3").ok());
  EXPECT_FALSE(pub->Commit().ok());
  EXPECT_THAT(store.Objects(), IsEmpty());
}

TEST_F(PublisherTest, FailureWritingTheManifestLeavesNothing) {
  MemoryObjectStore store;
  auto pub = Open(&store);
  ASSERT_TRUE(pub->AddBytes("a", "1").ok());
  ASSERT_TRUE(pub->Wait().ok());
  store.InjectFault("Put", absl::UnavailableError("injected manifest failure"));
  EXPECT_THAT(pub->Commit().status().message(), HasSubstr("injected manifest failure"));
  EXPECT_THAT(store.Objects(), IsEmpty());
}

TEST_F(PublisherTest, ExistingOutputNeedsOverwrite) {
  MemoryObjectStore store;
  ASSERT_TRUE(store.Put("old.safetensors", "old").ok());
  ASSERT_TRUE(store.Put("config.json", "old").ok());
  ASSERT_TRUE(store.Put("llmc_manifest.json", "{}").ok());
  auto refused = OutputPublisher::OpenStore(std::make_unique<Shared>(&store), options_);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(refused.status().message(), HasSubstr("--overwrite"));
  options_.overwrite = true;
  auto pub = Open(&store);
  ASSERT_TRUE(pub->AddBytes("config.json", "new").ok());
  ASSERT_TRUE(pub->Commit().ok());
  EXPECT_THAT(KeysOf(store.Objects()), ElementsAre("config.json", "llmc_manifest.json"));
  EXPECT_EQ(store.Objects().at("config.json"), "new");
}

TEST_F(PublisherTest, OtherJobsStagingDoesNotMakeAnOutputExist) {
  MemoryObjectStore store;
  ASSERT_TRUE(store.Put(".llmc-staging-other/x", "x").ok());
  auto pub = Open(&store);
  ASSERT_NE(pub, nullptr);
  ASSERT_TRUE(pub->AddBytes("a", "1").ok());
  ASSERT_TRUE(pub->Commit().ok());
  EXPECT_THAT(KeysOf(store.Objects()), ElementsAre(".llmc-staging-other/x", "a", "llmc_manifest.json"));
}

TEST_F(PublisherTest, ReAddingANameReplacesIt) {
  MemoryObjectStore store;
  auto pub = Open(&store);
  ASSERT_TRUE(pub->AddBytes("report.json", "first").ok());
  ASSERT_TRUE(pub->AddBytes("report.json", "second").ok());
  auto m = pub->Commit();
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(store.Objects().at("report.json"), "second");
  EXPECT_EQ(m->files[0].sha256, Sha256Hex("second"));
}

TEST_F(PublisherTest, BadNamesAndIds) {
  MemoryObjectStore store;
  auto pub = Open(&store);
  EXPECT_FALSE(pub->AddBytes("llmc_manifest.json", "x").ok());
  EXPECT_FALSE(pub->AddBytes("../x", "x").ok());
  EXPECT_FALSE(pub->AddBytes(".llmc-staging-job-1/x", "x").ok());
  EXPECT_EQ(pub->AddFile("x", tmp_ / "missing").code(), absl::StatusCode::kNotFound);
  options_.job_id = "a/b";
  EXPECT_FALSE(OutputPublisher::OpenStore(std::make_unique<MemoryObjectStore>(), options_).ok());
  options_.job_id = "";
  EXPECT_FALSE(OutputPublisher::OpenStore(std::make_unique<MemoryObjectStore>(), options_).ok());
  EXPECT_FALSE(pub->Commit().ok());  // nothing to commit
}

TEST_F(PublisherTest, FileOutputsUseAStagingDirectory) {
  std::string out = tmp_ / "ckpt";
  auto pub = OutputPublisher::Open("file://" + out, options_);
  ASSERT_TRUE(pub.ok()) << pub.status();
  ASSERT_TRUE((*pub)->AddFile("model.safetensors", tmp_ / "model.safetensors").ok());
  ASSERT_TRUE((*pub)->AddFile("config.json", tmp_ / "config.json").ok());
  ASSERT_TRUE((*pub)->Wait().ok());
  EXPECT_TRUE(fs::is_regular_file(out + "/.llmc-staging-job-1/model.safetensors"));
  EXPECT_FALSE(fs::exists(out + "/llmc_manifest.json"));
  auto m = (*pub)->Commit();
  ASSERT_TRUE(m.ok()) << m.status();
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(out)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_THAT(names, ElementsAre("config.json", "llmc_manifest.json", "model.safetensors"));
  auto read = ReadOutputManifest(out);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->files.size(), 2u);
  // A second job without overwrite is refused.
  EXPECT_EQ(OutputPublisher::Open(out, options_).status().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(PublisherTest, AbortedFileOutputDisappears) {
  std::string out = tmp_ / "ckpt2";
  {
    auto pub = OutputPublisher::Open(out, options_);
    ASSERT_TRUE(pub.ok());
    ASSERT_TRUE((*pub)->AddFile("model.safetensors", tmp_ / "model.safetensors").ok());
    ASSERT_TRUE((*pub)->Wait().ok());
    ASSERT_TRUE((*pub)->Abort().ok());
  }
  EXPECT_FALSE(fs::exists(out));
}

TEST(OutputManifest, JsonRoundTripAndValidation) {
  OutputManifest m;
  m.job_id = "j";
  m.created = "2026-01-01T00:00:00Z";
  m.files = {{"a", 1, "aa"}, {"b", 2, "bb"}};
  auto back = OutputManifest::FromJson(m.ToJson().dump(), "x");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->files.size(), 2u);
  EXPECT_EQ(back->files[1].size, 2u);
  EXPECT_EQ(m.ToJson()["total_bytes"], 3);
  EXPECT_FALSE(OutputManifest::FromJson("[]", "x").ok());
  EXPECT_FALSE(OutputManifest::FromJson("{\"format\": \"other\", \"files\": []}", "x").ok());
  EXPECT_FALSE(OutputManifest::FromJson("{\"format\": \"llmc-output/1\", \"files\": [{\"name\": \"a\"}]}", "x").ok());
  EXPECT_FALSE(OutputManifest::FromJson("not json", "x").ok());
}

}  // namespace
}  // namespace llmc::storage
