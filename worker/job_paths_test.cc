// A confined job (as the worker runs it) on a small synthetic model, with real symbolic links: what it may read and
// write, and that the engine's output names the locations as given.
#include "worker/job_paths.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/mount.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "tests/support/char_tokenizer.h"
#include "tests/support/synthetic_model.h"
#include "tests/support/temp_dir.h"
#include "worker/job_io.h"

namespace llmc {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class ConfinedJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_ / "root";
    fs::create_directories(root_ + "/data/storage");
    fs::create_directories(tmp_ / "outside");
    std::ofstream(root_ + "/data/admin.token") << "ADMIN-TOKEN";
    std::ofstream(tmp_ / "outside/secret") << "SECRET";
    SyntheticLlamaShape shape;
    shape.hidden = 128;
    shape.intermediate = 256;
    shape.layers = 1;
    shape.heads = 2;
    shape.kv_heads = 1;
    shape.vocab = 128;
    ASSERT_TRUE(WriteSyntheticLlama(root_ + "/model", shape, DType::kBF16, 1, 1ull << 30).ok());
    storage::ConfinementRoots r;
    r.read_write = {root_, root_ + "/data/storage"};
    r.denied = {root_ + "/data"};
    auto c = storage::PathConfinement::Create(r);
    ASSERT_TRUE(c.ok()) << c.status();
    confinement_ = *c;
  }
  JobRequest Request(const std::string& output) {
    JobRequest q;
    q.spec.model_path = root_ + "/model";
    q.spec.output_path = output;
    q.spec.scheme = "W8A16";
    q.spec.threads = 1;
    q.job_id = "job1";
    q.output.scratch_dir = tmp_ / "scratch";
    q.confinement = &confinement_;
    return q;
  }
  llmc::testing::TempDir tmp_;
  std::string root_;
  storage::PathConfinement confinement_;
};

TEST_F(ConfinedJobTest, RunsInsideTheRootsAndReportsTheGivenPaths) {
  std::ofstream(root_ + "/model/chat_template.jinja") << "{{ messages }}";
  auto r = RunJobToOutput(Request(root_ + "/out/q"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Slurp(root_ + "/out/q/chat_template.jinja"), "{{ messages }}");
  auto report = nlohmann::json::parse(Slurp(root_ + "/out/q/compression_report.json"));
  EXPECT_EQ(report["model"], root_ + "/model");
  EXPECT_EQ(report["output"], root_ + "/out/q");
  EXPECT_EQ(r->summary.output_path, root_ + "/out/q");
  // The job's private directory of links is gone.
  EXPECT_FALSE(fs::exists(tmp_ / "scratch/job1.rank0.paths"));
}

TEST_F(ConfinedJobTest, AuxiliaryFileLinkedOutOfTheRootsIsRefusedNamingIt) {
  fs::create_symlink(tmp_ / "outside/secret", root_ + "/model/chat_template.jinja");
  auto r = RunJobToOutput(Request(root_ + "/out/q"));
  ASSERT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("chat_template.jinja"));
  EXPECT_FALSE(fs::exists(root_ + "/out/q"));
}

TEST_F(ConfinedJobTest, DataDirectoryFilesNeverReachTheOutput) {
  // `llmc serve --data-dir ./llmc-data` with the current directory as root: a link to the admin token.
  fs::create_symlink("../data/admin.token", root_ + "/model/merges.txt");
  auto r = RunJobToOutput(Request(root_ + "/out/q"));
  ASSERT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("data directory"));
  fs::remove(root_ + "/model/merges.txt");
  // Nor may the output go there.
  r = RunJobToOutput(Request(root_ + "/data/q"));
  ASSERT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied) << r.status();
  EXPECT_FALSE(fs::exists(root_ + "/data/q"));
}

TEST_F(ConfinedJobTest, SwappedOutputParentCannotRedirectTheOutput) {
  // Accepted with ROOT/out/a as the parent; before the job runs, the parent becomes a link to a directory outside.
  fs::create_directory_symlink(tmp_ / "outside", root_ + "/out-a");
  auto r = RunJobToOutput(Request(root_ + "/out-a/q"));
  ASSERT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("out-a"));
  EXPECT_FALSE(fs::exists(tmp_ / "outside/q"));
  EXPECT_EQ(fs::directory_iterator(tmp_ / "outside")->path().filename(), "secret");
}

TEST_F(ConfinedJobTest, ModelOutsideTheRootsIsRefused) {
  fs::copy(root_ + "/model", tmp_ / "outside/model");
  JobRequest q = Request(root_ + "/out/q");
  q.spec.model_path = tmp_ / "outside/model";
  auto r = RunJobToOutput(q);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("model_uri"));
}

// A confined job with an evaluation: the output is read back through the files written (PinWrittenOutput) and the
// report has the figures. A character-level tokenizer keeps every id below the synthetic model's vocabulary.
TEST_F(ConfinedJobTest, EvaluationReadsTheOutputJustWritten) {
  testing::WriteCharTokenizer(root_ + "/model");
  std::string text;
  for (int i = 0; i < 24; ++i) text += "A confined job reads its output back through the files it wrote. ";
  std::ofstream(root_ + "/eval.txt") << text;
  JobRequest q = Request(root_ + "/out/q");
  q.eval_text = root_ + "/eval.txt";
  q.eval_max_windows = 1;
  auto r = RunJobToOutput(q);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->report.contains("eval")) << r->report.dump();
  EXPECT_GT(r->report["eval"]["perplexity_after"].get<double>(), 1.0);
  auto written = nlohmann::json::parse(Slurp(root_ + "/out/q/compression_report.json"));
  EXPECT_EQ(written["eval"]["perplexity_after"], r->report["eval"]["perplexity_after"]);
}

// The evaluation after a job reads the output back through PinWrittenOutput: the files the job wrote, opened
// inside the pinned parent, whatever the output path leads to afterwards.
TEST_F(ConfinedJobTest, WrittenOutputIsReadBackThroughTheFilesWritten) {
  auto paths = JobPaths::Create(&confinement_, tmp_ / "scratch/view");
  ASSERT_TRUE(paths.ok()) << paths.status();
  std::string staging;
  auto out = (*paths)->PinOutput("output_uri", root_ + "/out/q", &staging);
  ASSERT_TRUE(out.ok()) << out.status();
  fs::create_directory(*out);  // the engine renames its staging into place here
  std::ofstream(*out + "/config.json") << "WRITTEN";
  auto view = (*paths)->PinWrittenOutput();
  ASSERT_TRUE(view.ok()) << view.status();
  // The output is swapped for a link to a directory outside the roots after the job wrote it.
  fs::rename(root_ + "/out/q", root_ + "/out/q-moved");
  std::ofstream(tmp_ / "outside/config.json") << "OUTSIDE";
  fs::create_directory_symlink(tmp_ / "outside", root_ + "/out/q");
  EXPECT_EQ(Slurp(*view + "/config.json"), "WRITTEN");
  EXPECT_FALSE(fs::exists(*view + "/secret"));
  // Pinned now, the link is refused rather than followed.
  auto again = JobPaths::Create(&confinement_, tmp_ / "scratch/view2");
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_TRUE((*again)->PinOutput("output_uri", root_ + "/out/q", &staging).ok());
  auto refused = (*again)->PinWrittenOutput();
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied) << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr(root_ + "/out/q"));
}

TEST_F(ConfinedJobTest, WrittenOutputFileSwappedForALinkIsRefused) {
  auto paths = JobPaths::Create(&confinement_, tmp_ / "scratch/view");
  ASSERT_TRUE(paths.ok()) << paths.status();
  std::string staging;
  auto out = (*paths)->PinOutput("output_uri", root_ + "/out/q", &staging);
  ASSERT_TRUE(out.ok()) << out.status();
  fs::create_directory(*out);
  std::ofstream(*out + "/model.safetensors") << "x";
  fs::create_symlink("../../data/admin.token", *out + "/config.json");
  auto view = (*paths)->PinWrittenOutput();
  ASSERT_EQ(view.status().code(), absl::StatusCode::kPermissionDenied) << view.status();
  EXPECT_THAT(view.status().message(), HasSubstr("config.json is a symbolic link"));
}

// A full disk: the job fails RESOURCE_EXHAUSTED naming the file system, not with an I/O error. A 16 KiB tmpfs is
// mounted as the output's parent (needs root or CAP_SYS_ADMIN: skipped, saying so, elsewhere).
TEST_F(ConfinedJobTest, FullDiskIsResourceExhaustedNamingTheFileSystem) {
  const std::string small = root_ + "/small";
  fs::create_directories(small);
  if (::mount("tmpfs", small.c_str(), "tmpfs", 0, "size=16k") != 0)
    GTEST_SKIP() << "cannot mount a tmpfs here (" << std::strerror(errno) << "); needs root or CAP_SYS_ADMIN";
  auto r = RunJobToOutput(Request(small + "/q"));
  ::umount2(small.c_str(), MNT_DETACH);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("no space left on " + small + " (tmpfs"));
  EXPECT_THAT(r.status().message(), HasSubstr(small + "/"));  // the path as the job gave it, not the job's view
  EXPECT_THAT(r.status().message(), ::testing::Not(HasSubstr("/proc/self/fd")));
}

}  // namespace
}  // namespace llmc
