#include "storage/file_object_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "common/io_error.h"
#include "common/util.h"
#include "storage/storage_uri.h"

namespace llmc::storage {

namespace fs = std::filesystem;

namespace {

constexpr char kUploadsDir[] = ".llmc-uploads";
constexpr char kTmpMarker[] = ".llmc-tmp-";

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_;
};

std::string EtagOf(const struct stat& st) {
  return absl::StrFormat("%x-%x-%x", static_cast<uint64_t>(st.st_size),
                         static_cast<uint64_t>(st.st_mtim.tv_sec) * 1000000000ull + st.st_mtim.tv_nsec,
                         static_cast<uint64_t>(st.st_ino));
}

absl::Status WriteAll(int fd, absl::string_view data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, std::min<size_t>(data.size() - done, 1u << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      return FileWriteError(errno, absl::StrCat("cannot write ", path), path);
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status PreadAll(int fd, uint64_t offset, uint8_t* dst, size_t size, size_t* got, const std::string& path) {
  *got = 0;
  while (*got < size) {
    ssize_t n = ::pread(fd, dst + *got, std::min<size_t>(size - *got, 1u << 30), static_cast<off_t>(offset + *got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, absl::StrCat("cannot read ", path));
    }
    if (n == 0) break;
    *got += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

std::string RandomHex() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return absl::StrFormat("%016x", rng());
}

bool IsHiddenInternal(absl::string_view rel) {
  return absl::StartsWith(rel, absl::StrCat(kUploadsDir, "/")) || rel == kUploadsDir ||
         absl::StrContains(rel, kTmpMarker);
}

}  // namespace

std::string TempPathBeside(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat(path, kTmpMarker, getpid(), "-", counter++);
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view data) {
  std::error_code ec;
  fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create directory ", parent.string(), ": ", ec.message()));
  std::string tmp = TempPathBeside(path);
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) return FileWriteError(errno, absl::StrCat("cannot create ", tmp), tmp);
  absl::Status s = WriteAll(fd.get(), data, tmp);
  if (s.ok() && ::fsync(fd.get()) != 0) s = FileWriteError(errno, absl::StrCat("cannot sync ", tmp), tmp);
  if (s.ok() && ::close(fd.release()) != 0) s = FileWriteError(errno, absl::StrCat("cannot close ", tmp), tmp);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = ErrnoToStatus(errno, absl::StrCat("cannot rename ", tmp, " to ", path));
  if (!s.ok()) ::unlink(tmp.c_str());
  return s;
}

FileObjectStore::FileObjectStore(std::string root_dir) : root_(std::move(root_dir)) {
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
}

std::string FileObjectStore::uri() const {
  StorageUri u;
  u.scheme = UriScheme::kFile;
  u.path = root_;
  return u.ToString();
}

absl::StatusOr<std::string> FileObjectStore::PathOf(absl::string_view key) const {
  absl::Status s = ValidateRelativeKey(key);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(uri(), ": ", s.message()));
  return JoinKey(root_, key);
}

std::optional<std::string> FileObjectStore::LocalPath(absl::string_view key) const {
  auto p = PathOf(key);
  if (!p.ok()) return std::nullopt;
  return *p;
}

absl::StatusOr<ObjectInfo> FileObjectStore::Stat(absl::string_view key) {
  LLMC_ASSIGN_OR_RETURN(std::string path, PathOf(key));
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return absl::NotFoundError(absl::StrCat(UriOf(key), ": no such object"));
    return ErrnoToStatus(errno, absl::StrCat("cannot stat ", path));
  }
  if (!S_ISREG(st.st_mode)) return absl::NotFoundError(absl::StrCat(UriOf(key), ": not a regular file"));
  return ObjectInfo{std::string(key), static_cast<uint64_t>(st.st_size), EtagOf(st)};
}

absl::Status FileObjectStore::Read(absl::string_view key, uint64_t offset, absl::Span<uint8_t> out,
                                   absl::string_view if_match) {
  LLMC_ASSIGN_OR_RETURN(std::string path, PathOf(key));
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(UriOf(key), ": no such object"));
    return ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  }
  if (!if_match.empty()) {
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return ErrnoToStatus(errno, absl::StrCat("cannot stat ", path));
    if (EtagOf(st) != if_match)
      return absl::FailedPreconditionError(
          absl::StrCat(UriOf(key), ": the object changed while it was being read; start the transfer again"));
  }
  size_t got = 0;
  LLMC_RETURN_IF_ERROR(PreadAll(fd.get(), offset, out.data(), out.size(), &got, path));
  if (got != out.size())
    return absl::OutOfRangeError(absl::StrCat(UriOf(key), ": got ", got, " of ", out.size(), " bytes at offset ", offset,
                                              "; the object is shorter than expected"));
  return absl::OkStatus();
}

absl::StatusOr<std::string> FileObjectStore::Get(absl::string_view key, uint64_t offset, uint64_t length) {
  LLMC_ASSIGN_OR_RETURN(std::string path, PathOf(key));
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT || errno == ENOTDIR) return absl::NotFoundError(absl::StrCat(UriOf(key), ": no such object"));
    return ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoToStatus(errno, absl::StrCat("cannot stat ", path));
  if (!S_ISREG(st.st_mode)) return absl::NotFoundError(absl::StrCat(UriOf(key), ": not a regular file"));
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (offset >= size) return std::string();
  uint64_t n = std::min(length, size - offset);
  std::string out(n, '\0');
  size_t got = 0;
  LLMC_RETURN_IF_ERROR(PreadAll(fd.get(), offset, reinterpret_cast<uint8_t*>(out.data()), n, &got, path));
  out.resize(got);
  return out;
}

absl::Status FileObjectStore::Put(absl::string_view key, absl::string_view data) {
  LLMC_ASSIGN_OR_RETURN(std::string path, PathOf(key));
  return WriteFileAtomically(path, data);
}

absl::StatusOr<std::string> FileObjectStore::CreateMultipartUpload(absl::string_view key) {
  LLMC_ASSIGN_OR_RETURN(std::string path, PathOf(key));
  std::string id = RandomHex();
  std::error_code ec;
  fs::create_directories(JoinKey(JoinKey(root_, kUploadsDir), id), ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(UriOf(key), ": cannot create the upload directory: ", ec.message()));
  return id;
}

absl::StatusOr<std::string> FileObjectStore::UploadPart(absl::string_view key, absl::string_view upload_id,
                                                        int part_number, absl::string_view data) {
  LLMC_ASSIGN_OR_RETURN(std::string path, PathOf(key));
  if (upload_id.empty() || upload_id.find('/') != absl::string_view::npos || upload_id.find("..") != absl::string_view::npos)
    return absl::InvalidArgumentError(absl::StrCat(UriOf(key), ": bad upload id"));
  std::string dir = JoinKey(JoinKey(root_, kUploadsDir), upload_id);
  if (!fs::is_directory(dir)) return absl::NotFoundError(absl::StrCat(UriOf(key), ": no such multipart upload ", upload_id));
  LLMC_RETURN_IF_ERROR(WriteFileAtomically(JoinKey(dir, absl::StrCat(part_number)), data));
  return absl::StrCat(data.size());  // the etag: enough to check the part list against what is stored
}

absl::Status FileObjectStore::CompleteMultipartUpload(absl::string_view key, absl::string_view upload_id,
                                                      const std::vector<CompletedPart>& parts) {
  LLMC_ASSIGN_OR_RETURN(std::string path, PathOf(key));
  std::string dir = JoinKey(JoinKey(root_, kUploadsDir), upload_id);
  if (upload_id.empty() || !fs::is_directory(dir))
    return absl::NotFoundError(absl::StrCat(UriOf(key), ": no such multipart upload ", upload_id));
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  std::string tmp = TempPathBeside(path);
  Fd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (out.get() < 0) return ErrnoToStatus(errno, absl::StrCat("cannot create ", tmp));
  absl::Status s;
  int prev = 0;
  std::string buf(8u << 20, '\0');
  for (const auto& p : parts) {
    if (p.part_number <= prev) {
      s = absl::InvalidArgumentError(absl::StrCat(UriOf(key), ": parts must be listed in increasing order"));
      break;
    }
    prev = p.part_number;
    std::string part_path = JoinKey(dir, absl::StrCat(p.part_number));
    Fd in(::open(part_path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st;
    if (in.get() < 0 || ::fstat(in.get(), &st) != 0 || absl::StrCat(st.st_size) != p.etag) {
      s = absl::InvalidArgumentError(absl::StrCat(UriOf(key), ": part ", p.part_number, " was not uploaded as listed"));
      break;
    }
    for (uint64_t off = 0; s.ok() && off < static_cast<uint64_t>(st.st_size);) {
      size_t got = 0;
      s = PreadAll(in.get(), off, reinterpret_cast<uint8_t*>(buf.data()), buf.size(), &got, part_path);
      if (s.ok()) s = WriteAll(out.get(), absl::string_view(buf.data(), got), tmp);
      off += got;
      if (got == 0) break;
    }
    if (!s.ok()) break;
  }
  if (s.ok() && ::fsync(out.get()) != 0) s = FileWriteError(errno, absl::StrCat("cannot sync ", tmp), tmp);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = ErrnoToStatus(errno, absl::StrCat("cannot rename to ", path));
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  fs::remove_all(dir, ec);
  return absl::OkStatus();
}

absl::Status FileObjectStore::AbortMultipartUpload(absl::string_view key, absl::string_view upload_id) {
  if (upload_id.empty() || upload_id.find('/') != absl::string_view::npos || upload_id.find("..") != absl::string_view::npos)
    return absl::InvalidArgumentError(absl::StrCat(UriOf(key), ": bad upload id"));
  std::error_code ec;
  fs::remove_all(JoinKey(JoinKey(root_, kUploadsDir), upload_id), ec);
  fs::path uploads = JoinKey(root_, kUploadsDir);
  if (fs::is_empty(uploads, ec)) fs::remove(uploads, ec);
  return absl::OkStatus();
}

absl::StatusOr<ListResult> FileObjectStore::ListPage(absl::string_view prefix, absl::string_view token, int max_keys) {
  // Walk only the deepest directory the prefix names.
  size_t slash = prefix.rfind('/');
  std::string start_rel = slash == absl::string_view::npos ? "" : std::string(prefix.substr(0, slash));
  fs::path start = start_rel.empty() ? fs::path(root_) : fs::path(root_) / start_rel;
  std::vector<ObjectInfo> all;
  std::error_code ec;
  if (fs::is_directory(start, ec)) {
    fs::recursive_directory_iterator it(start, fs::directory_options::skip_permission_denied, ec), end;
    if (ec) return absl::PermissionDeniedError(absl::StrCat(uri(), ": cannot list ", start.string(), ": ", ec.message()));
    for (; it != end; it.increment(ec)) {
      if (ec) return absl::InternalError(absl::StrCat(uri(), ": listing failed at ", start.string(), ": ", ec.message()));
      std::string rel = it->path().lexically_relative(root_).generic_string();
      if (it->is_directory(ec)) {
        if (rel == kUploadsDir) it.disable_recursion_pending();
        continue;
      }
      if (!absl::StartsWith(rel, prefix) || IsHiddenInternal(rel)) continue;
      if (!token.empty() && rel <= token) continue;
      struct stat st;
      if (::stat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      all.push_back({rel, static_cast<uint64_t>(st.st_size), EtagOf(st)});
    }
  }
  std::sort(all.begin(), all.end(), [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
  ListResult out;
  size_t n = std::min<size_t>(all.size(), static_cast<size_t>(std::clamp(max_keys, 1, 1000)));
  out.objects.assign(std::make_move_iterator(all.begin()), std::make_move_iterator(all.begin() + n));
  if (n < all.size()) out.next_token = out.objects.back().key;
  return out;
}

absl::Status FileObjectStore::Delete(absl::string_view key) {
  LLMC_ASSIGN_OR_RETURN(std::string path, PathOf(key));
  if (::unlink(path.c_str()) != 0 && errno != ENOENT && errno != ENOTDIR)
    return ErrnoToStatus(errno, absl::StrCat("cannot delete ", path));
  // Remove directories left empty, like S3 where "directories" exist only through their objects.
  fs::path dir = fs::path(path).parent_path();
  fs::path root(root_);
  while (dir != root && dir.string().size() > root_.size()) {
    if (::rmdir(dir.c_str()) != 0) break;
    dir = dir.parent_path();
  }
  return absl::OkStatus();
}

absl::Status FileObjectStore::Copy(absl::string_view src, absl::string_view dst) {
  LLMC_ASSIGN_OR_RETURN(std::string from, PathOf(src));
  LLMC_ASSIGN_OR_RETURN(std::string to, PathOf(dst));
  struct stat st;
  if (::stat(from.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    return absl::NotFoundError(absl::StrCat(UriOf(src), ": no such object"));
  std::error_code ec;
  fs::create_directories(fs::path(to).parent_path(), ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create directory for ", to, ": ", ec.message()));
  std::string tmp = TempPathBeside(to);
  if (::link(from.c_str(), tmp.c_str()) != 0) {
    fs::copy_file(from, tmp, fs::copy_options::overwrite_existing, ec);
    if (ec) {
      ::unlink(tmp.c_str());
      return absl::InternalError(absl::StrCat("cannot copy ", from, " to ", to, ": ", ec.message()));
    }
  }
  if (::rename(tmp.c_str(), to.c_str()) != 0) {
    absl::Status s = ErrnoToStatus(errno, absl::StrCat("cannot rename ", tmp, " to ", to));
    ::unlink(tmp.c_str());
    return s;
  }
  return absl::OkStatus();
}

}  // namespace llmc::storage
