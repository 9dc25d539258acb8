#include "server/access_policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/support/temp_dir.h"

namespace llmc::server {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

TEST(AccessPolicyTest, RootsAndSymlinks) {
  llmc::testing::TempDir tmp;
  fs::create_directories(tmp / "rw");
  fs::create_directories(tmp / "ro");
  fs::create_directories(tmp / "secret");
  fs::create_symlink(tmp / "secret", tmp / "rw/link");
  auto p = AccessPolicy::Create({tmp / "rw", "s3://bucket/team"}, {"file://" + (tmp / "ro")});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->CheckOutput("spec.output_uri", tmp / "rw/out").ok());
  EXPECT_TRUE(p->CheckOutput("spec.output_uri", "file://" + (tmp / "rw/a/b")).ok());
  EXPECT_TRUE(p->CheckInput("spec.model_uri", tmp / "ro/model").ok());
  EXPECT_TRUE(p->CheckOutput("spec.output_uri", "s3://bucket/team/x").ok());
  // Read-only roots are not for outputs.
  auto ro = p->CheckOutput("spec.output_uri", tmp / "ro/out");
  EXPECT_EQ(ro.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(ro.status().message()), HasSubstr("spec.output_uri"));
  // Prefix on a '/' boundary only; ".." and symlinks resolved.
  EXPECT_EQ(p->CheckOutput("o", tmp / "rw2").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(p->CheckOutput("o", tmp / "rw/../secret/x").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(p->CheckOutput("o", tmp / "rw/link/x").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(p->CheckOutput("o", "s3://bucket/teamb/x").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(p->CheckOutput("o", "s3://other/team/x").status().code(), absl::StatusCode::kPermissionDenied);
  // Relative paths are refused: the server's working directory means nothing to a client.
  auto rel = p->CheckInput("spec.model_uri", "models/x");
  EXPECT_EQ(rel.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(rel.status().message()), HasSubstr("relative"));
  EXPECT_EQ(p->CheckInput("spec.model_uri", "").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(AccessPolicyTest, MissingRootIsAnError) {
  auto p = AccessPolicy::Create({"/nonexistent/llmc-root"}, {});
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llmc::server
