// Errors of file writes that name what filled up. A write that fails because the file system is full (ENOSPC) or a
// quota is reached (EDQUOT) is the caller's resource running out, not an I/O fault: it becomes RESOURCE_EXHAUSTED
// "no space left on <file system> (<path>)", so a job's failure says which disk to free, and the service maps it
// to the canonical code clients can act on. Other errno values are ErrnoToStatus's (common/util.h).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace llmc {

// The status for errno `err` from `what` ("cannot write X", "cannot copy Y") on `path`. ENOSPC:
// RESOURCE_EXHAUSTED "no space left on MOUNT (DEVICE, FREE free) writing PATH: WHAT; free space there or write
// elsewhere"; EDQUOT the same with "disk quota exceeded on". Thread-safe.
absl::Status FileWriteError(int err, absl::string_view what, const std::string& path);

// The mount point and device of the file system holding `path` (its nearest existing ancestor), from
// /proc/self/mounts: "/srv (/dev/sdb1)"; "" when unknown.
std::string FileSystemOf(const std::string& path);

}  // namespace llmc
