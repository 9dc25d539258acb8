#include "storage/file_object_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/support/temp_dir.h"
#include "storage/memory_object_store.h"

namespace llmc::storage {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> Keys(const std::vector<ObjectInfo>& v) {
  std::vector<std::string> out;
  for (const auto& o : v) out.push_back(o.key);
  return out;
}

// The behaviours every store shares, run on the file store and the memory fake alike.
class StoreContract : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "file") store_ = std::make_unique<FileObjectStore>(tmp_ / "root");
    else store_ = std::make_unique<MemoryObjectStore>("contract", /*min_part_size=*/4);
  }
  testing::TempDir tmp_;
  std::unique_ptr<ObjectStore> store_;
};

TEST_P(StoreContract, PutGetStatRange) {
  ASSERT_TRUE(store_->Put("dir/a b.txt", "hello world").ok());
  auto info = store_->Stat("dir/a b.txt");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->size, 11u);
  EXPECT_FALSE(info->etag.empty());
  EXPECT_EQ(*store_->Get("dir/a b.txt"), "hello world");
  EXPECT_EQ(*store_->Get("dir/a b.txt", 6), "world");
  EXPECT_EQ(*store_->Get("dir/a b.txt", 6, 3), "wor");
  EXPECT_EQ(*store_->Get("dir/a b.txt", 50), "");
  std::string buf(5, '\0');
  auto span = absl::MakeSpan(reinterpret_cast<uint8_t*>(buf.data()), buf.size());
  ASSERT_TRUE(store_->Read("dir/a b.txt", 2, span, info->etag).ok());
  EXPECT_EQ(buf, "llo w");
  EXPECT_EQ(store_->Read("dir/a b.txt", 8, span).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(store_->Read("dir/a b.txt", 0, span, "other-etag").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Stat("missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(store_->Get("missing").status().message(), HasSubstr("missing"));
  ASSERT_TRUE(store_->Put("dir/a b.txt", "v2").ok());
  EXPECT_EQ(*store_->Get("dir/a b.txt"), "v2");
}

TEST_P(StoreContract, ListPagination) {
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(store_->Put("p/k" + std::to_string(i), "x").ok());
  ASSERT_TRUE(store_->Put("q/other", "y").ok());
  ASSERT_TRUE(store_->Put("p/sub/deep", "z").ok());
  auto page = store_->ListPage("p/", "", 3);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(Keys(page->objects), ElementsAre("p/k0", "p/k1", "p/k2"));
  ASSERT_FALSE(page->next_token.empty());
  auto page2 = store_->ListPage("p/", page->next_token, 3);
  EXPECT_THAT(Keys(page2->objects), ElementsAre("p/k3", "p/k4", "p/k5"));
  auto all = store_->List("p/", 3);
  ASSERT_TRUE(all.ok());
  EXPECT_THAT(Keys(*all), ElementsAre("p/k0", "p/k1", "p/k2", "p/k3", "p/k4", "p/k5", "p/k6", "p/sub/deep"));
  EXPECT_THAT(Keys(*store_->List("p/k")), ::testing::SizeIs(7));
  EXPECT_THAT(Keys(*store_->List("")), ::testing::SizeIs(9));
  EXPECT_TRUE(store_->List("nothing/")->empty());
}

TEST_P(StoreContract, DeleteAndDeletePrefix) {
  ASSERT_TRUE(store_->Put("a/1", "x").ok());
  ASSERT_TRUE(store_->Put("a/b/2", "x").ok());
  ASSERT_TRUE(store_->Put("ab", "x").ok());
  EXPECT_TRUE(store_->Delete("a/1").ok());
  EXPECT_TRUE(store_->Delete("a/1").ok());  // already gone
  auto n = store_->DeletePrefix("a/");
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 1);
  EXPECT_THAT(Keys(*store_->List("")), ElementsAre("ab"));
}

TEST_P(StoreContract, MultipartAndCopy) {
  auto id = store_->CreateMultipartUpload("big");
  ASSERT_TRUE(id.ok()) << id.status();
  auto e2 = store_->UploadPart("big", *id, 2, "World");
  auto e1 = store_->UploadPart("big", *id, 1, "Hello");
  ASSERT_TRUE(e1.ok() && e2.ok());
  EXPECT_FALSE(store_->Stat("big").ok());  // not visible before Complete
  EXPECT_TRUE(store_->List("")->empty()) << "parts must not show in listings";
  ASSERT_TRUE(store_->CompleteMultipartUpload("big", *id, {{1, *e1}, {2, *e2}}).ok());
  EXPECT_EQ(*store_->Get("big"), "HelloWorld");
  ASSERT_TRUE(store_->Copy("big", "copy/of/big").ok());
  EXPECT_EQ(*store_->Get("copy/of/big"), "HelloWorld");
  auto aborted = store_->CreateMultipartUpload("gone");
  ASSERT_TRUE(store_->UploadPart("gone", *aborted, 1, "x").ok());
  ASSERT_TRUE(store_->AbortMultipartUpload("gone", *aborted).ok());
  EXPECT_FALSE(store_->Stat("gone").ok());
  EXPECT_THAT(Keys(*store_->List("")), ElementsAre("big", "copy/of/big"));
}

INSTANTIATE_TEST_SUITE_P(Stores, StoreContract, ::testing::Values("file", "memory"));

TEST(FileObjectStore, LayoutOnDisk) {
  testing::TempDir tmp;
  FileObjectStore store(tmp / "out");
  EXPECT_EQ(store.uri(), "file://" + (tmp / "out"));
  ASSERT_TRUE(store.Put("x/y/z.bin", "data").ok());
  EXPECT_TRUE(fs::is_regular_file(tmp / "out/x/y/z.bin"));
  EXPECT_EQ(*store.LocalPath("x/y/z.bin"), tmp / "out/x/y/z.bin");
  // Temporary files of writers in progress are not objects.
  std::ofstream(tmp / "out/x/partial.llmc-tmp-1-2") << "junk";
  EXPECT_THAT(Keys(*store.List("")), ElementsAre("x/y/z.bin"));
  ASSERT_TRUE(store.Delete("x/y/z.bin").ok());
  EXPECT_FALSE(fs::exists(tmp / "out/x/y"));  // emptied directories go too
  EXPECT_TRUE(fs::exists(tmp / "out"));
}

TEST(FileObjectStore, CopyIsAHardLink) {
  testing::TempDir tmp;
  FileObjectStore store(tmp.path());
  ASSERT_TRUE(store.Put("a", "bytes").ok());
  ASSERT_TRUE(store.Copy("a", "b/c").ok());
  EXPECT_TRUE(fs::equivalent(tmp / "a", tmp / "b/c"));
  EXPECT_EQ(store.Copy("missing", "d").code(), absl::StatusCode::kNotFound);
}

TEST(FileObjectStore, RejectsKeysOutsideTheRoot) {
  testing::TempDir tmp;
  FileObjectStore store(tmp / "root");
  for (const char* bad : {"../escape", "a/../../b", "/abs", "a//b"}) {
    EXPECT_EQ(store.Put(bad, "x").code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_FALSE(store.LocalPath(bad).has_value());
  }
  EXPECT_FALSE(fs::exists(tmp / "escape"));
}

TEST(FileObjectStore, MissingRootListsEmpty) {
  FileObjectStore store("/nonexistent/llmc/root");
  auto l = store.List("");
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_TRUE(l->empty());
}

TEST(OpenObjectStore, ByUri) {
  testing::TempDir tmp;
  auto f = OpenObjectStore("file://" + tmp.path());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE((*f)->LocalPath("x").has_value());
  auto p = OpenObjectStore(tmp.path());
  ASSERT_TRUE(p.ok());
  StoreOptions o;
  o.s3.anonymous = true;
  o.s3.endpoint = "http://127.0.0.1:1";
  auto s = OpenObjectStore("s3://bucket/prefix", o);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)->uri(), "s3://bucket/prefix");
  EXPECT_FALSE((*s)->LocalPath("x").has_value());
  EXPECT_EQ(OpenObjectStore("gs://x").status().code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace llmc::storage
