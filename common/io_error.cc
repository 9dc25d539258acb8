#include "common/io_error.h"

#include <sys/statvfs.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/util.h"

namespace llmc {

namespace fs = std::filesystem;

std::string FileSystemOf(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::absolute(path, ec);
  while (!p.empty() && !fs::exists(p, ec) && p != p.root_path()) p = p.parent_path();
  const std::string real = fs::weakly_canonical(p, ec).string();
  std::ifstream mounts("/proc/self/mounts");
  std::string line, best_dir, best_dev;
  while (std::getline(mounts, line)) {
    std::istringstream in(line);
    std::string dev, dir;
    if (!(in >> dev >> dir)) continue;
    const bool under = dir == "/" || real == dir || absl::StartsWith(real, dir + "/");
    if (under && dir.size() >= best_dir.size()) {
      best_dir = dir;
      best_dev = dev;
    }
  }
  if (best_dir.empty()) return "";
  return absl::StrCat(best_dir, " (", best_dev, ")");
}

absl::Status FileWriteError(int err, absl::string_view what, const std::string& path) {
  if (err != ENOSPC && err != EDQUOT) return llmc::ErrnoToStatus(err, what);
  std::string fsys = FileSystemOf(path);
  if (fsys.empty()) fsys = "the file system";
  std::error_code ec;
  fs::path p = fs::absolute(path, ec);
  while (!p.empty() && !fs::exists(p, ec) && p != p.root_path()) p = p.parent_path();
  struct statvfs st;
  if (::statvfs(p.c_str(), &st) == 0)
    absl::StrAppend(&fsys, ", ", FormatBytes(static_cast<uint64_t>(st.f_bavail) * st.f_frsize), " free");
  return absl::ResourceExhaustedError(absl::StrCat(err == ENOSPC ? "no space left on " : "disk quota exceeded on ",
                                                   fsys, " while writing ", path, ": ", what,
                                                   "; free space there or write the output elsewhere"));
}

}  // namespace llmc
