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

// A copy of tiny-llama4text, in a new temporary directory the caller removes, with what its parity model does not
// exercise: layer 1 a no-rope layer (query temperature tuning, floor_scale 2, attn_scale 0.5) and attention in
// chunks of `chunk` tokens on every layer. Empty on failure.
inline std::string WriteLlama4Variant(int64_t chunk) {
  namespace fs = std::filesystem;
  std::string dir = (fs::temp_directory_path() / "llmc-llama4-variant-XXXXXX").string();
  if (mkdtemp(dir.data()) == nullptr) return "";
  nlohmann::json cfg = ReadJson(TestDataDir() + "/tiny-llama4text/config.json");
  cfg["no_rope_layers"] = {1, 0};
  cfg["attention_chunk_size"] = chunk;
  cfg["attn_temperature_tuning"] = true;
  cfg["floor_scale"] = 2;
  cfg["attn_scale"] = 0.5;
  std::ofstream(dir + "/config.json") << cfg.dump();
  std::error_code ec;
  fs::copy_file(TestDataDir() + "/tiny-llama4text/model.safetensors", dir + "/model.safetensors", ec);
  return ec ? "" : dir;
}

}  // namespace llmc::testing_util
