// What the service's multi-process tests share: a real llmc-server (or `llmc serve`) and llmc-worker processes on
// loopback with a temporary data directory, a gRPC stub with the admin token, and helpers to create, follow and
// compare jobs. Tests needing the fixture model skip visibly without ../shared. LLMC_TEST_SHOW_LOGS=1 prints the
// processes' log (it is printed anyway when a test fails).
#pragma once

#include <sys/types.h>

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "llmc/v1/compression.grpc.pb.h"
#include "tests/support/temp_dir.h"

namespace llmc::testing {

// The directory of the binaries under test (build/bin/).
std::string BinDir();
// ../shared (or $LLMC_SHARED_DIR), the fixture model and its calibration text.
std::string ServiceSharedDir();
bool HaveFixture();
std::string Fixture();
std::string Calibration();

// Every file of `a` but compression_report.json (timings) is byte-identical in `b`, and b has no others.
void ExpectSameCheckpoint(const std::string& a, const std::string& b);
// Staging directories (".*.llmc-staging-*") left in `dir`.
std::vector<std::string> StagingLeft(const std::string& dir);
// A "block" event saying that `finished` blocks are finished (the resume point moved to `finished`).
bool IsBlockEvent(const v1::JobEvent& e, int finished);
// The block a RUNNING state event says the attempt resumes at; -1 when it does not resume.
int ResumedAt(const v1::JobEvent& e);

class ServiceFixture : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Starts llmc-server on data_ (port 0 the first time, then the same port again), lease 3 s.
  void StartServer(std::vector<std::string> extra = {});
  // Starts `llmc serve` with `workers` local workers on data_ (ports 0); sets addr_, stub_ and admin_.
  void StartServe(int workers, std::vector<std::string> extra = {});
  // Starts a worker `id` (its pid is also in worker_pids_[id]).
  pid_t StartWorker(const std::string& id, int block_delay_ms = 0, int threads = 2);
  // Waits until at least `n` workers are in `state` (10 s).
  void WaitWorkers(int n, const std::string& state = "IDLE");
  v1::ListWorkersResponse ListWorkers();

  grpc::Status Create(const std::string& token, const std::string& rid, const v1::JobSpec& spec, v1::Job* job);
  grpc::Status Get(const std::string& token, const std::string& id, v1::Job* job);
  grpc::Status Cancel(const std::string& id, v1::Job* job);
  // Polls until the job is final (or the timeout).
  v1::Job WaitFinal(const std::string& id, int timeout_s = 90);
  // Reads the job's events from `from_seq` until `stop_at` holds for one (the last returned) or the stream ends.
  std::vector<v1::JobEvent> Events(const std::string& id, int64_t from_seq,
                                   const std::function<bool(const v1::JobEvent&)>& stop_at = nullptr);

  // GPTQ W4A16 on the fixture model, shards of 10 MB.
  v1::JobSpec GptqSpec(const std::string& out, int samples = 4, int seq_len = 64);
  // The same job as `llmc compress` arguments (with --threads 2).
  std::vector<std::string> GptqArgs(const std::string& out);

  TempDir tmp_;
  // Put before the `llmc serve` / llmc-server command line when not empty (e.g. {"prlimit", "--as=N", "--"}).
  std::vector<std::string> launcher_;
  // Whether StartServer/StartServe allow the fixture directory (../shared) as an input root when it exists.
  bool shared_input_root_ = true;
  std::string data_, work_, log_, addr_, admin_;
  int grpc_port_ = 0, http_port_ = 0;
  pid_t server_ = -1;
  std::vector<pid_t> workers_;
  std::map<std::string, pid_t> worker_pids_;
  std::unique_ptr<v1::Compression::Stub> stub_;
};

}  // namespace llmc::testing
