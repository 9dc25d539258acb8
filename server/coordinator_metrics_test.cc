// The coordinator's metrics after real protocol events from fake workers: what the dashboards and alerts of
// deploy/grafana and deploy/prometheus read (docs/service.md, "Metrics").
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "server/coordinator_test_util.h"

namespace llmc::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class CoordinatorMetricsTest : public CoordinatorTest {
 protected:
  // A GPTQ W4A16 job (calibrated) on one worker.
  v1::Job CreateGptq(const std::string& rid) {
    v1::CreateJobRequest req;
    req.set_request_id(rid);
    req.mutable_spec()->set_model_uri(tmp_.path() + "/model");
    req.mutable_spec()->set_output_uri(tmp_.path() + "/out-" + rid);
    req.mutable_spec()->mutable_preset()->set_scheme("W4A16");
    req.mutable_spec()->mutable_preset()->set_algorithm("gptq");
    req.mutable_spec()->mutable_calibration()->set_dataset_uri(tmp_.path() + "/calib.txt");
    auto job = coordinator_->CreateJob(admin_, req);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : v1::Job();
  }
  void Heartbeat(FakeWorker* w, int64_t session, uint64_t used, uint64_t total, double util, uint64_t uploaded,
                 uint64_t retries, uint64_t failed = 0, uint64_t downloaded = 0) {
    v1::WorkerMessage m;
    auto* hb = m.mutable_heartbeat();
    hb->set_time_ms(1);
    hb->mutable_device()->set_valid(true);
    hb->mutable_device()->set_memory_used_bytes(used);
    hb->mutable_device()->set_memory_total_bytes(total);
    hb->mutable_device()->set_utilization(util);
    hb->mutable_storage()->set_bytes_uploaded(uploaded);
    hb->mutable_storage()->set_bytes_downloaded(downloaded);
    hb->mutable_storage()->set_retries(retries);
    hb->mutable_storage()->set_failed_requests(failed);
    Send(w, session, m);
  }
};

TEST_F(CoordinatorMetricsTest, AJobsLifeInTheMetrics) {
  StartCoordinator();
  FakeWorker w("w1");
  const int64_t session = Connect(&w);
  Heartbeat(&w, session, 3000, 8000, 0.25, /*uploaded=*/100, /*retries=*/1);
  std::string text = registry_.Render();
  EXPECT_THAT(text, HasSubstr("llmc_worker_device_memory_used_bytes{worker=\"w1\"} 3000\n"));
  EXPECT_THAT(text, HasSubstr("llmc_worker_device_memory_total_bytes{worker=\"w1\"} 8000\n"));
  EXPECT_THAT(text, HasSubstr("llmc_worker_device_utilization_ratio{worker=\"w1\"} 0.25\n"));
  EXPECT_THAT(text, HasSubstr("llmc_worker_info{device=\"cpu\",host=\"fake-host\",state=\"IDLE\",worker=\"w1\"} 1\n"));
  EXPECT_EQ(metrics_->storage_uploaded->Value(), 100);
  EXPECT_EQ(metrics_->storage_retries->Value(), 1);

  const v1::Job job = CreateGptq("r1");
  auto a = w.NextAssignment();
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(WaitState(job.id(), v1::RUNNING));
  EXPECT_EQ(metrics_->queue_wait->Count({"gptq", "W4A16"}), 1u);  // created -> first start, once
  v1::WorkerMessage p;
  p.mutable_progress()->set_job_id(job.id());
  p.mutable_progress()->set_attempt(1);
  p.mutable_progress()->mutable_progress()->set_blocks_done(1);
  p.mutable_progress()->mutable_progress()->set_blocks_total(4);
  Send(&w, session, p);
  BlockDone(&w, session, *a, 0);
  // The storage counters are cumulative in the worker: only the increase is added.
  Heartbeat(&w, session, 5000, 8000, 1.0, /*uploaded=*/350, /*retries=*/3, /*failed=*/1, /*downloaded=*/70);
  text = registry_.Render();
  const std::string id = job.id();
  EXPECT_THAT(text, HasSubstr(absl::StrCat("llmc_job_info{algorithm=\"gptq\",job_id=\"", id,
                                           "\",scheme=\"W4A16\",state=\"RUNNING\",tenant=\"default\"} 1\n")));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("llmc_job_progress_ratio{job_id=\"", id, "\"} 0.25\n")));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("llmc_job_blocks_done{job_id=\"", id, "\"} 1\n")));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("llmc_job_blocks_total{job_id=\"", id, "\"} 4\n")));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("llmc_job_attempts{job_id=\"", id, "\"} 1\n")));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("llmc_worker_job{job_id=\"", id, "\",rank=\"0\",worker=\"w1\"} 1\n")));
  EXPECT_THAT(text, HasSubstr("llmc_tenant_jobs{state=\"RUNNING\",tenant=\"default\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("llmc_worker_device_memory_used_bytes{worker=\"w1\"} 5000\n"));
  EXPECT_EQ(metrics_->storage_uploaded->Value(), 350);
  EXPECT_EQ(metrics_->storage_downloaded->Value(), 70);
  EXPECT_EQ(metrics_->storage_retries->Value(), 3);
  EXPECT_EQ(metrics_->storage_failures->Value(), 1);

  // Rank 0's report of a 2-rank calibration: read and written bytes, tokens, seconds, every rank's collectives.
  Finish(&w, session, *a, true,
         R"({"input_bytes": 5000, "output_bytes": 1234, "solve": {"seconds": 2.5, "calibration": {"tokens": 512},
             "ranks": [{"communication": {"seconds": 0.5, "bytes": 100}},
                       {"communication": {"seconds": 0.25, "bytes": 60}}]}})");
  ASSERT_TRUE(WaitState(job.id(), v1::SUCCEEDED));
  EXPECT_EQ(metrics_->bytes_read->Value(), 5000);
  EXPECT_EQ(metrics_->bytes_written->Value(), 1234);
  EXPECT_EQ(metrics_->calib_tokens->Value({"gptq"}), 512);
  EXPECT_EQ(metrics_->calib_seconds->Value({"gptq"}), 2.5);
  EXPECT_EQ(metrics_->comm_seconds->Value(), 0.75);
  EXPECT_EQ(metrics_->comm_bytes->Value(), 160);
  EXPECT_EQ(metrics_->job_duration->Count({"SUCCEEDED", "gptq", "W4A16"}), 1u);
  EXPECT_EQ(metrics_->queue_wait->Count({"gptq", "W4A16"}), 1u);
  text = registry_.Render();
  // The per-job series go with the job; the tenant's count moves to SUCCEEDED.
  EXPECT_THAT(text, Not(HasSubstr(id)));
  EXPECT_THAT(text, HasSubstr("llmc_tenant_jobs{state=\"SUCCEEDED\",tenant=\"default\"} 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("llmc_tenant_jobs{state=\"RUNNING\"")));
  EXPECT_THAT(text, HasSubstr("llmc_jobs{state=\"SUCCEEDED\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("llmc_queue_oldest_job_age_seconds 0\n"));
}

TEST_F(CoordinatorMetricsTest, FailuresByReason) {
  StartCoordinator();
  FakeWorker w("w1");
  const int64_t session = Connect(&w);
  // The worker's own error: its canonical code.
  v1::Job bad = Create("bad");
  auto a = w.NextAssignment();
  ASSERT_TRUE(a.has_value());
  Finish(&w, session, *a, false);
  ASSERT_TRUE(WaitState(bad.id(), v1::FAILED));
  EXPECT_EQ(metrics_->job_failures->Value({"INVALID_ARGUMENT"}), 1);
  // Every attempt stopped (the worker stopped it, CANCELLED): after max_attempts (3) the job fails.
  v1::Job lost = Create("lost");
  for (int attempt = 1; attempt <= 3; ++attempt) {
    auto b = w.NextAssignment();
    ASSERT_TRUE(b.has_value()) << "attempt " << attempt;
    EXPECT_EQ(b->attempt(), attempt);
    FinishWith(&w, session, *b, absl::StatusCode::kCancelled, "stopped");
  }
  ASSERT_TRUE(WaitState(lost.id(), v1::FAILED));
  EXPECT_EQ(metrics_->job_failures->Value({"ATTEMPTS_EXHAUSTED"}), 1);
  EXPECT_EQ(metrics_->job_retries->Value(), 2);
  EXPECT_EQ(metrics_->jobs_finished->Value({"FAILED"}), 2);
  EXPECT_EQ(metrics_->job_duration->Count({"FAILED", "rtn", "W4A16"}), 2u);
}

TEST_F(CoordinatorMetricsTest, ARestartedWorkersCountersAreAddedWhole) {
  StartCoordinator();
  FakeWorker w("w1");
  const int64_t s1 = Connect(&w);
  Heartbeat(&w, s1, 1, 2, 0, /*uploaded=*/1000, /*retries=*/5);
  // The process restarted under the same id: its counters start again from 0.
  FakeWorker again("w1");
  const int64_t s2 = Connect(&again);
  Heartbeat(&again, s2, 1, 2, 0, /*uploaded=*/40, /*retries=*/1);
  EXPECT_EQ(metrics_->storage_uploaded->Value(), 1040);
  EXPECT_EQ(metrics_->storage_retries->Value(), 6);
}

TEST_F(CoordinatorMetricsTest, ALostWorkersDeviceFiguresGoAndQueuedJobsAge) {
  StartCoordinator(/*lease_ms=*/300);
  FakeWorker w("w1");
  const int64_t session = Connect(&w);
  Heartbeat(&w, session, 3000, 8000, 0.5, 0, 0);
  EXPECT_THAT(registry_.Render(), HasSubstr("llmc_worker_device_memory_used_bytes{worker=\"w1\"} 3000\n"));
  // ListWorkers (the console's workers page) has the same figures while the worker is live.
  auto listed = coordinator_->ListWorkers(admin_);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->workers_size(), 1);
  EXPECT_EQ(listed->workers(0).memory_used_bytes(), 3000u);
  EXPECT_EQ(listed->workers(0).memory_total_bytes(), 8000u);
  // Silent past its lease: LOST, and its stale figures are no longer exported.
  std::string text;
  for (int i = 0; i < 100; ++i) {
    text = registry_.Render();
    if (text.find("state=\"LOST\",worker=\"w1\"") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  EXPECT_THAT(text, HasSubstr("llmc_worker_info{device=\"cpu\",host=\"fake-host\",state=\"LOST\",worker=\"w1\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("llmc_workers{state=\"LOST\"} 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("llmc_worker_device_memory_used_bytes{")));
  listed = coordinator_->ListWorkers(admin_);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->workers_size(), 1);
  EXPECT_EQ(listed->workers(0).state(), "LOST");
  EXPECT_EQ(listed->workers(0).memory_used_bytes(), 0u);
  EXPECT_EQ(listed->workers(0).memory_total_bytes(), 0u);
  // A job with no worker waits; the oldest queued job's age grows.
  v1::Job job = Create("waits");
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  registry_.Render();
  EXPECT_GE(metrics_->oldest_queued->Value(), 0.15);
  EXPECT_EQ(metrics_->queue_depth->Value(), 1);
  // A job that never started has no per-job series (the queue is counted, not listed).
  EXPECT_THAT(registry_.Render(), Not(HasSubstr(job.id())));
}

}  // namespace
}  // namespace llmc::server
