#include "storage/path_confinement.h"

#include <fcntl.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/support/temp_dir.h"

namespace llmc::storage {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string ReadFd(int fd) {
  std::string s(256, '\0');
  ssize_t n = ::pread(fd, s.data(), s.size(), 0);
  s.resize(n > 0 ? n : 0);
  return s;
}

void Write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// A root with a model directory, the service's data directory inside it (as with `llmc serve --data-dir
// ./llmc-data` and the current directory as root), DATA/storage as a root of its own, and a secret outside.
class PathConfinementTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_ / "root";
    fs::create_directories(root_ + "/model");
    fs::create_directories(root_ + "/data/storage");
    fs::create_directories(tmp_ / "outside");
    fs::create_directories(tmp_ / "inputs");
    Write(root_ + "/model/config.json", "{}");
    Write(root_ + "/data/admin.token", "ADMIN");
    Write(tmp_ / "outside/secret", "SECRET");
    Write(tmp_ / "inputs/data.jsonl", "DATA");
    ConfinementRoots r;
    r.read_write = {root_, root_ + "/data/storage"};
    r.read_only = {tmp_ / "inputs"};
    r.denied = {root_ + "/data"};
    auto c = PathConfinement::Create(r);
    ASSERT_TRUE(c.ok()) << c.status();
    c_ = *c;
  }
  llmc::testing::TempDir tmp_;
  std::string root_;
  PathConfinement c_;
};

TEST_F(PathConfinementTest, OpensFilesInsideTheRoots) {
  auto f = c_.OpenForRead("model_uri", root_ + "/model/config.json", O_RDONLY);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(ReadFd(f->get()), "{}");
  auto d = c_.OpenForRead("calibration.dataset_uri", tmp_ / "inputs/data.jsonl", O_RDONLY);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(ReadFd(d->get()), "DATA");
  // The path through /proc/self/fd reaches the very file opened.
  std::ifstream in(FdPath(f->get()));
  std::string s;
  in >> s;
  EXPECT_EQ(s, "{}");
}

TEST_F(PathConfinementTest, RefusesPathsOutsideTheRoots) {
  auto f = c_.OpenForRead("model_uri", tmp_ / "outside/secret", O_RDONLY);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(f.status().message(), HasSubstr("outside the allowed"));
  // ".." is resolved before the root is chosen: it cannot climb out either.
  f = c_.OpenForRead("model_uri", root_ + "/model/../../outside/secret", O_RDONLY);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(c_.OpenForRead("model_uri", "relative/path", O_RDONLY).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(PathConfinementTest, AbsoluteSymlinkOutOfTheRootIsRefusedNamingTheFile) {
  fs::create_symlink(tmp_ / "outside/secret", root_ + "/model/chat_template.jinja");
  auto f = c_.OpenForRead("model_uri file chat_template.jinja", root_ + "/model/chat_template.jinja", O_RDONLY);
  ASSERT_EQ(f.status().code(), absl::StatusCode::kPermissionDenied) << f.status();
  EXPECT_THAT(f.status().message(), HasSubstr("chat_template.jinja"));
  EXPECT_THAT(f.status().message(), HasSubstr("symbolic link"));
}

TEST_F(PathConfinementTest, RelativeSymlinksAreFollowedOnlyInsideTheRoot) {
  // Inside: as a Hugging Face cache links snapshots to blobs.
  fs::create_directories(root_ + "/blobs");
  Write(root_ + "/blobs/abc", "BLOB");
  fs::create_symlink("../blobs/abc", root_ + "/model/merges.txt");
  auto f = c_.OpenForRead("model_uri", root_ + "/model/merges.txt", O_RDONLY);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(ReadFd(f->get()), "BLOB");
  // Climbing out with "..".
  fs::create_symlink("../../outside/secret", root_ + "/model/vocab.txt");
  f = c_.OpenForRead("model_uri", root_ + "/model/vocab.txt", O_RDONLY);
  ASSERT_EQ(f.status().code(), absl::StatusCode::kPermissionDenied) << f.status();
  EXPECT_THAT(f.status().message(), HasSubstr("vocab.txt"));
  // A directory component that is a link out.
  fs::create_directory_symlink(tmp_ / "outside", root_ + "/model/sub");
  f = c_.OpenForRead("model_uri", root_ + "/model/sub/secret", O_RDONLY);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kPermissionDenied) << f.status();
}

TEST_F(PathConfinementTest, DataDirectoryIsNeverOpenedEvenInsideARoot) {
  auto f = c_.OpenForRead("model_uri", root_ + "/data/admin.token", O_RDONLY);
  ASSERT_EQ(f.status().code(), absl::StatusCode::kPermissionDenied) << f.status();
  EXPECT_THAT(f.status().message(), HasSubstr("data directory"));
  // Not through a relative link inside the root either.
  fs::create_symlink("../data/admin.token", root_ + "/model/tokenizer.json");
  f = c_.OpenForRead("model_uri", root_ + "/model/tokenizer.json", O_RDONLY);
  ASSERT_EQ(f.status().code(), absl::StatusCode::kPermissionDenied) << f.status();
  EXPECT_THAT(f.status().message(), HasSubstr("data directory"));
  // Nor as an output.
  EXPECT_EQ(c_.OpenDirForWrite("output_uri", root_ + "/data/out").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(fs::exists(root_ + "/data/out"));
  // DATA/storage is a root of its own: allowed.
  auto s = c_.OpenDirForWrite("output_uri", root_ + "/data/storage/run1");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(fs::is_directory(root_ + "/data/storage/run1"));
}

TEST_F(PathConfinementTest, OutputParentIsCreatedAndASwappedParentCannotRedirect) {
  auto d = c_.OpenDirForWrite("output_uri", root_ + "/out/a/b");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(fs::is_directory(root_ + "/out/a/b"));
  // A queued job's output parent replaced with a link to a directory outside.
  fs::remove_all(root_ + "/out/a");
  fs::create_directory_symlink(tmp_ / "outside", root_ + "/out/a");
  auto e = c_.OpenDirForWrite("output_uri", root_ + "/out/a/b");
  ASSERT_EQ(e.status().code(), absl::StatusCode::kPermissionDenied) << e.status();
  EXPECT_THAT(e.status().message(), HasSubstr("out/a"));
  EXPECT_FALSE(fs::exists(tmp_ / "outside/b"));
  // Read-only roots take no output.
  EXPECT_EQ(c_.OpenDirForWrite("output_uri", tmp_ / "inputs/out").status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(PathConfinementTest, OpenEntryRefusesALink) {
  fs::create_symlink(tmp_ / "outside/secret", root_ + "/model/link");
  auto dir = c_.OpenForRead("model_uri", root_ + "/model", O_RDONLY | O_DIRECTORY);
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_TRUE(PathConfinement::OpenEntry(dir->get(), "config.json", O_RDONLY, "model").ok());
  auto l = PathConfinement::OpenEntry(dir->get(), "link", O_RDONLY, "model");
  EXPECT_EQ(l.status().code(), absl::StatusCode::kPermissionDenied);
}

// A staging directory removed after a failed job: by its path, beneath the roots, never through a link.
TEST_F(PathConfinementTest, RemoveTreeRemovesBeneathTheRootsWithoutFollowingLinks) {
  const std::string staging = root_ + "/out/.q.llmc-staging-job1";
  fs::create_directories(staging + "/sub/deeper");
  Write(staging + "/model.safetensors", "x");
  Write(staging + "/sub/deeper/f", "y");
  fs::create_directory_symlink(tmp_ / "outside", staging + "/link-to-outside");
  fs::create_symlink(tmp_ / "outside/secret", staging + "/sub/secret-link");
  ASSERT_TRUE(c_.RemoveTree("staging", staging).ok());
  EXPECT_FALSE(fs::exists(staging));
  EXPECT_TRUE(fs::exists(tmp_ / "outside/secret"));  // the links went, not what they pointed to
  // Nothing there (or no parent): nothing to do.
  EXPECT_TRUE(c_.RemoveTree("staging", staging).ok());
  EXPECT_TRUE(c_.RemoveTree("staging", root_ + "/missing/.q.llmc-staging-job1").ok());
}

TEST_F(PathConfinementTest, RemoveTreeRefusesAParentSwappedForALinkOutOfTheRoots) {
  // The output's parent became a link to a directory outside after the job was queued: the staging name is
  // looked for there only through the walk, which refuses the link.
  fs::create_directories(tmp_ / "outside/.q.llmc-staging-job1");
  Write(tmp_ / "outside/.q.llmc-staging-job1/keep", "KEEP");
  fs::create_directory_symlink(tmp_ / "outside", root_ + "/out");
  absl::Status s = c_.RemoveTree("staging", root_ + "/out/.q.llmc-staging-job1");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_TRUE(fs::exists(tmp_ / "outside/.q.llmc-staging-job1/keep"));
  // Outside every root, in a read-only root, or in the data directory: refused too.
  EXPECT_EQ(c_.RemoveTree("staging", tmp_ / "outside/.q.llmc-staging-job1").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(c_.RemoveTree("staging", tmp_ / "inputs/data.jsonl").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(fs::exists(tmp_ / "inputs/data.jsonl"));
  EXPECT_EQ(c_.RemoveTree("staging", root_ + "/data/admin.token").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(fs::exists(root_ + "/data/admin.token"));
  EXPECT_EQ(c_.RemoveTree("staging", "/").code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llmc::storage
