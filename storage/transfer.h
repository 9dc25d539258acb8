// Moving whole files between local disk and an ObjectStore: UploadFile (multipart, parts in parallel, aborted on
// failure) and DownloadPrefix (every object under a prefix, parallel ranged GETs, sizes verified).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "storage/object_store.h"

namespace llmc::storage {

struct TransferOptions {
  // Multipart part size for uploads and chunk size of ranged GETs for downloads. Raised when a file would
  // need more than 10000 parts; at least 5 MiB.
  uint64_t part_size = 32ull << 20;
  // Files up to this size are uploaded with one PUT.
  uint64_t multipart_threshold = 32ull << 20;
  // Parts or chunks in flight at once (each holds a part_size buffer).
  int parallelism = 4;
  // When it turns true the transfer stops, cleans up and fails with CANCELLED.
  const std::atomic<bool>* cancel = nullptr;
  // Called with the number of bytes just moved, from worker threads (must be thread-safe).
  std::function<void(uint64_t)> on_bytes;
};

struct UploadResult {
  std::string uri;     // where the object is
  uint64_t size = 0;
  std::string sha256;  // lowercase hex SHA-256 of the bytes uploaded (computed while reading)
  std::string etag;    // the stored object's etag
  int parts = 0;       // multipart parts (0: one PUT or a local copy)
};

// Uploads the local file `local_path` to `uri` (s3://bucket/key or a local path / file://). Large files go as a
// multipart upload whose parts are read in order (hashing them) and sent `parallelism` at a time; on any
// failure or cancellation the multipart upload is aborted, so no parts are left behind. The object's size is
// checked after the upload. Local destinations are written to a temporary file and renamed.
absl::StatusOr<UploadResult> UploadFile(absl::string_view local_path, absl::string_view uri,
                                        const TransferOptions& options = {}, const StoreOptions& store_options = {});

// The same into `store` as `key`, reading from the open file `fd` (kept open by the caller; read with pread
// from offset 0 to its size at the call). `what` names the source in messages.
absl::StatusOr<UploadResult> UploadFdToStore(int fd, absl::string_view what, ObjectStore& store,
                                             absl::string_view key, const TransferOptions& options = {});

struct DownloadOptions {
  TransferOptions transfer;
  // Skip objects whose local file has the size and (per the record .llmc-download.json in the directory) the
  // etag of the object: makes re-running a download into the same directory cheap.
  bool skip_unchanged = false;
  // Objects whose key (relative to the prefix) starts with one of these are not downloaded (leftovers of
  // unfinished llmc outputs by default).
  std::vector<std::string> exclude_prefixes = {".llmc-staging-"};
};

struct DownloadResult {
  int files = 0;    // objects downloaded
  int skipped = 0;  // objects already present (skip_unchanged)
  uint64_t bytes = 0;  // bytes downloaded
};

// The name of the record DownloadPrefix keeps in the local directory.
inline constexpr char kDownloadRecord[] = ".llmc-download.json";

// Downloads every object under `uri_prefix` (s3://bucket/dir or a local path, taken as a directory) into
// `local_dir`, keeping relative paths. Objects are fetched as ranged GETs of part_size, `parallelism` at a
// time, each pinned to the etag listed (a changed object fails with FAILED_PRECONDITION instead of mixing
// versions); each file is written to a temporary name, its size checked against the listing, then renamed.
// Keys that cannot be local paths ("..", empty segments) fail with INVALID_ARGUMENT; "directory marker" keys
// ending in '/' are skipped. NOT_FOUND when there is no object under the prefix. On failure the files completed
// so far stay; temporary files are removed.
absl::StatusOr<DownloadResult> DownloadPrefix(absl::string_view uri_prefix, absl::string_view local_dir,
                                              const DownloadOptions& options = {},
                                              const StoreOptions& store_options = {});

// The same from `store`: objects under the relative "directory" `prefix` ("" for the whole store).
absl::StatusOr<DownloadResult> DownloadPrefixFromStore(ObjectStore& store, absl::string_view prefix,
                                                       absl::string_view local_dir,
                                                       const DownloadOptions& options = {});

}  // namespace llmc::storage
