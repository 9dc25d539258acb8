#include "server/web_console.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace llmc::server {

namespace fs = std::filesystem;

const std::vector<std::pair<std::string, std::string>>& SecurityHeaders() {
  static const auto* h = new std::vector<std::pair<std::string, std::string>>{
      {"Content-Security-Policy",
       "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"},
      {"X-Content-Type-Options", "nosniff"},
      {"X-Frame-Options", "DENY"},
      {"Referrer-Policy", "no-referrer"},
      {"Cross-Origin-Opener-Policy", "same-origin"},
      {"Cross-Origin-Resource-Policy", "same-origin"},
  };
  return *h;
}

std::string DefaultWebDir() {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return "share/llmc/web";
  return (self.parent_path().parent_path() / "share" / "llmc" / "web").string();
}

std::string ConsoleContentType(absl::string_view name) {
  static const std::pair<const char*, const char*> kTypes[] = {
      {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"}, {".css", "text/css; charset=utf-8"},
      {".svg", "image/svg+xml"}, {".png", "image/png"}, {".ico", "image/x-icon"},
      {".json", "application/json"}, {".txt", "text/plain; charset=utf-8"},
  };
  for (const auto& [ext, type] : kTypes)
    if (absl::EndsWith(name, ext)) return type;
  return "";
}

absl::StatusOr<WebConsole> WebConsole::Open(const std::string& dir) {
  std::error_code ec;
  fs::path canon = fs::canonical(dir, ec);
  if (ec || !fs::is_directory(canon, ec))
    return absl::NotFoundError(absl::StrCat("web console folder ", dir, " does not exist; install llmc with its "
                                            "console (cmake --install) or pass --web-dir DIR (client/web)"));
  if (!fs::is_regular_file(canon / "index.html", ec))
    return absl::NotFoundError(absl::StrCat("web console folder ", dir, " has no index.html; pass --web-dir DIR ",
                                            "pointing at the console's files (client/web)"));
  return WebConsole(canon.string());
}

absl::StatusOr<WebConsole::File> WebConsole::Read(absl::string_view rel) const {
  if (rel.size() > 256) return absl::InvalidArgumentError("path: longer than 256 bytes");
  std::string path(rel);
  if (path.empty() || absl::EndsWith(path, "/")) path += "index.html";
  for (absl::string_view seg : absl::StrSplit(path, '/')) {
    if (seg.empty() || seg[0] == '.') return absl::InvalidArgumentError("path: empty or hidden segment");
    for (char ch : seg) {
      const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                      ch == '_' || ch == '-';
      if (!ok) return absl::InvalidArgumentError("path: characters other than A-Z a-z 0-9 . _ -");
    }
  }
  File f;
  f.content_type = ConsoleContentType(path);
  if (f.content_type.empty()) return absl::NotFoundError(absl::StrCat(path, ": not a served file type"));
  std::error_code ec;
  const fs::path target = fs::canonical(fs::path(dir_) / path, ec);  // follows every symlink
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  if (!absl::StartsWith(target.string(), dir_ + "/"))
    return absl::NotFoundError(absl::StrCat(path, ": outside the console folder"));
  if (!fs::is_regular_file(target, ec)) return absl::NotFoundError(absl::StrCat(path, ": not a file"));
  const auto size = fs::file_size(target, ec);
  if (ec || size > static_cast<uintmax_t>(kMaxConsoleFileBytes))
    return absl::NotFoundError(absl::StrCat(path, ": unreadable or larger than ", kMaxConsoleFileBytes, " bytes"));
  std::ifstream in(target, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  f.body = ss.str();
  return f;
}

}  // namespace llmc::server
