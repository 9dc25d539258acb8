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
#include "absl/types/span.h"
#include "engine/format/quant_config.h"
#include "engine/io/safetensors.h"
#include "engine/quant/weight_quantizer.h"

namespace llmc {

struct CompressProgress {
  uint64_t bytes_done = 0;   // input bytes processed
  uint64_t bytes_total = 0;  // input bytes in all
  int modules_done = 0;
  int modules_total = 0;
  int blocks_done = 0;   // decoder blocks finished by a calibrated solve
  int blocks_total = 0;  // 0 for data-free jobs
  std::string stage;     // what runs now ("quantize", "calibrate block 3", ...)
};

using EmitFn = std::function<absl::Status(const std::string& tensor_name, absl::Span<const uint8_t> bytes)>;

// What the job gives a LayerSolver to run with.
struct SolverIo {
  // Writes a tensor at its planned place; exactly once per tensor of the blocks the solver computes.
  EmitFn emit;
  // Reads back a tensor of a block finished before a resume (blocks < resume_from_block).
  std::function<absl::StatusOr<std::vector<uint8_t>>(const std::string& tensor_name)> read_back;
  // Called once every tensor of `layer` was emitted: makes them durable and reports the block finished.
  std::function<absl::Status(int layer)> block_done;
  std::function<void(const CompressProgress&)> progress;
  const std::atomic<bool>* cancel = nullptr;
  // Blocks [0, resume_from_block) are in the staging output already: the solver only recomputes their outputs
  // (from the stored tensors) to get the next block's inputs, and emits nothing for them.
  int resume_from_block = 0;
};

// Produces the tensors of the decoder layers (every tensor named `<LayersPrefix()>N...`) with a calibrated solve;
// the job plans the checkpoint, runs everything outside the layers itself, then hands the solver an emitter
// that writes each tensor at its planned place (see engine/pipeline/sequential.h).
class LayerSolver {
 public:
  virtual ~LayerSolver() = default;
  // The name prefix of the decoder layers the solver computes, "model.layers." by default; a vision-language
  // checkpoint's text decoder has its own ("model.language_model.layers.", engine/io/checkpoint_layout.h).
  virtual std::string LayersPrefix() const { return "model.layers."; }
  // Whether the solver produces this checkpoint tensor (instead of the job copying or quantizing it): by default
  // every tensor under LayersPrefix().
  virtual bool Owns(const std::string& tensor_name) const;
  // Tensors a quantized module writes beyond its weight format's (weight_g_idx, input_scale, ...), in order.
  virtual absl::StatusOr<std::vector<OutputTensor>> ExtraModuleTensors(const std::string& module, int group,
                                                                     int64_t rows, int64_t cols, DType dtype) const = 0;
  // Tensors that belong to no checkpoint tensor of the input (kv cache k_scale/v_scale).
  virtual std::vector<TensorSpec> ExtraTensors() const = 0;
  // Runs the solve, calling io.emit exactly once for every owned tensor, every module's outputs and extras, and
  // every ExtraTensors() entry of the blocks from io.resume_from_block on, and io.block_done after each block.
  // io.progress may be called from the calling thread at any time.
  virtual absl::Status Run(const SolverIo& io) = 0;
  // The solve's part of the report (per-module errors, per-block timings, ...).
  virtual nlohmann::json Report() const = 0;
};

struct CompressOptions {
  std::string model_path;
  std::string output_path;
  // How the report (compression_report.json) names the model and the output; "": model_path, output_path.
  std::string model_label, output_label;
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
  // When set, the decoder layers come from this solver (calibrated compression); else the job is data-free.
  LayerSolver* solver = nullptr;
  // Recipe text written as recipe.yaml (default: the QuantizationModifier form of the config).
  std::string recipe_yaml;
  // One-line description of the method ("GPTQ W4A16") for the summary and report.
  std::string method;
  // Resumable jobs: the staging directory to write into (default: a fresh one beside OUTPUT, named with the
  // process id). With resume_from_block > 0 and a solver, the shards there are reopened and blocks
  // [0, resume_from_block) are taken as written; the result is byte-identical to an uninterrupted run.
  std::string staging_dir;
  int resume_from_block = 0;
  // Leave the staging directory in place when the job fails or is cancelled (the caller resumes or removes it).
  bool keep_staging = false;
  // Called (from the calling thread) after every tensor of decoder block `layer` is durable on disk.
  std::function<void(int layer)> on_block_done;
  // Called once per output file as soon as it is complete and will not change: each shard when its last tensor
  // is written (it is then flushed and closed), then each file the job writes at the end (config.json,
  // recipe.yaml, compression_report.json, the index, copied tokenizer files), before the staging directory
  // becomes OUTPUT. `name` is relative to OUTPUT, `path` is in the staging directory. May be called from worker
  // threads concurrently; a non-OK status fails the job. (Object-storage outputs upload shards with it while
  // the job still runs.)
  std::function<absl::Status(const std::string& name, const std::string& path)> on_file_complete;
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
  int fused_experts_split = 0;  // fused 3-D experts tensors written as one quantized Linear per expert (Llama 4)
  int shards = 0;
  int threads = 0;
  uint64_t peak_rss_bytes = 0;
  std::vector<ModuleSummary> modules;
  std::string method;
  nlohmann::json solver_report;  // null for data-free jobs
  // What the job left as it was and a reader should know (fused 3-D experts kept unquantized by the ignore list).
  std::vector<std::string> warnings;
  nlohmann::json ToJson() const;
};

// Runs the job. Errors name the input and what to do; on error no OUTPUT is created (or the old one is kept).
absl::StatusOr<CompressSummary> RunCompress(const CompressOptions& options, const QuantConfig& config);

// The class name llmc gives a module whose weight tensor is `tensor_name` with `rank` dims: "Linear",
// "Embedding", or "" (not a quantizable module).
std::string ModuleClass(const std::string& tensor_name, size_t rank);

}  // namespace llmc
