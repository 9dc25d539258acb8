#include "server/job_store.h"

#include <sqlite3.h>

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "common/status_macros.h"
#include "common/util.h"

namespace llmc::server {

namespace fs = std::filesystem;

namespace {

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  tenant TEXT NOT NULL,
  request_id TEXT NOT NULL,
  spec BLOB NOT NULL,
  state INTEGER NOT NULL,
  create_ms INTEGER NOT NULL,
  job BLOB NOT NULL,
  UNIQUE (tenant, request_id)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs(tenant, seq);
CREATE TABLE IF NOT EXISTS events (
  job_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  event BLOB NOT NULL,
  PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workers (
  id TEXT PRIMARY KEY,
  worker BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS staging_cleanup (
  job_id TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (
  sha256 TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  role TEXT NOT NULL,
  name TEXT NOT NULL,
  create_ms INTEGER NOT NULL
);
)sql";

// A prepared statement; finalized at destruction.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) { rc_ = sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~Stmt() { sqlite3_finalize(s_); }
  bool ok() const { return rc_ == SQLITE_OK; }
  absl::Status status(const char* what) const {
    return absl::InternalError(absl::StrCat("job store: ", what, ": ", sqlite3_errmsg(db_)));
  }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& BindBlob(int i, const std::string& v) {
    sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return rc_ = sqlite3_step(s_); }
  int64_t Int(int col) { return sqlite3_column_int64(s_, col); }
  std::string Text(int col) {
    const void* p = sqlite3_column_blob(s_, col);
    int n = sqlite3_column_bytes(s_, col);
    return p ? std::string(static_cast<const char*>(p), n) : std::string();
  }
  int rc() const { return rc_; }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
  int rc_;
};

bool IsActive(int state) {
  return state == v1::QUEUED || state == v1::RUNNING || state == v1::RETRYING;
}

}  // namespace

std::string DeterministicBytes(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::io::StringOutputStream zs(&out);
  google::protobuf::io::CodedOutputStream cs(&zs);
  cs.SetSerializationDeterministic(true);
  m.SerializeToCodedStream(&cs);
  cs.Trim();
  return out;
}

const char* RoleName(Role r) {
  switch (r) {
    case Role::kViewer: return "viewer";
    case Role::kSubmitter: return "submitter";
    case Role::kAdmin: return "admin";
    case Role::kWorker: return "worker";
  }
  return "viewer";
}

absl::StatusOr<Role> ParseRole(const std::string& name) {
  if (name == "viewer") return Role::kViewer;
  if (name == "submitter") return Role::kSubmitter;
  if (name == "admin") return Role::kAdmin;
  if (name == "worker") return Role::kWorker;
  return absl::InvalidArgumentError(
      absl::StrCat("role '", name, "': use admin, submitter, viewer or worker"));
}

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& path) {
  // SQLite takes an empty file for a new database: an emptied store (truncated, or a failed copy) would start with
  // no jobs and no tenant tokens. A fresh store is made only where no file exists. (A non-empty write-ahead log
  // beside an empty file may still hold the data: SQLite reads it.)
  std::error_code ec;
  if (fs::exists(path, ec) && fs::is_regular_file(path, ec) && fs::file_size(path, ec) == 0 && !ec) {
    std::error_code wal_ec;
    const bool wal = fs::exists(path + "-wal", wal_ec) && fs::file_size(path + "-wal", wal_ec) > 0 && !wal_ec;
    if (!wal)
      return absl::FailedPreconditionError(absl::StrCat(
          path, ": the job store is empty (0 bytes), so its jobs and tokens are gone; restore it from a backup "
                "(docs/operations.md), or remove the file to start a new, empty store"));
  }
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat(path, ": cannot open the job store: ", msg,
                                               "; check that the data directory is writable"));
  }
  sqlite3_busy_timeout(db, 5000);
  std::unique_ptr<JobStore> store(new JobStore(db));
  // A damaged store is refused before anything is written to it.
  LLMC_RETURN_IF_ERROR(CheckStoreIntegrity(db, path, /*full=*/false));
  absl::MutexLock l(&store->mu_);
  // WAL + synchronous=FULL: a commit is fsynced to the WAL before it returns.
  for (const char* sql : {"PRAGMA journal_mode=WAL;", "PRAGMA synchronous=FULL;", "PRAGMA foreign_keys=ON;", kSchema}) {
    absl::Status s = store->Exec(sql);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  }
  Stmt wal(db, "PRAGMA journal_mode;");
  if (wal.Step() != SQLITE_ROW || wal.Text(0) != "wal")
    return absl::FailedPreconditionError(absl::StrCat(path, ": the job store needs WAL mode (the file system may not "
                                                      "support it; put the data directory on a local disk)"));
  return store;
}

absl::Status CheckStoreIntegrity(sqlite3* db, const std::string& path, bool full) {
  auto damaged = [&](const std::string& what) {
    return absl::DataLossError(absl::StrCat(
        path, ": the job store is damaged (", what, "); llmc-server will not use it. Restore the latest backup: ",
        "llmc-server restore --data-dir DIR --from BACKUP with the server stopped (docs/operations.md, ",
        "\"Back up and restore the job store\"), which keeps the damaged files beside the restored store"));
  };
  sqlite3_stmt* st = nullptr;
  int rc = sqlite3_prepare_v2(db, full ? "PRAGMA integrity_check(20)" : "PRAGMA quick_check(20)", -1, &st, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = sqlite3_errmsg(db);
    sqlite3_finalize(st);
    if (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT) return damaged(msg);
    return absl::UnavailableError(absl::StrCat(path, ": cannot check the job store: ", msg));
  }
  std::vector<std::string> problems;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const unsigned char* t = sqlite3_column_text(st, 0);
    std::string line = t ? reinterpret_cast<const char*>(t) : "";
    if (line != "ok") problems.push_back(line.substr(0, 200));
  }
  const std::string msg = sqlite3_errmsg(db);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    if (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT) return damaged(msg);
    return absl::UnavailableError(absl::StrCat(path, ": cannot check the job store: ", msg));
  }
  if (!problems.empty())
    return damaged(absl::StrCat(full ? "integrity_check" : "quick_check", ": ", problems[0],
                                problems.size() > 1 ? absl::StrCat(" and ", problems.size() - 1, " more") : ""));
  return absl::OkStatus();
}

namespace {

absl::Status FsyncPath(const std::string& path, bool dir) {
  int fd = ::open(path.c_str(), (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoToStatus(err, absl::StrCat("cannot fsync ", path));
  return absl::OkStatus();
}

// Checks an SQLite file opened read-only with integrity_check.
absl::Status CheckFile(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::DataLossError(absl::StrCat(path, ": cannot open: ", msg));
  }
  absl::Status s = CheckStoreIntegrity(db, path, /*full=*/true);
  if (s.ok()) {
    // A backup of a job store has its tables.
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM jobs", -1, &st, nullptr) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW)
      s = absl::InvalidArgumentError(absl::StrCat(path, ": not an llmc job store (", sqlite3_errmsg(db), ")"));
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return s;
}

}  // namespace

absl::Status BackupStore(const std::string& store_path, const std::string& backup_path) {
  std::error_code ec;
  if (!fs::exists(store_path, ec))
    return absl::NotFoundError(absl::StrCat(store_path, ": no job store to back up; give the server's --data-dir"));
  if (fs::exists(backup_path, ec))
    return absl::AlreadyExistsError(absl::StrCat(backup_path, ": exists; give a new file name for the backup"));
  sqlite3* src = nullptr;
  int rc = sqlite3_open_v2(store_path.c_str(), &src, SQLITE_OPEN_READONLY, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = src ? sqlite3_errmsg(src) : sqlite3_errstr(rc);
    sqlite3_close(src);
    return absl::UnavailableError(absl::StrCat(store_path, ": cannot open the job store: ", msg));
  }
  sqlite3_busy_timeout(src, 5000);
  const std::string tmp = absl::StrCat(backup_path, ".tmp-", getpid());
  fs::remove(tmp, ec);
  sqlite3* dst = nullptr;
  rc = sqlite3_open_v2(tmp.c_str(), &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  absl::Status s;
  if (rc != SQLITE_OK) {
    s = absl::UnavailableError(absl::StrCat(backup_path, ": cannot create the backup: ",
                                            dst ? sqlite3_errmsg(dst) : sqlite3_errstr(rc)));
  } else {
    sqlite3_backup* b = sqlite3_backup_init(dst, "main", src, "main");
    if (!b) {
      s = absl::UnavailableError(absl::StrCat(backup_path, ": cannot start the backup: ", sqlite3_errmsg(dst)));
    } else {
      // All pages in one step: one read transaction on the source, so the copy is one consistent snapshot.
      do {
        rc = sqlite3_backup_step(b, -1);
        if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) sqlite3_sleep(50);
      } while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED);
      sqlite3_backup_finish(b);
      if (rc != SQLITE_DONE)
        s = rc == SQLITE_FULL ? absl::ResourceExhaustedError(absl::StrCat("no space left on the device of ", backup_path))
                              : absl::UnavailableError(absl::StrCat(backup_path, ": backup failed: ", sqlite3_errstr(rc)));
    }
  }
  sqlite3_close(dst);
  sqlite3_close(src);
  if (s.ok()) s = CheckFile(tmp);
  if (s.ok()) s = FsyncPath(tmp, false);
  if (s.ok()) {
    fs::rename(tmp, backup_path, ec);
    if (ec) s = absl::UnavailableError(absl::StrCat("cannot rename ", tmp, " to ", backup_path, ": ", ec.message()));
  }
  if (s.ok()) {
    const std::string dir = fs::path(backup_path).parent_path().string();
    s = FsyncPath(dir.empty() ? "." : dir, true);
  }
  if (!s.ok()) fs::remove(tmp, ec);
  return s;
}

absl::StatusOr<std::vector<std::string>> RestoreStore(const std::string& store_path, const std::string& backup_path) {
  std::error_code ec;
  if (!fs::is_regular_file(backup_path, ec))
    return absl::NotFoundError(absl::StrCat(backup_path, ": no such backup file"));
  LLMC_RETURN_IF_ERROR(CheckFile(backup_path));
  const std::string tmp = absl::StrCat(store_path, ".restore-", getpid());
  fs::copy_file(backup_path, tmp, fs::copy_options::overwrite_existing, ec);
  if (ec) return ErrnoToStatus(ec.value(), absl::StrCat("cannot copy ", backup_path, " to ", tmp));
  LLMC_RETURN_IF_ERROR(FsyncPath(tmp, false));
  std::vector<std::string> moved;
  const std::string aside = absl::StrCat(store_path, ".replaced-", NowMs());
  for (const char* suffix : {"", "-wal", "-shm"}) {
    const std::string from = store_path + suffix;
    if (!fs::exists(from, ec)) continue;
    fs::rename(from, aside + suffix, ec);
    if (ec) return ErrnoToStatus(ec.value(), absl::StrCat("cannot move ", from, " aside"));
    moved.push_back(aside + suffix);
  }
  fs::rename(tmp, store_path, ec);
  if (ec) return ErrnoToStatus(ec.value(), absl::StrCat("cannot move the restored store into ", store_path));
  const std::string dir = fs::path(store_path).parent_path().string();
  LLMC_RETURN_IF_ERROR(FsyncPath(dir.empty() ? "." : dir, true));
  return moved;
}

JobStore::~JobStore() {
  absl::MutexLock l(&mu_);
  sqlite3_close(db_);
}

absl::Status JobStore::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat("job store: ", msg));
  }
  return absl::OkStatus();
}

absl::Status JobStore::WriteJobLocked(const v1::Job& job) {
  Stmt st(db_, "UPDATE jobs SET state = ?, job = ? WHERE id = ?");
  if (!st.ok()) return st.status("prepare update");
  st.Bind(1, static_cast<int64_t>(job.state())).BindBlob(2, job.SerializeAsString()).Bind(3, job.id());
  if (st.Step() != SQLITE_DONE) return st.status("update job");
  if (sqlite3_changes(db_) != 1) return absl::NotFoundError(absl::StrCat("job ", job.id(), " not found"));
  // A job that started and then FAILED or was CANCELLED may have left a staging directory: recorded in the same
  // transaction, so the coordinator removes it even after a crash (StagingToRemove).
  if ((job.state() == v1::FAILED || job.state() == v1::CANCELLED) && job.attempts() > 0) {
    Stmt c(db_, "INSERT OR IGNORE INTO staging_cleanup (job_id) VALUES (?)");
    if (!c.ok()) return c.status("prepare staging cleanup");
    c.Bind(1, job.id());
    if (c.Step() != SQLITE_DONE) return c.status("record staging cleanup");
  }
  return absl::OkStatus();
}

absl::Status JobStore::WriteEventLocked(const v1::JobEvent& e) {
  Stmt st(db_, "INSERT INTO events (job_id, seq, event) VALUES (?, ?, ?)");
  if (!st.ok()) return st.status("prepare event");
  st.Bind(1, e.job_id()).Bind(2, e.seq()).BindBlob(3, e.SerializeAsString());
  if (st.Step() != SQLITE_DONE) return st.status("insert event");
  return absl::OkStatus();
}

absl::StatusOr<JobStore::Created> JobStore::CreateJob(v1::Job job, v1::JobEvent first_event) {
  absl::MutexLock l(&mu_);
  LLMC_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE;"));
  auto rollback = [&](absl::Status s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Exec("ROLLBACK;").IgnoreError();
    return s;
  };
  const std::string spec = DeterministicBytes(job.spec());
  {
    Stmt q(db_, "SELECT seq, spec, job FROM jobs WHERE tenant = ? AND request_id = ?");
    if (!q.ok()) return rollback(q.status("prepare lookup"));
    q.Bind(1, job.tenant()).Bind(2, job.request_id());
    if (q.Step() == SQLITE_ROW) {
      Created c;
      c.seq = q.Int(0);
      std::string old_spec = q.Text(1);
      c.job.ParseFromString(q.Text(2));
      LLMC_RETURN_IF_ERROR(Exec("COMMIT;"));
      if (old_spec != spec)
        return absl::AlreadyExistsError(absl::StrCat("request_id '", job.request_id(), "' was used for job ",
                                                     c.job.id(), " with a different spec; use a new request_id "
                                                     "for a new job"));
      return c;
    }
  }
  first_event.set_seq(1);
  first_event.set_job_id(job.id());
  job.set_last_event_seq(1);
  Stmt ins(db_, "INSERT INTO jobs (id, tenant, request_id, spec, state, create_ms, job) VALUES (?, ?, ?, ?, ?, ?, ?)");
  if (!ins.ok()) return rollback(ins.status("prepare insert"));
  ins.Bind(1, job.id()).Bind(2, job.tenant()).Bind(3, job.request_id()).BindBlob(4, spec)
      .Bind(5, static_cast<int64_t>(job.state())).Bind(6, job.create_time_ms()).BindBlob(7, job.SerializeAsString());
  if (ins.Step() != SQLITE_DONE) return rollback(ins.status("insert job"));
  Created c;
  c.seq = sqlite3_last_insert_rowid(db_);
  if (absl::Status s = WriteEventLocked(first_event); !s.ok()) return rollback(s);
  if (absl::Status s = Exec("COMMIT;"); !s.ok()) return rollback(s);
  c.job = std::move(job);
  c.created = true;
  return c;
}

absl::StatusOr<std::pair<v1::Job, std::string>> JobStore::FindByRequestId(const std::string& tenant,
                                                                          const std::string& request_id) {
  absl::MutexLock l(&mu_);
  Stmt q(db_, "SELECT spec, job FROM jobs WHERE tenant = ? AND request_id = ?");
  if (!q.ok()) return q.status("prepare lookup");
  q.Bind(1, tenant).Bind(2, request_id);
  int rc = q.Step();
  if (rc == SQLITE_DONE) return absl::NotFoundError("no job with this request_id");
  if (rc != SQLITE_ROW) return q.status("lookup");
  std::pair<v1::Job, std::string> out;
  out.second = q.Text(0);
  out.first.ParseFromString(q.Text(1));
  return out;
}

absl::Status JobStore::UpdateJob(v1::Job* job, std::vector<v1::JobEvent>* events) {
  absl::MutexLock l(&mu_);
  v1::Job next = *job;
  int64_t seq = next.last_event_seq();
  for (auto& e : *events) {
    e.set_seq(++seq);
    e.set_job_id(next.id());
    if (e.time_ms() == 0) e.set_time_ms(NowMs());
  }
  next.set_last_event_seq(seq);
  LLMC_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE;"));
  absl::Status s = WriteJobLocked(next);
  for (size_t i = 0; s.ok() && i < events->size(); ++i) s = WriteEventLocked((*events)[i]);
  if (s.ok()) s = Exec("COMMIT;");
  if (!s.ok()) {
    Exec("ROLLBACK;").IgnoreError();
    return s;
  }
  *job = std::move(next);
  return absl::OkStatus();
}

absl::StatusOr<v1::Job> JobStore::GetJob(const std::string& id) {
  absl::MutexLock l(&mu_);
  Stmt q(db_, "SELECT job FROM jobs WHERE id = ?");
  if (!q.ok()) return q.status("prepare get");
  q.Bind(1, id);
  int rc = q.Step();
  if (rc == SQLITE_DONE) return absl::NotFoundError(absl::StrCat("job '", id, "' not found; list your jobs with `llmc list`"));
  if (rc != SQLITE_ROW) return q.status("get job");
  v1::Job job;
  if (!job.ParseFromString(q.Text(0))) return absl::DataLossError(absl::StrCat("job store: job ", id, " is unreadable"));
  return job;
}

absl::StatusOr<v1::ListJobsResponse> JobStore::ListJobs(const ListQuery& query) {
  int64_t before = INT64_MAX;
  if (!query.page_token.empty()) {
    std::string raw;
    int64_t v = 0;
    if (!absl::WebSafeBase64Unescape(query.page_token, &raw) || !absl::StartsWith(raw, "v1:") ||
        !absl::SimpleAtoi(raw.substr(3), &v) || v <= 0)
      return absl::InvalidArgumentError("page_token: not a token from ListJobs; start again without one");
    before = v;
  }
  int page = query.page_size <= 0 ? 50 : std::min(query.page_size, 1000);
  std::string sql = "SELECT seq, job FROM jobs WHERE seq < ?1";
  if (!query.tenant.empty()) sql += " AND tenant = ?2";
  if (query.state != v1::JOB_STATE_UNSPECIFIED) sql += " AND state = ?3";
  sql += " ORDER BY seq DESC";
  absl::MutexLock l(&mu_);
  Stmt q(db_, sql.c_str());
  if (!q.ok()) return q.status("prepare list");
  q.Bind(1, before);
  if (!query.tenant.empty()) q.Bind(2, query.tenant);
  if (query.state != v1::JOB_STATE_UNSPECIFIED) q.Bind(3, static_cast<int64_t>(query.state));
  v1::ListJobsResponse out;
  int64_t last_seq = 0;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    v1::Job job;
    if (!job.ParseFromString(q.Text(1))) continue;
    bool match = true;
    for (const auto& [k, v] : query.labels) {
      auto it = job.spec().labels().find(k);
      if (it == job.spec().labels().end() || it->second != v) match = false;
    }
    if (!match) continue;
    if (out.jobs_size() == page) {  // one more exists
      out.set_next_page_token(absl::WebSafeBase64Escape(absl::StrCat("v1:", last_seq)));
      break;
    }
    last_seq = q.Int(0);
    *out.add_jobs() = std::move(job);
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return q.status("list jobs");
  return out;
}

absl::StatusOr<std::vector<std::pair<int64_t, v1::Job>>> JobStore::ActiveJobs() {
  absl::MutexLock l(&mu_);
  Stmt q(db_, "SELECT seq, job, state FROM jobs WHERE state IN (?, ?, ?) ORDER BY seq");
  if (!q.ok()) return q.status("prepare active");
  q.Bind(1, int64_t{v1::QUEUED}).Bind(2, int64_t{v1::RUNNING}).Bind(3, int64_t{v1::RETRYING});
  std::vector<std::pair<int64_t, v1::Job>> out;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    v1::Job job;
    if (!job.ParseFromString(q.Text(1)) || !IsActive(job.state())) continue;
    out.emplace_back(q.Int(0), std::move(job));
  }
  if (rc != SQLITE_DONE) return q.status("active jobs");
  return out;
}

absl::StatusOr<std::vector<v1::JobEvent>> JobStore::Events(const std::string& job_id, int64_t after_seq, int limit) {
  absl::MutexLock l(&mu_);
  Stmt q(db_, "SELECT event FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?");
  if (!q.ok()) return q.status("prepare events");
  q.Bind(1, job_id).Bind(2, after_seq).Bind(3, static_cast<int64_t>(limit));
  std::vector<v1::JobEvent> out;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    v1::JobEvent e;
    if (e.ParseFromString(q.Text(0))) out.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) return q.status("events");
  return out;
}

absl::StatusOr<std::map<int, int64_t>> JobStore::CountByState() {
  absl::MutexLock l(&mu_);
  Stmt q(db_, "SELECT state, COUNT(*) FROM jobs GROUP BY state");
  if (!q.ok()) return q.status("prepare count");
  std::map<int, int64_t> out;
  while (q.Step() == SQLITE_ROW) out[static_cast<int>(q.Int(0))] = q.Int(1);
  if (q.rc() != SQLITE_DONE) return q.status("count");
  return out;
}

absl::StatusOr<std::map<std::pair<std::string, int>, int64_t>> JobStore::CountByTenantAndState() {
  absl::MutexLock l(&mu_);
  Stmt q(db_, "SELECT tenant, state, COUNT(*) FROM jobs GROUP BY tenant, state");
  if (!q.ok()) return q.status("prepare count by tenant");
  std::map<std::pair<std::string, int>, int64_t> out;
  while (q.Step() == SQLITE_ROW) out[{q.Text(0), static_cast<int>(q.Int(1))}] = q.Int(2);
  if (q.rc() != SQLITE_DONE) return q.status("count by tenant");
  return out;
}

absl::StatusOr<std::vector<v1::Job>> JobStore::StagingToRemove() {
  absl::MutexLock l(&mu_);
  Stmt q(db_, "SELECT j.job FROM staging_cleanup c JOIN jobs j ON j.id = c.job_id ORDER BY j.seq");
  if (!q.ok()) return q.status("prepare staging cleanup");
  std::vector<v1::Job> out;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    v1::Job job;
    if (job.ParseFromString(q.Text(0))) out.push_back(std::move(job));
  }
  if (rc != SQLITE_DONE) return q.status("staging cleanup");
  return out;
}

absl::Status JobStore::StagingRemoved(const std::string& job_id) {
  absl::MutexLock l(&mu_);
  Stmt st(db_, "DELETE FROM staging_cleanup WHERE job_id = ?");
  if (!st.ok()) return st.status("prepare staging cleanup");
  st.Bind(1, job_id);
  if (st.Step() != SQLITE_DONE) return st.status("staging cleanup done");
  return absl::OkStatus();
}

absl::Status JobStore::PutToken(const std::string& token_sha256, const TokenRecord& rec) {
  absl::MutexLock l(&mu_);
  Stmt st(db_, "INSERT OR REPLACE INTO tokens (sha256, tenant, role, name, create_ms) VALUES (?, ?, ?, ?, ?)");
  if (!st.ok()) return st.status("prepare token");
  st.Bind(1, token_sha256).Bind(2, rec.tenant).Bind(3, std::string(RoleName(rec.role))).Bind(4, rec.name)
      .Bind(5, rec.create_ms ? rec.create_ms : NowMs());
  if (st.Step() != SQLITE_DONE) return st.status("insert token");
  return absl::OkStatus();
}

absl::StatusOr<TokenRecord> JobStore::LookupToken(const std::string& token_sha256) {
  absl::MutexLock l(&mu_);
  Stmt q(db_, "SELECT tenant, role, name, create_ms FROM tokens WHERE sha256 = ?");
  if (!q.ok()) return q.status("prepare token lookup");
  q.Bind(1, token_sha256);
  int rc = q.Step();
  if (rc == SQLITE_DONE) return absl::NotFoundError("unknown token");
  if (rc != SQLITE_ROW) return q.status("token lookup");
  TokenRecord r;
  r.tenant = q.Text(0);
  LLMC_ASSIGN_OR_RETURN(r.role, ParseRole(q.Text(1)));
  r.name = q.Text(2);
  r.create_ms = q.Int(3);
  return r;
}

absl::StatusOr<int64_t> JobStore::CountTokens(Role role) {
  absl::MutexLock l(&mu_);
  Stmt q(db_, "SELECT COUNT(*) FROM tokens WHERE role = ?");
  if (!q.ok()) return q.status("prepare token count");
  q.Bind(1, std::string(RoleName(role)));
  if (q.Step() != SQLITE_ROW) return q.status("token count");
  return q.Int(0);
}

absl::Status JobStore::PutWorker(const v1::Worker& w) {
  absl::MutexLock l(&mu_);
  Stmt st(db_, "INSERT OR REPLACE INTO workers (id, worker) VALUES (?, ?)");
  if (!st.ok()) return st.status("prepare worker");
  st.Bind(1, w.id()).BindBlob(2, w.SerializeAsString());
  if (st.Step() != SQLITE_DONE) return st.status("put worker");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Worker>> JobStore::Workers() {
  absl::MutexLock l(&mu_);
  Stmt q(db_, "SELECT worker FROM workers ORDER BY id");
  if (!q.ok()) return q.status("prepare workers");
  std::vector<v1::Worker> out;
  while (q.Step() == SQLITE_ROW) {
    v1::Worker w;
    if (w.ParseFromString(q.Text(0))) out.push_back(std::move(w));
  }
  return out;
}

}  // namespace llmc::server
