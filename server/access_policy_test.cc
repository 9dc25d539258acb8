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

TEST(AccessPolicyTest, DataDirectoryIsRefusedEvenInsideARoot) {
  // `llmc serve --data-dir ./llmc-data` with the current directory as the root.
  llmc::testing::TempDir tmp;
  fs::create_directories(tmp / "llmc-data/storage");
  auto p = AccessPolicy::Create({tmp.path(), tmp / "llmc-data/storage"}, {}, {tmp / "llmc-data"});
  ASSERT_TRUE(p.ok()) << p.status();
  auto tok = p->CheckInput("spec.eval_text_uri", tmp / "llmc-data/admin.token");
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr("data directory"));
  EXPECT_EQ(p->CheckOutput("spec.output_uri", tmp / "llmc-data/out").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(p->CheckOutput("spec.output_uri", tmp / "llmc-data").status().code(), absl::StatusCode::kPermissionDenied);
  // DATA/storage is a root of its own; the rest of the current directory is allowed.
  EXPECT_TRUE(p->CheckOutput("spec.output_uri", tmp / "llmc-data/storage/out").ok());
  EXPECT_TRUE(p->CheckOutput("spec.output_uri", tmp / "llmc-data2/out").ok());
  EXPECT_EQ(p->local_rw().size(), 2u);
  EXPECT_EQ(p->denied().size(), 1u);
}

TEST(AccessPolicyTest, MissingRootIsAnError) {
  auto p = AccessPolicy::Create({"/nonexistent/llmc-root"}, {});
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llmc::server
