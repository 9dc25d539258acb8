// Comparing two compressed checkpoints of one model in tests: how many quantized codes agree, their perplexity
// through `llmc eval`, and every file but the report byte for byte.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/io/safetensors.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_paths.h"

namespace llmc::testing {

// The fraction of quantized weight codes (4-bit nibbles of weight_packed, bytes of int8/fp8 weights) of the
// decoder layers that are identical in two checkpoints of the same layout.
inline double SameCodes(const std::string& a, const std::string& b) {
  auto fa = SafetensorsFile::Open(a + "/model.safetensors");
  auto fb = SafetensorsFile::Open(b + "/model.safetensors");
  EXPECT_TRUE(fa.ok() && fb.ok());
  if (!fa.ok() || !fb.ok()) return 0;
  uint64_t same = 0, total = 0;
  for (const TensorInfo& t : (*fa)->tensors()) {
    if (t.name.rfind("model.layers.", 0) != 0) continue;
    const TensorInfo* u = (*fb)->Find(t.name);
    EXPECT_NE(u, nullptr) << t.name;
    if (!u || u->nbytes() != t.nbytes()) return 0;
    const bool packed = t.name.size() > 13 && t.name.substr(t.name.size() - 13) == "weight_packed";
    const bool bytes = t.dtype == DType::kI8 || t.dtype == DType::kF8E4M3;
    if (!packed && !(bytes && t.name.substr(t.name.size() - 7) == ".weight")) continue;
    auto x = (*fa)->Data(t), y = (*fb)->Data(*u);
    for (size_t i = 0; i < x.size(); ++i) {
      if (packed) {
        same += ((x[i] & 15) == (y[i] & 15)) + ((x[i] >> 4) == (y[i] >> 4));
        total += 2;
      } else {
        same += x[i] == y[i];
        ++total;
      }
    }
  }
  EXPECT_GT(total, 0u);
  return total ? static_cast<double>(same) / total : 0;
}

// Perplexity of `model` on the first 20 windows of ../shared/data/eval.txt through `llmc eval` (`llmc` is the
// binary), on `device`; 0 on failure (with a test failure).
inline double Perplexity(const std::string& llmc, const std::string& model, const std::string& device) {
  std::string out;
  EXPECT_EQ(RunCapture({llmc, "eval", model, "--text", Shared("data/eval.txt"), "--max-windows", "20", "--device", device,
                        "--json"},
                       &out),
            0);
  auto j = nlohmann::json::parse(out, nullptr, false);
  return j.is_object() ? j.value("perplexity", 0.0) : 0.0;
}

// Every file of checkpoint `a` but the report (which holds timings) equals the one in `b`, byte for byte.
inline void ExpectSameFiles(const std::string& a, const std::string& b) {
  for (const auto& e : std::filesystem::directory_iterator(a)) {
    const std::string name = e.path().filename().string();
    if (name == "compression_report.json") continue;
    EXPECT_EQ(ReadAll(e.path().string()), ReadAll((std::filesystem::path(b) / name).string())) << name;
  }
}

}  // namespace llmc::testing
