#include "storage/path_confinement.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <filesystem>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/util.h"

namespace llmc::storage {

namespace fs = std::filesystem;

namespace {

constexpr int kMaxSymlinks = 40;  // as the kernel's own limit

std::string Normal(const std::string& p) {
  std::string s = fs::path(p).lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

bool Under(const std::string& inner, const std::string& root) {
  if (root == "/") return true;
  return inner == root || absl::StartsWith(inner, root + "/");
}

std::string Join(const std::string& dir, absl::string_view name) {
  return dir == "/" ? absl::StrCat("/", name) : absl::StrCat(dir, "/", name);
}

}  // namespace

void UniqueFd::Reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

std::string FdPath(int fd) { return absl::StrCat("/proc/self/fd/", fd); }

absl::StatusOr<PathConfinement> PathConfinement::Create(const ConfinementRoots& roots) {
  PathConfinement c;
  auto canon = [](const std::string& r, const char* kind) -> absl::StatusOr<std::string> {
    if (r.empty() || r[0] != '/')
      return absl::InvalidArgumentError(absl::StrCat(kind, " ", r, ": not an absolute path"));
    std::error_code ec;
    fs::path p = fs::weakly_canonical(fs::path(r), ec);
    return Normal(ec ? r : p.string());
  };
  for (const auto& r : roots.read_write) {
    auto p = canon(r, "allowed root");
    if (!p.ok()) return p.status();
    c.rw_.push_back(*p);
  }
  for (const auto& r : roots.read_only) {
    auto p = canon(r, "allowed input root");
    if (!p.ok()) return p.status();
    c.ro_.push_back(*p);
  }
  for (const auto& d : roots.denied) {
    auto p = canon(d, "denied directory");
    if (!p.ok()) return p.status();
    DirId id;
    id.path = *p;
    struct stat st;
    if (::stat(p->c_str(), &st) == 0) {
      id.dev = st.st_dev;
      id.ino = st.st_ino;
    }
    c.denied_.push_back(std::move(id));
  }
  return c;
}

std::string PathConfinement::Describe() const {
  std::string s = rw_.empty() ? "none" : absl::StrJoin(rw_, ", ");
  if (!ro_.empty()) absl::StrAppend(&s, "; inputs only: ", absl::StrJoin(ro_, ", "));
  return s;
}

absl::StatusOr<UniqueFd> PathConfinement::OpenForRead(absl::string_view what, const std::string& path, int flags) const {
  return Open(what, path, /*write=*/false, flags, /*create=*/false);
}

absl::StatusOr<UniqueFd> PathConfinement::OpenDirForWrite(absl::string_view what, const std::string& path) const {
  return Open(what, path, /*write=*/true, O_RDONLY | O_DIRECTORY, /*create=*/true);
}

namespace {

// Removes `name` in the directory `dir_fd` and, for a directory, everything below it, never following a link.
absl::Status RemoveAt(int dir_fd, const std::string& name, const std::string& shown, int depth_left) {
  struct stat st;
  if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoToStatus(errno, absl::StrCat("cannot remove ", shown));
  }
  if (S_ISDIR(st.st_mode)) {
    if (depth_left <= 0)
      return absl::FailedPreconditionError(absl::StrCat("cannot remove ", shown, ": nested too deep"));
    const int fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) return absl::OkStatus();
      return ErrnoToStatus(errno, absl::StrCat("cannot remove ", shown));
    }
    DIR* d = ::fdopendir(fd);
    if (!d) {
      const int err = errno;
      ::close(fd);
      return ErrnoToStatus(err, absl::StrCat("cannot remove ", shown));
    }
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    absl::Status s;
    for (const auto& n : names) {
      s = RemoveAt(::dirfd(d), n, absl::StrCat(shown, "/", n), depth_left - 1);
      if (!s.ok()) break;
    }
    ::closedir(d);
    if (!s.ok()) return s;
  }
  if (::unlinkat(dir_fd, name.c_str(), S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) != 0 && errno != ENOENT)
    return ErrnoToStatus(errno, absl::StrCat("cannot remove ", shown));
  return absl::OkStatus();
}

}  // namespace

absl::Status PathConfinement::RemoveTree(absl::string_view what, const std::string& path, int max_depth) const {
  const fs::path p = fs::path(Normal(path));
  const std::string name = p.filename().string();
  if (!p.is_absolute() || name.empty() || name == "." || name == ".." || p.parent_path() == p)
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", path, " does not name an entry to remove"));
  auto parent = Open(what, p.parent_path().string(), /*write=*/true, O_RDONLY | O_DIRECTORY, /*create=*/false);
  if (!parent.ok()) return parent.status().code() == absl::StatusCode::kNotFound ? absl::OkStatus() : parent.status();
  return RemoveAt(parent->get(), name, path, max_depth);
}

absl::StatusOr<UniqueFd> PathConfinement::OpenEntry(int dir_fd, absl::string_view name, int flags,
                                                    absl::string_view what) {
  const std::string n(name);
  int fd = ::openat(dir_fd, n.c_str(), flags | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) {
    const int err = errno;
    struct stat st;
    // O_DIRECTORY on a link is ENOTDIR rather than ELOOP: a link either way.
    if (err == ELOOP || (err == ENOTDIR && ::fstatat(dir_fd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                         S_ISLNK(st.st_mode)))
      return absl::PermissionDeniedError(absl::StrCat(what, ": ", n, " is a symbolic link; jobs do not follow links ",
                                                      "here (put the file itself in place)"));
    return ErrnoToStatus(err, absl::StrCat(what, ": ", n));
  }
  return UniqueFd(fd);
}

absl::StatusOr<UniqueFd> PathConfinement::Open(absl::string_view what, const std::string& path, bool write,
                                               int flags, bool create) const {
  if (path.empty() || path[0] != '/')
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", path, " is not an absolute path"));
  // The most specific root that contains the path lexically; failing that, the path with the links of its existing
  // part resolved (as the coordinator compared it: /tmp/x when /tmp is a link). Either way the walk below starts
  // at the root and follows nothing out of it.
  auto pick = [&](const std::string& t) {
    std::string best;
    for (int pass = 0; pass < 2; ++pass) {
      if (pass == 1 && write) break;
      for (const auto& r : pass == 0 ? rw_ : ro_)
        if (Under(t, r) && (best.empty() || r.size() > best.size())) best = r;
    }
    return best;
  };
  std::string target = Normal(path);
  std::string root = pick(target);
  if (root.empty()) {
    std::error_code ec;
    const std::string canonical = Normal(fs::weakly_canonical(fs::path(target), ec).string());
    if (!ec && canonical != target) {
      root = pick(canonical);
      if (!root.empty()) target = canonical;
    }
  }
  if (root.empty())
    return absl::PermissionDeniedError(absl::StrCat(what, ": ", path, " is outside the allowed ",
                                                    write ? "output" : "storage", " roots (", Describe(), ")"));
  // Denied directories this walk must not enter: every one except those containing the root.
  std::vector<const DirId*> denied;
  for (const auto& d : denied_)
    if (!Under(root, d.path)) denied.push_back(&d);
  auto refused = [&](const std::string& at) {
    return absl::PermissionDeniedError(absl::StrCat(
        what, ": ", path, " leads into ", at, ", the service's data directory (tokens and the job store), which "
        "jobs may not read or write; use a location outside it"));
  };
  auto check_denied = [&](int fd, const std::string& walked) -> absl::Status {
    struct stat st;
    if (::fstat(fd, &st) != 0) return ErrnoToStatus(errno, absl::StrCat(what, ": ", walked));
    for (const DirId* d : denied)
      if ((d->ino != 0 && st.st_dev == d->dev && st.st_ino == d->ino) || Under(walked, d->path)) return refused(d->path);
    return absl::OkStatus();
  };

  int rfd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (rfd < 0) return ErrnoToStatus(errno, absl::StrCat(what, ": allowed root ", root));
  // The walk: a stack of opened directories (the root at the bottom) and the lexical path they stand for.
  std::vector<std::pair<UniqueFd, std::string>> dirs;
  dirs.emplace_back(UniqueFd(rfd), root);
  std::deque<std::string> rest;
  const std::string rel = target.size() > root.size() ? target.substr(root == "/" ? 1 : root.size() + 1) : "";
  for (absl::string_view c : absl::StrSplit(rel, '/', absl::SkipEmpty())) rest.emplace_back(c);
  if (rest.empty()) {
    absl::Status s = check_denied(rfd, root);
    if (!s.ok()) return s;
    int fd = ::openat(rfd, ".", (flags & ~O_CREAT) | O_CLOEXEC);
    if (fd < 0) return ErrnoToStatus(errno, absl::StrCat(what, ": ", path));
    return UniqueFd(fd);
  }
  int links = 0;
  while (!rest.empty()) {
    const std::string c = rest.front();
    rest.pop_front();
    if (c == ".") continue;
    if (c == "..") {
      if (dirs.size() == 1)
        return absl::PermissionDeniedError(absl::StrCat(what, ": ", path, " climbs out of the allowed root ", root,
                                                        " (through \"..\" or a symbolic link)"));
      dirs.pop_back();
      continue;
    }
    const bool last = rest.empty();
    const int dfd = dirs.back().first.get();
    const std::string walked = Join(dirs.back().second, c);
    struct stat st;
    if (::fstatat(dfd, c.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      const int err = errno;
      if (err == ENOENT && create) {
        if (::mkdirat(dfd, c.c_str(), 0755) != 0 && errno != EEXIST)
          return ErrnoToStatus(errno, absl::StrCat(what, ": cannot create ", walked));
        rest.push_front(c);  // look again: what is there now
        continue;
      }
      return ErrnoToStatus(err, absl::StrCat(what, ": ", walked));
    }
    if (S_ISLNK(st.st_mode)) {
      if (++links > kMaxSymlinks)
        return absl::PermissionDeniedError(absl::StrCat(what, ": ", path, ": too many symbolic links"));
      std::string buf(4096, '\0');
      const ssize_t n = ::readlinkat(dfd, c.c_str(), buf.data(), buf.size());
      if (n < 0) return ErrnoToStatus(errno, absl::StrCat(what, ": ", walked));
      buf.resize(static_cast<size_t>(n));
      if (!buf.empty() && buf[0] == '/')
        return absl::PermissionDeniedError(absl::StrCat(
            what, ": ", walked, " is a symbolic link to the absolute path ", buf.substr(0, 200),
            "; jobs follow only relative links that stay inside the allowed root ", root,
            " (copy the file in instead of linking it)"));
      std::vector<std::string> parts = absl::StrSplit(buf, '/', absl::SkipEmpty());
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) rest.push_front(*it);
      // A link that climbs above the root is reported under its own name.
      size_t depth = dirs.size();
      for (const auto& p : parts) {
        if (p == "..") {
          if (--depth == 0)
            return absl::PermissionDeniedError(absl::StrCat(
                what, ": ", walked, " is a symbolic link to ", buf.substr(0, 200), ", outside the allowed root ", root,
                "; jobs follow only links that stay inside it (copy the file in instead of linking it)"));
        } else if (p != ".") {
          ++depth;
        }
      }
      continue;
    }
    if (!last && !S_ISDIR(st.st_mode))
      return absl::FailedPreconditionError(absl::StrCat(what, ": ", walked, " is not a directory"));
    const int f = last ? ((flags & ~O_CREAT) | O_CLOEXEC | O_NOFOLLOW) : (O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    int fd = ::openat(dfd, c.c_str(), f);
    if (fd < 0) {
      const int err = errno;
      if (err == ELOOP || (err == ENOTDIR && !last))
        return absl::AbortedError(absl::StrCat(what, ": ", walked, " changed while it was being opened; try again"));
      return ErrnoToStatus(err, absl::StrCat(what, ": ", walked));
    }
    UniqueFd owned(fd);
    if (S_ISDIR(st.st_mode)) {
      absl::Status s = check_denied(fd, walked);
      if (!s.ok()) return s;
    }
    if (last) {
      // The file itself may be a hard link into a denied directory only if the caller could link it there, but a
      // regular file's own identity is checked against the denied list as well.
      absl::Status s = check_denied(fd, walked);
      if (!s.ok()) return s;
      return owned;
    }
    dirs.emplace_back(std::move(owned), walked);
  }
  // The path ended on "." or "..": the directory the walk stands in.
  const auto& top = dirs.back();
  absl::Status s = check_denied(top.first.get(), top.second);
  if (!s.ok()) return s;
  int fd = ::openat(top.first.get(), ".", (flags & ~O_CREAT) | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat(what, ": ", path));
  return UniqueFd(fd);
}

}  // namespace llmc::storage
