// Locations of shared fixtures for tests. ../shared sits beside the checkout (CI has it); tests that need it
// skip visibly when it is absent.
#pragma once

#include <filesystem>
#include <string>

#include "tests/support/temp_dir.h"

namespace llmc::testing {

inline std::string SharedDir() {
  if (const char* env = std::getenv("LLMC_SHARED_DIR")) return env;
  return (std::filesystem::path(LLMC_SOURCE_DIR) / ".." / "shared").lexically_normal().string();
}
inline bool HaveShared(const std::string& rel) { return std::filesystem::exists(std::filesystem::path(SharedDir()) / rel); }
inline std::string Shared(const std::string& rel) { return (std::filesystem::path(SharedDir()) / rel).string(); }


}  // namespace llmc::testing
