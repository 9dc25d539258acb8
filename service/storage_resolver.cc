#include "service/storage_resolver.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
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

}  // namespace

std::unique_ptr<StorageResolver> NewLocalStorageResolver() { return std::make_unique<LocalResolver>(); }

}  // namespace llmc::service
