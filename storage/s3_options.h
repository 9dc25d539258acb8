// Settings of the S3 client and of stores in general. Unset fields come from the environment (see
// docs/storage.md).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "storage/http_transport.h"
#include "storage/retry_policy.h"
#include "storage/sigv4_signer.h"

namespace llmc::storage {

enum class S3Addressing {
  kAuto,           // LLMC_S3_ADDRESSING=path|virtual if set; else path-style for a custom endpoint (RGW, MinIO,
                   // ...), virtual-hosted on AWS (path-style there too for bucket names with dots)
  kPath,           // http://endpoint/bucket/key
  kVirtualHosted,  // http://bucket.endpoint/key
};

struct S3Options {
  // "http://127.0.0.1:7480" (scheme optional, https assumed). "": LLMC_S3_ENDPOINT, AWS_ENDPOINT_URL_S3,
  // AWS_ENDPOINT_URL, else AWS (https://s3.REGION.amazonaws.com).
  std::string endpoint;
  // "": AWS_REGION, AWS_DEFAULT_REGION, else us-east-1. Signatures are scoped to it.
  std::string region;
  S3Addressing addressing = S3Addressing::kAuto;
  // Unset: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, else the shared credentials file
  // (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile AWS_PROFILE or default), else anonymous.
  std::optional<AwsCredentials> credentials;
  bool anonymous = false;  // send every request unsigned even when credentials exist
  // Sign the SHA-256 of every body (the server checks it). False: UNSIGNED-PAYLOAD (cheaper; TLS alone then
  // protects uploads).
  bool sign_payload = true;
  RetryPolicy retry;
  CurlTransportOptions http;  // timeouts, TLS (ca_bundle "": AWS_CA_BUNDLE, else the system's)
  // Copy: objects above this size are copied as a multipart upload of UploadPartCopy parts of copy_part_size
  // (S3 copies at most 5 GiB in one CopyObject).
  uint64_t multipart_copy_threshold = 4ull << 30;
  uint64_t copy_part_size = 1ull << 30;
  // For tests: the HTTP exchange (default libcurl), the clock used for signatures, how to sleep between tries.
  std::shared_ptr<HttpTransport> transport;
  std::function<absl::Time()> clock;
  std::function<void(absl::Duration)> sleep;
};

struct StoreOptions {
  S3Options s3;
};

}  // namespace llmc::storage
