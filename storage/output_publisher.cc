#include "storage/output_publisher.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <thread>

#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/parallel.h"
#include "common/status_macros.h"
#include "common/util.h"
#include "storage/crypto.h"
#include "storage/storage_uri.h"

namespace llmc::storage {

namespace {

bool IsStagingKey(absl::string_view key) { return absl::StartsWith(key, kStagingPrefix); }

}  // namespace

uint64_t OutputManifest::total_bytes() const {
  uint64_t t = 0;
  for (const auto& f : files) t += f.size;
  return t;
}

nlohmann::json OutputManifest::ToJson() const {
  nlohmann::json files_json = nlohmann::json::array();
  for (const auto& f : files) files_json.push_back({{"name", f.name}, {"size", f.size}, {"sha256", f.sha256}});
  return {{"format", format}, {"job_id", job_id}, {"created", created}, {"total_bytes", total_bytes()},
          {"files", files_json}};
}

absl::StatusOr<OutputManifest> OutputManifest::FromJson(absl::string_view text, absl::string_view source) {
  auto j = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not an llmc output manifest: ", why));
  };
  if (!j.is_object()) return bad("not a JSON object");
  if (!j.contains("format") || !j["format"].is_string()) return bad("no \"format\"");
  OutputManifest m;
  m.format = j["format"].get<std::string>();
  if (!absl::StartsWith(m.format, "llmc-output/"))
    return bad(absl::StrCat("format '", m.format, "'"));
  if (j.contains("job_id") && j["job_id"].is_string()) m.job_id = j["job_id"].get<std::string>();
  if (j.contains("created") && j["created"].is_string()) m.created = j["created"].get<std::string>();
  if (!j.contains("files") || !j["files"].is_array()) return bad("no \"files\" array");
  for (const auto& f : j["files"]) {
    if (!f.is_object() || !f.contains("name") || !f["name"].is_string() || !f.contains("size") ||
        !f["size"].is_number_unsigned() || !f.contains("sha256") || !f["sha256"].is_string())
      return bad("a file entry lacks name, size or sha256");
    m.files.push_back({f["name"].get<std::string>(), f["size"].get<uint64_t>(), f["sha256"].get<std::string>()});
  }
  return m;
}

OutputPublisher::OutputPublisher(std::unique_ptr<ObjectStore> store, const PublisherOptions& options)
    : store_(std::move(store)),
      options_(options),
      staging_(absl::StrCat(kStagingPrefix, options.job_id, "/")),
      pool_(std::max(1, options.max_files_in_flight)) {
  transfer_ = options.transfer;
  transfer_.cancel = &cancel_;
}

absl::StatusOr<std::unique_ptr<OutputPublisher>> OutputPublisher::Open(absl::string_view output_uri,
                                                                       const PublisherOptions& options,
                                                                       const StoreOptions& store_options) {
  LLMC_ASSIGN_OR_RETURN(StorageUri parsed, ParseStorageUri(output_uri));
  std::string created_dir;
  if (parsed.is_file()) {
    std::error_code ec;
    if (std::filesystem::exists(parsed.path, ec) && !std::filesystem::is_directory(parsed.path, ec))
      return absl::FailedPreconditionError(absl::StrCat(output_uri, ": exists and is not a directory; remove it or choose another output"));
    if (!std::filesystem::exists(parsed.path, ec)) created_dir = parsed.path;
  }
  LLMC_ASSIGN_OR_RETURN(auto store, OpenObjectStore(output_uri, store_options));
  LLMC_ASSIGN_OR_RETURN(auto pub, OpenStore(std::move(store), options));
  pub->remove_root_if_empty_ = created_dir;
  return pub;
}

absl::StatusOr<std::unique_ptr<OutputPublisher>> OutputPublisher::OpenStore(std::unique_ptr<ObjectStore> store,
                                                                            const PublisherOptions& options) {
  if (options.job_id.empty())
    return absl::InvalidArgumentError("OutputPublisher: job_id is empty; give every job an id");
  for (char c : options.job_id)
    if (!absl::ascii_isalnum(c) && c != '.' && c != '_' && c != '-')
      return absl::InvalidArgumentError(absl::StrCat("job id '", options.job_id,
                                                     "': use letters, digits, '.', '_' and '-' only"));
  if (!options.overwrite) {
    std::string token;
    do {
      LLMC_ASSIGN_OR_RETURN(ListResult page, store->ListPage("", token, 1000));
      for (const auto& o : page.objects)
        if (!IsStagingKey(o.key))
          return absl::AlreadyExistsError(absl::StrCat(store->uri(), ": output already exists (it holds ", o.key,
                                                       "); pass --overwrite to replace it or choose another output"));
      token = page.next_token;
    } while (!token.empty());
  }
  return std::unique_ptr<OutputPublisher>(new OutputPublisher(std::move(store), options));
}

OutputPublisher::~OutputPublisher() {
  absl::MutexLock lock(&mu_);
  if (state_ == State::kOpen) {
    absl::Status s = AbortLocked();
    if (!s.ok()) spdlog::warn("abandoning output {}: {}", store_->uri(), std::string(s.message()));
  }
  // Make sure no task is left touching this object.
  while (in_flight_total_ != 0) cv_.Wait(&mu_);
}

absl::Status OutputPublisher::CheckName(absl::string_view name) const {
  absl::Status s = ValidateRelativeKey(name);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(store_->uri(), ": ", s.message()));
  if (name == kManifestName)
    return absl::InvalidArgumentError(absl::StrCat(store_->uri(), ": ", kManifestName, " is written by Commit itself"));
  if (IsStagingKey(name))
    return absl::InvalidArgumentError(absl::StrCat(store_->uri(), ": '", name, "' lies under a staging prefix"));
  return absl::OkStatus();
}

absl::StatusOr<int> OutputPublisher::Begin(const std::string& name) {
  absl::MutexLock lock(&mu_);
  while (in_flight_[name] != 0 && state_ == State::kOpen && error_.ok()) cv_.Wait(&mu_);
  if (state_ != State::kOpen)
    return absl::FailedPreconditionError(absl::StrCat(store_->uri(), ": cannot add ", name, ": the output was already ",
                                                      state_ == State::kCommitted ? "committed" : "aborted"));
  if (!error_.ok()) return error_;
  ++in_flight_[name];
  ++in_flight_total_;
  Entry& e = entries_[name];
  e.done = false;
  return ++e.generation;
}

void OutputPublisher::Finish(const std::string& name, int generation, absl::StatusOr<UploadResult> result) {
  absl::MutexLock lock(&mu_);
  Entry& e = entries_[name];
  if (result.ok()) {
    if (e.generation == generation) {
      e.size = result->size;
      e.sha256 = result->sha256;
      e.done = true;
    }
  } else if (error_.ok() && !cancel_.load()) {
    error_ = result.status();
  }
  --in_flight_[name];
  --in_flight_total_;
  cv_.SignalAll();
}

absl::Status OutputPublisher::AddFile(absl::string_view name, absl::string_view local_path) {
  LLMC_RETURN_IF_ERROR(CheckName(name));
  std::string path(local_path);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("cannot open ", path, " to publish it"));
  std::string n(name);
  auto gen = Begin(n);
  if (!gen.ok()) {
    ::close(fd);
    return gen.status();
  }
  pool_.Submit([this, fd, path, n, g = *gen] {
    auto r = UploadFdToStore(fd, path, *store_, absl::StrCat(staging_, n), transfer_);
    ::close(fd);
    Finish(n, g, std::move(r));
  });
  return absl::OkStatus();
}

absl::Status OutputPublisher::AddBytes(absl::string_view name, std::string data) {
  LLMC_RETURN_IF_ERROR(CheckName(name));
  std::string n(name);
  LLMC_ASSIGN_OR_RETURN(int gen, Begin(n));
  pool_.Submit([this, n, gen, data = std::move(data)] {
    absl::StatusOr<UploadResult> r;
    absl::Status s = store_->Put(absl::StrCat(staging_, n), data);
    if (s.ok()) r = UploadResult{store_->UriOf(absl::StrCat(staging_, n)), data.size(), Sha256Hex(data), "", 0};
    else r = s;
    Finish(n, gen, std::move(r));
  });
  return absl::OkStatus();
}

absl::Status OutputPublisher::WaitLocked() {
  while (in_flight_total_ > 0) {
    cv_.WaitWithTimeout(&mu_, absl::Milliseconds(100));
    if (options_.transfer.cancel && options_.transfer.cancel->load()) cancel_ = true;
  }
  if (!error_.ok()) return error_;
  if (cancel_.load()) return absl::CancelledError(absl::StrCat(store_->uri(), ": publishing cancelled"));
  return absl::OkStatus();
}

absl::Status OutputPublisher::Wait() {
  absl::MutexLock lock(&mu_);
  return WaitLocked();
}

std::vector<std::string> OutputPublisher::published() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const auto& [name, e] : entries_)
    if (e.done) out.push_back(name);
  return out;
}

absl::Status OutputPublisher::AbortLocked() {
  if (state_ == State::kAborted) return absl::OkStatus();
  if (state_ == State::kCommitted)
    return absl::FailedPreconditionError(absl::StrCat(store_->uri(), ": already committed; nothing to abort"));
  state_ = State::kAborted;
  cancel_ = true;
  cv_.SignalAll();
  while (in_flight_total_ != 0) cv_.Wait(&mu_);
  // Uploads have stopped (their multipart uploads aborted); remove what they left.
  auto deleted = store_->DeletePrefix(staging_);
  if (!remove_root_if_empty_.empty()) {
    std::error_code ec;
    if (std::filesystem::is_empty(remove_root_if_empty_, ec)) std::filesystem::remove(remove_root_if_empty_, ec);
  }
  if (!deleted.ok())
    return absl::Status(deleted.status().code(),
                        absl::StrCat("cannot delete the staging objects ", staging_uri(), ": ", deleted.status().message()));
  return absl::OkStatus();
}

absl::Status OutputPublisher::Abort() {
  absl::MutexLock lock(&mu_);
  return AbortLocked();
}

absl::StatusOr<OutputManifest> OutputPublisher::Commit() {
  absl::MutexLock lock(&mu_);
  if (state_ != State::kOpen)
    return absl::FailedPreconditionError(absl::StrCat(store_->uri(), ": cannot commit: already ",
                                                      state_ == State::kCommitted ? "committed" : "aborted"));
  absl::Status s = WaitLocked();
  if (s.ok() && entries_.empty()) s = absl::FailedPreconditionError(absl::StrCat(store_->uri(), ": nothing to commit"));
  if (!s.ok()) {
    absl::Status a = AbortLocked();
    if (!a.ok()) spdlog::warn("{}", std::string(a.message()));
    return s;
  }
  OutputManifest manifest;
  manifest.job_id = options_.job_id;
  manifest.created = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
  for (const auto& [name, e] : entries_) manifest.files.push_back({name, e.size, e.sha256});
  std::set<std::string> names;
  for (const auto& f : manifest.files) names.insert(f.name);

  // The rest talks to the store; nothing else may change the entries now (state is still open, but every
  // caller that could add is expected to have finished; AddFile after Commit started fails below).
  std::vector<std::string> copied(manifest.files.size());
  auto fail = [&](absl::Status err) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
    for (const auto& c : copied)
      if (!c.empty()) (void)store_->Delete(c);
    absl::Status a = AbortLocked();
    if (!a.ok()) spdlog::warn("{}", std::string(a.message()));
    return err;
  };
  std::vector<std::string> stale;
  if (options_.overwrite) {
    // Readers must stop seeing the old output as complete before any of its files change.
    if (absl::Status d = store_->Delete(kManifestName); !d.ok()) return fail(d);
    auto existing = store_->List("");
    if (!existing.ok()) return fail(existing.status());
    for (const auto& o : *existing)
      if (!IsStagingKey(o.key) && o.key != kManifestName && !names.count(o.key)) stale.push_back(o.key);
  }
  // Each call writes only its own element of `copied`; ParallelFor has joined its threads when it returns.
  s = ParallelFor(static_cast<int>(manifest.files.size()), options_.commit_parallelism, [&](int i) -> absl::Status {
    const std::string& name = manifest.files[i].name;
    LLMC_RETURN_IF_ERROR(store_->Copy(absl::StrCat(staging_, name), name));
    copied[i] = name;
    return absl::OkStatus();
  });
  if (!s.ok()) return fail(s);
  s = ParallelFor(static_cast<int>(stale.size()), options_.commit_parallelism,
                  [&](int i) { return store_->Delete(stale[i]); });
  if (!s.ok()) return fail(s);
  s = store_->Put(kManifestName, manifest.ToJson().dump(2) + "\n");
  if (!s.ok()) return fail(s);
  state_ = State::kCommitted;
  auto deleted = store_->DeletePrefix(staging_);
  if (!deleted.ok())
    spdlog::warn("output {} is complete, but its staging objects {} could not be deleted: {}", store_->uri(),
                 staging_uri(), std::string(deleted.status().message()));
  return manifest;
}

absl::StatusOr<OutputManifest> ReadOutputManifestFromStore(ObjectStore& store) {
  auto text = store.Get(kManifestName);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status()))
      return absl::NotFoundError(absl::StrCat(store.uri(), ": no ", kManifestName,
                                              ": the output is incomplete (its job is still running, failed or was "
                                              "cancelled) or is not an llmc output"));
    return text.status();
  }
  return OutputManifest::FromJson(*text, store.UriOf(kManifestName));
}

absl::StatusOr<OutputManifest> ReadOutputManifest(absl::string_view output_uri, const StoreOptions& store_options) {
  LLMC_ASSIGN_OR_RETURN(auto store, OpenObjectStore(output_uri, store_options));
  return ReadOutputManifestFromStore(*store);
}

absl::Status VerifyOutputSizes(ObjectStore& store, const OutputManifest& manifest) {
  LLMC_ASSIGN_OR_RETURN(std::vector<ObjectInfo> objects, store.List(""));
  std::map<std::string, uint64_t> sizes;
  for (const auto& o : objects) sizes[o.key] = o.size;
  for (const auto& f : manifest.files) {
    auto it = sizes.find(f.name);
    if (it == sizes.end())
      return absl::DataLossError(absl::StrCat(store.UriOf(f.name), ": listed in the manifest but missing"));
    if (it->second != f.size)
      return absl::DataLossError(absl::StrCat(store.UriOf(f.name), ": ", it->second, " bytes, the manifest says ", f.size));
  }
  return absl::OkStatus();
}

}  // namespace llmc::storage
