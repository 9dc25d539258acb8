// Which storage locations jobs may read and write: the operator's allowed roots. A job's output_uri must lie
// under a read-write root; model_uri, calibration.dataset_uri and eval_text_uri under a read-write or an
// input-only root. Local paths are compared after resolving symlinks (so a link cannot lead out of a root);
// s3:// URIs by bucket and key prefix (on '/' boundaries). Denied directories (the coordinator's data directory)
// are refused even inside a root, except where a root lies inside them (DATA_DIR/storage).
//
// This is the check at submission; the worker checks again when it opens the files (LocalRoots, sent with each
// assignment, and storage/path_confinement.h).
//
// Immutable after Create; thread-safe.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "storage/storage_uri.h"

namespace llmc::server {

// Per-tenant roots (`--tenant-roots`): every read-write and input root R stands for R/TENANT for the jobs of
// TENANT (s3:// roots: the key prefix PREFIX/TENANT), so one tenant can neither read another's outputs as its model
// nor write beside them. Shared roots are given to every tenant as they are.
struct TenantRootOptions {
  bool per_tenant = false;
  std::vector<std::string> shared_roots;        // read-write for every tenant (--shared-root)
  std::vector<std::string> shared_input_roots;  // read-only for every tenant (--shared-input-root)
};

class AccessPolicy {
 public:
  // `roots` (read-write) and `input_roots` (read-only): absolute paths, file:// or s3:// URIs. Local roots must
  // exist. INVALID_ARGUMENT naming a bad root.
  static absl::StatusOr<AccessPolicy> Create(const std::vector<std::string>& roots,
                                             const std::vector<std::string>& input_roots,
                                             const std::vector<std::string>& denied = {});
  AccessPolicy() = default;
  // With per-tenant roots: the policy of one tenant's jobs (its roots R/TENANT, local ones created if missing, plus
  // the shared roots). Without: this policy plus the shared roots. FAILED_PRECONDITION for a tenant name that
  // cannot be a directory name.
  absl::StatusOr<AccessPolicy> ForTenant(absl::string_view tenant) const;
  // Sets the per-tenant options (after Create; shared roots are checked as roots). INVALID_ARGUMENT naming a bad one.
  absl::Status SetTenantRoots(const TenantRootOptions& options);

  // INVALID_ARGUMENT for a malformed or relative URI, PERMISSION_DENIED naming `field` and the URI when it lies
  // outside the roots. Returns the parsed location.
  absl::StatusOr<storage::StorageUri> CheckInput(absl::string_view field, absl::string_view uri) const;
  absl::StatusOr<storage::StorageUri> CheckOutput(absl::string_view field, absl::string_view uri) const;
  // "file:///a, s3://b/p (read-write); file:///m (inputs)" for messages and logs.
  std::string Describe() const;
  // The local (file://) roots as paths, and the denied directories: what the worker confines the job to.
  const std::vector<std::string>& local_rw() const { return local_rw_; }
  const std::vector<std::string>& local_ro() const { return local_ro_; }
  const std::vector<std::string>& denied() const { return denied_; }

 private:
  absl::StatusOr<storage::StorageUri> Check(absl::string_view field, absl::string_view uri, bool write) const;
  std::vector<storage::StorageUri> rw_, ro_;
  std::vector<std::string> local_rw_, local_ro_, denied_;
  std::vector<std::string> raw_rw_, raw_ro_;  // as given to Create (with ForTenant's suffixes applied by it)
  TenantRootOptions tenant_;
};

// Whether `inner` equals `root` or lies below it.
bool UnderRoot(const storage::StorageUri& inner, const storage::StorageUri& root);

}  // namespace llmc::server
