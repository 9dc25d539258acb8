// Jobs on several workers (a gang), end to end with real processes over loopback: every rank of a GPTQ job runs
// (Gloo between the workers, rendezvous through the coordinator), the output is the same run after run, a rank
// killed with SIGKILL (rank 2, then rank 0) makes the job re-form its gang and resume byte-identical, and a
// cancel stops every rank. The fixture model with 16 samples of 128 tokens keeps each job to a few seconds.
#include <signal.h>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/service/service_fixture.h"
#include "tests/support/process.h"

namespace llmc::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr int kRanks = 4;

class ServiceGangTest : public ServiceFixture {
 protected:
  void SetUp() override {
    ServiceFixture::SetUp();
    if (!HaveFixture()) GTEST_SKIP() << "needs " << Fixture();
  }

  // GPTQ W4A16 on the fixture, 16 samples x 128 tokens, on kRanks workers.
  v1::JobSpec GangSpec(const std::string& out) {
    v1::JobSpec s = GptqSpec(out, 16, 128);
    s.set_gpus(kRanks);
    return s;
  }

  // A coordinator and kRanks workers of one thread each, pausing `block_delay_ms` after each durable block.
  void StartGang(int block_delay_ms) {
    StartServer();
    for (int i = 0; i < kRanks; ++i) StartWorker(absl::StrCat("w", i), block_delay_ms, /*threads=*/1);
    WaitWorkers(kRanks);
  }

  // The worker running `rank` of the job now (10 s).
  std::string WorkerOfRank(const std::string& job_id, int rank) {
    for (int i = 0; i < 500; ++i) {
      const v1::ListWorkersResponse workers = ListWorkers();
      for (const auto& w : workers.workers())
        if (w.state() == "BUSY" && w.job_id() == job_id && w.rank() == rank) return w.id();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "no worker runs rank " << rank << " of " << job_id;
    return "";
  }

  // Follows the job until attempt `attempt` has made a block durable, and returns at that event.
  void WaitForBlockOfAttempt(const std::string& job_id, int attempt) {
    bool in_attempt = false;
    const std::string started = absl::StrCat("attempt ", attempt, " on ");
    auto ev = Events(job_id, 0, [&](const v1::JobEvent& e) {
      if (e.type() == "state" && e.state() == v1::RUNNING && absl::StartsWith(e.message(), started)) in_attempt = true;
      return in_attempt && e.type() == "block";
    });
    ASSERT_TRUE(in_attempt && !ev.empty() && ev.back().type() == "block")
        << "attempt " << attempt << " of " << job_id << " made no block durable";
  }
};

TEST_F(ServiceGangTest, FourRanksOnServeReportEveryRankAndRepeatByteIdentical) {
  StartServe(kRanks, {"--threads", "1"});
  WaitWorkers(kRanks);
  v1::Job a;
  ASSERT_TRUE(Create(admin_, "gang-a", GangSpec(work_ + "/a"), &a).ok());
  // While it runs, ListWorkers shows each worker's job and rank.
  std::set<int> ranks;
  for (int i = 0; i < 500 && ranks.size() < kRanks; ++i) {
    ranks.clear();
    const v1::ListWorkersResponse workers = ListWorkers();
    for (const auto& w : workers.workers())
      if (w.state() == "BUSY" && w.job_id() == a.id()) ranks.insert(w.rank());
    if (ranks.size() < kRanks) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(ranks, (std::set<int>{0, 1, 2, 3}));
  v1::Job done = WaitFinal(a.id());
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.error();
  EXPECT_EQ(done.attempts(), 1);
  EXPECT_EQ(done.worker_ids_size(), kRanks);
  // Rank 0's report holds every rank's figures.
  auto report = nlohmann::json::parse(done.summary_json(), nullptr, false);
  ASSERT_TRUE(report.is_object()) << done.summary_json();
  const auto& solve = report["solve"];
  EXPECT_EQ(solve["world_size"], kRanks);
  ASSERT_TRUE(solve["ranks"].is_array());
  ASSERT_EQ(solve["ranks"].size(), static_cast<size_t>(kRanks));
  int samples = 0;
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_EQ(solve["ranks"][r]["rank"], r);
    samples += solve["ranks"][r]["samples"].get<int>();
  }
  EXPECT_EQ(samples, 16);
  // The output is a valid checkpoint: llmc's own reader describes it and runs it.
  std::string out;
  ASSERT_EQ(RunCapture({BinDir() + "llmc", "inspect", work_ + "/a"}, &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("pack-quantized"));
  const std::string text = tmp_.Write("eval.txt", ReadAll(ServiceSharedDir() + "/data/eval.txt").substr(0, 16384));
  ASSERT_EQ(RunCapture({BinDir() + "llmc", "eval", work_ + "/a", "--text", text, "--max-windows", "2", "--threads",
                        "2", "--json"},
                       &out),
            0)
      << out;
  auto eval = nlohmann::json::parse(out, nullptr, false);
  ASSERT_TRUE(eval.is_object() && eval.contains("perplexity")) << out;
  EXPECT_TRUE(std::isfinite(eval["perplexity"].get<double>())) << out;

  // The same job again on the same number of ranks: the same bytes.
  v1::Job b;
  ASSERT_TRUE(Create(admin_, "gang-b", GangSpec(work_ + "/b"), &b).ok());
  done = WaitFinal(b.id());
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.error();
  ExpectSameCheckpoint(work_ + "/a", work_ + "/b");
  EXPECT_TRUE(StagingLeft(work_).empty());
}

TEST_F(ServiceGangTest, KilledRanksReformTheGangAndTheJobResumesByteIdentical) {
  StartGang(/*block_delay_ms=*/300);
  v1::Job ref;
  ASSERT_TRUE(Create(admin_, "reference", GangSpec(work_ + "/ref"), &ref).ok());
  v1::Job r = WaitFinal(ref.id());
  ASSERT_EQ(r.state(), v1::SUCCEEDED) << r.error();

  v1::Job job;
  ASSERT_TRUE(Create(admin_, "killed", GangSpec(work_ + "/out"), &job).ok());
  // Attempt 1: rank 2's worker dies after a durable block, and comes back under the same id (as `llmc serve`
  // restarts its workers).
  WaitForBlockOfAttempt(job.id(), 1);
  const std::string rank2 = WorkerOfRank(job.id(), 2);
  ASSERT_FALSE(rank2.empty());
  ASSERT_EQ(kill(worker_pids_[rank2], SIGKILL), 0);
  StartWorker(rank2, 300, 1);
  // Attempt 2: rank 0's worker (the one writing the output) dies after a durable block; a new worker replaces it.
  WaitForBlockOfAttempt(job.id(), 2);
  const std::string rank0 = WorkerOfRank(job.id(), 0);
  ASSERT_FALSE(rank0.empty());
  ASSERT_EQ(kill(worker_pids_[rank0], SIGKILL), 0);
  StartWorker("w-new", 300, 1);

  v1::Job done = WaitFinal(job.id());
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.error();
  EXPECT_EQ(done.attempts(), 3);
  EXPECT_EQ(done.worker_ids_size(), kRanks);
  int retries = 0;
  std::vector<int> resumed;
  for (const auto& e : Events(job.id(), 0)) {
    retries += e.type() == "state" && e.state() == v1::RETRYING;
    if (int b = ResumedAt(e); b >= 0) resumed.push_back(b);
  }
  EXPECT_EQ(retries, 2);
  ASSERT_EQ(resumed.size(), 2u);  // both later attempts resumed after the blocks made durable before
  EXPECT_GE(resumed[0], 1);
  EXPECT_GT(resumed[1], resumed[0]);
  auto report = nlohmann::json::parse(done.summary_json(), nullptr, false);
  ASSERT_TRUE(report.is_object());
  EXPECT_EQ(report["solve"]["world_size"], kRanks);
  ExpectSameCheckpoint(work_ + "/ref", work_ + "/out");
  EXPECT_TRUE(StagingLeft(work_).empty());
}

// A job that allows fewer ranks (min_gpus) goes on with the workers left when one is lost for good: the gang is
// re-formed smaller, resumes from rank 0's staging (the stored blocks broadcast to the new ranks), and the output
// is a valid checkpoint within the bound of a full run (docs/distributed.md).
TEST_F(ServiceGangTest, ALostWorkerThatDoesNotComeBackShrinksTheGangWhenAllowed) {
  StartGang(/*block_delay_ms=*/300);
  v1::Job job;
  v1::JobSpec spec = GangSpec(work_ + "/out");
  spec.set_min_gpus(2);
  ASSERT_TRUE(Create(admin_, "shrink", spec, &job).ok());
  WaitForBlockOfAttempt(job.id(), 1);
  const std::string rank1 = WorkerOfRank(job.id(), 1);
  ASSERT_FALSE(rank1.empty());
  ASSERT_EQ(kill(worker_pids_[rank1], SIGKILL), 0);  // not restarted
  v1::Job done = WaitFinal(job.id());
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.error();
  EXPECT_EQ(done.attempts(), 2);
  EXPECT_EQ(done.worker_ids_size(), kRanks - 1);
  int resumed = -1;
  for (const auto& e : Events(job.id(), 0))
    if (int b = ResumedAt(e); b >= 0) resumed = b;
  EXPECT_GE(resumed, 1);
  auto report = nlohmann::json::parse(done.summary_json(), nullptr, false);
  ASSERT_TRUE(report.is_object());
  EXPECT_EQ(report["solve"]["world_size"], kRanks - 1);
  std::string out;
  EXPECT_EQ(RunCapture({BinDir() + "llmc", "inspect", work_ + "/out", "--json"}, &out), 0) << out;
  EXPECT_TRUE(StagingLeft(work_).empty());
}

TEST_F(ServiceGangTest, CancelStopsEveryRank) {
  StartGang(/*block_delay_ms=*/300);
  v1::Job job;
  ASSERT_TRUE(Create(admin_, "cancelled", GangSpec(work_ + "/out"), &job).ok());
  WaitForBlockOfAttempt(job.id(), 1);
  v1::Job cancelled;
  ASSERT_TRUE(Cancel(job.id(), &cancelled).ok());
  EXPECT_EQ(cancelled.state(), v1::CANCELLED);
  // Every rank stops and its worker is idle again (WaitWorkers gives up after 10 s).
  const auto t0 = std::chrono::steady_clock::now();
  WaitWorkers(kRanks, "IDLE");
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 5.0) << "the ranks took " << s << " s to stop";
  const v1::ListWorkersResponse workers = ListWorkers();
  for (const auto& w : workers.workers()) EXPECT_TRUE(w.job_id().empty()) << w.id();
  EXPECT_FALSE(fs::exists(work_ + "/out"));
  EXPECT_TRUE(StagingLeft(work_).empty());
  v1::Job final_job;
  ASSERT_TRUE(Get(admin_, job.id(), &final_job).ok());
  EXPECT_EQ(final_job.state(), v1::CANCELLED);
  // The workers take the next job (a data-free one: ranks above 0 return at once).
  v1::JobSpec next;
  next.set_model_uri(Fixture());
  next.set_output_uri(work_ + "/next");
  next.mutable_preset()->set_scheme("W4A16");
  next.set_gpus(kRanks);
  v1::Job n;
  ASSERT_TRUE(Create(admin_, "next", next, &n).ok());
  v1::Job nd = WaitFinal(n.id());
  EXPECT_EQ(nd.state(), v1::SUCCEEDED) << nd.error();
}

}  // namespace
}  // namespace llmc::testing
