#include "storage/memory_object_store.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "storage/crypto.h"

namespace llmc::storage {

MemoryObjectStore::MemoryObjectStore(std::string name, uint64_t min_part_size)
    : name_(std::move(name)), min_part_size_(min_part_size) {}

void MemoryObjectStore::InjectFault(const std::string& op, absl::Status status, int skip, int count) {
  absl::MutexLock lock(&mu_);
  faults_[op].push_back({std::move(status), skip, count});
}

int MemoryObjectStore::Calls(const std::string& op) const {
  absl::MutexLock lock(&mu_);
  auto it = calls_.find(op);
  return it == calls_.end() ? 0 : it->second;
}

size_t MemoryObjectStore::PendingUploads() const {
  absl::MutexLock lock(&mu_);
  return uploads_.size();
}

std::map<std::string, std::string> MemoryObjectStore::Objects() const {
  absl::MutexLock lock(&mu_);
  std::map<std::string, std::string> out;
  for (const auto& [k, o] : objects_) out[k] = o.data;
  return out;
}

absl::Status MemoryObjectStore::Enter(const std::string& op) {
  ++calls_[op];
  auto it = faults_.find(op);
  if (it == faults_.end()) return absl::OkStatus();
  for (auto& f : it->second) {
    if (f.count == 0) continue;
    if (f.skip > 0) {
      --f.skip;
      continue;
    }
    if (f.count > 0) --f.count;
    return f.status;
  }
  return absl::OkStatus();
}

absl::StatusOr<ObjectInfo> MemoryObjectStore::Stat(absl::string_view key) {
  absl::MutexLock lock(&mu_);
  if (auto s = Enter("Stat"); !s.ok()) return s;
  auto it = objects_.find(std::string(key));
  if (it == objects_.end()) return absl::NotFoundError(absl::StrCat(UriOf(key), ": no such object"));
  return ObjectInfo{std::string(key), it->second.data.size(), it->second.etag};
}

absl::Status MemoryObjectStore::Read(absl::string_view key, uint64_t offset, absl::Span<uint8_t> out,
                                     absl::string_view if_match) {
  absl::MutexLock lock(&mu_);
  if (auto s = Enter("Read"); !s.ok()) return s;
  auto it = objects_.find(std::string(key));
  if (it == objects_.end()) return absl::NotFoundError(absl::StrCat(UriOf(key), ": no such object"));
  if (!if_match.empty() && it->second.etag != if_match)
    return absl::FailedPreconditionError(absl::StrCat(UriOf(key), ": the object changed while it was being read"));
  const std::string& d = it->second.data;
  if (offset > d.size() || d.size() - offset < out.size())
    return absl::OutOfRangeError(absl::StrCat(UriOf(key), ": object is shorter than ", offset + out.size(), " bytes"));
  if (!out.empty()) std::memcpy(out.data(), d.data() + offset, out.size());
  return absl::OkStatus();
}

absl::StatusOr<std::string> MemoryObjectStore::Get(absl::string_view key, uint64_t offset, uint64_t length) {
  absl::MutexLock lock(&mu_);
  if (auto s = Enter("Get"); !s.ok()) return s;
  auto it = objects_.find(std::string(key));
  if (it == objects_.end()) return absl::NotFoundError(absl::StrCat(UriOf(key), ": no such object"));
  const std::string& d = it->second.data;
  if (offset >= d.size()) return std::string();
  return d.substr(offset, length == kToEnd ? std::string::npos : length);
}

absl::Status MemoryObjectStore::Put(absl::string_view key, absl::string_view data) {
  absl::MutexLock lock(&mu_);
  if (auto s = Enter("Put"); !s.ok()) return s;
  objects_[std::string(key)] = {std::string(data), Sha256Hex(data).substr(0, 32)};
  return absl::OkStatus();
}

absl::StatusOr<std::string> MemoryObjectStore::CreateMultipartUpload(absl::string_view key) {
  absl::MutexLock lock(&mu_);
  if (auto s = Enter("CreateMultipartUpload"); !s.ok()) return s;
  std::string id = absl::StrCat("upload-", ++next_upload_);
  uploads_[id] = {std::string(key), {}};
  return id;
}

absl::StatusOr<std::string> MemoryObjectStore::UploadPart(absl::string_view key, absl::string_view upload_id,
                                                          int part_number, absl::string_view data) {
  absl::MutexLock lock(&mu_);
  if (auto s = Enter("UploadPart"); !s.ok()) return s;
  auto it = uploads_.find(std::string(upload_id));
  if (it == uploads_.end() || it->second.key != key)
    return absl::NotFoundError(absl::StrCat(UriOf(key), ": NoSuchUpload ", upload_id));
  if (part_number < 1 || part_number > 10000)
    return absl::InvalidArgumentError(absl::StrCat(UriOf(key), ": part number ", part_number, " outside 1..10000"));
  it->second.parts[part_number] = std::string(data);
  return absl::StrCat("\"", Sha256Hex(data).substr(0, 32), "\"");
}

absl::Status MemoryObjectStore::CompleteMultipartUpload(absl::string_view key, absl::string_view upload_id,
                                                        const std::vector<CompletedPart>& parts) {
  absl::MutexLock lock(&mu_);
  if (auto s = Enter("CompleteMultipartUpload"); !s.ok()) return s;
  auto it = uploads_.find(std::string(upload_id));
  if (it == uploads_.end() || it->second.key != key)
    return absl::NotFoundError(absl::StrCat(UriOf(key), ": NoSuchUpload ", upload_id));
  if (parts.empty()) return absl::InvalidArgumentError(absl::StrCat(UriOf(key), ": MalformedXML: no parts"));
  std::string data;
  int prev = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const auto& p = parts[i];
    if (p.part_number <= prev) return absl::InvalidArgumentError(absl::StrCat(UriOf(key), ": InvalidPartOrder"));
    prev = p.part_number;
    auto pit = it->second.parts.find(p.part_number);
    if (pit == it->second.parts.end() ||
        absl::StrCat("\"", Sha256Hex(pit->second).substr(0, 32), "\"") != p.etag)
      return absl::InvalidArgumentError(absl::StrCat(UriOf(key), ": InvalidPart ", p.part_number));
    if (i + 1 < parts.size() && pit->second.size() < min_part_size_)
      return absl::InvalidArgumentError(absl::StrCat(UriOf(key), ": EntityTooSmall (part ", p.part_number, ")"));
    data += pit->second;
  }
  std::string etag = absl::StrCat(Sha256Hex(data).substr(0, 32), "-", parts.size());
  objects_[std::string(key)] = {std::move(data), std::move(etag)};
  uploads_.erase(it);
  return absl::OkStatus();
}

absl::Status MemoryObjectStore::AbortMultipartUpload(absl::string_view key, absl::string_view upload_id) {
  absl::MutexLock lock(&mu_);
  if (auto s = Enter("AbortMultipartUpload"); !s.ok()) return s;
  uploads_.erase(std::string(upload_id));
  return absl::OkStatus();
}

absl::StatusOr<ListResult> MemoryObjectStore::ListPage(absl::string_view prefix, absl::string_view token,
                                                       int max_keys) {
  absl::MutexLock lock(&mu_);
  if (auto s = Enter("ListPage"); !s.ok()) return s;
  ListResult out;
  auto it = token.empty() ? objects_.lower_bound(std::string(prefix)) : objects_.upper_bound(std::string(token));
  int limit = std::clamp(max_keys, 1, 1000);
  for (; it != objects_.end() && absl::StartsWith(it->first, prefix); ++it) {
    if (static_cast<int>(out.objects.size()) == limit) {
      out.next_token = out.objects.back().key;
      break;
    }
    out.objects.push_back({it->first, it->second.data.size(), it->second.etag});
  }
  return out;
}

absl::Status MemoryObjectStore::Delete(absl::string_view key) {
  absl::MutexLock lock(&mu_);
  if (auto s = Enter("Delete"); !s.ok()) return s;
  objects_.erase(std::string(key));
  return absl::OkStatus();
}

absl::Status MemoryObjectStore::Copy(absl::string_view src, absl::string_view dst) {
  absl::MutexLock lock(&mu_);
  if (auto s = Enter("Copy"); !s.ok()) return s;
  auto it = objects_.find(std::string(src));
  if (it == objects_.end()) return absl::NotFoundError(absl::StrCat(UriOf(src), ": no such object"));
  Object copy = it->second;
  objects_[std::string(dst)] = std::move(copy);
  return absl::OkStatus();
}

}  // namespace llmc::storage
