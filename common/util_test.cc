#include "common/util.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "common/io_error.h"

namespace llmc {
namespace {

TEST(ParseByteSizeTest, UnitsAndErrors) {
  EXPECT_EQ(*ParseByteSize("4096"), 4096u);
  EXPECT_EQ(*ParseByteSize("5GB"), 5000000000u);
  EXPECT_EQ(*ParseByteSize("500MB"), 500000000u);
  EXPECT_EQ(*ParseByteSize("2MiB"), 2u * 1024 * 1024);
  EXPECT_EQ(*ParseByteSize(" 1.5 kb "), 1500u);
  EXPECT_FALSE(ParseByteSize("").ok());
  EXPECT_FALSE(ParseByteSize("GB").ok());
  EXPECT_FALSE(ParseByteSize("5XB").ok());
  EXPECT_FALSE(ParseByteSize("-5").ok());
}

TEST(FormatBytesTest, Units) {
  EXPECT_EQ(FormatBytes(12), "12 B");
  EXPECT_EQ(FormatBytes(1234567), "1.23 MB");
}

TEST(FileWriteErrorTest, FullDiskNamesTheFileSystem) {
  // An injected ENOSPC on a path of the root file system.
  absl::Status s = FileWriteError(ENOSPC, "cannot write shard.safetensors", "/tmp/llmc-no-such-dir/shard.safetensors");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StartsWith(s.message(), "no space left on /")) << s.message();
  EXPECT_NE(s.message().find("/tmp/llmc-no-such-dir/shard.safetensors"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(" free"), std::string::npos) << s.message();
  s = FileWriteError(EDQUOT, "cannot write x", "/tmp/x");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StartsWith(s.message(), "disk quota exceeded on ")) << s.message();
  EXPECT_EQ(FileWriteError(EIO, "cannot write x", "/tmp/x").code(), absl::StatusCode::kInternal);
  EXPECT_EQ(FileWriteError(EACCES, "cannot write x", "/tmp/x").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(FileSystemOf("/").substr(0, 3), "/ (");
}

TEST(ErrnoToStatusTest, Codes) {
  EXPECT_EQ(ErrnoToStatus(ENOSPC, "x").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoToStatus(ENOENT, "x").code(), absl::StatusCode::kNotFound);
  EXPECT_NE(ErrnoToStatus(ENOSPC, "writing f").message().find("writing f: "), std::string::npos);
}

TEST(IsPortableNameTest, OnlyFileNameSafeCharactersWithinTheLength) {
  EXPECT_TRUE(IsPortableName("job-1.attempt_2", 200));
  EXPECT_TRUE(IsPortableName("a", 1));
  EXPECT_FALSE(IsPortableName("", 200));
  EXPECT_FALSE(IsPortableName("ab", 1));
  EXPECT_FALSE(IsPortableName(".hidden", 200));
  EXPECT_FALSE(IsPortableName("../up", 200));
  EXPECT_FALSE(IsPortableName("a/b", 200));
  EXPECT_FALSE(IsPortableName("sp ace", 200));
  EXPECT_FALSE(IsPortableName(std::string("nul\0", 4), 200));
  EXPECT_FALSE(IsPortableName("\xc3\xa9", 200));
}

}  // namespace
}  // namespace llmc
