// The object store interface: a flat namespace of keys below a root location, with the operations llmc needs
// (stat, ranged reads, small puts, multipart uploads, paged listing, deletes, server-side copy). Implemented for
// local directories (file://, FileObjectStore), S3-compatible servers (s3://, S3ObjectStore) and memory
// (MemoryObjectStore, a fake for tests).
//
// Keys are relative to the root and use '/' as separator ("model.safetensors", "sub/x.json"). Every method is
// thread-safe. Errors are absl::Status with canonical codes (NOT_FOUND, PERMISSION_DENIED, UNAVAILABLE after
// retries, ...) and a message that names the object's URI, the server's answer and what to do.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "storage/s3_options.h"

namespace llmc::storage {

struct ObjectInfo {
  std::string key;   // relative to the store's root
  uint64_t size = 0;
  std::string etag;  // opaque version tag, without quotes; changes when the content changes
};

struct ListResult {
  std::vector<ObjectInfo> objects;  // in key order (bytewise)
  std::string next_token;           // pass to the next ListPage call; empty when this was the last page
};

struct CompletedPart {
  int part_number = 0;  // 1-based
  std::string etag;     // as UploadPart returned it
};

inline constexpr uint64_t kToEnd = std::numeric_limits<uint64_t>::max();

class ObjectStore {
 public:
  virtual ~ObjectStore() = default;

  // The root location ("s3://bucket/prefix", "file:///dir", "mem://name").
  virtual std::string uri() const = 0;
  // The URI of `key` (for messages).
  std::string UriOf(absl::string_view key) const;

  // Size and etag of `key`. NOT_FOUND if absent.
  virtual absl::StatusOr<ObjectInfo> Stat(absl::string_view key) = 0;
  // Reads exactly out.size() bytes at `offset` into `out` (a ranged GET). OUT_OF_RANGE if the object is shorter;
  // with a non-empty `if_match`, FAILED_PRECONDITION if the object's etag is no longer `if_match`.
  virtual absl::Status Read(absl::string_view key, uint64_t offset, absl::Span<uint8_t> out,
                            absl::string_view if_match = {}) = 0;
  // The bytes [offset, offset + length) of `key` (to the end for kToEnd), clipped to the object's size.
  virtual absl::StatusOr<std::string> Get(absl::string_view key, uint64_t offset = 0, uint64_t length = kToEnd) = 0;
  // Stores `data` as `key` in one request, replacing any object there (atomically: readers see the old or the
  // new object). Meant for small objects; use a multipart upload above a few tens of MB.
  virtual absl::Status Put(absl::string_view key, absl::string_view data) = 0;

  // Multipart upload: Create, then UploadPart for parts 1..N (any order, concurrently; every part but the last at
  // least 5 MiB on S3), then Complete with all parts in order; or Abort to discard the parts. The object
  // appears only at Complete.
  virtual absl::StatusOr<std::string> CreateMultipartUpload(absl::string_view key) = 0;  // the upload id
  virtual absl::StatusOr<std::string> UploadPart(absl::string_view key, absl::string_view upload_id,
                                                 int part_number, absl::string_view data) = 0;  // the part's etag
  virtual absl::Status CompleteMultipartUpload(absl::string_view key, absl::string_view upload_id,
                                               const std::vector<CompletedPart>& parts) = 0;
  // OK if the upload no longer exists.
  virtual absl::Status AbortMultipartUpload(absl::string_view key, absl::string_view upload_id) = 0;

  // One page of the objects whose key starts with `prefix` (a plain string prefix, as S3's), at most
  // `max_keys` (1..1000), after the page `token` names ("" for the first).
  virtual absl::StatusOr<ListResult> ListPage(absl::string_view prefix, absl::string_view token,
                                              int max_keys = 1000) = 0;
  // Every object under `prefix`, following pages.
  absl::StatusOr<std::vector<ObjectInfo>> List(absl::string_view prefix, int page_size = 1000);

  // Deletes `key`; OK if it does not exist.
  virtual absl::Status Delete(absl::string_view key) = 0;
  // Deletes every object whose key starts with `prefix` (to delete a "directory", end it with '/'). Returns
  // the number deleted.
  virtual absl::StatusOr<int64_t> DeletePrefix(absl::string_view prefix);
  // Copies `src` to `dst` inside the store without moving the bytes through this process where the store
  // allows (S3 CopyObject / UploadPartCopy; a hard link for file://).
  virtual absl::Status Copy(absl::string_view src, absl::string_view dst) = 0;

  // For stores that are a local directory: the file path of `key`, so transfers can copy directly.
  virtual std::optional<std::string> LocalPath(absl::string_view key) const { return std::nullopt; }
};

// Opens the store rooted at `uri`: a local path or file:///dir (FileObjectStore; the directory need not exist
// yet) or s3://bucket/prefix (S3ObjectStore; settings from `options`, then the environment, see s3_options.h).
// Opening contacts no server; errors (INVALID_ARGUMENT, UNIMPLEMENTED, FAILED_PRECONDITION for bad
// credentials settings) concern the URI and settings only.
absl::StatusOr<std::unique_ptr<ObjectStore>> OpenObjectStore(absl::string_view uri, const StoreOptions& options = {});

}  // namespace llmc::storage
