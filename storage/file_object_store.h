// ObjectStore on a local directory (file:// locations). Keys map to files below the root; writes go to a
// temporary file renamed into place, so readers never see a partial object.
#pragma once

#include <memory>
#include <string>

#include "storage/object_store.h"

namespace llmc::storage {

class FileObjectStore final : public ObjectStore {
 public:
  // `root_dir`: an absolute directory path; it is created on the first write.
  explicit FileObjectStore(std::string root_dir);

  std::string uri() const override;
  const std::string& root_dir() const { return root_; }

  // The etag is derived from the file's size, modification time and inode.
  absl::StatusOr<ObjectInfo> Stat(absl::string_view key) override;
  absl::Status Read(absl::string_view key, uint64_t offset, absl::Span<uint8_t> out,
                    absl::string_view if_match = {}) override;
  absl::StatusOr<std::string> Get(absl::string_view key, uint64_t offset = 0, uint64_t length = kToEnd) override;
  absl::Status Put(absl::string_view key, absl::string_view data) override;
  // Parts are files under ROOT/.llmc-uploads/ID/ (hidden from listings); Complete concatenates them.
  absl::StatusOr<std::string> CreateMultipartUpload(absl::string_view key) override;
  absl::StatusOr<std::string> UploadPart(absl::string_view key, absl::string_view upload_id, int part_number,
                                         absl::string_view data) override;
  absl::Status CompleteMultipartUpload(absl::string_view key, absl::string_view upload_id,
                                       const std::vector<CompletedPart>& parts) override;
  absl::Status AbortMultipartUpload(absl::string_view key, absl::string_view upload_id) override;
  // Regular files below the root, in key order; temporary files and .llmc-uploads/ are left out.
  absl::StatusOr<ListResult> ListPage(absl::string_view prefix, absl::string_view token,
                                      int max_keys = 1000) override;
  // Removes the file and the directories that become empty (up to the root).
  absl::Status Delete(absl::string_view key) override;
  // A hard link where possible (no bytes copied), else a copy; atomic for readers of `dst`.
  absl::Status Copy(absl::string_view src, absl::string_view dst) override;
  std::optional<std::string> LocalPath(absl::string_view key) const override;

 private:
  absl::StatusOr<std::string> PathOf(absl::string_view key) const;
  std::string root_;
};

// Writes `data` to `path` through a temporary file in the same directory (created with its parents), fsynced,
// then renamed over `path`.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view data);

// A unique temporary name beside `path` ("PATH.llmc-tmp-PID-N"); FileObjectStore listings skip such names.
std::string TempPathBeside(const std::string& path);

}  // namespace llmc::storage
