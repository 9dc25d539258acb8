// One compression job as `llmc compress` and the service describe it (JobSpec), and the pure part of running it:
// settling its recipe. No model data, no BLAS, no CUDA: the coordinator validates jobs with this, the job path
// (worker/job_io.h) runs them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/format/algorithms.h"

namespace llmc {

struct JobSpec {
  std::string model_path;   // the model: a local directory (the job path also takes file:// and s3:// URIs)
  std::string output_path;  // the output: a local directory (the job path also takes file:// and s3:// URIs)
  // Exactly one of: a preset scheme (with an algorithm), or recipe text.
  std::string scheme;
  std::string algorithm = "rtn";
  std::string recipe_yaml;
  std::string recipe_source = "recipe";  // names the recipe in errors (its file name)
  std::vector<std::string> ignore;       // presets: replaces the default [lm_head]; recipes: added to theirs
  bool ignore_given = false;
  std::string observer;  // weight observer override ("mse", "minmax"), or empty
  // Calibration (when the recipe needs it).
  std::string dataset;  // a file (the job path also takes file:// and s3:// URIs)
  int num_samples = 0;  // 0: default (128)
  int seq_len = 0;      // 0: default (512)
  uint64_t seed = 42;
  uint64_t max_shard_size = 5'000'000'000ull;
  int threads = 0;
  std::string device = "cpu";
  // --device cuda: where the calibration activations stay between blocks: fp32 (device, the default), bf16
  // (device, half the memory) or host (bf16 in pinned host memory, streamed through the GPU); "" is fp32.
  std::string calib_activations;
  // --device cuda: the arithmetic of the calibration forward passes and Hessians: "fp32" (exact, IEEE fp32 GEMMs),
  // "tf32" (the default: TF32 tensor cores, fp32 activations) or "bf16" (bf16 GEMM inputs and Hessian products
  // with fp32 accumulation); "" is the default. The CPU runs fp32 only.
  std::string precision;
  bool overwrite = false;
  // Mixture-of-experts models, calibrated algorithms: every token passes through every expert for the statistics
  // (the routed top-k output still propagates), as llm-compressor's moe_calibrate_all_experts. Unset: on for MoE
  // models. Setting it for a data-free job is an error (no calibration runs); for a dense model, the solver's.
  std::optional<bool> moe_calibrate_all_experts;
  // How the report names the model and the output ("": model_path, output_path): the job path gives the
  // locations as the user wrote them when the engine reads and writes through other paths.
  std::string model_label, output_label;
};

// Settles what the recipe leaves to the algorithms before a run, so the checkpoint's quantization_config says
// what ran: GPTQ's actorder resolved against each scheme (GPTQModifier.resolve_quantization_config). Call it once
// on a parsed recipe before creating the solver (ResolveJobRecipe does).
absl::Status ResolveRecipe(CompressionRecipe* recipe);

// Parses and checks the job's recipe (scheme/algorithm or recipe text, ignore, observer, GPTQ's actorder), and
// that calibration data is given when needed. Reads no model data: the coordinator's Validate calls it.
absl::StatusOr<CompressionRecipe> ResolveJobRecipe(const JobSpec& spec);

}  // namespace llmc
