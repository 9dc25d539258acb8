// API authentication: bearer tokens mapped to a tenant and a role, stored (as SHA-256) in the job store.
//
//   admin      every tenant's jobs; create/cancel; `llmc-server token create`
//   submitter  its tenant's jobs: create, cancel, read
//   viewer     its tenant's jobs: read only
//   worker     only the internal worker protocol (WorkerService.Connect)
//
// On first start the coordinator writes DATA_DIR/admin.token (tenant "default", role admin) and
// DATA_DIR/worker.token (role worker), both mode 0600.
#pragma once

#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/job_store.h"

namespace llmc::server {

struct Principal {
  std::string tenant;
  Role role = Role::kViewer;
};

// A fresh random token: "llmc_" + 64 hex digits (256 bits from the OS random source).
std::string NewToken();
// Lowercase hex SHA-256 of the token.
std::string TokenSha256(absl::string_view token);

// Registers a new token in the store and returns it (the only time it is seen in clear).
absl::StatusOr<std::string> CreateToken(JobStore* store, const std::string& tenant, Role role, const std::string& name);

// Makes sure DATA_DIR/admin.token and DATA_DIR/worker.token exist (mode 0600) and are registered. Sets
// *created_admin when admin.token was written now.
absl::Status EnsureBootstrapTokens(JobStore* store, const std::string& data_dir, bool* created_admin);


// Thread-safe; caches token lookups (tokens are never revoked while the coordinator runs in this version).
class Authenticator {
 public:
  explicit Authenticator(JobStore* store) : store_(store) {}
  // `authorization` is the header value ("Bearer <token>"). UNAUTHENTICATED for a missing, malformed or unknown
  // token, with what to do.
  absl::StatusOr<Principal> Authenticate(absl::string_view authorization) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<Principal> AuthenticateToken(absl::string_view token) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  JobStore* store_;
  absl::Mutex mu_;
  std::map<std::string, Principal> cache_ ABSL_GUARDED_BY(mu_);
};

// PERMISSION_DENIED unless `p` may create or cancel jobs (admin, submitter).
absl::Status RequireWrite(const Principal& p, absl::string_view what);
// PERMISSION_DENIED for worker tokens on the public API.
absl::Status RequireRead(const Principal& p);
// Whether `p` may see jobs of `tenant`.
inline bool CanSeeTenant(const Principal& p, const std::string& tenant) {
  return p.role == Role::kAdmin || p.tenant == tenant;
}

}  // namespace llmc::server
