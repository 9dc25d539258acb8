// Locations of shared fixtures for tests. ../shared sits beside the checkout (CI has it); tests that need it
// skip visibly when it is absent.
#pragma once

#include <filesystem>
#include <string>

namespace llmc::testing {

inline std::string SharedDir() {
  if (const char* env = std::getenv("LLMC_SHARED_DIR")) return env;
  return (std::filesystem::path(LLMC_SOURCE_DIR) / ".." / "shared").lexically_normal().string();
}
inline bool HaveShared(const std::string& rel) { return std::filesystem::exists(std::filesystem::path(SharedDir()) / rel); }
inline std::string Shared(const std::string& rel) { return (std::filesystem::path(SharedDir()) / rel).string(); }

// A fresh temporary directory removed at destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "llmc-test-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return (std::filesystem::path(path_) / rel).string(); }

 private:
  std::string path_;
};

}  // namespace llmc::testing
