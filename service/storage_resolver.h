// Where a worker's job reads its inputs and writes its output. The worker asks a StorageResolver to map the
// job's URIs to local paths for the engine, and to publish the local output directory to the output URI once
// the job succeeded. This build ships the local resolver (file:// and absolute paths); the object-storage
// one (s3://, storage/compress_io.h) plugs in here by implementing the same interface.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace llmc::service {

// One job's output. Not thread-safe.
class OutputSink {
 public:
  virtual ~OutputSink() = default;  // aborts an uncommitted output
  // The directory the engine writes (CompressOptions::output_path).
  virtual const std::string& local_dir() const = 0;
  // After the engine succeeded: makes the output visible at its URI (no-op for local outputs, which the
  // engine renames into place itself).
  virtual absl::Status Commit() = 0;
  // The engine's "file complete" hook (CompressOptions::on_file_complete): object-storage outputs start
  // uploading the file at once. Thread-safe.
  virtual absl::Status FileComplete(const std::string& name, const std::string& path) { return absl::OkStatus(); }
  // Whether FileComplete does anything (remote outputs).
  virtual bool remote() const { return false; }
};

class StorageResolver {
 public:
  virtual ~StorageResolver() = default;
  // A local path holding the input at `uri` (a model directory, a dataset or text file). Thread-safe.
  virtual absl::StatusOr<std::string> ResolveInput(absl::string_view uri) = 0;
  // Opens the output `uri` for one job (job_id names any staging). Thread-safe.
  virtual absl::StatusOr<std::unique_ptr<OutputSink>> OpenOutput(absl::string_view uri, const std::string& job_id) = 0;
};

// file:// URIs and absolute paths; s3:// and other schemes: UNIMPLEMENTED naming the URI.
std::unique_ptr<StorageResolver> NewLocalStorageResolver();

// file:// and s3:// (storage/): s3:// models are fetched into the cache (storage::ResolveModelInput), s3://
// files (datasets, eval text) downloaded into it, s3:// outputs written to scratch and published with the
// staging/manifest protocol, finished shards uploading while the job runs. Credentials and endpoint as for
// `llmc compress` (docs/storage.md).
std::unique_ptr<StorageResolver> NewObjectStorageResolver();

}  // namespace llmc::service
