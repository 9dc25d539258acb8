// The web console's static files (client/web; installed as PREFIX/share/llmc/web) as llmc-server serves them on
// its HTTP address under /console/ (docs/console.md). Only regular files inside the folder, with a known type, are
// served: a request path is plain `[A-Za-z0-9._-]` segments without a leading dot, and the file it names must
// resolve (symlinks followed) to a place inside the folder, so neither `..` nor a symlink leads out of it.
//
// Thread-safety: immutable after Open; Read may be called from any thread.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace llmc::server {

// The largest file the console serves (the biggest, the chart library, is about 60 KB).
inline constexpr int64_t kMaxConsoleFileBytes = 4 << 20;

// The headers every HTTP response of llmc-server carries: a Content-Security-Policy that allows scripts, styles and
// connections from the server's own origin only (no inline script, no eval, no framing), nosniff, no referrer.
const std::vector<std::pair<std::string, std::string>>& SecurityHeaders();

// The console folder llmc-server uses without --web-dir: BIN/../share/llmc/web, where BIN is the folder of the
// running executable (build/bin in a build tree, PREFIX/bin once installed; the build copies client/web to
// build/share/llmc/web and `cmake --install` to PREFIX/share/llmc/web).
std::string DefaultWebDir();

class WebConsole {
 public:
  struct File {
    std::string body;
    std::string content_type;
  };
  // NOT_FOUND naming `dir` when it is not a folder holding index.html.
  static absl::StatusOr<WebConsole> Open(const std::string& dir);

  // The file at `rel` ("" or a folder's name: its index.html). NOT_FOUND for anything that is not a regular
  // file of a served type inside the folder, INVALID_ARGUMENT for a malformed path.
  absl::StatusOr<File> Read(absl::string_view rel) const;
  const std::string& dir() const { return dir_; }

 private:
  explicit WebConsole(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;  // canonical
};

// The Content-Type for a file name's extension; "" for a type the console does not serve.
std::string ConsoleContentType(absl::string_view name);

}  // namespace llmc::server
