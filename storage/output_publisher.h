// Publishes a job's output files (a compressed checkpoint) to an output location so that readers never take
// a partial output for a complete one:
//
//   1. while the job runs, each finished file is uploaded under the staging prefix
//      <output>/.llmc-staging-<job_id>/ (AddFile, asynchronous);
//   2. Commit() waits for the uploads, copies every staged file to <output>/<name> (server-side on S3, hard links
//      for file://), then writes <output>/llmc_manifest.json LAST, listing every file with its size and SHA-256,
//      and deletes the staging prefix;
//   3. on failure or cancellation, Abort() (also run by the destructor and by a failed Commit) stops the
//      uploads, aborts their multipart uploads and deletes the staging prefix.
//
// An output is complete if and only if its manifest exists (ReadOutputManifest). A failed or cancelled job
// leaves no manifest and no staging objects. The same protocol runs on every store (s3://, file://, memory).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/thread_pool.h"
#include "storage/object_store.h"
#include "storage/transfer.h"

namespace llmc::storage {

inline constexpr char kManifestName[] = "llmc_manifest.json";
inline constexpr char kStagingPrefix[] = ".llmc-staging-";
inline constexpr char kManifestFormat[] = "llmc-output/1";

struct ManifestFile {
  std::string name;  // relative to the output
  uint64_t size = 0;
  std::string sha256;  // lowercase hex
};

struct OutputManifest {
  std::string format = kManifestFormat;
  std::string job_id;
  std::string created;              // UTC, RFC 3339
  std::vector<ManifestFile> files;  // sorted by name
  uint64_t total_bytes() const;
  nlohmann::json ToJson() const;
  // INVALID_ARGUMENT (naming `source`) for a document that is not a manifest.
  static absl::StatusOr<OutputManifest> FromJson(absl::string_view text, absl::string_view source);
};

struct PublisherOptions {
  // Names the staging prefix; letters, digits, '.', '_' and '-' only. Two jobs writing the same output at once
  // must use different ids.
  std::string job_id;
  // Replace an existing output. Without it, Open fails with ALREADY_EXISTS when the output has objects (staging
  // prefixes of other jobs aside). With it, the old output stays readable until Commit, which first deletes its
  // manifest, then replaces its files and removes the ones the new output lacks.
  bool overwrite = false;
  TransferOptions transfer;  // part size and parallelism of each file's upload; `cancel` aborts uploads
  int max_files_in_flight = 2;  // files uploaded at once (each with transfer.parallelism parts)
  int commit_parallelism = 8;   // server-side copies at once during Commit
};

class OutputPublisher {
 public:
  // Opens the output location `output_uri` (s3://bucket/prefix, file:///dir or a path). Checks that the output
  // does not exist unless `overwrite` (one listing).
  static absl::StatusOr<std::unique_ptr<OutputPublisher>> Open(absl::string_view output_uri,
                                                               const PublisherOptions& options,
                                                               const StoreOptions& store_options = {});
  // The same on a store rooted at the output location.
  static absl::StatusOr<std::unique_ptr<OutputPublisher>> OpenStore(std::unique_ptr<ObjectStore> store,
                                                                    const PublisherOptions& options);
  // Aborts (see Abort) unless committed or aborted already.
  ~OutputPublisher();
  OutputPublisher(const OutputPublisher&) = delete;
  OutputPublisher& operator=(const OutputPublisher&) = delete;

  // Starts uploading the local file `local_path` as `name` (relative to the output; not the manifest's name,
  // not under a staging prefix) and returns; the upload runs in the background. The file is opened before
  // returning and read through that descriptor, so it may then be renamed or unlinked, but must not be
  // modified. Adding a name again replaces the earlier file (after its upload finished). Fails at once for a
  // bad name, an unreadable file, after Commit/Abort, or when an earlier upload failed (its error). Thread-safe.
  absl::Status AddFile(absl::string_view name, absl::string_view local_path) ABSL_LOCKS_EXCLUDED(mu_);
  // The same for bytes in memory (small files: configs, reports).
  absl::Status AddBytes(absl::string_view name, std::string data) ABSL_LOCKS_EXCLUDED(mu_);
  // Waits for every upload started so far; the first error, if any.
  absl::Status Wait() ABSL_LOCKS_EXCLUDED(mu_);
  // Makes the output visible as described above and returns its manifest. On failure nothing is left: no
  // manifest, no staging objects, no copied files (the old output's files may be gone when overwriting).
  absl::StatusOr<OutputManifest> Commit() ABSL_LOCKS_EXCLUDED(mu_);
  // Stops the uploads, aborts their multipart uploads and deletes the staging prefix. OK if already aborted.
  absl::Status Abort() ABSL_LOCKS_EXCLUDED(mu_);

  std::string output_uri() const { return store_->uri(); }
  std::string staging_uri() const { return store_->UriOf(staging_); }
  // Names added so far whose upload succeeded.
  std::vector<std::string> published() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  enum class State { kOpen, kCommitted, kAborted };
  struct Entry {
    uint64_t size = 0;
    std::string sha256;
    bool done = false;
    int generation = 0;
  };
  OutputPublisher(std::unique_ptr<ObjectStore> store, const PublisherOptions& options);
  absl::Status CheckName(absl::string_view name) const;
  // Registers an upload of `name` (waiting for an earlier one of the same name); returns its generation.
  absl::StatusOr<int> Begin(const std::string& name) ABSL_LOCKS_EXCLUDED(mu_);
  void Finish(const std::string& name, int generation, absl::StatusOr<UploadResult> result)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Both wait on cv_, releasing mu_ while they wait.
  absl::Status WaitLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AbortLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::unique_ptr<ObjectStore> store_;
  const PublisherOptions options_;
  const std::string staging_;  // ".llmc-staging-<job_id>/"
  std::string remove_root_if_empty_;  // file:// outputs this publisher created
  std::atomic<bool> cancel_{false};
  TransferOptions transfer_;  // options_.transfer with cancel_ as its flag

  mutable absl::Mutex mu_;
  absl::CondVar cv_;  // an upload finished, or the state changed
  State state_ ABSL_GUARDED_BY(mu_) = State::kOpen;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> in_flight_ ABSL_GUARDED_BY(mu_);
  int in_flight_total_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status error_ ABSL_GUARDED_BY(mu_);

  ThreadPool pool_;  // last: destroyed (joined) first
};

// The manifest of the output at `output_uri`. NOT_FOUND ("the output is incomplete") when there is none.
absl::StatusOr<OutputManifest> ReadOutputManifest(absl::string_view output_uri, const StoreOptions& store_options = {});
absl::StatusOr<OutputManifest> ReadOutputManifestFromStore(ObjectStore& store);

// Checks that every file of `manifest` exists in `store` with its size (one listing). DATA_LOSS otherwise.
absl::Status VerifyOutputSizes(ObjectStore& store, const OutputManifest& manifest);

}  // namespace llmc::storage
