// ObjectStore on any S3-compatible server (AWS S3, Ceph RGW, MinIO, ...): SigV4-signed requests over libcurl,
// retried with exponential backoff and jitter (see retry_policy.h).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "storage/aws_config.h"
#include "storage/object_store.h"
#include "storage/storage_uri.h"

namespace llmc::storage {

class S3ObjectStore final : public ObjectStore {
 public:
  // A store rooted at `root` (an s3:// location). Settings come from `options`, then the environment read with
  // `getenv` (S3Options says which variables). Contacts no server; fails only on bad settings (an endpoint
  // that is not a URL, half-set credentials variables, ...).
  static absl::StatusOr<std::unique_ptr<S3ObjectStore>> Create(const StorageUri& root, const S3Options& options,
                                                               const GetEnvFn& getenv = SystemEnv());
  ~S3ObjectStore() override;

  std::string uri() const override;
  absl::StatusOr<ObjectInfo> Stat(absl::string_view key) override;
  absl::Status Read(absl::string_view key, uint64_t offset, absl::Span<uint8_t> out,
                    absl::string_view if_match = {}) override;
  absl::StatusOr<std::string> Get(absl::string_view key, uint64_t offset = 0, uint64_t length = kToEnd) override;
  absl::Status Put(absl::string_view key, absl::string_view data) override;
  absl::StatusOr<std::string> CreateMultipartUpload(absl::string_view key) override;
  absl::StatusOr<std::string> UploadPart(absl::string_view key, absl::string_view upload_id, int part_number,
                                         absl::string_view data) override;
  absl::Status CompleteMultipartUpload(absl::string_view key, absl::string_view upload_id,
                                       const std::vector<CompletedPart>& parts) override;
  absl::Status AbortMultipartUpload(absl::string_view key, absl::string_view upload_id) override;
  absl::StatusOr<ListResult> ListPage(absl::string_view prefix, absl::string_view token,
                                      int max_keys = 1000) override;
  absl::Status Delete(absl::string_view key) override;
  // Lists and deletes in batches of up to 1000 keys (multi-object delete).
  absl::StatusOr<int64_t> DeletePrefix(absl::string_view prefix) override;
  // CopyObject, or a multipart UploadPartCopy above S3Options::multipart_copy_threshold.
  absl::Status Copy(absl::string_view src, absl::string_view dst) override;

  // Creates the store's bucket (PUT /bucket; with a LocationConstraint outside us-east-1). OK if this account
  // already owns it. For tests and setup scripts.
  absl::Status CreateBucket();

  // The resolved settings.
  const std::string& endpoint() const;  // "http://127.0.0.1:7480" or "https://s3.us-east-1.amazonaws.com"
  const std::string& region() const;
  bool path_style() const;
  const AwsCredentials& credentials() const;

 private:
  struct Impl;
  explicit S3ObjectStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmc::storage
