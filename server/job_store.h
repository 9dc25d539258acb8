// The coordinator's durable state in one SQLite database (WAL mode, synchronous=FULL): jobs, their events,
// workers and API tokens. Every write is one transaction that has committed (and been fsynced) when the
// method returns, so a CreateJob acknowledged to a client survives a crash of the coordinator or the machine.
//
// Tables: jobs (one row per job: the llmc.v1.Job message plus indexed columns; `seq` is the queue/creation
// order), events (job_id, seq) -> llmc.v1.JobEvent, workers (id -> llmc.v1.Worker), tokens (SHA-256 of the
// token -> tenant, role). Schema in job_store.cc.
//
// Thread-safety: all methods are thread-safe (one connection behind a mutex). Another process (e.g.
// `llmc-server token create`) may open the same file at the same time; writers wait up to 5 s for each other.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "llmc/v1/compression.pb.h"

struct sqlite3;

namespace llmc::server {

enum class Role { kViewer, kSubmitter, kAdmin, kWorker };
const char* RoleName(Role r);
absl::StatusOr<Role> ParseRole(const std::string& name);  // admin, submitter, viewer, worker

struct TokenRecord {
  std::string tenant;
  Role role = Role::kViewer;
  std::string name;  // free text for operators ("ci pipeline")
  int64_t create_ms = 0;
};

struct ListQuery {
  std::string tenant;  // "": every tenant
  v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
  std::map<std::string, std::string> labels;
  int page_size = 50;
  std::string page_token;
};

// The bytes of `m` with deterministic serialization (maps sorted): equal specs give equal bytes.
std::string DeterministicBytes(const google::protobuf::Message& m);

class JobStore {
 public:
  // Opens the database at `path`, creating it only where no file exists. FAILED_PRECONDITION for an empty (0-byte)
  // file without a write-ahead log (an emptied store is never taken for a new one); DATA_LOSS, saying how to
  // restore a backup, when an existing store fails SQLite's quick_check (or is not a database). Errors name the path.
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& path);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  struct Created {
    v1::Job job;
    bool created = false;  // false: the job existed (same tenant, request_id and spec)
    int64_t seq = 0;       // queue order
  };
  // Inserts `job` (id, tenant, request_id, spec set) and `first_event` (its seq becomes 1), unless the tenant
  // already has a job with this request_id: then returns that job when the specs are equal and ALREADY_EXISTS
  // (naming the request_id and the job) when not.
  absl::StatusOr<Created> CreateJob(v1::Job job, v1::JobEvent first_event);
  // The tenant's job created with `request_id`, with its spec bytes (DeterministicBytes); NOT_FOUND if none.
  absl::StatusOr<std::pair<v1::Job, std::string>> FindByRequestId(const std::string& tenant,
                                                                 const std::string& request_id);
  // Writes `*job` and appends `*events` in one transaction: events get seq = last_event_seq + 1, ... and
  // job->last_event_seq is advanced. On error nothing is written and *job is unchanged.
  absl::Status UpdateJob(v1::Job* job, std::vector<v1::JobEvent>* events);
  // NOT_FOUND naming the id.
  absl::StatusOr<v1::Job> GetJob(const std::string& id);
  // Newest first. INVALID_ARGUMENT for a page token this store did not hand out.
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const ListQuery& q);
  // Jobs in QUEUED, RUNNING or RETRYING, in queue order (oldest first), with their queue seq.
  absl::StatusOr<std::vector<std::pair<int64_t, v1::Job>>> ActiveJobs();
  // Events of `job_id` with seq > after_seq, in order, at most `limit`.
  absl::StatusOr<std::vector<v1::JobEvent>> Events(const std::string& job_id, int64_t after_seq, int limit = 1000);
  absl::StatusOr<std::map<int, int64_t>> CountByState();
  // Jobs whose staging directory may still exist: every job that started (attempts > 0) and then became FAILED or
  // CANCELLED is recorded by the UpdateJob that ends it (same transaction), until StagingRemoved. Oldest first.
  absl::StatusOr<std::vector<v1::Job>> StagingToRemove();
  absl::Status StagingRemoved(const std::string& job_id);
  // Jobs by (tenant, state) (one GROUP BY; for the llmc_tenant_jobs gauge).
  absl::StatusOr<std::map<std::pair<std::string, int>, int64_t>> CountByTenantAndState();

  // Tokens are stored as their SHA-256 (hex); the token itself is never written.
  absl::Status PutToken(const std::string& token_sha256, const TokenRecord& rec);
  // NOT_FOUND when unknown.
  absl::StatusOr<TokenRecord> LookupToken(const std::string& token_sha256);
  absl::StatusOr<int64_t> CountTokens(Role role);

  absl::Status PutWorker(const v1::Worker& w);
  absl::StatusOr<std::vector<v1::Worker>> Workers();

 private:
  explicit JobStore(sqlite3* db) : db_(db) {}
  absl::Status Exec(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status WriteJobLocked(const v1::Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status WriteEventLocked(const v1::JobEvent& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);  // the one connection: every statement runs under mu_
};

// The store's consistency check (PRAGMA quick_check, or integrity_check when `full`) on the open database `db`:
// OK, or DATA_LOSS naming `path` with the first problem SQLite reports and how to restore.
absl::Status CheckStoreIntegrity(sqlite3* db, const std::string& path, bool full);

// An online backup of the store at `store_path` into the new file `backup_path` with SQLite's backup API: a
// consistent snapshot taken while llmc-server runs (writers are not blocked; WAL), checked with integrity_check,
// fsynced, and renamed into place. ALREADY_EXISTS if `backup_path` exists; errors name the paths.
absl::Status BackupStore(const std::string& store_path, const std::string& backup_path);

// Replaces the store at `store_path` with the backup `backup_path` (checked first with integrity_check); the old
// store files (jobs.db, -wal, -shm) are moved aside to `store_path.replaced-<unix ms>`* and their names returned.
// The caller must make sure no server has the store open (RestoreStore is called with the data directory's lock).
absl::StatusOr<std::vector<std::string>> RestoreStore(const std::string& store_path, const std::string& backup_path);

}  // namespace llmc::server
