// The coordinator against fake worker links: the worker protocol (assignment, progress, durable blocks, the end,
// cancels, leases, gangs) without processes or gRPC. The same flows run end to end over loopback in
// tests/service/service_integration_test.cc.
#include "server/coordinator.h"

#include <filesystem>
#include <fstream>

#include "server/coordinator_test_util.h"
#include "tests/support/temp_dir.h"

namespace llmc::server {
namespace {

using ::testing::Contains;

TEST_F(CoordinatorTest, AssignsAJobAndRecordsItsProgressAndEnd) {
  StartCoordinator();
  FakeWorker w("w1");
  const int64_t session = Connect(&w);
  v1::Job job = Create("r1");
  auto a = w.NextAssignment();
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->job_id(), job.id());
  EXPECT_EQ(a->attempt(), 1);
  EXPECT_EQ(a->rank(), 0);
  EXPECT_EQ(a->world_size(), 1);
  EXPECT_EQ(a->resume_from_block(), 0);
  EXPECT_EQ(a->spec().preset().scheme(), "W4A16");
  EXPECT_FALSE(a->staging_dir().empty());  // local outputs resume from a staging directory
  EXPECT_TRUE(WaitState(job.id(), v1::RUNNING));

  v1::WorkerMessage p;
  p.mutable_progress()->set_job_id(job.id());
  p.mutable_progress()->set_attempt(1);
  p.mutable_progress()->mutable_progress()->set_blocks_done(1);
  p.mutable_progress()->mutable_progress()->set_blocks_total(2);
  Send(&w, session, p);
  BlockDone(&w, session, *a, 0);
  BlockDone(&w, session, *a, 5);  // not the next block: no resume point moves
  EXPECT_EQ(Get(job.id()).finished_blocks(), 1);
  EXPECT_EQ(Get(job.id()).progress().blocks_total(), 2);

  Finish(&w, session, *a, true, R"({"output_bytes": 1234})");
  ASSERT_TRUE(WaitState(job.id(), v1::SUCCEEDED));
  EXPECT_EQ(Get(job.id()).summary_json(), R"({"output_bytes": 1234})");
  const auto types = EventTypes(job.id());
  EXPECT_THAT(types, Contains("progress"));
  EXPECT_THAT(types, Contains("block"));
  EXPECT_THAT(types, Contains("state"));
  // The worker is free again: the next job goes to it.
  v1::Job second = Create("r2");
  auto a2 = w.NextAssignment();
  ASSERT_TRUE(a2.has_value());
  EXPECT_EQ(a2->job_id(), second.id());
}

TEST_F(CoordinatorTest, AFailedJobKeepsTheWorkersError) {
  StartCoordinator();
  FakeWorker w("w1");
  const int64_t session = Connect(&w);
  v1::Job job = Create("r1");
  auto a = w.NextAssignment();
  ASSERT_TRUE(a.has_value());
  Finish(&w, session, *a, false);
  ASSERT_TRUE(WaitState(job.id(), v1::FAILED));
  EXPECT_EQ(Get(job.id()).error(), "bad model");
  EXPECT_EQ(Get(job.id()).error_code(), "INVALID_ARGUMENT");
}

TEST_F(CoordinatorTest, AFullDiskFailsTheJobResourceExhausted) {
  StartCoordinator();
  FakeWorker w("w1");
  const int64_t session = Connect(&w);
  v1::Job job = Create("r1");
  auto a = w.NextAssignment();
  ASSERT_TRUE(a.has_value());
  // The assignment tells the worker where the job's files may be.
  EXPECT_GT(a->allowed_roots_size(), 0);
  FinishWith(&w, session, *a, absl::StatusCode::kResourceExhausted, "no space left on /srv (/dev/sdb1, 0 B free)");
  ASSERT_TRUE(WaitState(job.id(), v1::FAILED));
  EXPECT_EQ(Get(job.id()).error_code(), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(Get(job.id()).error(), "no space left on /srv (/dev/sdb1, 0 B free)");
}

TEST_F(CoordinatorTest, ALostWorkersJobResumesOnAnotherAtItsFirstUnfinishedBlock) {
  StartCoordinator(/*lease_ms=*/400);
  FakeWorker a_worker("a");
  const int64_t sa = Connect(&a_worker);
  v1::Job job = Create("r1");
  auto a = a_worker.NextAssignment();
  ASSERT_TRUE(a.has_value());
  BlockDone(&a_worker, sa, *a, 0);
  BlockDone(&a_worker, sa, *a, 1);
  // Worker a goes silent: after its lease the job waits for another worker, and a's stream is closed.
  ASSERT_TRUE(WaitState(job.id(), v1::RETRYING));
  EXPECT_TRUE(a_worker.closed());
  FakeWorker b_worker("b");
  const int64_t sb = Connect(&b_worker);
  auto b = b_worker.NextAssignment();
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->job_id(), job.id());
  EXPECT_EQ(b->attempt(), 2);
  EXPECT_EQ(b->resume_from_block(), 2);
  EXPECT_EQ(b->staging_dir(), a->staging_dir());
  // A late end from the first attempt is ignored.
  Finish(&a_worker, sa, *a, false);
  EXPECT_EQ(Get(job.id()).state(), v1::RUNNING);
  // Keep b alive while it finishes.
  v1::WorkerMessage hb;
  hb.mutable_heartbeat()->set_time_ms(1);
  Send(&b_worker, sb, hb);
  Finish(&b_worker, sb, *b, true);
  ASSERT_TRUE(WaitState(job.id(), v1::SUCCEEDED));
  EXPECT_EQ(Get(job.id()).attempts(), 2);
}

TEST_F(CoordinatorTest, CancelStopsTheWorkerAndDropsTheStaging) {
  StartCoordinator();
  FakeWorker w("w1");
  Connect(&w);
  v1::Job job = Create("r1");
  ASSERT_TRUE(w.NextAssignment().has_value());
  auto c = coordinator_->CancelJob(admin_, job.id());
  ASSERT_TRUE(c.ok()) << c.status();
  auto m = w.Next([](const v1::CoordinatorMessage& m) { return m.has_cancel(); });
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->cancel().job_id(), job.id());
  EXPECT_FALSE(m->cancel().keep_staging());
  EXPECT_TRUE(WaitState(job.id(), v1::CANCELLED));
  // Cancelling again is a wrong state, not a second cancel.
  EXPECT_EQ(coordinator_->CancelJob(admin_, job.id()).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(CoordinatorTest, AGangJobWaitsForAllItsWorkersAndRanksThem) {
  StartCoordinator();
  FakeWorker w0("w0"), w1("w1");
  Connect(&w0);
  v1::Job job = Create("gang", /*gpus=*/2);
  // One worker is not enough: nothing is assigned and the job stays queued.
  EXPECT_FALSE(
      w0.Next([](const v1::CoordinatorMessage& m) { return m.has_assign(); }, std::chrono::milliseconds(700)).has_value());
  EXPECT_EQ(Get(job.id()).state(), v1::QUEUED);
  Connect(&w1);
  auto a0 = w0.NextAssignment();
  auto a1 = w1.NextAssignment();
  ASSERT_TRUE(a0.has_value());
  ASSERT_TRUE(a1.has_value());
  EXPECT_EQ(a0->world_size(), 2);
  EXPECT_EQ(a1->world_size(), 2);
  EXPECT_EQ(a0->rank() + a1->rank(), 1);  // ranks 0 and 1
  EXPECT_EQ(a0->job_id(), job.id());
}


TEST_F(CoordinatorTest, AGangWhoseRankAbortedIsReformedOnceEveryRankStopped) {
  StartCoordinator();
  Gang g;
  v1::Job job = StartGangJob(&g, "gang");
  ASSERT_TRUE(g.assigned);
  BlockDone(g.worker(0), g.session(0), g.assignment(0), 0);
  // Rank 1's collective aborted (say rank 0's host dropped a connection): the attempt is lost, not the job.
  FinishWith(g.worker(1), g.session(1), g.assignment(1), absl::StatusCode::kAborted, "gloo: all-reduce failed");
  ASSERT_TRUE(WaitState(job.id(), v1::RETRYING));
  EXPECT_EQ(Get(job.id()).error(), "");
  auto cancel = g.worker(0)->Next([](const v1::CoordinatorMessage& m) { return m.has_cancel(); });
  ASSERT_TRUE(cancel.has_value());
  EXPECT_TRUE(cancel->cancel().keep_staging());  // rank 0 keeps the staging: the job resumes from it
  // Rank 0 has not stopped yet: the next attempt waits for it, although both workers are registered.
  EXPECT_FALSE(g.worker(1)
                   ->Next([](const v1::CoordinatorMessage& m) { return m.has_assign(); }, std::chrono::milliseconds(700))
                   .has_value());
  EXPECT_THAT(Get(job.id()).message(), ::testing::HasSubstr("of the previous attempt to stop"));
  FinishWith(g.worker(0), g.session(0), g.assignment(0), absl::StatusCode::kCancelled, "compression cancelled");
  auto b0 = g.w0.NextAssignment(), b1 = g.w1.NextAssignment();
  ASSERT_TRUE(b0 && b1);
  EXPECT_EQ(b0->attempt(), 2);
  EXPECT_EQ(b0->resume_from_block(), 1);
  EXPECT_EQ(b1->resume_from_block(), 1);
  g.a0 = *b0;
  g.a1 = *b1;
  // Rank 1 ends first: the job runs on until rank 0 reports it.
  Finish(g.worker(1), g.session(1), g.assignment(1), true);
  EXPECT_EQ(Get(job.id()).state(), v1::RUNNING);
  EXPECT_EQ(metrics_->gang_workers->Value(), 0);
  registry_.Render();  // runs the coordinator's collector
  EXPECT_EQ(metrics_->gang_workers->Value(), 1);  // rank 0 still runs the gang job
  // The ranks' communication in rank 0's report reaches the fleet's counters; malformed entries are skipped.
  Finish(g.worker(0), g.session(0), g.assignment(0), true,
         R"({"output_bytes": 10, "solve": {"ranks": [{"communication": {"seconds": 1.5, "bytes": 100}},
             {"communication": {"seconds": 0.5, "bytes": 300}}, {"communication": "x"}, 7]}})");
  ASSERT_TRUE(WaitState(job.id(), v1::SUCCEEDED));
  EXPECT_EQ(Get(job.id()).attempts(), 2);
  EXPECT_DOUBLE_EQ(metrics_->comm_seconds->Value(), 2.0);
  EXPECT_DOUBLE_EQ(metrics_->comm_bytes->Value(), 400);
  registry_.Render();  // runs the coordinator's collector
  EXPECT_EQ(metrics_->gang_workers->Value(), 0);
}

TEST_F(CoordinatorTest, AGangRanksOwnErrorFailsTheJobAndItsStagingGoesWhenTheRanksStopped) {
  StartCoordinator();
  Gang g;
  v1::Job job = StartGangJob(&g, "gang");
  ASSERT_TRUE(g.assigned);
  const std::string staging = g.a0.staging_dir();
  ASSERT_FALSE(staging.empty());
  std::filesystem::create_directories(staging);
  FinishWith(g.worker(1), g.session(1), g.assignment(1), absl::StatusCode::kNotFound, "no dataset here");
  ASSERT_TRUE(WaitState(job.id(), v1::FAILED));
  EXPECT_EQ(Get(job.id()).error(), "rank 1 (worker " + g.worker(1)->id() + "): no dataset here");
  auto cancel = g.worker(0)->Next([](const v1::CoordinatorMessage& m) { return m.has_cancel(); });
  ASSERT_TRUE(cancel.has_value());
  EXPECT_FALSE(cancel->cancel().keep_staging());
  // Rank 0 still runs (it may write): the staging stays until it stops, whatever it reports.
  EXPECT_TRUE(std::filesystem::exists(staging));
  FinishWith(g.worker(0), g.session(0), g.assignment(0), absl::StatusCode::kAborted, "gloo: broadcast failed");
  EXPECT_FALSE(std::filesystem::exists(staging));
  EXPECT_EQ(Get(job.id()).state(), v1::FAILED);
}

// The list of staging directories to remove is in the store: a job that FAILED while a rank still ran, then a
// coordinator crash before that rank stopped; the next coordinator removes the staging once a lease has passed.
TEST_F(CoordinatorTest, StagingLeftWhenTheCoordinatorRestartedIsRemovedAfterIt) {
  namespace fs = std::filesystem;
  StartCoordinator();
  Gang g;
  v1::Job job = StartGangJob(&g, "gang");
  ASSERT_TRUE(g.assigned);
  const std::string staging = g.a0.staging_dir();
  fs::create_directories(staging + "/sub");
  std::ofstream(staging + "/sub/model-00001-of-00001.safetensors") << "x";
  FinishWith(g.worker(1), g.session(1), g.assignment(1), absl::StatusCode::kNotFound, "no dataset here");
  ASSERT_TRUE(WaitState(job.id(), v1::FAILED));
  EXPECT_TRUE(fs::exists(staging));  // rank 0 still runs
  auto pending = store_->StagingToRemove();
  ASSERT_TRUE(pending.ok()) << pending.status();
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].id(), job.id());

  RestartCoordinator(/*lease_ms=*/300);
  EXPECT_TRUE(fs::exists(staging));  // not at once: the old workers get a lease to stop
  // The directory goes first, then its record (a crash between the two only repeats a removal).
  for (int i = 0; i < 200; ++i) {
    pending = store_->StagingToRemove();
    ASSERT_TRUE(pending.ok()) << pending.status();
    if (!fs::exists(staging) && pending->empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  EXPECT_FALSE(fs::exists(staging));
  EXPECT_TRUE(pending->empty());
}

TEST_F(CoordinatorTest, StagingRemovalNeverFollowsAnOutputParentSwappedForALink) {
  namespace fs = std::filesystem;
  StartCoordinator();
  // The output's parent is a directory when the job is created, then a link to a directory outside the roots that
  // holds a directory of the staging's name.
  const std::string outside = tmp_.path() + "-outside";
  fs::create_directories(tmp_.path() + "/parent");
  v1::CreateJobRequest req;
  req.set_request_id("swap");
  req.mutable_spec()->set_model_uri(tmp_.path() + "/model");
  req.mutable_spec()->set_output_uri(tmp_.path() + "/parent/q");
  req.mutable_spec()->mutable_preset()->set_scheme("W4A16");
  auto job = coordinator_->CreateJob(admin_, req);
  ASSERT_TRUE(job.ok()) << job.status();
  FakeWorker w("w");
  int64_t session = Connect(&w);
  auto a = w.NextAssignment();
  ASSERT_TRUE(a.has_value());
  const std::string name = fs::path(a->staging_dir()).filename().string();
  fs::create_directories(outside + "/" + name);
  std::ofstream(outside + "/" + name + "/keep") << "KEEP";
  fs::rename(tmp_.path() + "/parent", tmp_.path() + "/parent-moved");
  fs::create_directory_symlink(outside, tmp_.path() + "/parent");
  Finish(&w, session, *a, /*ok=*/false);
  ASSERT_TRUE(WaitState(job->id(), v1::FAILED));
  EXPECT_TRUE(fs::exists(outside + "/" + name + "/keep"));
  auto pending = store_->StagingToRemove();
  ASSERT_TRUE(pending.ok()) << pending.status();
  EXPECT_TRUE(pending->empty());  // refused, logged, not tried again
  fs::remove_all(outside);
}

TEST_F(CoordinatorTest, ARanksOwnErrorAfterTheGangBrokeFailsTheJob) {
  StartCoordinator();
  Gang g;
  v1::Job job = StartGangJob(&g, "gang");
  ASSERT_TRUE(g.assigned);
  // Rank 0 hears of the broken gang first; rank 1, whose input was bad, reports after.
  FinishWith(g.worker(0), g.session(0), g.assignment(0), absl::StatusCode::kAborted, "gloo: all-reduce failed");
  ASSERT_TRUE(WaitState(job.id(), v1::RETRYING));
  FinishWith(g.worker(1), g.session(1), g.assignment(1), absl::StatusCode::kInvalidArgument, "bad model");
  ASSERT_TRUE(WaitState(job.id(), v1::FAILED));
  EXPECT_EQ(Get(job.id()).error(), "rank 1 (worker " + g.worker(1)->id() + "): bad model");
}

TEST_F(CoordinatorTest, ALostRankStopsTheOthersAndCancelStopsEveryRank) {
  StartCoordinator();
  Gang g;
  v1::Job job = StartGangJob(&g, "gang");
  ASSERT_TRUE(g.assigned);
  // Rank 1's worker goes away: rank 0 is told to stop keeping its staging, the job waits to be re-formed.
  coordinator_->OnWorkerDisconnected(g.worker(1)->id(), g.session(1));
  ASSERT_TRUE(WaitState(job.id(), v1::RETRYING));
  auto cancel = g.worker(0)->Next([](const v1::CoordinatorMessage& m) { return m.has_cancel(); });
  ASSERT_TRUE(cancel.has_value());
  EXPECT_TRUE(cancel->cancel().keep_staging());
  // Its ABORTED end is the consequence, not a second failure.
  FinishWith(g.worker(0), g.session(0), g.assignment(0), absl::StatusCode::kAborted, "gloo: all-reduce failed");
  EXPECT_EQ(Get(job.id()).state(), v1::RETRYING);
  // The worker comes back: a new gang, attempt 2; a cancel then reaches both ranks.
  FakeWorker back(g.worker(1)->id());
  const int64_t sb = Connect(&back);
  auto r0 = g.worker(0)->NextAssignment(), r1 = back.NextAssignment();
  ASSERT_TRUE(r0 && r1);
  EXPECT_EQ(r0->attempt(), 2);
  ASSERT_TRUE(coordinator_->CancelJob(admin_, job.id()).ok());
  for (FakeWorker* w : {g.worker(0), &back}) {
    auto m = w->Next([](const v1::CoordinatorMessage& m) { return m.has_cancel(); });
    ASSERT_TRUE(m.has_value()) << w->id();
    EXPECT_FALSE(m->cancel().keep_staging());
  }
  FinishWith(&back, sb, *r1, absl::StatusCode::kCancelled, "compression cancelled");
  EXPECT_EQ(Get(job.id()).state(), v1::CANCELLED);
}

}  // namespace
// A job that allows fewer ranks (min_gpus) goes on with the workers that remain when one is lost for good: the
// gang is re-formed smaller and resumes where the first attempt stopped.
TEST_F(CoordinatorTest, AGangAllowedFewerRanksGoesOnWithTheWorkersLeft) {
  StartCoordinator(/*lease_ms=*/400);
  Gang g;
  v1::Job job = StartGangJob(&g, "shrink", /*min_gpus=*/1);
  ASSERT_TRUE(g.assigned);
  EXPECT_EQ(g.a0.world_size(), 2);
  BlockDone(g.worker(0), g.session(0), g.assignment(0), 0);
  BlockDone(g.worker(0), g.session(0), g.assignment(0), 1);
  // Rank 1's worker goes away and does not come back; rank 0 stops on the coordinator's cancel.
  FakeWorker* survivor = g.worker(0);
  const int64_t ss = g.session(0);
  const v1::Assignment first = g.assignment(0);
  coordinator_->OnWorkerDisconnected(g.worker(1)->id(), g.session(1));
  ASSERT_TRUE(WaitState(job.id(), v1::RETRYING));
  ASSERT_TRUE(survivor->Next([](const v1::CoordinatorMessage& m) { return m.has_cancel(); }).has_value());
  FinishWith(survivor, ss, first, absl::StatusCode::kCancelled, "compression cancelled");
  auto b = survivor->NextAssignment();
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->attempt(), 2);
  EXPECT_EQ(b->world_size(), 1);
  EXPECT_EQ(b->rank(), 0);
  EXPECT_EQ(b->resume_from_block(), 2);
  Finish(survivor, ss, *b, true, R"({"output_bytes": 10})");
  ASSERT_TRUE(WaitState(job.id(), v1::SUCCEEDED));
  // A job without min_gpus waits for its full gang instead.
  v1::Job strict = Create("strict", /*gpus=*/2);
  EXPECT_FALSE(survivor->Next([](const v1::CoordinatorMessage& m) { return m.has_assign(); }, std::chrono::milliseconds(700))
                   .has_value());
  EXPECT_THAT(Get(strict.id()).message(), ::testing::HasSubstr("needs 2 workers"));
  // min_gpus above gpus is refused.
  v1::CreateJobRequest bad;
  bad.set_request_id("bad");
  bad.mutable_spec()->set_model_uri(tmp_.path() + "/model");
  bad.mutable_spec()->set_output_uri(tmp_.path() + "/out-bad");
  bad.mutable_spec()->mutable_preset()->set_scheme("W4A16");
  bad.mutable_spec()->set_gpus(2);
  bad.mutable_spec()->set_min_gpus(3);
  EXPECT_EQ(coordinator_->CreateJob(admin_, bad).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace llmc::server
