// Tenants against a real llmc-server (Server::Start) over loopback gRPC, with a worker speaking the worker
// protocol on its own stream: what one tenant can see of another (ListWorkers, output conflicts), per-tenant roots
// (also as sent to the worker) and per-tenant quotas.
#include <grpcpp/grpcpp.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "llmc/v1/compression.grpc.pb.h"
#include "llmc/v1/worker.grpc.pb.h"
#include "server/server.h"
#include "tests/support/temp_dir.h"

namespace llmc::server {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

std::string ReadLine(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

void MakeModel(const std::string& dir) {
  fs::create_directories(dir);
  std::ofstream(dir + "/config.json") << "{}";
}

class TenantIsolationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_.path() + "/root";
    shared_ = tmp_.path() + "/shared";
    MakeModel(root_ + "/model");
    MakeModel(shared_ + "/model");
  }
  void TearDown() override {
    if (worker_ctx_) worker_ctx_->TryCancel();
    if (server_) server_->Shutdown();
  }
  void Start(ServerOptions o) {
    data_ = tmp_.path() + "/data";
    o.data_dir = data_;
    o.listen = "127.0.0.1:0";
    o.http_listen = "";
    o.allowed_roots = {root_};
    auto s = Server::Start(o);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->grpc_port()), grpc::InsecureChannelCredentials());
    stub_ = v1::Compression::NewStub(channel_);
    admin_ = ReadLine(data_ + "/admin.token");
    for (const char* t : {"a", "b"}) {
      auto tok = CreateTokenInDataDir(data_, t, "submitter", "");
      ASSERT_TRUE(tok.ok()) << tok.status();
      tokens_[t] = *tok;
    }
  }
  v1::JobSpec Spec(const std::string& model, const std::string& out, int gpus = 0) {
    v1::JobSpec s;
    s.set_model_uri(model);
    s.set_output_uri(out);
    s.mutable_preset()->set_scheme("W4A16");
    s.set_gpus(gpus);
    return s;
  }
  grpc::Status Create(const std::string& token, const v1::JobSpec& spec, const std::string& rid, v1::Job* job = nullptr) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::CreateJobRequest r;
    r.set_request_id(rid);
    *r.mutable_spec() = spec;
    v1::Job j;
    return stub_->CreateJob(&ctx, r, job ? job : &j);
  }
  v1::ListWorkersResponse Workers(const std::string& token) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    v1::ListWorkersRequest r;
    v1::ListWorkersResponse resp;
    EXPECT_TRUE(stub_->ListWorkers(&ctx, r, &resp).ok());
    return resp;
  }
  // Registers a worker on its own stream and returns the first assignment it is sent.
  v1::Assignment ConnectWorkerAndTakeJob() {
    worker_stub_ = v1::WorkerService::NewStub(channel_);
    worker_ctx_ = std::make_unique<grpc::ClientContext>();
    worker_ctx_->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    stream_ = worker_stub_->Connect(worker_ctx_.get());
    v1::WorkerMessage m;
    m.mutable_register_()->set_worker_id("w1");
    m.mutable_register_()->set_host("test");
    m.mutable_register_()->set_device("cpu");
    m.mutable_register_()->set_token(ReadLine(data_ + "/worker.token"));
    EXPECT_TRUE(stream_->Write(m));
    v1::CoordinatorMessage in;
    while (stream_->Read(&in))
      if (in.has_assign()) return in.assign();
    ADD_FAILURE() << "no assignment";
    return {};
  }

  llmc::testing::TempDir tmp_;
  std::string root_, shared_, data_, admin_;
  std::map<std::string, std::string> tokens_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Compression::Stub> stub_;
  std::unique_ptr<v1::WorkerService::Stub> worker_stub_;
  std::unique_ptr<grpc::ClientContext> worker_ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::WorkerMessage, v1::CoordinatorMessage>> stream_;
};

TEST_F(TenantIsolationTest, ListWorkersAndConflictsShowNoOtherTenantsJob) {
  Start({});
  v1::Job job;
  ASSERT_TRUE(Create(tokens_["a"], Spec(root_ + "/model", root_ + "/out"), "r1", &job).ok());
  v1::Assignment as = ConnectWorkerAndTakeJob();
  ASSERT_EQ(as.job_id(), job.id());
  // The worker is told where the job may read and write, and what it may never touch.
  EXPECT_THAT(as.allowed_roots(), ElementsAre(fs::canonical(root_).string(), fs::canonical(data_).string() + "/storage"));
  EXPECT_THAT(as.denied_dirs(), ElementsAre(fs::canonical(data_).string()));

  auto seen_by = [&](const std::string& token) {
    auto r = Workers(token);
    EXPECT_EQ(r.workers_size(), 1);
    return r.workers_size() == 1 ? r.workers(0) : v1::Worker();
  };
  EXPECT_EQ(seen_by(tokens_["a"]).job_id(), job.id());
  EXPECT_EQ(seen_by(admin_).job_id(), job.id());
  v1::Worker other = seen_by(tokens_["b"]);
  EXPECT_EQ(other.state(), "BUSY");
  EXPECT_EQ(other.job_id(), "");

  // Tenant b asking for the same output is told it is taken, not by which job.
  grpc::Status c = Create(tokens_["b"], Spec(root_ + "/model", root_ + "/out"), "r1");
  EXPECT_EQ(c.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(c.error_message(), HasSubstr("another job"));
  EXPECT_THAT(c.error_message(), Not(HasSubstr(job.id())));
  // Tenant a is told which of its own jobs.
  c = Create(tokens_["a"], Spec(root_ + "/model", root_ + "/out"), "r2");
  EXPECT_EQ(c.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(c.error_message(), HasSubstr(job.id()));
}

TEST_F(TenantIsolationTest, PerTenantRootsKeepTenantsApart) {
  ServerOptions o;
  o.tenant_roots.per_tenant = true;
  o.tenant_roots.shared_input_roots = {shared_};
  Start(o);
  MakeModel(root_ + "/a/model");
  MakeModel(root_ + "/b/model");
  // Its own directory: fine; the other tenant's, or the operator's root itself: PERMISSION_DENIED.
  v1::Job job;
  ASSERT_TRUE(Create(tokens_["a"], Spec(root_ + "/a/model", root_ + "/a/out"), "r1", &job).ok());
  grpc::Status c = Create(tokens_["a"], Spec(root_ + "/b/model", root_ + "/a/out2"), "r2");
  EXPECT_EQ(c.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(c.error_message(), HasSubstr("spec.model_uri"));
  c = Create(tokens_["a"], Spec(root_ + "/a/model", root_ + "/b/out"), "r3");
  EXPECT_EQ(c.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  c = Create(tokens_["b"], Spec(root_ + "/model", root_ + "/b/out"), "r1");
  EXPECT_EQ(c.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // The shared input root is readable by every tenant, not writable.
  EXPECT_TRUE(Create(tokens_["b"], Spec(shared_ + "/model", root_ + "/b/out"), "r2").ok());
  c = Create(tokens_["b"], Spec(shared_ + "/model", shared_ + "/out"), "r3");
  EXPECT_EQ(c.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // The worker gets the job's tenant's roots.
  v1::Assignment as = ConnectWorkerAndTakeJob();
  ASSERT_EQ(as.job_id(), job.id());
  EXPECT_THAT(as.allowed_roots(),
              ElementsAre(fs::canonical(root_).string() + "/a", fs::canonical(data_).string() + "/storage/a"));
  EXPECT_THAT(as.input_roots(), ElementsAre(fs::canonical(shared_).string()));
  EXPECT_TRUE(fs::is_directory(data_ + "/storage/a"));
}

TEST_F(TenantIsolationTest, QuotasAreEnforcedPerTenant) {
  ServerOptions o;
  o.quotas.max_active_jobs = 2;
  o.quotas.max_gpus = 3;
  Start(o);
  ASSERT_TRUE(Create(tokens_["a"], Spec(root_ + "/model", root_ + "/o1", 2), "r1").ok());
  // 2 GPUs queued + 2 more > 3.
  grpc::Status c = Create(tokens_["a"], Spec(root_ + "/model", root_ + "/o2", 2), "r2");
  EXPECT_EQ(c.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(c.error_message(), HasSubstr("--tenant-max-gpus (3)"));
  ASSERT_TRUE(Create(tokens_["a"], Spec(root_ + "/model", root_ + "/o2", 1), "r3").ok());
  c = Create(tokens_["a"], Spec(root_ + "/model", root_ + "/o3", 0), "r4");
  EXPECT_EQ(c.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(c.error_message(), HasSubstr("--tenant-max-active-jobs (2)"));
  // Another tenant has its own.
  EXPECT_TRUE(Create(tokens_["b"], Spec(root_ + "/model", root_ + "/o4", 0), "r1").ok());
  // A cancelled job no longer counts.
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + tokens_["a"]);
    v1::ListJobsRequest r;
    v1::ListJobsResponse resp;
    ASSERT_TRUE(stub_->ListJobs(&ctx, r, &resp).ok());
    ASSERT_GE(resp.jobs_size(), 1);
    grpc::ClientContext cctx;
    cctx.AddMetadata("authorization", "Bearer " + tokens_["a"]);
    v1::CancelJobRequest cr;
    cr.set_id(resp.jobs(0).id());
    v1::Job cancelled;
    ASSERT_TRUE(stub_->CancelJob(&cctx, cr, &cancelled).ok());
  }
  EXPECT_TRUE(Create(tokens_["a"], Spec(root_ + "/model", root_ + "/o3", 0), "r4").ok());
}

TEST_F(TenantIsolationTest, SpecBytesQuota) {
  ServerOptions o;
  o.quotas.max_spec_bytes = 300;
  Start(o);
  ASSERT_TRUE(Create(tokens_["a"], Spec(root_ + "/model", root_ + "/o1"), "r1").ok());
  v1::JobSpec big = Spec(root_ + "/model", root_ + "/o2");
  (*big.mutable_labels())["note"] = std::string(200, 'x');
  grpc::Status c = Create(tokens_["a"], big, "r2");
  EXPECT_EQ(c.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(c.error_message(), HasSubstr("--tenant-max-spec-bytes (300)"));
  EXPECT_THAT(c.error_message(), HasSubstr("queued or running"));
  v1::JobSpec big_b = big;
  big_b.set_output_uri(root_ + "/o2b");
  EXPECT_TRUE(Create(tokens_["b"], big_b, "r1").ok());
  // Only jobs that are still queued or running count: once the first one ended, the big one fits (a tenant is
  // never locked out by its history).
  v1::Job first;
  ASSERT_TRUE(Create(tokens_["a"], Spec(root_ + "/model", root_ + "/o1"), "r1", &first).ok());  // idempotent repeat
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + tokens_["a"]);
    v1::CancelJobRequest cr;
    cr.set_id(first.id());
    v1::Job cancelled;
    ASSERT_TRUE(stub_->CancelJob(&ctx, cr, &cancelled).ok());
  }
  EXPECT_TRUE(Create(tokens_["a"], big, "r2").ok());
  // The big job is queued now, so it counts again.
  grpc::Status again = Create(tokens_["a"], Spec(root_ + "/model", root_ + "/o3"), "r3");
  EXPECT_EQ(again.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(TenantIsolationTest, BadQuotaOrSharedRootIsRefusedAtStart) {
  ServerOptions o;
  o.data_dir = tmp_.path() + "/data";
  o.listen = "127.0.0.1:0";
  o.http_listen = "";
  o.quotas.max_gpus = -1;
  auto s = Server::Start(o);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("--tenant-max-gpus"));
  o.quotas.max_gpus = 0;
  o.tenant_roots.shared_roots = {tmp_.path() + "/missing"};
  s = Server::Start(o);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("missing"));
}

}  // namespace
}  // namespace llmc::server
