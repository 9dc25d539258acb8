#include "tests/service/service_fixture.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "proto/channel.h"
#include "tests/support/process.h"

namespace llmc::testing {

namespace fs = std::filesystem;
using rpc::AddAuth;

std::string BinDir() { return std::string(LLMC_BINARY_DIR) + "/bin/"; }

std::string ServiceSharedDir() {
  if (const char* e = std::getenv("LLMC_SHARED_DIR")) return e;
  return (fs::path(LLMC_SOURCE_DIR) / ".." / "shared").lexically_normal().string();
}
bool HaveFixture() { return fs::exists(ServiceSharedDir() + "/models/llmc-fixture-llama/config.json"); }
std::string Fixture() { return ServiceSharedDir() + "/models/llmc-fixture-llama"; }
std::string Calibration() { return ServiceSharedDir() + "/data/calibration.txt"; }

void ExpectSameCheckpoint(const std::string& a, const std::string& b) {
  ASSERT_TRUE(fs::is_directory(a)) << a;
  ASSERT_TRUE(fs::is_directory(b)) << b;
  int n = 0;
  for (const auto& e : fs::directory_iterator(a)) {
    const std::string name = e.path().filename().string();
    if (name == "compression_report.json") continue;
    EXPECT_TRUE(ReadAll(e.path().string()) == ReadAll(b + "/" + name)) << name << " differs";
    ++n;
  }
  int m = 0;
  for (const auto& e : fs::directory_iterator(b))
    if (e.path().filename() != "compression_report.json") ++m;
  EXPECT_EQ(n, m);
  EXPECT_GT(n, 2);
}

std::vector<std::string> StagingLeft(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find("llmc-staging") != std::string::npos) out.push_back(e.path().string());
  return out;
}

bool IsBlockEvent(const v1::JobEvent& e, int finished) {
  return e.type() == "block" && e.message().find(absl::StrCat(" ", finished, " finished")) != std::string::npos;
}

int ResumedAt(const v1::JobEvent& e) {
  const std::string kResuming = "resuming at block ";
  auto p = e.message().find(kResuming);
  int block = -1;
  if (e.type() == "state" && e.state() == v1::RUNNING && p != std::string::npos &&
      absl::SimpleAtoi(e.message().substr(p + kResuming.size()), &block))
    return block;
  return -1;
}

void ServiceFixture::SetUp() {
  data_ = tmp_ / "data";
  work_ = tmp_ / "work";
  fs::create_directories(work_);
  log_ = tmp_ / "service.log";
}

void ServiceFixture::TearDown() {
  for (pid_t p : workers_) Stop(p, SIGKILL, 2000);
  Stop(server_, SIGKILL, 2000);
  if (HasFailure() || std::getenv("LLMC_TEST_SHOW_LOGS"))
    std::cerr << "---- service log ----\n" << ReadAll(log_) << "---------------------\n";
}

void ServiceFixture::StartServer(std::vector<std::string> extra) {
  const std::string ready = tmp_ / "ready";
  fs::remove(ready);
  std::vector<std::string> argv = {BinDir() + "llmc-server", "--data-dir", data_,
                                   "--listen", absl::StrCat("127.0.0.1:", grpc_port_),
                                   "--http-listen", absl::StrCat("127.0.0.1:", http_port_),
                                   "--allowed-root", work_, "--ready-file", ready, "--lease-ms", "3000"};
  if (shared_input_root_ && HaveFixture()) argv.insert(argv.end(), {"--allowed-input-root", ServiceSharedDir()});
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.insert(argv.begin(), launcher_.begin(), launcher_.end());
  server_ = Spawn(argv, log_);
  for (int i = 0; i < 300 && !fs::exists(ready); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::ifstream in(ready);
  ASSERT_TRUE(in >> grpc_port_ >> http_port_) << "llmc-server did not start; log:\n" << ReadAll(log_);
  addr_ = absl::StrCat("127.0.0.1:", grpc_port_);
  stub_ = v1::Compression::NewStub(grpc::CreateChannel(addr_, grpc::InsecureChannelCredentials()));
  admin_ = ReadAll(data_ + "/admin.token");
  while (!admin_.empty() && admin_.back() == '\n') admin_.pop_back();
}

void ServiceFixture::StartServe(int workers, std::vector<std::string> extra) {
  std::vector<std::string> argv = {BinDir() + "llmc", "serve", "--data-dir", data_, "--port", "0", "--http-port", "0",
                                   "--workers", absl::StrCat(workers), "--no-cwd-root", "--allowed-root", work_};
  if (shared_input_root_ && HaveFixture()) argv.insert(argv.end(), {"--allowed-input-root", ServiceSharedDir()});
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.insert(argv.begin(), launcher_.begin(), launcher_.end());
  server_ = Spawn(argv, log_);
  for (int i = 0; i < 300 && !fs::exists(data_ + "/serve.ready"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::ifstream in(data_ + "/serve.ready");
  ASSERT_TRUE(in >> grpc_port_ >> http_port_) << "llmc serve did not start; log:\n" << ReadAll(log_);
  addr_ = absl::StrCat("127.0.0.1:", grpc_port_);
  stub_ = v1::Compression::NewStub(grpc::CreateChannel(addr_, grpc::InsecureChannelCredentials()));
  admin_ = ReadAll(data_ + "/admin.token");
  while (!admin_.empty() && admin_.back() == '\n') admin_.pop_back();
}

pid_t ServiceFixture::StartWorker(const std::string& id, int block_delay_ms, int threads) {
  pid_t p = Spawn({BinDir() + "llmc-worker", "--coordinator", addr_, "--token-file", data_ + "/worker.token",
                   "--worker-id", id, "--threads", absl::StrCat(threads), "--test-block-delay-ms",
                   absl::StrCat(block_delay_ms)},
                  log_);
  workers_.push_back(p);
  worker_pids_[id] = p;
  return p;
}

void ServiceFixture::WaitWorkers(int n, const std::string& state) {
  for (int i = 0; i < 200; ++i) {
    auto w = ListWorkers();
    int k = 0;
    for (const auto& x : w.workers()) k += x.state() == state;
    if (k >= n) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  FAIL() << "workers did not reach " << state;
}

v1::ListWorkersResponse ServiceFixture::ListWorkers() {
  grpc::ClientContext ctx;
  AddAuth(&ctx, admin_);
  v1::ListWorkersResponse r;
  stub_->ListWorkers(&ctx, {}, &r);
  return r;
}

grpc::Status ServiceFixture::Create(const std::string& token, const std::string& rid, const v1::JobSpec& spec,
                                    v1::Job* job) {
  grpc::ClientContext ctx;
  AddAuth(&ctx, token);
  v1::CreateJobRequest r;
  r.set_request_id(rid);
  *r.mutable_spec() = spec;
  return stub_->CreateJob(&ctx, r, job);
}

grpc::Status ServiceFixture::Get(const std::string& token, const std::string& id, v1::Job* job) {
  grpc::ClientContext ctx;
  AddAuth(&ctx, token);
  v1::GetJobRequest r;
  r.set_id(id);
  return stub_->GetJob(&ctx, r, job);
}

grpc::Status ServiceFixture::Cancel(const std::string& id, v1::Job* job) {
  grpc::ClientContext ctx;
  AddAuth(&ctx, admin_);
  v1::CancelJobRequest r;
  r.set_id(id);
  return stub_->CancelJob(&ctx, r, job);
}

v1::Job ServiceFixture::WaitFinal(const std::string& id, int timeout_s) {
  v1::Job job;
  for (int i = 0; i < timeout_s * 10; ++i) {
    grpc::Status st = Get(admin_, id, &job);
    if (st.ok() && (job.state() == v1::SUCCEEDED || job.state() == v1::FAILED || job.state() == v1::CANCELLED))
      return job;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ADD_FAILURE() << "job " << id << " did not finish; last state " << v1::JobState_Name(job.state());
  return job;
}

std::vector<v1::JobEvent> ServiceFixture::Events(const std::string& id, int64_t from_seq,
                                                 const std::function<bool(const v1::JobEvent&)>& stop_at) {
  grpc::ClientContext ctx;
  AddAuth(&ctx, admin_);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(90));
  v1::WatchJobRequest r;
  r.set_id(id);
  r.set_from_seq(from_seq);
  auto reader = stub_->WatchJob(&ctx, r);
  std::vector<v1::JobEvent> out;
  v1::JobEvent e;
  while (reader->Read(&e)) {
    out.push_back(e);
    if (stop_at && stop_at(e)) {
      ctx.TryCancel();
      break;
    }
  }
  reader->Finish();
  return out;
}

v1::JobSpec ServiceFixture::GptqSpec(const std::string& out, int samples, int seq_len) {
  v1::JobSpec s;
  s.set_model_uri(Fixture());
  s.set_output_uri(out);
  s.mutable_preset()->set_scheme("W4A16");
  s.mutable_preset()->set_algorithm("gptq");
  s.mutable_calibration()->set_dataset_uri(Calibration());
  s.mutable_calibration()->set_num_samples(samples);
  s.mutable_calibration()->set_seq_len(seq_len);
  s.set_max_shard_size("10MB");
  return s;
}

std::vector<std::string> ServiceFixture::GptqArgs(const std::string& out) {
  return {Fixture(), out, "--scheme", "W4A16", "--algorithm", "gptq", "--dataset", Calibration(),
          "--num-samples", "4", "--seq-len", "64", "--max-shard-size", "10MB", "--threads", "2"};
}

}  // namespace llmc::testing
