// An in-memory ObjectStore with S3's rules (parts of at least 5 MiB but the last, objects appear at Complete),
// for tests of code built on ObjectStore; it can be told to fail chosen operations. Thread-safe.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "storage/object_store.h"

namespace llmc::storage {

class MemoryObjectStore final : public ObjectStore {
 public:
  explicit MemoryObjectStore(std::string name = "test", uint64_t min_part_size = 5u << 20);

  // Fails calls of operation `op` ("Stat", "Read", "Get", "Put", "CreateMultipartUpload", "UploadPart",
  // "CompleteMultipartUpload", "AbortMultipartUpload", "ListPage", "Delete", "Copy") with `status`: the
  // calls after the next `skip` successful ones, `count` times (-1: always).
  void InjectFault(const std::string& op, absl::Status status, int skip = 0, int count = 1);
  // How many times `op` was called (failed calls included).
  int Calls(const std::string& op) const;
  // Multipart uploads created and neither completed nor aborted.
  size_t PendingUploads() const;
  // Every object, key -> bytes.
  std::map<std::string, std::string> Objects() const;

  std::string uri() const override { return "mem://" + name_; }
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
  absl::Status Copy(absl::string_view src, absl::string_view dst) override;

 private:
  struct Fault {
    absl::Status status;
    int skip = 0;
    int count = 1;
  };
  struct Object {
    std::string data;
    std::string etag;
  };
  struct Upload {
    std::string key;
    std::map<int, std::string> parts;
  };
  absl::Status Enter(const std::string& op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string name_;
  const uint64_t min_part_size_;
  mutable absl::Mutex mu_;
  std::map<std::string, Object> objects_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Upload> uploads_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<Fault>> faults_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> calls_ ABSL_GUARDED_BY(mu_);
  int next_upload_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace llmc::storage
