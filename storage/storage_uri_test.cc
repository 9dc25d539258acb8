#include "storage/storage_uri.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

namespace llmc::storage {
namespace {

using ::testing::HasSubstr;

TEST(StorageUri, PlainPathsBecomeAbsolute) {
  auto u = ParseStorageUri("/data/models/llama/");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_TRUE(u->is_file());
  EXPECT_EQ(u->path, "/data/models/llama");
  auto rel = ParseStorageUri("some/dir");
  ASSERT_TRUE(rel.ok());
  EXPECT_EQ(rel->path, (std::filesystem::current_path() / "some/dir").string());
  EXPECT_EQ(ParseStorageUri("/a/./b/../c")->path, "/a/c");
}

TEST(StorageUri, FileUris) {
  auto u = ParseStorageUri("file:///abs/dir%20x/prefix");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->path, "/abs/dir x/prefix");
  EXPECT_EQ(u->ToString(), "file:///abs/dir%20x/prefix");
  EXPECT_EQ(ParseStorageUri("FILE://localhost/x")->path, "/x");
  EXPECT_THAT(ParseStorageUri("file://server/x").status().message(), HasSubstr("not a local host"));
  EXPECT_FALSE(ParseStorageUri("file:relative/x").ok());
  EXPECT_FALSE(ParseStorageUri("file:///a%zz").ok());
  EXPECT_FALSE(ParseStorageUri("file:///a?b").ok());
}

TEST(StorageUri, S3Uris) {
  auto u = ParseStorageUri("s3://my-bucket/models/llama-3/");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_TRUE(u->is_s3());
  EXPECT_EQ(u->bucket, "my-bucket");
  EXPECT_EQ(u->prefix, "models/llama-3");
  EXPECT_EQ(u->ToString(), "s3://my-bucket/models/llama-3");
  EXPECT_EQ(u->Key("config.json"), "models/llama-3/config.json");
  EXPECT_EQ(u->Child("a/b").ToString(), "s3://my-bucket/models/llama-3/a/b");
  auto b = ParseStorageUri("S3://bucket");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->prefix, "");
  EXPECT_EQ(b->ToString(), "s3://bucket");
  EXPECT_EQ(b->Key("x"), "x");
  EXPECT_TRUE(IsS3Uri("S3://x"));
  EXPECT_FALSE(IsS3Uri("/s3://x"));
}

TEST(StorageUri, BadS3Uris) {
  EXPECT_THAT(ParseStorageUri("s3://").status().message(), HasSubstr("no bucket"));
  EXPECT_THAT(ParseStorageUri("s3:///key").status().message(), HasSubstr("no bucket"));
  EXPECT_THAT(ParseStorageUri("s3://bucket//key").status().message(), HasSubstr("empty path segment"));
  EXPECT_THAT(ParseStorageUri("s3://bucket/a//b").status().message(), HasSubstr("'//'"));
  EXPECT_THAT(ParseStorageUri("s3://bucket/a/../b").status().message(), HasSubstr("'..'"));
  EXPECT_THAT(ParseStorageUri("s3://bu cket/a").status().message(), HasSubstr("bucket name"));
  EXPECT_THAT(ParseStorageUri("s3:bucket/a").status().message(), HasSubstr("malformed"));
  EXPECT_THAT(ParseStorageUri("").status().message(), HasSubstr("empty"));
}

TEST(StorageUri, OtherSchemesAreUnimplemented) {
  auto s = ParseStorageUri("gs://bucket/x").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("gs://"));
  EXPECT_THAT(s.message(), HasSubstr("s3://"));
}

TEST(StorageUri, JoinKey) {
  EXPECT_EQ(JoinKey("a/b", "c"), "a/b/c");
  EXPECT_EQ(JoinKey("a/b/", "c"), "a/b/c");
  EXPECT_EQ(JoinKey("", "c"), "c");
  EXPECT_EQ(JoinKey("a", ""), "a");
}

TEST(StorageUri, ValidateRelativeKey) {
  EXPECT_TRUE(ValidateRelativeKey("model.safetensors").ok());
  EXPECT_TRUE(ValidateRelativeKey("sub/dir/x.json").ok());
  EXPECT_TRUE(ValidateRelativeKey("..hidden/x").ok());
  for (const char* bad : {"", "/abs", "a//b", "a/", "../x", "a/../b", "./x", "a\\b"})
    EXPECT_FALSE(ValidateRelativeKey(bad).ok()) << bad;
  EXPECT_FALSE(ValidateRelativeKey(absl::string_view("a\0b", 3)).ok());
}

}  // namespace
}  // namespace llmc::storage
