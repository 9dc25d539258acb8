// Helpers shared by the model runtime tests: where the fixtures are, JSON and random data.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace llmc::testing_util {

// ../shared: $LLMC_SHARED_DIR, else LLMC_SOURCE_DIR/../shared. Empty when absent.
inline std::string SharedDir() {
  if (const char* env = std::getenv("LLMC_SHARED_DIR"); env != nullptr && *env != '\0') return env;
  std::filesystem::path p = std::filesystem::path(LLMC_SOURCE_DIR) / ".." / "shared";
  std::error_code ec;
  return std::filesystem::is_directory(p, ec) ? p.lexically_normal().string() : std::string();
}

// The fixture model directory, or "" when ../shared does not have it.
inline std::string FixtureDir() {
  std::string shared = SharedDir();
  if (shared.empty()) return "";
  std::string dir = shared + "/models/llmc-fixture-llama";
  std::error_code ec;
  return std::filesystem::is_regular_file(dir + "/config.json", ec) ? dir : std::string();
}

// engine/model/testdata in the source tree (always present).
inline std::string TestDataDir() { return std::string(LLMC_SOURCE_DIR) + "/engine/model/testdata"; }

inline nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str(), nullptr, false);
}

inline std::vector<float> RandomVector(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

}  // namespace llmc::testing_util
