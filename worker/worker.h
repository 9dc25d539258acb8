// llmc-worker: dials the coordinator, registers, heartbeats on its own thread and runs the jobs assigned to it
// through the job path (worker/job_io.h, the same as `llmc compress`), one at a time (worker.proto describes the protocol).
//
// Per job (rank 0): the spec's URIs go to RunJobToOutput as they are (file:// or s3://); the engine writes into the Assignment's
// staging directory with keep_staging, starting at resume_from_block; progress is sent at most once a second
// (and at every finished block), BlockDone after each block is durable, JobFinished at the end. A
// CancelAssignment stops the engine promptly (JobControl::cancel): for a cancel the staging output is removed,
// for a move (keep_staging) it is kept. If the connection drops, the running job is stopped with its staging
// kept (the coordinator re-queues it to resume), and the worker reconnects with backoff and registers again.
// Ranks > 0 of a gang hold their slot until the job ends (this engine build computes on rank 0).
//
// Thread-safety: Run() on one thread; Stop() from any thread (e.g. a signal handler thread).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "llmc/v1/worker.grpc.pb.h"

namespace llmc::worker {

struct WorkerOptions {
  std::string coordinator = "127.0.0.1:7443";
  std::string token;
  std::string worker_id;  // "": HOST-PID
  std::string device = "cpu";
  int threads = 0;
  std::string ca_cert;  // PEM: connect with TLS
  // Testing only: sleep this long after each durable block (makes "kill mid-job" tests deterministic).
  int block_delay_ms = 0;
};

class Worker {
 public:
  explicit Worker(WorkerOptions options);
  ~Worker();
  // Serves until Stop(). Returns an error only for a permanent failure (the coordinator rejected the token).
  absl::Status Run() ABSL_LOCKS_EXCLUDED(mu_);
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  bool Send(const v1::WorkerMessage& m) ABSL_LOCKS_EXCLUDED(mu_);
  void RunAssignment(v1::Assignment a) ABSL_LOCKS_EXCLUDED(mu_);
  void RunRank0(const v1::Assignment& a) ABSL_LOCKS_EXCLUDED(mu_);
  void Heartbeats(int64_t lease_ms) ABSL_LOCKS_EXCLUDED(mu_);

  const WorkerOptions options_;
  std::string host_;

  std::atomic<bool> stop_{false};
  absl::Mutex mu_;  // guards the stream pointers and the session state
  grpc::ClientContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  grpc::ClientReaderWriter<v1::WorkerMessage, v1::CoordinatorMessage>* stream_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool session_up_ ABSL_GUARDED_BY(mu_) = false;
  absl::CondVar session_cv_;  // session_up_ or stop_ changed

  // The current job.
  std::thread job_thread_;
  std::atomic<bool> job_running_{false};
  std::string job_id_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> cancel_{false};
  std::atomic<bool> keep_staging_{true};
};

}  // namespace llmc::worker
