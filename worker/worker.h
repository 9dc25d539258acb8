// llmc-worker: dials the coordinator, registers, heartbeats on its own thread and runs the jobs assigned to it
// through the job path (worker/job_io.h, the same as `llmc compress`), one at a time (worker.proto describes the protocol).
//
// Per assignment: the spec's URIs go to RunJobToOutput as they are (file:// or s3://). A job of several ranks (a
// gang: world_size > 1) first forms its communicator through the coordinator's rendezvous relay (GangStore,
// keys prefixed with the job id and attempt): Gloo over TCP on --comm-address for cpu workers, NCCL on the GPU for
// cuda workers. Every rank then runs the same job; rank 0 writes the output into the Assignment's staging
// directory with keep_staging, starting at resume_from_block, sends progress at most once a second (and at every
// finished block) and BlockDone after each block is durable; the other ranks compute their share and write
// nothing. Every rank ends with JobFinished (ranks > 0 with their solver report), sent before its communicator
// closes, so a rank's own error reaches the coordinator before the ABORTED of the others.
//
// A CancelAssignment stops the engine promptly (JobControl::cancel; a rank still meeting its gang stops waiting):
// for a cancel rank 0 removes the staging output, for a move (keep_staging) it keeps it, and it also keeps it
// when a collective failed (the gang broke: the coordinator re-forms it and the job resumes). If the connection
// drops, the running job is stopped with its staging kept (the coordinator re-queues it to resume), and the
// worker reconnects with backoff and registers again.
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
#include "engine/dist/communicator.h"
#include "llmc/v1/worker.grpc.pb.h"
#include "worker/device_stats.h"
#include "worker/gang_store.h"

namespace llmc::worker {

struct WorkerOptions {
  std::string coordinator = "127.0.0.1:7443";
  std::string token;
  std::string worker_id;  // "": HOST-PID
  std::string device = "cpu";
  int threads = 0;
  std::string ca_cert;  // PEM: connect with TLS
  // Gangs of cpu workers (Gloo): the address this worker listens on for the other ranks of a job (an ephemeral
  // port per job). Every other worker of the gang must reach it: the default suits workers on one host.
  std::string comm_address = "127.0.0.1";
  // Forming a gang's communicator, and each of its collectives, fails after this long without the other ranks
  // (they wait for slower ranks; rank 0 writes the unquantized tensors before the first collective of the layers).
  int comm_timeout_s = 300;
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
  // The job thread: runs the assignment and reports its end.
  void RunAssignment(v1::Assignment a, std::shared_ptr<GangStore> gang) ABSL_LOCKS_EXCLUDED(mu_);
  // Runs one rank of the job (forming `*comm` first for a gang) and returns its JobFinished.
  v1::WorkerMessage RunJob(const v1::Assignment& a, GangStore* gang, std::unique_ptr<Communicator>* comm)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Heartbeats(int64_t lease_ms) ABSL_LOCKS_EXCLUDED(mu_);
  // A heartbeat with the device's figures and the process's storage counters (heartbeat thread only).
  v1::WorkerMessage HeartbeatMessage();

  const WorkerOptions options_;
  std::string host_;
  // Used by the heartbeat thread only (one at a time: a session's thread is joined before the next starts).
  std::unique_ptr<DeviceStatsSampler> sampler_;
  bool logged_sample_error_ = false;

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
  // The current gang assignment's rendezvous store: the stream reader delivers relayed keys to it.
  std::shared_ptr<GangStore> gang_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> cancel_{false};
  std::atomic<bool> keep_staging_{true};
};

}  // namespace llmc::worker
