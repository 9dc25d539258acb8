// Opens the local files of a service job beneath the operator's allowed roots, at the moment they are used, so
// that neither a symbolic link nor a directory swapped after the job was accepted can lead a job outside them.
//
// A path is opened by walking it one component at a time from the most specific root that contains it: every
// component is opened with openat(dir_fd, name, O_NOFOLLOW) relative to the directory already opened, so a
// component replaced between two steps cannot redirect the walk. A symbolic link met on the way is followed only
// when it is relative and stays beneath the root (".." is taken from the walk's own stack of directory fds, never
// above the root); an absolute link or one that climbs out is refused with an error naming the file. Directories
// listed as denied (the coordinator's data directory: tokens and the job store) are refused wherever they are met,
// unless the walk started from a root that lies inside them (DATA_DIR/storage).
//
// The kernel here also offers openat2(RESOLVE_BENEATH); the walk is used everywhere because it needs no particular
// kernel or libc and is also where the denied directories are checked, component by component.
//
// Immutable after Create; thread-safe. Returned fds belong to the caller (UniqueFd closes them).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace llmc::storage {

// An owned file descriptor; -1 when empty. Move-only.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void Reset();

 private:
  int fd_ = -1;
};

struct ConfinementRoots {
  std::vector<std::string> read_write;  // absolute local directories jobs may read and write
  std::vector<std::string> read_only;   // absolute local directories jobs may only read
  std::vector<std::string> denied;      // directories never opened (unless a root lies inside them)
};

class PathConfinement {
 public:
  // Roots and denied directories must be absolute; they are made canonical (symlinks of the operator's own
  // paths resolved once, here). A root that does not exist is kept (jobs under it fail with NOT_FOUND).
  static absl::StatusOr<PathConfinement> Create(const ConfinementRoots& roots);
  PathConfinement() = default;

  // Opens the existing file or directory `path` (absolute) with open flags `flags` (O_RDONLY, O_DIRECTORY, ...;
  // O_CLOEXEC and O_NOFOLLOW are added). `what` names the input in errors ("model_uri"). PERMISSION_DENIED when
  // the path lies outside every root, leads out through a symbolic link or into a denied directory; NOT_FOUND
  // when it does not exist.
  absl::StatusOr<UniqueFd> OpenForRead(absl::string_view what, const std::string& path, int flags) const;

  // Opens directory `path` (absolute) beneath a read-write root for writing into, creating missing components
  // (mode 0755) as it goes. Same errors as OpenForRead, with read-only roots not counted.
  absl::StatusOr<UniqueFd> OpenDirForWrite(absl::string_view what, const std::string& path) const;

  // Removes `path` (absolute: a file, a link or a directory tree) beneath a read-write root: its parent is opened
  // as OpenDirForWrite opens a directory but nothing is created (a missing parent or entry is OK: nothing to do),
  // then the entry and everything below it are removed relative to the directories opened (unlinkat), never
  // following a symbolic link (a link met is removed itself, not what it points to). At most `max_depth` levels
  // (FAILED_PRECONDITION beyond). Same errors as OpenDirForWrite otherwise, naming `what`.
  absl::Status RemoveTree(absl::string_view what, const std::string& path, int max_depth = 64) const;

  // Opens `name` (one component) inside the directory `dir_fd` opened by this class, refusing a symbolic link.
  static absl::StatusOr<UniqueFd> OpenEntry(int dir_fd, absl::string_view name, int flags, absl::string_view what);

  // "/a, /b (read-write); /m (inputs only)" for messages.
  std::string Describe() const;
  bool empty() const { return rw_.empty() && ro_.empty(); }

 private:
  struct DirId {
    unsigned long dev = 0, ino = 0;
    std::string path;
  };
  absl::StatusOr<UniqueFd> Open(absl::string_view what, const std::string& path, bool write, int flags,
                                bool create) const;
  std::vector<std::string> rw_, ro_;
  std::vector<DirId> denied_;
};

// "/proc/self/fd/N": a path naming the open file `fd` itself; opening it reaches that very file (or directory)
// whatever happens to its original path later. Valid in this process while fd stays open.
std::string FdPath(int fd);

}  // namespace llmc::storage
