// Data-free compression of a Hugging Face model directory into a compressed-tensors checkpoint.
//
// The job streams tensor by tensor: the output layout (every tensor's name, dtype, shape and shard) is planned
// from the input headers before any weight is read, then worker threads quantize modules and write them with
// pwrite at their planned offsets. Peak memory is about one module's output per thread, independent of the
// model size. Output is written to a staging directory beside OUTPUT and renamed into place last, so a failed
// or interrupted job never leaves something that looks complete.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "engine/format/quant_config.h"

namespace llmc {

struct CompressProgress {
  uint64_t bytes_done = 0;   // input bytes processed
  uint64_t bytes_total = 0;  // input bytes in all
  int modules_done = 0;
  int modules_total = 0;
};

struct CompressOptions {
  std::string model_path;
  std::string output_path;
  uint64_t max_shard_size = 5'000'000'000ull;  // as Hugging Face's default "5GB"
  int threads = 0;                             // 0: one per core
  bool overwrite = false;
  // Modules are quantized in row pieces of about this many input bytes (bounds memory per thread). The output
  // does not depend on it.
  uint64_t piece_bytes = 8u << 20;
  // Called from the calling thread about every 100 ms while the job runs.
  std::function<void(const CompressProgress&)> on_progress;
  // Set to true (e.g. from a signal handler) to stop the job; it then fails with CANCELLED and cleans up.
  const std::atomic<bool>* cancel = nullptr;
};

struct ModuleSummary {
  std::string name;
  std::string group;   // config group, or "" if left unquantized
  std::string format;  // compression format or "dense"
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
};

struct CompressSummary {
  std::string model_path;
  std::string output_path;
  std::string scheme;  // preset name or "custom"
  uint64_t input_bytes = 0;   // tensor bytes read
  uint64_t output_bytes = 0;  // safetensors bytes written (headers included)
  double seconds = 0;
  int modules_quantized = 0;
  int modules_ignored = 0;
  int shards = 0;
  int threads = 0;
  uint64_t peak_rss_bytes = 0;
  std::vector<ModuleSummary> modules;
  nlohmann::json ToJson() const;
};

// Runs the job. Errors name the input and what to do; on error no OUTPUT is created (or the old one is kept).
absl::StatusOr<CompressSummary> RunCompress(const CompressOptions& options, const QuantConfig& config);

// The class name llmc gives a module whose weight tensor is `tensor_name` with `rank` dims: "Linear",
// "Embedding", or "" (not a quantizable module).
std::string ModuleClass(const std::string& tensor_name, size_t rank);

}  // namespace llmc
