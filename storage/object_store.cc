#include "storage/object_store.h"

#include "absl/strings/str_cat.h"
#include "storage/file_object_store.h"
#include "storage/s3_object_store.h"
#include "storage/storage_uri.h"

namespace llmc::storage {

std::string ObjectStore::UriOf(absl::string_view key) const { return JoinKey(uri(), key); }

absl::StatusOr<std::vector<ObjectInfo>> ObjectStore::List(absl::string_view prefix, int page_size) {
  std::vector<ObjectInfo> out;
  std::string token;
  do {
    auto page = ListPage(prefix, token, page_size);
    if (!page.ok()) return page.status();
    if (!page->next_token.empty() && page->next_token == token)
      return absl::InternalError(absl::StrCat(uri(), ": listing '", prefix, "' does not advance (continuation token repeated)"));
    token = page->next_token;
    for (auto& o : page->objects) out.push_back(std::move(o));
  } while (!token.empty());
  return out;
}

absl::StatusOr<int64_t> ObjectStore::DeletePrefix(absl::string_view prefix) {
  auto objects = List(prefix);
  if (!objects.ok()) return objects.status();
  for (const auto& o : *objects) {
    absl::Status s = Delete(o.key);
    if (!s.ok()) return s;
  }
  return static_cast<int64_t>(objects->size());
}

absl::StatusOr<std::unique_ptr<ObjectStore>> OpenObjectStore(absl::string_view uri, const StoreOptions& options) {
  auto parsed = ParseStorageUri(uri);
  if (!parsed.ok()) return parsed.status();
  if (parsed->is_file()) return std::unique_ptr<ObjectStore>(std::make_unique<FileObjectStore>(parsed->path));
  auto s3 = S3ObjectStore::Create(*parsed, options.s3);
  if (!s3.ok()) return s3.status();
  return std::unique_ptr<ObjectStore>(std::move(*s3));
}

}  // namespace llmc::storage
