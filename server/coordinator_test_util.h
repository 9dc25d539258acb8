// The coordinator's test fixture: fake worker links (FakeWorker records what the coordinator sends it), a gang
// of two, and CoordinatorTest (a real coordinator on a temporary job store, with helpers for the worker protocol).
// Shared by coordinator_test.cc and coordinator_metrics_test.cc; test-only.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "server/coordinator.h"
#include "tests/support/temp_dir.h"

namespace llmc::server {

// One worker's side of the stream: records what the coordinator sends it. The coordinator keeps the link until
// it stops (after the test body, in TearDown), so the link owns the state it writes, not the FakeWorker.
class FakeWorker {
 public:
  explicit FakeWorker(std::string id) : id_(std::move(id)) {}

  WorkerLink Link() {
    return WorkerLink{[s = state_](const v1::CoordinatorMessage& m) {
                        std::lock_guard<std::mutex> l(s->mu);
                        if (!s->connected) return false;
                        s->inbox.push_back(m);
                        s->cv.notify_all();
                        return true;
                      },
                      [s = state_] {
                        std::lock_guard<std::mutex> l(s->mu);
                        s->connected = false;
                        s->closed = true;
                      }};
  }
  v1::Register Registration() const {
    v1::Register r;
    r.set_worker_id(id_);
    r.set_host("fake-host");
    r.set_device("cpu");
    return r;
  }
  // The next message matching `pred` (earlier non-matching ones are dropped), waiting up to `timeout`.
  std::optional<v1::CoordinatorMessage> Next(const std::function<bool(const v1::CoordinatorMessage&)>& pred,
                                             std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    State& s = *state_;
    std::unique_lock<std::mutex> l(s.mu);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      while (!s.inbox.empty()) {
        v1::CoordinatorMessage m = std::move(s.inbox.front());
        s.inbox.pop_front();
        if (pred(m)) return m;
      }
      if (s.cv.wait_until(l, deadline) == std::cv_status::timeout && s.inbox.empty()) return std::nullopt;
    }
  }
  std::optional<v1::Assignment> NextAssignment() {
    auto m = Next([](const v1::CoordinatorMessage& m) { return m.has_assign(); });
    if (!m) return std::nullopt;
    return m->assign();
  }
  bool closed() {
    std::lock_guard<std::mutex> l(state_->mu);
    return state_->closed;
  }
  const std::string& id() const { return id_; }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<v1::CoordinatorMessage> inbox;
    bool connected = true;
    bool closed = false;
  };
  const std::string id_;
  const std::shared_ptr<State> state_ = std::make_shared<State>();
};

// A gang of two fake workers, with each worker's rank known.
struct Gang {
  FakeWorker w0{"g0"}, w1{"g1"};
  int64_t s0 = 0, s1 = 0;
  v1::Assignment a0, a1;
  // The worker, session and assignment of `rank`.
  FakeWorker* worker(int rank) { return a0.rank() == rank ? &w0 : &w1; }
  int64_t session(int rank) { return a0.rank() == rank ? s0 : s1; }
  const v1::Assignment& assignment(int rank) { return a0.rank() == rank ? a0 : a1; }
  bool assigned = false;  // both workers got their assignment
};

class CoordinatorTest : public ::testing::Test {
 protected:
  void StartCoordinator(int64_t lease_ms = 6000, MetricsRegistry* registry = nullptr) {
    auto store = JobStore::Open(tmp_.path() + "/jobs.db");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    metrics_ = std::make_unique<ServiceMetrics>(registry ? registry : &registry_);
    CoordinatorOptions o;
    auto policy = AccessPolicy::Create({tmp_.path()}, {});
    ASSERT_TRUE(policy.ok()) << policy.status();
    o.policy = *policy;
    o.lease_ms = lease_ms;
    o.check_local_paths = false;
    coordinator_ = std::make_unique<Coordinator>(o, store_.get(), metrics_.get());
    ASSERT_TRUE(coordinator_->Start().ok());
  }
  // A new coordinator on the same store (as after a crash: nothing kept in memory), with its own metrics.
  void RestartCoordinator(int64_t lease_ms) {
    coordinator_->Stop();
    retired_.push_back(std::move(coordinator_));
    retired_metrics_.push_back(std::move(metrics_));
    store_.reset();
    StartCoordinator(lease_ms, &restart_registry_);
  }
  void TearDown() override {
    if (coordinator_) coordinator_->Stop();
  }

  int64_t Connect(FakeWorker* w) {
    int64_t session = coordinator_->RegisterWorker(w->Registration(), w->Link());
    auto registered = w->Next([](const v1::CoordinatorMessage& m) { return m.has_registered(); });
    EXPECT_TRUE(registered.has_value());
    if (registered) {
      EXPECT_EQ(registered->registered().lease_ms(), coordinator_->lease_ms());
    }
    return session;
  }
  // Connects the gang's two workers and creates a 2-worker job; g->assigned says both got their assignment.
  v1::Job StartGangJob(Gang* g, const std::string& rid, int min_gpus = 0) {
    g->s0 = Connect(&g->w0);
    g->s1 = Connect(&g->w1);
    v1::Job job = Create(rid, /*gpus=*/2, min_gpus);
    auto a0 = g->w0.NextAssignment(), a1 = g->w1.NextAssignment();
    g->assigned = a0 && a1;
    if (g->assigned) {
      g->a0 = *a0;
      g->a1 = *a1;
    }
    return job;
  }
  v1::Job Create(const std::string& rid, int gpus = 1, int min_gpus = 0) {
    v1::CreateJobRequest req;
    req.mutable_spec()->set_min_gpus(min_gpus);
    req.set_request_id(rid);
    req.mutable_spec()->set_model_uri(tmp_.path() + "/model");
    req.mutable_spec()->set_output_uri(tmp_.path() + "/out-" + rid);
    req.mutable_spec()->mutable_preset()->set_scheme("W4A16");
    req.mutable_spec()->set_gpus(gpus);
    auto job = coordinator_->CreateJob(admin_, req);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : v1::Job();
  }
  void Send(FakeWorker* w, int64_t session, const v1::WorkerMessage& m) {
    coordinator_->OnWorkerMessage(w->id(), session, m);
  }
  void BlockDone(FakeWorker* w, int64_t session, const v1::Assignment& a, int block) {
    v1::WorkerMessage m;
    m.mutable_block_done()->set_job_id(a.job_id());
    m.mutable_block_done()->set_attempt(a.attempt());
    m.mutable_block_done()->set_block(block);
    Send(w, session, m);
  }
  void Finish(FakeWorker* w, int64_t session, const v1::Assignment& a, bool ok, const std::string& summary = "{}") {
    v1::WorkerMessage m;
    auto* f = m.mutable_finished();
    f->set_job_id(a.job_id());
    f->set_attempt(a.attempt());
    f->set_ok(ok);
    f->set_code(ok ? 0 : static_cast<int>(absl::StatusCode::kInvalidArgument));
    f->set_error(ok ? "" : "bad model");
    f->set_summary_json(summary);
    Send(w, session, m);
  }
  void FinishWith(FakeWorker* w, int64_t session, const v1::Assignment& a, absl::StatusCode code,
                  const std::string& error) {
    v1::WorkerMessage m;
    auto* f = m.mutable_finished();
    f->set_job_id(a.job_id());
    f->set_attempt(a.attempt());
    f->set_ok(false);
    f->set_code(static_cast<int>(code));
    f->set_error(error);
    Send(w, session, m);
  }
  v1::Job Get(const std::string& id) {
    auto j = coordinator_->GetJob(admin_, id);
    EXPECT_TRUE(j.ok()) << j.status();
    return j.ok() ? *j : v1::Job();
  }
  // Polls until the job reaches `state` (10 s).
  bool WaitState(const std::string& id, v1::JobState state) {
    for (int i = 0; i < 400; ++i) {
      if (Get(id).state() == state) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return false;
  }
  std::vector<std::string> EventTypes(const std::string& id) {
    std::vector<std::string> types;
    v1::WatchJobRequest req;
    req.set_id(id);
    auto s = coordinator_->WatchJob(
        admin_, req, [&](const v1::JobEvent& e) { types.push_back(e.type()); return true; }, [] { return false; });
    EXPECT_TRUE(s.ok()) << s;
    return types;
  }

  llmc::testing::TempDir tmp_;
  MetricsRegistry registry_;
  MetricsRegistry restart_registry_;  // the metrics of a coordinator started again by RestartCoordinator
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<ServiceMetrics> metrics_;
  std::unique_ptr<Coordinator> coordinator_;
  std::vector<std::unique_ptr<Coordinator>> retired_;
  std::vector<std::unique_ptr<ServiceMetrics>> retired_metrics_;
  const Principal admin_{"default", Role::kAdmin};
};

}  // namespace llmc::server
