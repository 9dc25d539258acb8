// Reading and writing safetensors files (https://github.com/huggingface/safetensors format):
// 8-byte little-endian header length N, N bytes of JSON header, then the tensor data.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "engine/tensor/dtype.h"

namespace llmc {

// One tensor entry of a safetensors header. Offsets are relative to the start of the data section.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;

  uint64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// A validated header: tensors sorted by data offset, plus the free-form `__metadata__`.
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
};

// Parses and validates a header JSON against a data section of `data_size` bytes: known dtypes,
// non-negative shapes, offsets inside the data, sizes that match dtype x shape, no overlapping tensors.
// `source` names the file in error messages. Never crashes on any input (fuzzed).
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view json, uint64_t data_size,
                                                         absl::string_view source);

// A read-only, memory-mapped safetensors file. Only the header is read on Open; tensor bytes are paged in
// when Data() is touched. Thread-safe after Open (all methods are const).
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  // nullptr if absent.
  const TensorInfo* Find(absl::string_view name) const;
  // The tensor's bytes; valid while this object lives. Reading may fault pages in from disk.
  absl::Span<const uint8_t> Data(const TensorInfo& t) const;
  // Drops the pages of [offset, offset+len) of the tensor from this process's resident set (the kernel keeps
  // them in the page cache). Call after a tensor was consumed to keep memory bounded.
  void Release(const TensorInfo& t, uint64_t offset = 0, uint64_t len = UINT64_MAX) const;
  uint64_t file_size() const { return file_size_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  int fd_ = -1;
  const uint8_t* map_ = nullptr;
  uint64_t file_size_ = 0;
  uint64_t data_start_ = 0;
  SafetensorsHeader header_;
  std::unordered_map<std::string, size_t> by_name_;
};

// Spec of one tensor to write.
struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t nbytes() const;
};

// Builds the header bytes (JSON padded with spaces to a multiple of 8, preceded by the 8-byte length)
// for tensors laid out in the given order. Fills `offsets` with each tensor's absolute file offset.
std::string BuildSafetensorsHeader(const std::vector<TensorSpec>& specs,
                                   const std::map<std::string, std::string>& metadata,
                                   std::vector<uint64_t>* offsets, uint64_t* total_size);

// Writes a safetensors file whose layout is fixed up front, so tensors can be written in any order and from
// several threads at once (pwrite at precomputed offsets). Space for the whole file is reserved on Create, so
// a full disk fails before any tensor is computed. Write() is thread-safe, and Sync() may run beside Write() and
// Close() (a durability point taken on another thread while the file is still being written); Create/Close are
// not thread-safe otherwise.
class SafetensorsWriter {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, std::vector<TensorSpec> specs,
      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
  // Reopens a file an earlier Create of the same specs wrote (partly), keeping its bytes, to resume writing.
  // Fails when the file is missing or its header differs from the one these specs give.
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Reopen(
      const std::string& path, std::vector<TensorSpec> specs,
      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
  ~SafetensorsWriter();

  // Index of tensor `name` in the spec list, or -1.
  int IndexOf(absl::string_view name) const;
  const std::vector<TensorSpec>& specs() const { return specs_; }
  // Writes bytes [offset, offset + data.size()) of tensor `index`. Fails if the range exceeds the tensor.
  absl::Status Write(int index, uint64_t offset, absl::Span<const uint8_t> data);
  // Counts tensor `index` as completely written (its bytes are in a reopened file already).
  void MarkWritten(int index);
  // Reads back bytes of tensor `index` (e.g. written before a resume).
  absl::StatusOr<std::vector<uint8_t>> Read(int index) const;
  // Flushes written data to disk (fdatasync).
  absl::Status Sync();
  // Verifies every tensor was written completely, flushes to disk and closes the file. A second call does nothing.
  absl::Status Close();
  uint64_t total_size() const { return total_size_; }
  const std::string& path() const { return path_; }

 private:
  SafetensorsWriter() = default;
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Open(const std::string& path, std::vector<TensorSpec> specs,
                                                                 const std::map<std::string, std::string>& metadata,
                                                                 bool reopen);
  std::string path_;
  int fd_ = -1;
  std::vector<TensorSpec> specs_;
  std::vector<uint64_t> offsets_;
  std::unordered_map<std::string, int> by_name_;
  absl::Mutex mu_;
  std::vector<uint64_t> written_ ABSL_GUARDED_BY(mu_);  // bytes written per tensor
  absl::Mutex close_mu_;  // held by Sync and Close: fd_ is not closed under a running fdatasync
  uint64_t total_size_ = 0;
};

}  // namespace llmc
