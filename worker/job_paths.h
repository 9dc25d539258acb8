// The local files of a confined job (a service job: its locations must lie under the operator's allowed roots),
// opened beneath those roots at the moment the job starts and handed to the engine so that nothing can redirect
// them afterwards.
//
// Every input file is opened with storage::PathConfinement (no symbolic link out of a root, never the service's
// data directory) and kept open for the whole job; the engine is given paths in a private view directory whose
// entries are links to /proc/self/fd/N, i.e. to the very files opened, whatever happens to the original paths later:
//
//   VIEW/model/<file>  -> /proc/self/fd/N   every regular file of the model directory (sub-directories are not
//                                           read by the engine and are left out)
//   VIEW/dataset, VIEW/eval_text            the calibration dataset and the evaluation text
//   VIEW/out        -> /proc/self/fd/P      the output's parent directory, opened (and created) beneath a
//                                           read-write root; the engine stages and renames inside it
//   VIEW/written/<file> -> /proc/self/fd/N  after the run: every file of the finished output, for reading it back
//
// The view directory is private to the worker (mode 0700) and removed, with the fds closed, at destruction.
// Not thread-safe; one per job.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/path_confinement.h"

namespace llmc {

class JobPaths {
 public:
  // Creates VIEW (removed first if it exists) for a job confined by `confinement` (not owned; outlives this).
  static absl::StatusOr<std::unique_ptr<JobPaths>> Create(const storage::PathConfinement* confinement,
                                                          const std::string& view_dir);
  ~JobPaths();
  JobPaths(const JobPaths&) = delete;
  JobPaths& operator=(const JobPaths&) = delete;

  // The model directory `path` (absolute, local): every regular file in it opened for reading. A symbolic link
  // that leads out of the roots fails the job with PERMISSION_DENIED naming the file. Returns VIEW/model.
  absl::StatusOr<std::string> PinModelDir(const std::string& what, const std::string& path);
  // One input file; returns VIEW/<name>.
  absl::StatusOr<std::string> PinFile(const std::string& what, const std::string& path, const std::string& name);
  // The output directory `path`: its parent opened (created) beneath a read-write root. Returns VIEW/out/<name>.
  // `staging` (a directory beside the output, or "") is returned as a path in the same pinned parent.
  absl::StatusOr<std::string> PinOutput(const std::string& what, const std::string& path, std::string* staging);

  // The finished output directory (once the engine has renamed it into place), opened inside the pinned parent
  // without following a symbolic link, and every regular file in it opened for reading; a symbolic link in it
  // (the engine writes none) is PERMISSION_DENIED. Returns VIEW/written, whose entries are the very files opened:
  // reading the output back (the evaluation after the job) goes through it, so an output or output file swapped
  // for a link after the job wrote it cannot make the job read outside the roots.
  absl::StatusOr<std::string> PinWrittenOutput();

  // Writes `file` (one name) into the output directory, opened inside the pinned parent without following a
  // symbolic link at either step.
  absl::Status WriteOutputFile(const std::string& file, const std::string& content) const;

  // The status with every view path in its message put back as the original path, so errors name what the user
  // gave.
  absl::Status Restore(const absl::Status& s) const;
  std::string Restore(const std::string& text) const;

 private:
  JobPaths() = default;
  // Opens every regular file of the directory `dir` (which the caller opened for `path`) and links it into `view`
  // (created). A symbolic link is followed beneath the roots when `follow_links`, refused otherwise.
  absl::Status PinEntries(storage::UniqueFd dir, const std::string& what, const std::string& path,
                          const std::string& view, bool follow_links);
  const storage::PathConfinement* confinement_ = nullptr;
  std::string view_;
  std::vector<storage::UniqueFd> fds_;
  int out_parent_ = -1;      // the pinned output parent (one of fds_)
  std::string out_name_, out_path_;
  std::vector<std::pair<std::string, std::string>> names_;  // view path -> original path
};

}  // namespace llmc
