#include "storage/job_storage.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "common/status_macros.h"
#include "storage/s3_object_store.h"
#include "storage/storage_uri.h"

namespace llmc::storage {

namespace fs = std::filesystem;

std::string DefaultCacheDir() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && *xdg == '/') return JoinKey(xdg, "llmc");
  const char* home = std::getenv("HOME");
  if (home && *home) return JoinKey(JoinKey(home, ".cache"), "llmc");
  return absl::StrCat("/tmp/llmc-cache-", getuid());
}

absl::StatusOr<std::string> ModelCacheDir(absl::string_view model_uri, const ModelInputOptions& options) {
  LLMC_ASSIGN_OR_RETURN(StorageUri uri, ParseStorageUri(model_uri));
  if (!uri.is_s3()) return absl::InvalidArgumentError(absl::StrCat(model_uri, ": not an s3:// location"));
  LLMC_ASSIGN_OR_RETURN(auto store, S3ObjectStore::Create(uri, options.store.s3));
  std::string host(store->endpoint().substr(store->endpoint().find("://") + 3));
  host = absl::StrReplaceAll(host, {{":", "_"}, {"/", "_"}, {"[", ""}, {"]", ""}});
  std::string cache = options.cache_dir.empty() ? DefaultCacheDir() : options.cache_dir;
  std::string dir = JoinKey(JoinKey(JoinKey(cache, "models"), host), uri.bucket);
  return uri.prefix.empty() ? dir : JoinKey(dir, uri.prefix);
}

absl::StatusOr<std::string> ResolveModelInput(absl::string_view model, const ModelInputOptions& options) {
  LLMC_ASSIGN_OR_RETURN(StorageUri uri, ParseStorageUri(model));
  if (uri.is_file()) {
    std::error_code ec;
    if (!fs::is_directory(uri.path, ec))
      return absl::NotFoundError(absl::StrCat(model, ": no such model directory"));
    // A plain path stays as given (messages then show what the user typed).
    return absl::StartsWithIgnoreCase(model, "file:") ? uri.path : std::string(model);
  }
  LLMC_ASSIGN_OR_RETURN(std::string dir, ModelCacheDir(model, options));
  LLMC_ASSIGN_OR_RETURN(auto store, S3ObjectStore::Create(uri, options.store.s3));
  DownloadOptions d = options.download;
  d.skip_unchanged = true;
  auto r = DownloadPrefixFromStore(*store, "", dir, d);
  if (!r.ok()) return r.status();
  return dir;
}

absl::StatusOr<std::unique_ptr<OutputTarget>> OutputTarget::Open(absl::string_view output,
                                                                 const OutputTargetOptions& options) {
  LLMC_ASSIGN_OR_RETURN(StorageUri uri, ParseStorageUri(output));
  std::unique_ptr<OutputTarget> t(new OutputTarget());
  t->output_ = std::string(output);
  if (uri.is_file()) {
    // The engine writes OUTPUT itself; a plain path stays as given.
    t->local_dir_ = absl::StartsWithIgnoreCase(output, "file:") ? uri.path : std::string(output);
    return t;
  }
  std::string job_id = options.job_id;
  if (job_id.empty()) {
    std::mt19937_64 rng(std::random_device{}());
    job_id = absl::StrFormat("%d-%012x", getpid(), rng() & 0xffffffffffffull);
  }
  PublisherOptions po;
  po.job_id = job_id;
  po.overwrite = options.overwrite;
  po.transfer = options.transfer;
  po.max_files_in_flight = options.max_files_in_flight;
  LLMC_ASSIGN_OR_RETURN(t->publisher_, OutputPublisher::Open(output, po, options.store));
  std::string scratch = options.scratch_dir.empty() ? JoinKey(DefaultCacheDir(), "work") : options.scratch_dir;
  t->scratch_root_ = JoinKey(scratch, job_id);
  std::error_code ec;
  fs::remove_all(t->scratch_root_, ec);
  fs::create_directories(t->scratch_root_, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat("cannot create the scratch directory ", t->scratch_root_, ": ",
                                                    ec.message(), "; set XDG_CACHE_HOME to a writable place"));
  t->local_dir_ = JoinKey(t->scratch_root_, "output");
  return t;
}

OutputTarget::~OutputTarget() {
  if (publisher_ && !done_) (void)Abort();
  publisher_.reset();
  if (!scratch_root_.empty()) {
    std::error_code ec;
    fs::remove_all(scratch_root_, ec);
  }
}

absl::Status OutputTarget::FileComplete(const std::string& name, const std::string& path) {
  if (!publisher_) return absl::OkStatus();
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return absl::NotFoundError(absl::StrCat(path, ": finished output file not found"));
  LLMC_RETURN_IF_ERROR(publisher_->AddFile(name, path));
  absl::MutexLock lock(&mu_);
  handed_[name] = {static_cast<uint64_t>(st.st_size),
                   static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
  return absl::OkStatus();
}

absl::Status OutputTarget::Commit() {
  if (!publisher_) return absl::OkStatus();
  if (done_) return absl::FailedPreconditionError(absl::StrCat(output_, ": already committed or aborted"));
  std::error_code ec;
  if (!fs::is_directory(local_dir_, ec))
    return absl::FailedPreconditionError(absl::StrCat(local_dir_, ": the job wrote no output directory"));
  for (fs::recursive_directory_iterator it(local_dir_, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file()) continue;
    std::string name = it->path().lexically_relative(local_dir_).generic_string();
    struct stat st;
    if (::stat(it->path().c_str(), &st) != 0) continue;
    std::pair<uint64_t, int64_t> now{static_cast<uint64_t>(st.st_size),
                                     static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
    {
      absl::MutexLock lock(&mu_);
      auto h = handed_.find(name);
      if (h != handed_.end() && h->second == now) continue;
    }
    LLMC_RETURN_IF_ERROR(FileComplete(name, it->path().string()));
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", local_dir_, ": ", ec.message()));
  done_ = true;
  auto m = publisher_->Commit();
  if (!m.ok()) return m.status();
  manifest_ = *m;
  fs::remove_all(scratch_root_, ec);
  return absl::OkStatus();
}

absl::Status OutputTarget::Abort() {
  if (!publisher_) return absl::OkStatus();
  done_ = true;
  return publisher_->Abort();
}

absl::StatusOr<std::string> ResolveFileInput(absl::string_view uri, const ModelInputOptions& options) {
  LLMC_ASSIGN_OR_RETURN(StorageUri u, ParseStorageUri(uri));
  if (u.is_file()) {
    if (!std::filesystem::exists(u.path)) return absl::NotFoundError(absl::StrCat(uri, ": no such file"));
    return u.path;
  }
  const std::string s(uri);
  const auto slash = s.rfind('/');
  if (slash == std::string::npos || slash < 5 || slash + 1 == s.size())
    return absl::InvalidArgumentError(absl::StrCat(uri, ": name an object (s3://bucket/key), not a bucket or prefix"));
  const std::string parent = s.substr(0, slash), name = s.substr(slash + 1);
  LLMC_ASSIGN_OR_RETURN(auto store, OpenObjectStore(parent, options.store));
  LLMC_ASSIGN_OR_RETURN(ObjectInfo info, store->Stat(name));
  LLMC_ASSIGN_OR_RETURN(std::string dir, ModelCacheDir(parent, options));
  const std::string path = dir + "/" + name;
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && std::filesystem::file_size(path, ec) == info.size) return path;
  std::filesystem::create_directories(dir, ec);
  LLMC_ASSIGN_OR_RETURN(std::string bytes, store->Get(name, 0, info.size));
  const std::string tmp = path + ".part";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp, " (downloading ", uri, ")"));
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot move ", tmp, " into place: ", ec.message()));
  return path;
}

}  // namespace llmc::storage
