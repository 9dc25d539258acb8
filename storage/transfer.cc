#include "storage/transfer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "common/parallel.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"
#include "common/util.h"
#include "storage/crypto.h"
#include "storage/file_object_store.h"
#include "storage/storage_stats.h"
#include "storage/storage_uri.h"

namespace llmc::storage {

namespace fs = std::filesystem;

namespace {

bool Cancelled(const TransferOptions& o) { return o.cancel && o.cancel->load(); }

absl::Status PreadExact(int fd, uint64_t offset, char* dst, size_t size, absl::string_view what) {
  size_t got = 0;
  while (got < size) {
    ssize_t n = ::pread(fd, dst + got, std::min<size_t>(size - got, 1u << 30), static_cast<off_t>(offset + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, absl::StrCat("cannot read ", what));
    }
    if (n == 0)
      return absl::DataLossError(absl::StrCat(what, ": file shrank while it was being uploaded (", offset + got,
                                              " bytes readable, more expected)"));
    got += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status PwriteAll(int fd, uint64_t offset, const char* src, size_t size, absl::string_view what) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pwrite(fd, src + done, std::min<size_t>(size - done, 1u << 30), static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, absl::StrCat("cannot write ", what));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

uint64_t PartSizeFor(uint64_t size, uint64_t wanted) {
  uint64_t part = std::max<uint64_t>(wanted, 5ull << 20);
  const uint64_t mib = 1ull << 20;
  uint64_t min_for_count = (size + 9999) / 10000;
  min_for_count = (min_for_count + mib - 1) / mib * mib;
  return std::max(part, min_for_count);
}

// Copies the file into a local destination (temporary file, fsync, rename), hashing it.
absl::StatusOr<UploadResult> CopyLocal(int fd, uint64_t size, absl::string_view what, const std::string& dest,
                                       const std::string& dest_uri, const TransferOptions& opt) {
  std::error_code ec;
  fs::create_directories(fs::path(dest).parent_path(), ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create the directory of ", dest, ": ", ec.message()));
  std::string tmp = TempPathBeside(dest);
  int out = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) return ErrnoToStatus(errno, absl::StrCat("cannot create ", tmp));
  Sha256 hash;
  std::string buf(std::min<uint64_t>(std::max<uint64_t>(size, 1), 8u << 20), '\0');
  absl::Status s;
  for (uint64_t off = 0; off < size && s.ok();) {
    if (Cancelled(opt)) {
      s = absl::CancelledError(absl::StrCat("upload of ", what, " cancelled"));
      break;
    }
    size_t n = std::min<uint64_t>(buf.size(), size - off);
    s = PreadExact(fd, off, buf.data(), n, what);
    if (s.ok()) s = PwriteAll(out, off, buf.data(), n, tmp);
    if (s.ok()) {
      hash.Update(buf.data(), n);
      if (opt.on_bytes) opt.on_bytes(n);
    }
    off += n;
  }
  if (s.ok() && ::fsync(out) != 0) s = ErrnoToStatus(errno, absl::StrCat("cannot sync ", tmp));
  if (::close(out) != 0 && s.ok()) s = ErrnoToStatus(errno, absl::StrCat("cannot close ", tmp));
  if (s.ok() && ::rename(tmp.c_str(), dest.c_str()) != 0) s = ErrnoToStatus(errno, absl::StrCat("cannot rename to ", dest));
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  UploadResult r;
  r.uri = dest_uri;
  r.size = size;
  r.sha256 = hash.FinishHex();
  return r;
}

}  // namespace

absl::StatusOr<UploadResult> UploadFdToStore(int fd, absl::string_view what, ObjectStore& store, absl::string_view key,
                                             const TransferOptions& opt) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoToStatus(errno, absl::StrCat("cannot stat ", what));
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat(what, ": not a regular file"));
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const std::string uri = store.UriOf(key);
  if (Cancelled(opt)) return absl::CancelledError(absl::StrCat("upload of ", what, " cancelled"));

  if (auto local = store.LocalPath(key)) return CopyLocal(fd, size, what, *local, uri, opt);

  UploadResult result;
  result.uri = uri;
  result.size = size;
  if (size <= std::max<uint64_t>(opt.multipart_threshold, 1)) {
    std::string data(size, '\0');
    LLMC_RETURN_IF_ERROR(PreadExact(fd, 0, data.data(), size, what));
    result.sha256 = Sha256Hex(data);
    LLMC_RETURN_IF_ERROR(store.Put(key, data));
    ProcessStorageStats().bytes_uploaded.fetch_add(size, std::memory_order_relaxed);
    if (opt.on_bytes) opt.on_bytes(size);
  } else {
    const uint64_t part = PartSizeFor(size, opt.part_size);
    const int n = static_cast<int>((size + part - 1) / part);
    LLMC_ASSIGN_OR_RETURN(std::string upload_id, store.CreateMultipartUpload(key));
    const int par = std::max(1, std::min(opt.parallelism, n));
    // What the reading thread and the part uploads share.
    struct Shared {
      absl::Mutex mu;
      absl::CondVar cv;  // a buffer came back
      std::vector<CompletedPart> parts ABSL_GUARDED_BY(mu);
      std::vector<std::unique_ptr<std::string>> free_buffers ABSL_GUARDED_BY(mu);
      absl::Status error ABSL_GUARDED_BY(mu);  // the first one
    } sh;
    {
      absl::MutexLock lock(&sh.mu);
      sh.parts.resize(n);
      for (int i = 0; i < par; ++i) sh.free_buffers.push_back(std::make_unique<std::string>());
    }
    Sha256 hash;
    {
      ThreadPool pool(par);
      for (int i = 0; i < n; ++i) {
        std::unique_ptr<std::string> buf;
        {
          absl::MutexLock lock(&sh.mu);
          while (sh.free_buffers.empty() && sh.error.ok()) sh.cv.Wait(&sh.mu);
          if (!sh.error.ok()) break;
          buf = std::move(sh.free_buffers.back());
          sh.free_buffers.pop_back();
        }
        if (Cancelled(opt)) {
          absl::MutexLock lock(&sh.mu);
          if (sh.error.ok())
            sh.error = absl::CancelledError(absl::StrCat("upload of ", what, " to ", uri, " cancelled"));
          break;
        }
        uint64_t off = static_cast<uint64_t>(i) * part;
        size_t len = std::min<uint64_t>(part, size - off);
        buf->resize(len);
        absl::Status rs = PreadExact(fd, off, buf->data(), len, what);
        if (!rs.ok()) {
          absl::MutexLock lock(&sh.mu);
          if (sh.error.ok()) sh.error = rs;
          break;
        }
        hash.Update(buf->data(), len);
        std::string* raw = buf.release();
        pool.Submit([&, raw, i] {
          std::unique_ptr<std::string> b(raw);
          absl::StatusOr<std::string> etag = absl::CancelledError("skipped");
          bool skip;
          {
            absl::MutexLock lock(&sh.mu);
            skip = !sh.error.ok();
          }
          if (!skip) etag = store.UploadPart(key, upload_id, i + 1, *b);
          if (etag.ok()) ProcessStorageStats().bytes_uploaded.fetch_add(b->size(), std::memory_order_relaxed);
          if (etag.ok() && opt.on_bytes) opt.on_bytes(b->size());
          absl::MutexLock lock(&sh.mu);
          if (etag.ok()) sh.parts[i] = {i + 1, *etag};
          else if (!skip && sh.error.ok()) sh.error = etag.status();
          sh.free_buffers.push_back(std::move(b));
          sh.cv.SignalAll();
        });
      }
      pool.Wait();
    }
    // The pool has joined: the rest runs on this thread alone.
    absl::Status error;
    std::vector<CompletedPart> parts;
    {
      absl::MutexLock lock(&sh.mu);
      error = sh.error;
      parts = std::move(sh.parts);
    }
    if (error.ok() && Cancelled(opt)) error = absl::CancelledError(absl::StrCat("upload of ", what, " to ", uri, " cancelled"));
    if (error.ok()) error = store.CompleteMultipartUpload(key, upload_id, parts);
    if (!error.ok()) {
      (void)store.AbortMultipartUpload(key, upload_id);
      return error;
    }
    result.sha256 = hash.FinishHex();
    result.parts = n;
  }
  LLMC_ASSIGN_OR_RETURN(ObjectInfo info, store.Stat(key));
  if (info.size != size)
    return absl::DataLossError(absl::StrCat(uri, ": stored object has ", info.size, " bytes, uploaded ", size,
                                            "; upload it again"));
  result.etag = info.etag;
  return result;
}

absl::StatusOr<UploadResult> UploadFile(absl::string_view local_path, absl::string_view uri,
                                        const TransferOptions& options, const StoreOptions& store_options) {
  auto parsed = ParseStorageUri(uri);
  if (!parsed.ok()) return parsed.status();
  std::string key;
  StorageUri parent = *parsed;
  if (parsed->is_s3()) {
    if (parsed->prefix.empty())
      return absl::InvalidArgumentError(absl::StrCat(uri, ": name the object (s3://bucket/key), not only the bucket"));
    size_t slash = parsed->prefix.rfind('/');
    key = slash == std::string::npos ? parsed->prefix : parsed->prefix.substr(slash + 1);
    parent.prefix = slash == std::string::npos ? "" : parsed->prefix.substr(0, slash);
  } else {
    fs::path p(parsed->path);
    key = p.filename().string();
    parent.path = p.parent_path().string();
  }
  LLMC_ASSIGN_OR_RETURN(auto store, OpenObjectStore(parent.ToString(), store_options));
  std::string path(local_path);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  auto r = UploadFdToStore(fd, path, *store, key, options);
  ::close(fd);
  return r;
}

namespace {

struct FileJob {
  ObjectInfo object;   // key relative to the download prefix
  std::string store_key;
  std::string final_path;
  std::string tmp_path;
  int fd = -1;
  std::atomic<int> remaining{0};
  bool done = false;
};

nlohmann::json LoadRecord(const std::string& dir) {
  std::ifstream in(JoinKey(dir, kDownloadRecord), std::ios::binary);
  if (!in) return nlohmann::json::object();
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : nlohmann::json::object();
}

}  // namespace

absl::StatusOr<DownloadResult> DownloadPrefixFromStore(ObjectStore& store, absl::string_view prefix,
                                                       absl::string_view local_dir, const DownloadOptions& options) {
  const TransferOptions& opt = options.transfer;
  std::string list_prefix = prefix.empty() ? "" : absl::StrCat(absl::StripSuffix(prefix, "/"), "/");
  const std::string source = list_prefix.empty() ? store.uri() : store.UriOf(absl::StripSuffix(prefix, "/"));
  LLMC_ASSIGN_OR_RETURN(std::vector<ObjectInfo> listed, store.List(list_prefix));
  std::string dir(local_dir);
  std::vector<std::unique_ptr<FileJob>> jobs;
  for (auto& o : listed) {
    std::string rel = o.key.substr(list_prefix.size());
    if (rel.empty() || rel.back() == '/') continue;  // directory markers
    bool excluded = false;
    for (const auto& e : options.exclude_prefixes)
      if (!e.empty() && absl::StartsWith(rel, e)) excluded = true;
    if (excluded) continue;
    absl::Status valid = ValidateRelativeKey(rel);
    if (!valid.ok())
      return absl::InvalidArgumentError(absl::StrCat(store.UriOf(o.key), ": cannot be downloaded to a file: ", valid.message()));
    if (rel == kDownloadRecord) continue;
    auto job = std::make_unique<FileJob>();
    job->store_key = o.key;
    job->object = o;
    job->object.key = rel;
    job->final_path = JoinKey(dir, rel);
    jobs.push_back(std::move(job));
  }
  if (jobs.empty())
    return absl::NotFoundError(absl::StrCat(source, ": no objects under this prefix; check the URI (it names a "
                                                    "\"directory\": s3://bucket/path/to/model)"));
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));

  DownloadResult result;
  nlohmann::json record = LoadRecord(dir);
  if (!record.contains("source") || record["source"] != source) record = {{"source", source}, {"objects", nlohmann::json::object()}};
  if (!record["objects"].is_object()) record["objects"] = nlohmann::json::object();

  // Skip what is already there; create the rest as temporary files of the right size.
  struct Chunk {
    FileJob* job;
    uint64_t offset;
    uint64_t length;
  };
  std::vector<Chunk> chunks;
  const uint64_t chunk = std::max<uint64_t>(opt.part_size, 1u << 20);
  absl::Status error;
  auto cleanup = [&] {
    for (auto& j : jobs) {
      if (j->fd >= 0) ::close(j->fd);
      j->fd = -1;
      if (!j->done && !j->tmp_path.empty()) ::unlink(j->tmp_path.c_str());
    }
  };
  for (auto& j : jobs) {
    if (options.skip_unchanged) {
      struct stat st;
      const auto& rec = record["objects"];
      if (::stat(j->final_path.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) == j->object.size &&
          rec.contains(j->object.key) && rec[j->object.key].value("etag", "") == j->object.etag &&
          rec[j->object.key].value("size", uint64_t{0}) == j->object.size) {
        j->done = true;
        ++result.skipped;
        continue;
      }
    }
    fs::create_directories(fs::path(j->final_path).parent_path(), ec);
    if (ec) {
      cleanup();
      return absl::PermissionDeniedError(absl::StrCat("cannot create the directory of ", j->final_path, ": ", ec.message()));
    }
    j->tmp_path = TempPathBeside(j->final_path);
    j->fd = ::open(j->tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (j->fd < 0) {
      absl::Status s = ErrnoToStatus(errno, absl::StrCat("cannot create ", j->tmp_path));
      cleanup();
      return s;
    }
    uint64_t n = (j->object.size + chunk - 1) / chunk;
    j->remaining = static_cast<int>(n);
    for (uint64_t c = 0; c < n; ++c)
      chunks.push_back({j.get(), c * chunk, std::min(chunk, j->object.size - c * chunk)});
  }

  // finish_file runs once per file, on whichever thread wrote its last chunk: `j->done` has one writer and is
  // read after ParallelFor joined; the count of finished files is shared.
  std::atomic<int> files_done{0};
  auto finish_file = [&](FileJob* j) -> absl::Status {
    if (::fdatasync(j->fd) != 0) return ErrnoToStatus(errno, absl::StrCat("cannot sync ", j->tmp_path));
    struct stat st;
    if (::fstat(j->fd, &st) != 0) return ErrnoToStatus(errno, absl::StrCat("cannot stat ", j->tmp_path));
    if (static_cast<uint64_t>(st.st_size) != j->object.size)
      return absl::DataLossError(absl::StrCat(store.UriOf(j->store_key), ": downloaded ", st.st_size, " bytes, listed size ",
                                              j->object.size));
    int fd = j->fd;
    j->fd = -1;
    if (::close(fd) != 0) return ErrnoToStatus(errno, absl::StrCat("cannot close ", j->tmp_path));
    if (::rename(j->tmp_path.c_str(), j->final_path.c_str()) != 0)
      return ErrnoToStatus(errno, absl::StrCat("cannot rename ", j->tmp_path, " to ", j->final_path));
    j->done = true;
    ++files_done;
    return absl::OkStatus();
  };
  // Empty objects have no chunks.
  for (auto& j : jobs) {
    if (j->done || j->object.size != 0) continue;
    error = finish_file(j.get());
    if (!error.ok()) break;
  }

  std::atomic<uint64_t> bytes{0};
  if (error.ok() && !chunks.empty()) {
    const int par = std::max(1, std::min<int>(opt.parallelism, static_cast<int>(chunks.size())));
    error = ParallelFor(static_cast<int64_t>(chunks.size()), par, [&](int64_t i) -> absl::Status {
      if (Cancelled(opt)) return absl::CancelledError(absl::StrCat("download of ", source, " cancelled"));
      const Chunk& c = chunks[i];
      std::string buf(c.length, '\0');
      LLMC_RETURN_IF_ERROR(store.Read(c.job->store_key, c.offset,
                                      absl::MakeSpan(reinterpret_cast<uint8_t*>(buf.data()), buf.size()),
                                      c.job->object.etag));
      LLMC_RETURN_IF_ERROR(PwriteAll(c.job->fd, c.offset, buf.data(), buf.size(), c.job->tmp_path));
      bytes += c.length;
      if (!store.LocalPath(c.job->store_key)) ProcessStorageStats().bytes_downloaded.fetch_add(c.length, std::memory_order_relaxed);
      if (opt.on_bytes) opt.on_bytes(c.length);
      if (--c.job->remaining == 0) return finish_file(c.job);
      return absl::OkStatus();
    });
  }
  cleanup();
  if (!error.ok()) return error;
  result.files = files_done.load();
  result.bytes = bytes.load();
  // Remember what is here, for skip_unchanged.
  nlohmann::json objects = nlohmann::json::object();
  for (const auto& j : jobs) objects[j->object.key] = {{"size", j->object.size}, {"etag", j->object.etag}};
  record["objects"] = objects;
  (void)WriteFileAtomically(JoinKey(dir, kDownloadRecord), record.dump(1) + "\n");
  return result;
}

absl::StatusOr<DownloadResult> DownloadPrefix(absl::string_view uri_prefix, absl::string_view local_dir,
                                              const DownloadOptions& options, const StoreOptions& store_options) {
  LLMC_ASSIGN_OR_RETURN(auto store, OpenObjectStore(uri_prefix, store_options));
  return DownloadPrefixFromStore(*store, "", local_dir, options);
}

}  // namespace llmc::storage
