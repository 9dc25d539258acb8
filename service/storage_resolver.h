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

}  // namespace llmc::service
