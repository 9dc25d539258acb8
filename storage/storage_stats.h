// Process-wide counters of object-storage traffic, for the worker's heartbeats (the coordinator turns them into
// its llmc_storage_* metrics, docs/service.md). Every S3 request and transfer of the process adds to the one
// instance ProcessStorageStats() returns; nothing resets it, so readers take differences.
//
// Thread-safety: the counters are atomics; any thread may add or read.
#pragma once

#include <atomic>
#include <cstdint>

namespace llmc::storage {

struct StorageStats {
  std::atomic<uint64_t> bytes_uploaded{0};    // bytes stored by UploadFdToStore/UploadFile into s3:// stores
  std::atomic<uint64_t> bytes_downloaded{0};  // bytes fetched by DownloadPrefix from s3:// stores
  std::atomic<uint64_t> retries{0};           // S3 requests sent again after a retryable failure
  std::atomic<uint64_t> failed_requests{0};   // S3 requests that failed for good (retries spent or not retryable)
};

// The counters of this process (never null; lives as long as the process).
StorageStats& ProcessStorageStats();

}  // namespace llmc::storage
