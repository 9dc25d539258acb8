// The coordinator's core: jobs (through the JobStore), the worker registry, the scheduler loop and the event
// feeds that WatchJob waits on. The gRPC and HTTP front ends (grpc_services.h, http_api.h) authenticate the
// caller and call these methods; everything here works on absl::Status and is tested without gRPC.
//
// Job life: CreateJob -> QUEUED -> (scheduler) RUNNING -> SUCCEEDED | FAILED. CancelJob -> CANCELLED from
// QUEUED/RUNNING/RETRYING. A worker lost (stream closed or no heartbeat within the lease) or a coordinator
// restart puts a RUNNING job in RETRYING; it is queued again and its next Assignment carries
// resume_from_block = finished_blocks (consecutive blocks reported durable by BlockDone). After
// max_attempts lost attempts the job FAILS. A job with gpus = G runs on G workers (ranks 0..G-1, all computing);
// rank 0's end ends the job, any rank's failure ends the attempt: a lost worker, a stopped rank or a broken gang
// (rpc::IsGangFailure) re-queues the job once all its ranks have stopped, any other error FAILS it.
//
// Thread-safety: all public methods are thread-safe. One mutex (mu_) guards the in-memory state and orders
// the store writes, so every job's events are appended in order. Worker streams are written while holding
// mu_ (messages are small; a stream's send is serialized by its own lock). Lock order: mu_, then a feed's mu.
// Public methods take mu_ themselves (ABSL_LOCKS_EXCLUDED); *Locked helpers need it held.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "llmc/v1/compression.pb.h"
#include "llmc/v1/worker.pb.h"
#include "server/access_policy.h"
#include "server/auth.h"
#include "server/job_store.h"
#include "server/metrics.h"
#include "server/spec_limits.h"

namespace llmc::server {

// Per-tenant quotas (0: none). A CreateJob over one is RESOURCE_EXHAUSTED naming the quota's flag.
struct TenantQuotas {
  int64_t max_active_jobs = 0;  // QUEUED, RUNNING or RETRYING jobs of the tenant (--tenant-max-active-jobs)
  int64_t max_gpus = 0;         // sum of spec.gpus (0 counts as 1) over those jobs (--tenant-max-gpus)
  int64_t max_spec_bytes = 0;   // bytes of the specs of the tenant's QUEUED/RUNNING/RETRYING jobs (--tenant-max-spec-bytes)
};

struct CoordinatorOptions {
  AccessPolicy policy;
  int64_t lease_ms = 6000;  // a worker silent this long is LOST
  int max_attempts = 3;     // lost attempts before a job fails
  bool check_local_paths = true;  // check file:// models exist and outputs do not, at create time
  SpecLimits limits;              // calibration bounds (the fixed field limits are in spec_limits.h)
  TenantQuotas quotas;
};

// How the coordinator talks to one connected worker. Both functions are thread-safe.
struct WorkerLink {
  std::function<bool(const v1::CoordinatorMessage&)> send;  // false: the stream is gone
  std::function<void()> close;                              // ends the stream (the worker reconnects)
};

class Coordinator {
 public:
  // `store` and `metrics` must outlive the coordinator.
  Coordinator(CoordinatorOptions options, JobStore* store, ServiceMetrics* metrics);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Recovers the store's state (RUNNING jobs become RETRYING; stored workers LOST) and starts the scheduler
  // thread.
  absl::Status Start() ABSL_LOCKS_EXCLUDED(mu_);
  // Stops the scheduler thread and wakes every WatchJob (they return UNAVAILABLE). Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // ---- public API (the caller is authenticated; these check roles and tenants) ----
  absl::StatusOr<v1::Job> CreateJob(const Principal& p, const v1::CreateJobRequest& req)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<v1::Job> GetJob(const Principal& p, const std::string& id) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const Principal& p, const v1::ListJobsRequest& req)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<v1::Job> CancelJob(const Principal& p, const std::string& id) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<v1::ValidateJobResponse> ValidateJob(const Principal& p, const v1::JobSpec& spec);
  // Calls `write` for every event after req.from_seq, then for live ones, until the job is final (OK), `write`
  // returns false or `cancelled()` is true (CANCELLED), or the coordinator stops (UNAVAILABLE).
  absl::Status WatchJob(const Principal& p, const v1::WatchJobRequest& req,
                        const std::function<bool(const v1::JobEvent&)>& write, const std::function<bool()>& cancelled)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<v1::ListWorkersResponse> ListWorkers(const Principal& p) ABSL_LOCKS_EXCLUDED(mu_);

  // ---- change feed for live views (the console's stream, http_api.cc) ----
  // Every committed change of a job (state, progress, events) gets the next change number. WaitJobChanges blocks
  // until there are changes after `after` or `timeout` passes, and returns the newest number with the ids of the
  // jobs changed since `after` (each once, any tenant: callers filter with GetJob). `missed` is true when `after` is
  // older than the kept history (kMaxKeptChanges changes), so the caller must reload everything. Returns at once,
  // with `stopped`, once Stop was called.
  static constexpr size_t kMaxKeptChanges = 4096;
  struct JobChanges {
    int64_t seq = 0;
    std::vector<std::string> job_ids;
    bool missed = false;
    bool stopped = false;
  };
  JobChanges WaitJobChanges(int64_t after, absl::Duration timeout) ABSL_LOCKS_EXCLUDED(changes_mu_);
  // The newest change number (0 before any change).
  int64_t LastJobChange() ABSL_LOCKS_EXCLUDED(changes_mu_);

  // ---- worker protocol ----
  // A worker sent Register (its token already checked). Replaces an earlier session of the same worker id
  // (whose job, if any, is re-queued). Returns the session number for the calls below; sends Registered.
  int64_t RegisterWorker(const v1::Register& reg, WorkerLink link) ABSL_LOCKS_EXCLUDED(mu_);
  void OnWorkerMessage(const std::string& worker_id, int64_t session, const v1::WorkerMessage& msg)
      ABSL_LOCKS_EXCLUDED(mu_);
  void OnWorkerDisconnected(const std::string& worker_id, int64_t session) ABSL_LOCKS_EXCLUDED(mu_);

  int64_t lease_ms() const { return options_.lease_ms; }

 private:
  struct ActiveJob {
    v1::Job job;
    int64_t queue_seq = 0;
    std::string wait_reason;  // last "why it waits" event, not repeated
    // Rendezvous keys of the current attempt (relayed to the gang; a new attempt starts empty).
    int rendezvous_attempt = 0;
    std::map<std::string, std::string> rendezvous;
  };
  struct WorkerEntry {
    v1::Worker info;
    int64_t session = 0;
    WorkerLink link;
    int64_t lease_deadline_ms = 0;
    int64_t idle_since_ms = 0;
    int attempt = 0;
    v1::DeviceStats device;            // from the last heartbeat
    v1::StorageCounters storage_seen;  // the worker's cumulative storage counters already added to the metrics
  };
  // What the WatchJob calls of one job sleep on; shared by them (the last one out drops it from feeds_).
  struct Feed {
    Feed(int64_t last_seq, bool terminal, bool stopped)
        : last_seq(last_seq), terminal(terminal), stopped(stopped) {}
    absl::Mutex mu;
    absl::CondVar cv;  // signalled when one of the fields below changes
    int64_t last_seq ABSL_GUARDED_BY(mu);
    bool terminal ABSL_GUARDED_BY(mu);
    bool stopped ABSL_GUARDED_BY(mu);
    int watchers ABSL_GUARDED_BY(mu) = 0;
  };
  struct Checked {
    std::string method;
    bool needs_calibration = false;
    std::vector<std::string> warnings;
    std::string recipe_yaml;
  };

  absl::StatusOr<Checked> CheckSpec(const std::string& tenant, const v1::JobSpec& spec, bool for_create);
  // RESOURCE_EXHAUSTED naming the quota when one more job `spec` of `tenant` would pass one.
  absl::Status CheckQuotasLocked(const std::string& tenant, const v1::JobSpec& spec) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes the job with `events` and wakes its watchers; drops it from active_ when final.
  absl::Status CommitLocked(v1::Job* job, std::vector<v1::JobEvent> events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `failure_reason`: the llmc_job_failures_total reason of a FAILED job when not its error_code.
  absl::Status SetStateLocked(v1::Job* job, v1::JobState state, const std::string& message,
                              const char* failure_reason = nullptr) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ScheduleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WorkerLostLocked(WorkerEntry* w, const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The current attempt of `job` (RUNNING) is lost (`why`: a worker was lost, a rank stopped, the gang broke): the
  // other ranks (all but `except`) are told to stop keeping the staging output, and the job is queued again to
  // resume at its first unfinished block, or FAILS after max_attempts.
  void AttemptLostLocked(v1::Job job, const std::string& why, const std::string& except)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `job` FAILS with `error`; its ranks are told to stop, and its staging output is removed once none runs.
  void FailJobLocked(v1::Job job, const std::string& error, absl::StatusCode code = absl::StatusCode::kUnknown)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A rank of the job's attempt reported its end (the worker ran that attempt as `rank`).
  void RankFinishedLocked(const std::string& worker_id, int rank, const v1::JobFinished& f)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Workers (not LOST) still running some attempt of the job: BUSY with it until they report their end.
  int RanksRunningLocked(const std::string& job_id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes the staging output of a job that ended (FAILED, CANCELLED) now, or once the last of its ranks has
  // stopped (WorkerStoppedLocked), so no rank still writes into it.
  void RemoveStagingWhenStoppedLocked(const v1::Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes the job's local staging directory now, beneath its roots without following a link
  // (storage::PathConfinement::RemoveTree), and records in the store that it is done.
  void RemoveStagingNowLocked(const v1::Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WorkerStoppedLocked(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseGangLocked(const v1::Job& job, const std::string& except, bool keep_staging)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FreeWorkerLocked(WorkerEntry* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PersistWorkerLocked(const WorkerEntry& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnFinalLocked(const v1::Job& job, const char* failure_reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds a worker's heartbeat figures: its device's, and the increase of its storage counters.
  void HeartbeatLocked(WorkerEntry* w, const v1::Heartbeat& hb) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds what a succeeded job's report says it read and calibrated (rank 0's summary_json).
  void CountSummaryLocked(const v1::Job& job, const std::string& summary_json) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::Job> LookupLocked(const Principal& p, const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The job `job_id` if it is RUNNING in `attempt` with `worker_id` as its rank 0; null otherwise.
  // Relays a gang member's RendezvousSet to every rank of its attempt (bounded; anything else is dropped).
  void RendezvousLocked(const std::string& worker_id, const v1::RendezvousSet& set) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::Job* RunningJobLocked(const std::string& job_id, int attempt, const std::string& worker_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Collect() ABSL_LOCKS_EXCLUDED(mu_);
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);

  const CoordinatorOptions options_;
  JobStore* const store_;
  ServiceMetrics* const metrics_;

  absl::Mutex mu_;
  std::map<std::string, ActiveJob> active_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, WorkerEntry> workers_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Feed>> feeds_ ABSL_GUARDED_BY(mu_);
  // Jobs that ended while some of their ranks still ran: their staging is removed when the last one stops (and
  // not before not_before_ms: after a restart, the previous coordinator's workers get a lease to stop). The store
  // keeps the same list (JobStore::StagingToRemove), so a restart loses none.
  struct PendingCleanup {
    v1::Job job;
    int64_t not_before_ms = 0;
  };
  std::map<std::string, PendingCleanup> cleanup_ ABSL_GUARDED_BY(mu_);
  int64_t next_session_ ABSL_GUARDED_BY(mu_) = 1;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool kick_ ABSL_GUARDED_BY(mu_) = false;
  absl::CondVar loop_cv_;  // kick_ or stop_ was set
  // The change feed; taken after mu_ (CommitLocked), never before it.
  absl::Mutex changes_mu_ ABSL_ACQUIRED_AFTER(mu_);
  absl::CondVar changes_cv_;
  int64_t change_seq_ ABSL_GUARDED_BY(changes_mu_) = 0;
  std::deque<std::pair<int64_t, std::string>> changes_ ABSL_GUARDED_BY(changes_mu_);  // (seq, job id), oldest first
  bool changes_stopped_ ABSL_GUARDED_BY(changes_mu_) = false;
  std::thread loop_;  // the scheduler (Loop); started by Start, joined by Stop
};

// The bounded `algorithm` and `scheme` metric labels of a spec: a preset's algorithm (lower case; "rtn" when unset)
// and scheme (upper case), both checked against their registries when the job was created; "recipe" for both when
// the job gives recipe text.
struct MethodLabels {
  std::string algorithm;
  std::string scheme;
};
MethodLabels MethodLabelsOf(const v1::JobSpec& spec);

// The staging directory a job's attempts share: beside a local output, <parent>/.<name>.llmc-staging-<job id>.
// Empty for s3:// outputs (the worker's output resolver stages them).
std::string StagingDirFor(const v1::Job& job);

}  // namespace llmc::server
