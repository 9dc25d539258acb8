// `llmc compress` with MODEL or OUTPUT on object storage: resolve an input URI to a local model directory
// (downloading s3:// models into a cache), and publish a checkpoint written locally to an s3:// output with the
// staging/manifest protocol of output_publisher.h. Library llmc_storage_compress (storage + engine).
//
// The CLI's use, MODEL and OUTPUT being paths, file:// or s3:// URIs:
//
//   storage::OutputTargetOptions oo;
//   oo.overwrite = a.overwrite;
//   oo.transfer.cancel = &g_cancel;
//   LLMC_ASSIGN_OR_RETURN(auto target, storage::OutputTarget::Open(a.output, oo));  // refuses an existing output
//   LLMC_ASSIGN_OR_RETURN(std::string model_dir, storage::ResolveModelInput(a.model));
//   opt.model_path = model_dir;                // and SequentialOptions::model_path
//   opt.output_path = target->local_dir();
//   storage::AttachFileHook(&opt, target.get());  // uploads shards while the job runs, when the engine can say so
//   auto summary = RunCompress(opt, cfg);      // on error: target's destructor aborts (no output, no staging)
//   ... eval / rewrite compression_report.json in target->local_dir() ...
//   LLMC_RETURN_IF_ERROR(target->Commit());    // uploads the rest, writes llmc_manifest.json last
//
// or all of it in one call: RunCompressToUri(opt, cfg).
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "engine/pipeline/compress_job.h"
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
  std::mutex mu_;
  std::map<std::string, std::pair<uint64_t, int64_t>> handed_ ABSL_GUARDED_BY(mu_);  // name -> (size, mtime ns)
  bool done_ = false;
};

// Points `options`'s "file complete" hook at `target`, when the engine's CompressOptions has one:
//   std::function<absl::Status(const std::string& name, const std::string& path)> on_file_complete;
// Returns whether it did (false: the files are all uploaded at Commit).
template <typename Options>
bool AttachFileHook(Options* options, OutputTarget* target) {
  if constexpr (requires(Options o) {
                  o.on_file_complete = std::function<absl::Status(const std::string&, const std::string&)>();
                }) {
    if (!target->remote()) return false;
    options->on_file_complete = [target](const std::string& name, const std::string& path) {
      return target->FileComplete(name, path);
    };
    return true;
  } else {
    return false;
  }
}

struct CompressIoOptions {
  ModelInputOptions input;
  OutputTargetOptions output;  // overwrite and cancel are taken from CompressOptions
};

// RunCompress with options.model_path and options.output_path allowed to be s3:// or file:// URIs (the flow in
// the header comment). The summary names the URIs as given.
absl::StatusOr<CompressSummary> RunCompressToUri(CompressOptions options, const QuantConfig& config,
                                                 const CompressIoOptions& io = {});

}  // namespace llmc::storage
