// The one job path of llmc. `llmc compress` and the service's workers both run a job through RunJobToOutput,
// so a job submitted to the service produces the same bytes as the command line with the same arguments:
//
//   1. settle the recipe (engine/format/job_recipe.h): bad flags or recipes fail before any data is touched;
//   2. open the output (storage/job_storage.h): a local path or file:// is written by the engine itself
//      (staged beside it and renamed into place); s3:// is written to a scratch directory and published;
//   3. resolve the inputs: the model directory (s3:// models are downloaded into the cache) and, when the
//      recipe needs calibration, the dataset;
//   4. run the engine (engine/pipeline/run_job.h), finished shards uploading while it runs for s3:// outputs;
//   5. evaluate, when asked: perplexity of the model and of the result on a text (the `llmc eval` protocol),
//      written into the result's compression_report.json as "eval";
//   6. commit: the output becomes visible (for s3://, the manifest is written last).
//
// On any error or cancel nothing is left that looks like a complete output.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "engine/format/job_recipe.h"
#include "engine/pipeline/run_job.h"
#include "storage/job_storage.h"
#include "storage/path_confinement.h"

namespace llmc {

struct JobRequest {
  // model_path, output_path and dataset may be paths, file:// or s3:// URIs.
  JobSpec spec;
  // A text file (path or URI) to measure perplexity on before and after; "": no evaluation.
  std::string eval_text;
  int64_t eval_max_windows = 200;
  // Names the output's staging on object storage ("": generated).
  std::string job_id;
  // How inputs are fetched and the output published: cache and scratch directories, S3 endpoint and
  // credentials (defaults from the environment, docs/storage.md). overwrite comes from the spec, cancel from
  // JobControl, the job id from job_id.
  storage::ModelInputOptions input;
  storage::OutputTargetOptions output;
  // The service's allowed roots (not owned). When set, every local file the job reads or writes is opened
  // beneath them when the job starts and kept open (worker/job_paths.h): no symbolic link leads out of a root,
  // the service's data directory is never touched, and nothing swapped in after the job was accepted redirects it.
  // nullptr: the paths are used as given (llmc compress).
  const storage::PathConfinement* confinement = nullptr;
};

struct JobResult {
  CompressSummary summary;  // model_path and output_path as given in the request
  nlohmann::json report;    // summary.ToJson() plus "eval" when evaluated: what compression_report.json holds
};

// Runs the whole sequence above. With control.comm of several ranks, rank 0 runs it all; the other ranks only
// resolve the inputs and compute their share of the calibration (their result holds their report). `control.cancel` also stops downloads and uploads. Errors name the input and
// what to do (INVALID_ARGUMENT for the recipe, NOT_FOUND for a missing model or file, CANCELLED, ...).
absl::StatusOr<JobResult> RunJobToOutput(const JobRequest& request, const JobControl& control = {});

// Perplexity of a local model directory (original or compressed) on a text file: the `llmc eval` protocol on
// the CPU (the whole text tokenized without special tokens, non-overlapping windows of 512 tokens, the first
// `max_windows`). `perplexity` runs activations as the checkpoint's quantization_config says (Linear inputs/outputs
// and the kv cache fake-quantized, docs/formats.md); `perplexity_weights_only` runs them in fp32 with the same
// dequantized weights (a second pass, only when the checkpoint quantizes activations; else equal). Fails, naming
// the scheme, when the checkpoint quantizes activations in a way llmc cannot evaluate.
struct EvalFigures {
  double perplexity = 0;
  double perplexity_weights_only = 0;
  bool activations_quantized = false;  // whether the checkpoint quantizes some activations
};
absl::StatusOr<EvalFigures> EvalPerplexity(const std::string& model_dir, const std::string& text_path,
                                           int64_t max_windows, int threads);

}  // namespace llmc
