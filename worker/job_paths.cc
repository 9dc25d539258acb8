#include "worker/job_paths.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/io_error.h"
#include "common/status_macros.h"
#include "common/util.h"

namespace llmc {

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxModelFiles = 4096;

// Lets a job keep every file of a large model open: the soft limit on open files up to the hard one.
void RaiseOpenFileLimit() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

absl::Status Link(const std::string& target, const std::string& link) {
  if (::symlink(target.c_str(), link.c_str()) != 0) return ErrnoToStatus(errno, absl::StrCat("cannot create ", link));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobPaths>> JobPaths::Create(const storage::PathConfinement* confinement,
                                                           const std::string& view_dir) {
  std::unique_ptr<JobPaths> p(new JobPaths());
  p->confinement_ = confinement;
  p->view_ = fs::path(view_dir).lexically_normal().string();
  std::error_code ec;
  fs::remove_all(p->view_, ec);
  fs::create_directories(fs::path(p->view_).parent_path(), ec);
  if (::mkdir(p->view_.c_str(), 0700) != 0)
    return ErrnoToStatus(errno, absl::StrCat("cannot create the job's private directory ", p->view_,
                                             " (set XDG_CACHE_HOME to a writable place)"));
  RaiseOpenFileLimit();
  return p;
}

JobPaths::~JobPaths() {
  std::error_code ec;
  if (!view_.empty()) fs::remove_all(view_, ec);  // links only: remove_all does not follow them
}

absl::StatusOr<std::string> JobPaths::PinModelDir(const std::string& what, const std::string& path) {
  LLMC_ASSIGN_OR_RETURN(storage::UniqueFd dir, confinement_->OpenForRead(what, path, O_RDONLY | O_DIRECTORY));
  const std::string view = view_ + "/model";
  LLMC_RETURN_IF_ERROR(PinEntries(std::move(dir), what, path, view, /*follow_links=*/true));
  return view;
}

absl::StatusOr<std::string> JobPaths::PinWrittenOutput() {
  if (out_parent_ < 0) return absl::FailedPreconditionError("no output directory was opened for this job");
  LLMC_ASSIGN_OR_RETURN(storage::UniqueFd dir, storage::PathConfinement::OpenEntry(out_parent_, out_name_,
                                                                                   O_RDONLY | O_DIRECTORY, out_path_));
  const std::string view = view_ + "/written";
  LLMC_RETURN_IF_ERROR(PinEntries(std::move(dir), "output_uri", out_path_, view, /*follow_links=*/false));
  return view;
}

absl::Status JobPaths::PinEntries(storage::UniqueFd dir, const std::string& what, const std::string& path,
                                  const std::string& view, bool follow_links) {
  if (::mkdir(view.c_str(), 0700) != 0) return ErrnoToStatus(errno, absl::StrCat("cannot create ", view));
  // List the directory opened (not the path, which may have changed since).
  int lfd = ::dup(dir.get());
  if (lfd < 0) return ErrnoToStatus(errno, absl::StrCat(what, ": ", path));
  DIR* d = ::fdopendir(lfd);
  if (!d) {
    ::close(lfd);
    return ErrnoToStatus(errno, absl::StrCat(what, ": ", path));
  }
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    names.push_back(n);
    if (names.size() > kMaxModelFiles) break;
  }
  ::closedir(d);
  if (names.size() > kMaxModelFiles)
    return absl::ResourceExhaustedError(absl::StrCat(what, ": ", path, " holds more than ", kMaxModelFiles,
                                                     " entries; give a model directory with only the model's files"));
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    struct stat st;
    if (::fstatat(dir.get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone meanwhile
    storage::UniqueFd f;
    if (S_ISREG(st.st_mode)) {
      LLMC_ASSIGN_OR_RETURN(f, storage::PathConfinement::OpenEntry(dir.get(), n, O_RDONLY, absl::StrCat(what, ": ", path)));
    } else if (S_ISLNK(st.st_mode) && follow_links) {
      // Followed beneath the roots from the path of the entry itself: refused, naming the file, when it leads out.
      LLMC_ASSIGN_OR_RETURN(f, confinement_->OpenForRead(absl::StrCat(what, " file ", n), path + "/" + n, O_RDONLY));
      struct stat ft;
      if (::fstat(f.get(), &ft) != 0 || !S_ISREG(ft.st_mode)) continue;  // a linked directory: not read
    } else if (S_ISLNK(st.st_mode)) {
      return absl::PermissionDeniedError(absl::StrCat(what, ": ", path, "/", n,
                                                      " is a symbolic link; the job wrote none there, so the output "
                                                      "was changed while the job ran and is not read back"));
    } else {
      continue;  // sub-directories, sockets, ...: the engine reads none
    }
    LLMC_RETURN_IF_ERROR(Link(storage::FdPath(f.get()), view + "/" + n));
    fds_.push_back(std::move(f));
  }
  fds_.push_back(std::move(dir));
  names_.emplace_back(view, path);
  return absl::OkStatus();
}

absl::StatusOr<std::string> JobPaths::PinFile(const std::string& what, const std::string& path,
                                              const std::string& name) {
  LLMC_ASSIGN_OR_RETURN(storage::UniqueFd f, confinement_->OpenForRead(what, path, O_RDONLY));
  struct stat st;
  if (::fstat(f.get(), &st) != 0 || !S_ISREG(st.st_mode))
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", path, " is not a regular file"));
  const std::string view = view_ + "/" + name;
  LLMC_RETURN_IF_ERROR(Link(storage::FdPath(f.get()), view));
  fds_.push_back(std::move(f));
  names_.emplace_back(view, path);
  return view;
}

absl::StatusOr<std::string> JobPaths::PinOutput(const std::string& what, const std::string& path,
                                                std::string* staging) {
  fs::path out = fs::path(path).lexically_normal();
  if (out.filename().empty()) out = out.parent_path();
  const std::string parent = out.parent_path().string();
  const std::string name = out.filename().string();
  if (name.empty() || name == "." || name == "..")
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", path, " does not name a directory to create"));
  LLMC_ASSIGN_OR_RETURN(storage::UniqueFd dir, confinement_->OpenDirForWrite(what, parent));
  const std::string view = view_ + "/out";
  LLMC_RETURN_IF_ERROR(Link(storage::FdPath(dir.get()), view));
  out_parent_ = dir.get();
  out_name_ = name;
  out_path_ = path;
  fds_.push_back(std::move(dir));
  if (staging && !staging->empty()) {
    const fs::path st = fs::path(*staging).lexically_normal();
    if (st.parent_path() != out.parent_path())
      return absl::InvalidArgumentError(absl::StrCat(what, ": staging ", *staging, " is not beside the output ", path));
    names_.emplace_back(view + "/" + st.filename().string(), *staging);
    *staging = view + "/" + st.filename().string();
  }
  names_.emplace_back(view + "/" + name, path);
  names_.emplace_back(view, parent);
  return view + "/" + name;
}

absl::Status JobPaths::WriteOutputFile(const std::string& file, const std::string& content) const {
  if (out_parent_ < 0) return absl::FailedPreconditionError("no output directory was opened for this job");
  LLMC_ASSIGN_OR_RETURN(storage::UniqueFd dir, storage::PathConfinement::OpenEntry(out_parent_, out_name_,
                                                                                   O_RDONLY | O_DIRECTORY, out_path_));
  LLMC_ASSIGN_OR_RETURN(storage::UniqueFd f, storage::PathConfinement::OpenEntry(
                                                 dir.get(), file, O_WRONLY | O_CREAT | O_TRUNC, out_path_));
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(f.get(), content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return FileWriteError(errno, absl::StrCat("cannot write ", file), out_path_ + "/" + file);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(f.get()) != 0) return FileWriteError(errno, absl::StrCat("cannot write ", file), out_path_ + "/" + file);
  return absl::OkStatus();
}

std::string JobPaths::Restore(const std::string& text) const {
  // Longest view paths first, so VIEW/out/NAME is put back before VIEW/out.
  std::vector<std::pair<std::string, std::string>> r = names_;
  std::sort(r.begin(), r.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  std::string s = text;
  for (const auto& [v, o] : r) s = absl::StrReplaceAll(s, {{v, o}});
  return absl::StrReplaceAll(s, {{view_, "(job directory)"}});
}

absl::Status JobPaths::Restore(const absl::Status& s) const {
  if (s.ok()) return s;
  return absl::Status(s.code(), Restore(std::string(s.message())));
}

}  // namespace llmc
