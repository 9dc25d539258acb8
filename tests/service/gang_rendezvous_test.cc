// Ranks of one gang meet through the coordinator: a real Coordinator assigns a 3-rank job to three workers whose
// streams are in-process links; each rank's GangStore publishes through the coordinator and receives the relayed
// keys; Gloo communicators form through those stores and all-reduce. Also what the relay refuses.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <optional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/dist/gloo_communicator.h"
#include "server/coordinator.h"
#include "tests/support/temp_dir.h"
#include "worker/gang_store.h"

namespace llmc {
namespace {

// One worker: its link records assignments and hands relayed rendezvous values to the current store.
struct Rank {
  std::string id;
  int64_t session = 0;
  absl::Mutex mu;
  std::optional<v1::Assignment> assignment ABSL_GUARDED_BY(mu);
  std::shared_ptr<worker::GangStore> store ABSL_GUARDED_BY(mu);
  std::atomic<int> values{0};

  server::WorkerLink Link() {
    return server::WorkerLink{[this](const v1::CoordinatorMessage& m) {
                                absl::MutexLock l(&mu);
                                if (m.has_assign()) assignment = m.assign();
                                if (m.has_rendezvous_value() && store && store->Deliver(m.rendezvous_value())) ++values;
                                return true;
                              },
                              [] {}};
  }
};

class GangRendezvousTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = server::JobStore::Open(tmp_.path() + "/jobs.db");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    metrics_ = std::make_unique<server::ServiceMetrics>(&registry_);
    server::CoordinatorOptions o;
    auto policy = server::AccessPolicy::Create({tmp_.path()}, {});
    ASSERT_TRUE(policy.ok());
    o.policy = *policy;
    o.check_local_paths = false;
    coordinator_ = std::make_unique<server::Coordinator>(o, store_.get(), metrics_.get());
    ASSERT_TRUE(coordinator_->Start().ok());
    for (int i = 0; i < 3; ++i) {
      ranks_.push_back(std::make_unique<Rank>());
      ranks_.back()->id = "w" + std::to_string(i);
      v1::Register reg;
      reg.set_worker_id(ranks_.back()->id);
      reg.set_device("cpu");
      ranks_.back()->session = coordinator_->RegisterWorker(reg, ranks_.back()->Link());
    }
    v1::CreateJobRequest req;
    req.set_request_id("gang");
    req.mutable_spec()->set_model_uri(tmp_.path() + "/model");
    req.mutable_spec()->set_output_uri(tmp_.path() + "/out");
    req.mutable_spec()->mutable_preset()->set_scheme("W4A16");
    req.mutable_spec()->set_gpus(3);
    auto job = coordinator_->CreateJob(admin_, req);
    ASSERT_TRUE(job.ok()) << job.status();
    job_id_ = job->id();
    // Every rank gets its assignment and a store for it.
    for (int t = 0; t < 400; ++t) {
      int assigned = 0;
      for (auto& r : ranks_) {
        absl::MutexLock l(&r->mu);
        assigned += r->assignment.has_value();
      }
      if (assigned == 3) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    for (auto& r : ranks_) {
      absl::MutexLock l(&r->mu);
      ASSERT_TRUE(r->assignment.has_value()) << r->id;
      Rank* rp = r.get();
      r->store = std::make_shared<worker::GangStore>(
          r->assignment->job_id(), r->assignment->attempt(), [this, rp](const v1::WorkerMessage& m) {
            coordinator_->OnWorkerMessage(rp->id, rp->session, m);
            return true;
          });
    }
  }
  void TearDown() override {
    if (coordinator_) coordinator_->Stop();
  }
  std::shared_ptr<worker::GangStore> StoreOf(Rank& r) {
    absl::MutexLock l(&r.mu);
    return r.store;
  }
  v1::Assignment AssignmentOf(Rank& r) {
    absl::MutexLock l(&r.mu);
    return *r.assignment;
  }

  llmc::testing::TempDir tmp_;
  server::MetricsRegistry registry_;
  std::unique_ptr<server::JobStore> store_;
  std::unique_ptr<server::ServiceMetrics> metrics_;
  std::unique_ptr<server::Coordinator> coordinator_;
  std::vector<std::unique_ptr<Rank>> ranks_;
  std::string job_id_;
  const server::Principal admin_{"default", server::Role::kAdmin};
};

TEST_F(GangRendezvousTest, GlooRanksFormThroughTheCoordinatorAndReduce) {
  std::vector<float> result[3];
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] {
      const v1::Assignment a = AssignmentOf(*ranks_[i]);
      GlooOptions o;
      o.rank = a.rank();
      o.size = a.world_size();
      o.prefix = absl::StrCat(a.job_id(), ".", a.attempt());
      o.timeout = absl::Seconds(20);
      auto comm = GlooCommunicator::Create(o, StoreOf(*ranks_[i]).get());
      ASSERT_TRUE(comm.ok()) << comm.status();
      std::vector<float> v(1000, static_cast<float>(a.rank() + 1));
      ASSERT_TRUE((*comm)->AllReduceSum(absl::MakeSpan(v)).ok());
      result[a.rank()] = v;
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 3; ++r) EXPECT_EQ(result[r], std::vector<float>(1000, 6.0f)) << "rank " << r;
  // Every rank received every rank's address (Gloo publishes one key per rank).
  for (auto& r : ranks_) EXPECT_GE(r->values.load(), 3) << r->id;
}

TEST_F(GangRendezvousTest, TheRelayRefusesStrangersStaleAttemptsAndOversizedValues) {
  auto s0 = StoreOf(*ranks_[0]);
  // A worker outside the gang, and a stale attempt of a member: nothing is relayed.
  v1::Register reg;
  reg.set_worker_id("stranger");
  Rank stranger;
  stranger.id = "stranger";
  const int64_t ss = coordinator_->RegisterWorker(reg, stranger.Link());
  v1::WorkerMessage m;
  m.mutable_rendezvous_set()->set_job_id(job_id_);
  m.mutable_rendezvous_set()->set_attempt(AssignmentOf(*ranks_[0]).attempt());
  m.mutable_rendezvous_set()->set_key("forged");
  m.mutable_rendezvous_set()->set_value("x");
  coordinator_->OnWorkerMessage("stranger", ss, m);
  m.mutable_rendezvous_set()->set_attempt(AssignmentOf(*ranks_[0]).attempt() + 7);
  coordinator_->OnWorkerMessage(ranks_[1]->id, ranks_[1]->session, m);
  EXPECT_EQ(s0->Get("forged", absl::Milliseconds(200)).status().code(), absl::StatusCode::kDeadlineExceeded);
  // The store refuses what the coordinator would drop, naming it.
  EXPECT_EQ(s0->Set("../x", "v").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s0->Set("big", std::string(64 * 1024 + 1, 'x')).code(), absl::StatusCode::kInvalidArgument);
  // A member's key reaches every member, the sender included.
  ASSERT_TRUE(StoreOf(*ranks_[2])->Set("rank2.addr", std::string("\0\1\2", 3)).ok());
  for (auto& r : ranks_) {
    auto v = StoreOf(*r)->Get("rank2.addr", absl::Seconds(5));
    ASSERT_TRUE(v.ok()) << r->id << ": " << v.status();
    EXPECT_EQ(*v, std::string("\0\1\2", 3));
  }
  // Close ends a wait at once.
  std::thread closer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    s0->Close();
  });
  EXPECT_EQ(s0->Get("never", absl::Seconds(30)).status().code(), absl::StatusCode::kCancelled);
  closer.join();
}

}  // namespace
}  // namespace llmc
