// One compression job as the CLI (`llmc compress`) and the service's workers describe it, and the function
// that runs it: resolve the recipe, open the calibration pipeline when the recipe needs data, then stream the
// checkpoint out (engine/pipeline/compress_job.h). Both front ends call this, so a job submitted to the service
// produces the same bytes as `llmc compress` with the same arguments.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/format/algorithms.h"
#include "engine/pipeline/compress_job.h"

namespace llmc {

struct JobSpec {
  std::string model_path;   // local model directory
  std::string output_path;  // local output directory
  // Exactly one of: a preset scheme (with an algorithm), or recipe text.
  std::string scheme;
  std::string algorithm = "rtn";
  std::string recipe_yaml;
  std::string recipe_source = "recipe";  // names the recipe in errors (its file name)
  std::vector<std::string> ignore;       // presets: replaces the default [lm_head]; recipes: added to theirs
  bool ignore_given = false;
  std::string observer;  // weight observer override ("mse", "minmax"), or empty
  // Calibration (when the recipe needs it).
  std::string dataset;
  int num_samples = 0;  // 0: default (128)
  int seq_len = 0;      // 0: default (512)
  uint64_t seed = 42;
  uint64_t max_shard_size = 5'000'000'000ull;
  int threads = 0;
  std::string device = "cpu";
  bool overwrite = false;
};

struct JobControl {
  std::function<void(const CompressProgress&)> on_progress;
  const std::atomic<bool>* cancel = nullptr;
  std::function<void(const std::string&)> on_warning;  // data and solver warnings
  // Resumable runs (see CompressOptions).
  std::string staging_dir;
  int resume_from_block = 0;
  bool keep_staging = false;
  std::function<void(int block)> on_block_done;
  // See CompressOptions::on_file_complete (object-storage outputs upload finished files with it).
  std::function<absl::Status(const std::string& name, const std::string& path)> on_file_complete;
};

// Parses and checks the job's recipe (scheme/algorithm or recipe text, ignore, observer, GPTQ's actorder), and
// that calibration data is given when needed. Reads no model data: the service's Validate calls it.
absl::StatusOr<CompressionRecipe> ResolveJobRecipe(const JobSpec& spec);

// Runs the job. Errors name the input and what to do; on error no output directory is left behind.
absl::StatusOr<CompressSummary> RunJob(const JobSpec& spec, const JobControl& control = {});

}  // namespace llmc
