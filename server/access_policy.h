// Which storage locations jobs may read and write: the operator's allowed roots. A job's output_uri must lie
// under a read-write root; model_uri, calibration.dataset_uri and eval_text_uri under a read-write or an
// input-only root. Local paths are compared after resolving symlinks (so a link cannot lead out of a root);
// s3:// URIs by bucket and key prefix (on '/' boundaries).
//
// Immutable after Create; thread-safe.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "storage/storage_uri.h"

namespace llmc::server {

class AccessPolicy {
 public:
  // `roots` (read-write) and `input_roots` (read-only): absolute paths, file:// or s3:// URIs. Local roots must
  // exist. INVALID_ARGUMENT naming a bad root.
  static absl::StatusOr<AccessPolicy> Create(const std::vector<std::string>& roots,
                                             const std::vector<std::string>& input_roots);
  AccessPolicy() = default;

  // INVALID_ARGUMENT for a malformed or relative URI, PERMISSION_DENIED naming `field` and the URI when it lies
  // outside the roots. Returns the parsed location.
  absl::StatusOr<storage::StorageUri> CheckInput(absl::string_view field, absl::string_view uri) const;
  absl::StatusOr<storage::StorageUri> CheckOutput(absl::string_view field, absl::string_view uri) const;
  // "file:///a, s3://b/p (read-write); file:///m (inputs)" for messages and logs.
  std::string Describe() const;

 private:
  absl::StatusOr<storage::StorageUri> Check(absl::string_view field, absl::string_view uri, bool write) const;
  std::vector<storage::StorageUri> rw_, ro_;
};

// Whether `inner` equals `root` or lies below it.
bool UnderRoot(const storage::StorageUri& inner, const storage::StorageUri& root);

}  // namespace llmc::server
