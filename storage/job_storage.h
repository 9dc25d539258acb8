// Where a compression job reads and writes when its locations are paths, file:// or s3:// URIs: an input URI
// becomes a local model directory or file (s3:// models are downloaded into a cache), and an output becomes an
// OutputTarget: a local directory for the engine to write, published to s3:// with the staging/manifest protocol
// of output_publisher.h (finished shards upload while the job runs; llmc_manifest.json goes last). No engine
// code: the job path (worker/job_io.h) joins this to the engine.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "storage/output_publisher.h"
#include "storage/transfer.h"

namespace llmc::storage {

// $XDG_CACHE_HOME/llmc, else $HOME/.cache/llmc, else /tmp/llmc-cache-UID.
std::string DefaultCacheDir();

struct ModelInputOptions {
  std::string cache_dir;      // "": DefaultCacheDir()
  DownloadOptions download;   // parallelism, part size, cancel (skip_unchanged is always on)
  StoreOptions store;
};

// The local directory under the cache an s3:// model goes to: CACHE/models/HOST_PORT/BUCKET/PREFIX.
absl::StatusOr<std::string> ModelCacheDir(absl::string_view model_uri, const ModelInputOptions& options = {});

// A local directory holding the model `model`: a local path or file:// URI is returned as a path (NOT_FOUND if
// it does not exist); an s3:// prefix is downloaded into ModelCacheDir (objects already there with the same
// size and etag are kept, so a second run downloads nothing) and that directory is returned.
absl::StatusOr<std::string> ResolveModelInput(absl::string_view model, const ModelInputOptions& options = {});

// A local path holding the file `uri` (a calibration dataset or evaluation text): local paths and file:// as
// they are (NOT_FOUND if missing); an s3:// object is downloaded into CACHE/files/HOST_PORT/BUCKET/KEY.
absl::StatusOr<std::string> ResolveFileInput(absl::string_view uri, const ModelInputOptions& options = {});

struct OutputTargetOptions {
  bool overwrite = false;
  std::string job_id;       // "": "<pid>-<random hex>"
  std::string scratch_dir;  // where s3:// outputs are written before upload; "": DefaultCacheDir()/work
  TransferOptions transfer;  // upload parts and parallelism; `cancel` stops uploads
  int max_files_in_flight = 2;
  StoreOptions store;
};

// Where a compress job writes, and how its result becomes the output. For a local path or file:// output the
// engine writes OUTPUT itself (it already renames a staging directory into place) and Commit does nothing.
// For s3:// the engine writes a scratch directory, finished files are uploaded to the staging prefix (through
// FileComplete while the job runs, the rest at Commit), and Commit publishes with the manifest written last.
// Not copyable. FileComplete is thread-safe; the other methods are called from one thread.
class OutputTarget {
 public:
  // Checks the output location (for s3://: that it does not exist unless overwrite; one listing).
  static absl::StatusOr<std::unique_ptr<OutputTarget>> Open(absl::string_view output,
                                                            const OutputTargetOptions& options = {});
  // Aborts an uncommitted s3:// output (deleting its staging objects) and removes the scratch directory.
  ~OutputTarget();
  OutputTarget(const OutputTarget&) = delete;
  OutputTarget& operator=(const OutputTarget&) = delete;

  bool remote() const { return publisher_ != nullptr; }
  // The directory to give the engine as CompressOptions::output_path.
  const std::string& local_dir() const { return local_dir_; }
  // The output as given.
  const std::string& output() const { return output_; }

  // The engine's "file complete" hook: `path` (anywhere; it is opened now) becomes `name` of the output. Starts
  // its upload at once for s3:// outputs; no-op for local ones.
  absl::Status FileComplete(const std::string& name, const std::string& path);
  // After the job succeeded: uploads every file of local_dir() not handed over yet (or changed since), then
  // commits. The scratch directory is removed afterwards.
  absl::Status Commit();
  // Discards an s3:// output in progress (no manifest, no staging objects left).
  absl::Status Abort();
  // The manifest written by Commit (s3:// outputs).
  const OutputManifest& manifest() const { return manifest_; }

 private:
  OutputTarget() = default;
  std::string output_;
  std::string local_dir_;
  std::string scratch_root_;  // removed at destruction (s3:// outputs)
  std::unique_ptr<OutputPublisher> publisher_;
  OutputManifest manifest_;
  absl::Mutex mu_;
  std::map<std::string, std::pair<uint64_t, int64_t>> handed_ ABSL_GUARDED_BY(mu_);  // name -> (size, mtime ns)
  bool done_ = false;
};

}  // namespace llmc::storage
