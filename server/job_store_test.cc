#include "server/job_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/support/temp_dir.h"

namespace llmc::server {
namespace {

using ::testing::HasSubstr;

v1::Job MakeJob(const std::string& id, const std::string& tenant, const std::string& rid, const std::string& model) {
  v1::Job j;
  j.set_id(id);
  j.set_tenant(tenant);
  j.set_request_id(rid);
  j.mutable_spec()->set_model_uri(model);
  j.mutable_spec()->set_output_uri("/out/" + rid);
  j.mutable_spec()->mutable_preset()->set_scheme("W4A16");
  j.set_state(v1::QUEUED);
  j.set_create_time_ms(1000);
  return j;
}

v1::JobEvent Ev(const std::string& type) {
  v1::JobEvent e;
  e.set_type(type);
  return e;
}

class JobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = JobStore::Open(tmp_.path() + "/jobs.db");
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }
  llmc::testing::TempDir tmp_;
  std::unique_ptr<JobStore> store_;
};

TEST_F(JobStoreTest, CreateIsIdempotentByTenantAndRequestId) {
  auto a = store_->CreateJob(MakeJob("j1", "t1", "r1", "/m"), Ev("state"));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->created);
  EXPECT_EQ(a->job.last_event_seq(), 1);
  // Same request id and spec: the same job.
  auto b = store_->CreateJob(MakeJob("j2", "t1", "r1", "/m"), Ev("state"));
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->created);
  EXPECT_EQ(b->job.id(), "j1");
  // Different spec: ALREADY_EXISTS naming the request id.
  auto c = store_->CreateJob(MakeJob("j3", "t1", "r1", "/other"), Ev("state"));
  EXPECT_EQ(c.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("request_id 'r1'"));
  // Another tenant may use the same request id.
  auto d = store_->CreateJob(MakeJob("j4", "t2", "r1", "/m"), Ev("state"));
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->created);
  EXPECT_GT(d->seq, a->seq);
}

TEST_F(JobStoreTest, UpdateAppendsEventsWithSeq) {
  ASSERT_TRUE(store_->CreateJob(MakeJob("j1", "t", "r", "/m"), Ev("state")).ok());
  auto job = *store_->GetJob("j1");
  job.set_state(v1::RUNNING);
  std::vector<v1::JobEvent> ev = {Ev("state"), Ev("progress")};
  ASSERT_TRUE(store_->UpdateJob(&job, &ev).ok());
  EXPECT_EQ(job.last_event_seq(), 3);
  EXPECT_EQ(ev[0].seq(), 2);
  EXPECT_EQ(ev[1].seq(), 3);
  auto all = *store_->Events("j1", 0);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[2].type(), "progress");
  auto after = *store_->Events("j1", 2);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].seq(), 3);
  EXPECT_EQ(store_->GetJob("j1")->state(), v1::RUNNING);
  EXPECT_EQ(store_->GetJob("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(JobStoreTest, SurvivesReopen) {
  ASSERT_TRUE(store_->CreateJob(MakeJob("j1", "t", "r", "/m"), Ev("state")).ok());
  store_.reset();
  auto s = JobStore::Open(tmp_.path() + "/jobs.db");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->GetJob("j1")->tenant(), "t");
  auto active = (*s)->ActiveJobs();
  ASSERT_TRUE(active.ok());
  ASSERT_EQ(active->size(), 1u);
}

// The job that ends a started job (FAILED or CANCELLED) records its staging for removal in the same transaction;
// the record survives a reopen until StagingRemoved.
TEST_F(JobStoreTest, EndedJobsStagingIsRecordedUntilRemoved) {
  for (const char* id : {"started-failed", "started-cancelled", "queued-cancelled", "started-succeeded"})
    ASSERT_TRUE(store_->CreateJob(MakeJob(id, "t", id, "/m"), Ev("state")).ok());
  auto end = [&](const std::string& id, v1::JobState state, int attempts) {
    v1::Job j = *store_->GetJob(id);
    j.set_attempts(attempts);
    j.set_state(state);
    std::vector<v1::JobEvent> events = {Ev("state")};
    ASSERT_TRUE(store_->UpdateJob(&j, &events).ok());
  };
  end("started-failed", v1::FAILED, 1);
  end("started-cancelled", v1::CANCELLED, 2);
  end("queued-cancelled", v1::CANCELLED, 0);
  end("started-succeeded", v1::SUCCEEDED, 1);
  auto ids = [&](JobStore* s) {
    std::vector<std::string> out;
    auto jobs = s->StagingToRemove();
    EXPECT_TRUE(jobs.ok()) << jobs.status();
    if (jobs.ok())
      for (const auto& j : *jobs) out.push_back(j.id());
    return out;
  };
  EXPECT_EQ(ids(store_.get()), (std::vector<std::string>{"started-failed", "started-cancelled"}));
  ASSERT_TRUE(store_->StagingRemoved("started-failed").ok());
  store_.reset();
  auto s = JobStore::Open(tmp_.path() + "/jobs.db");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(ids(s->get()), (std::vector<std::string>{"started-cancelled"}));
}

TEST_F(JobStoreTest, ListPagesNewestFirstWithFilters) {
  for (int i = 0; i < 7; ++i) {
    v1::Job j = MakeJob("j" + std::to_string(i), i == 6 ? "other" : "t", "r" + std::to_string(i), "/m");
    (*j.mutable_spec()->mutable_labels())["team"] = i % 2 ? "odd" : "even";
    ASSERT_TRUE(store_->CreateJob(j, Ev("state")).ok());
  }
  ListQuery q;
  q.tenant = "t";
  q.page_size = 2;
  std::vector<std::string> ids;
  for (int page = 0; page < 10; ++page) {
    auto r = store_->ListJobs(q);
    ASSERT_TRUE(r.ok()) << r.status();
    for (const auto& j : r->jobs()) ids.push_back(j.id());
    if (r->next_page_token().empty()) break;
    q.page_token = r->next_page_token();
  }
  EXPECT_EQ(ids, (std::vector<std::string>{"j5", "j4", "j3", "j2", "j1", "j0"}));
  ListQuery lq;
  lq.labels["team"] = "odd";
  auto odd = store_->ListJobs(lq);
  ASSERT_EQ(odd->jobs_size(), 3);
  EXPECT_EQ(odd->jobs(0).id(), "j5");
  EXPECT_TRUE(odd->next_page_token().empty());
  ListQuery sq;
  sq.state = v1::SUCCEEDED;
  EXPECT_EQ(store_->ListJobs(sq)->jobs_size(), 0);
  ListQuery bad;
  bad.page_token = "garbage!";
  EXPECT_EQ(store_->ListJobs(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(JobStoreTest, TokensAndWorkers) {
  TokenRecord r;
  r.tenant = "team-a";
  r.role = Role::kSubmitter;
  ASSERT_TRUE(store_->PutToken("abc", r).ok());
  auto got = store_->LookupToken("abc");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->tenant, "team-a");
  EXPECT_EQ(got->role, Role::kSubmitter);
  EXPECT_EQ(store_->LookupToken("zzz").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*store_->CountTokens(Role::kSubmitter), 1);
  v1::Worker w;
  w.set_id("w1");
  w.set_state("IDLE");
  ASSERT_TRUE(store_->PutWorker(w).ok());
  w.set_state("BUSY");
  ASSERT_TRUE(store_->PutWorker(w).ok());
  auto ws = *store_->Workers();
  ASSERT_EQ(ws.size(), 1u);
  EXPECT_EQ(ws[0].state(), "BUSY");
}

TEST_F(JobStoreTest, CountByState) {
  ASSERT_TRUE(store_->CreateJob(MakeJob("j1", "t", "r1", "/m"), Ev("state")).ok());
  ASSERT_TRUE(store_->CreateJob(MakeJob("j2", "t", "r2", "/m"), Ev("state")).ok());
  auto j = *store_->GetJob("j2");
  j.set_state(v1::FAILED);
  std::vector<v1::JobEvent> ev;
  ASSERT_TRUE(store_->UpdateJob(&j, &ev).ok());
  auto c = *store_->CountByState();
  EXPECT_EQ(c[v1::QUEUED], 1);
  EXPECT_EQ(c[v1::FAILED], 1);
  EXPECT_EQ(store_->ActiveJobs()->size(), 1u);
  ASSERT_TRUE(store_->CreateJob(MakeJob("j3", "u", "r3", "/m"), Ev("state")).ok());
  auto by_tenant = *store_->CountByTenantAndState();
  EXPECT_EQ(by_tenant.size(), 3u);
  EXPECT_EQ((by_tenant[{"t", v1::QUEUED}]), 1);
  EXPECT_EQ((by_tenant[{"t", v1::FAILED}]), 1);
  EXPECT_EQ((by_tenant[{"u", v1::QUEUED}]), 1);
}

// An emptied store file (truncated, a failed copy) is refused instead of becoming a new, empty store; a fresh one is
// made only where no file exists, and a corrupt one is refused as before.
TEST(JobStoreOpenTest, EmptyOrForeignFileIsRefused) {
  llmc::testing::TempDir tmp;
  std::ofstream(tmp.path() + "/empty.db").close();
  auto empty = JobStore::Open(tmp.path() + "/empty.db");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(empty.status().message(), HasSubstr("empty.db"));
  EXPECT_THAT(empty.status().message(), HasSubstr("restore it from a backup"));
  std::ofstream(tmp.path() + "/foreign.db") << "not a database, but some text that fills a few bytes";
  EXPECT_FALSE(JobStore::Open(tmp.path() + "/foreign.db").ok());
  auto fresh = JobStore::Open(tmp.path() + "/fresh.db");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  fresh->reset();
  EXPECT_TRUE(JobStore::Open(tmp.path() + "/fresh.db").ok());  // reopening the store it made
}

// Overwrites `n` bytes of `path` at `offset` with `byte`.
void Scribble(const std::string& path, long offset, size_t n, char byte) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(offset);
  f << std::string(n, byte);
}

TEST(JobStoreIntegrityTest, DamagedStoreIsRefusedWithTheRestoreProcedure) {
  llmc::testing::TempDir tmp;
  const std::string path = tmp.path() + "/jobs.db";
  {
    auto s = JobStore::Open(path);
    ASSERT_TRUE(s.ok()) << s.status();
    for (int i = 0; i < 100; ++i)
      ASSERT_TRUE((*s)->CreateJob(MakeJob("j" + std::to_string(i), "t", "r" + std::to_string(i), std::string(1000, 'm')),
                                  Ev("state")).ok());
  }
  // Checkpointed into the main file when the last connection closed; damage a b-tree page in the middle.
  ASSERT_GT(std::filesystem::file_size(path), 4 * 4096u);
  Scribble(path, 2 * 4096 + 8, 2000, '\xff');
  auto bad = JobStore::Open(path);
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kDataLoss) << bad.status();
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("damaged"));
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("llmc-server restore"));
  // Not a database at all.
  Scribble(path, 0, 16, 'x');
  bad = JobStore::Open(path);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss) << bad.status();
}

TEST(JobStoreIntegrityTest, OnlineBackupAndRestore) {
  llmc::testing::TempDir tmp;
  const std::string path = tmp.path() + "/jobs.db";
  auto s = JobStore::Open(path);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE((*s)->CreateJob(MakeJob("j1", "t", "r1", "/m"), Ev("state")).ok());
  // While the store is open and being written (as under a running server).
  ASSERT_TRUE(BackupStore(path, tmp.path() + "/b1.db").ok());
  ASSERT_TRUE((*s)->CreateJob(MakeJob("j2", "t", "r2", "/m"), Ev("state")).ok());
  EXPECT_EQ(BackupStore(path, tmp.path() + "/b1.db").code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(BackupStore(tmp.path() + "/none.db", tmp.path() + "/b2.db").code(), absl::StatusCode::kNotFound);
  s->reset();
  // A backup that is not a job store, or is damaged, is refused.
  std::ofstream(tmp.path() + "/junk.db") << "not a database";
  EXPECT_FALSE(RestoreStore(path, tmp.path() + "/junk.db").ok());
  EXPECT_TRUE(std::filesystem::exists(path));
  auto moved = RestoreStore(path, tmp.path() + "/b1.db");
  ASSERT_TRUE(moved.ok()) << moved.status();
  ASSERT_FALSE(moved->empty());
  EXPECT_TRUE(std::filesystem::exists((*moved)[0]));
  auto r = JobStore::Open(path);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((*r)->GetJob("j1").ok());
  EXPECT_EQ((*r)->GetJob("j2").status().code(), absl::StatusCode::kNotFound);  // made after the backup
}

}  // namespace
}  // namespace llmc::server
