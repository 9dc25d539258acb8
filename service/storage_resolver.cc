#include "service/storage_resolver.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "storage/compress_io.h"
#include "storage/object_store.h"
#include "storage/storage_uri.h"

namespace llmc::service {

namespace {

absl::StatusOr<std::string> LocalPath(absl::string_view uri) {
  if (storage::IsS3Uri(uri))
    return absl::UnimplementedError(absl::StrCat(uri, ": this worker reads and writes file:// locations only; s3:// "
                                                 "needs the object-storage resolver (storage/)"));
  LLMC_ASSIGN_OR_RETURN(storage::StorageUri u, storage::ParseStorageUri(uri));
  if (!u.is_file()) return absl::UnimplementedError(absl::StrCat(uri, ": unsupported location"));
  return u.path;
}

class LocalSink final : public OutputSink {
 public:
  explicit LocalSink(std::string dir) : dir_(std::move(dir)) {}
  const std::string& local_dir() const override { return dir_; }
  absl::Status Commit() override { return absl::OkStatus(); }

 private:
  std::string dir_;
};

class LocalResolver final : public StorageResolver {
 public:
  absl::StatusOr<std::string> ResolveInput(absl::string_view uri) override {
    LLMC_ASSIGN_OR_RETURN(std::string p, LocalPath(uri));
    if (!std::filesystem::exists(p)) return absl::NotFoundError(absl::StrCat(uri, ": not found on this worker"));
    return p;
  }
  absl::StatusOr<std::unique_ptr<OutputSink>> OpenOutput(absl::string_view uri, const std::string&) override {
    LLMC_ASSIGN_OR_RETURN(std::string p, LocalPath(uri));
    return std::unique_ptr<OutputSink>(new LocalSink(p));
  }
};

class ObjectSink final : public OutputSink {
 public:
  explicit ObjectSink(std::unique_ptr<storage::OutputTarget> t) : t_(std::move(t)) {}
  const std::string& local_dir() const override { return t_->local_dir(); }
  absl::Status Commit() override { return t_->Commit(); }
  absl::Status FileComplete(const std::string& name, const std::string& path) override {
    return t_->FileComplete(name, path);
  }
  bool remote() const override { return t_->remote(); }

 private:
  std::unique_ptr<storage::OutputTarget> t_;
};

class ObjectResolver final : public StorageResolver {
 public:
  absl::StatusOr<std::string> ResolveInput(absl::string_view uri) override {
    if (!storage::IsS3Uri(uri)) return local_.ResolveInput(uri);
    // An object (a dataset or text file) is downloaded as a file; anything else is a model prefix.
    if (auto f = storage::ResolveFileInput(uri); f.ok()) return f;
    return storage::ResolveModelInput(uri);
  }
  absl::StatusOr<std::unique_ptr<OutputSink>> OpenOutput(absl::string_view uri, const std::string& job_id) override {
    if (!storage::IsS3Uri(uri)) return local_.OpenOutput(uri, job_id);
    storage::OutputTargetOptions o;
    o.job_id = job_id;
    LLMC_ASSIGN_OR_RETURN(auto t, storage::OutputTarget::Open(uri, o));
    return std::unique_ptr<OutputSink>(new ObjectSink(std::move(t)));
  }

 private:
  LocalResolver local_;
};

}  // namespace

std::unique_ptr<StorageResolver> NewLocalStorageResolver() { return std::make_unique<LocalResolver>(); }
std::unique_ptr<StorageResolver> NewObjectStorageResolver() { return std::make_unique<ObjectResolver>(); }

}  // namespace llmc::service
