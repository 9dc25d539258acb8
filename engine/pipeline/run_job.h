// The engine's entry point for one job whose model, dataset and output are local paths: settle the recipe
// (engine/format/job_recipe.h), open the calibration pipeline when the recipe needs data, then stream the
// checkpoint out (engine/pipeline/compress_job.h). The job path (worker/job_io.h) calls it for both `llmc
// compress` and the service's workers, so a service job produces the same bytes as the command line.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/dist/communicator.h"
#include "engine/format/job_recipe.h"
#include "engine/pipeline/compress_job.h"

namespace llmc {

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
  // The ranks sharing the job's calibration (docs/distributed.md); null: this process alone. Every rank runs
  // RunJob with the same spec. Rank 0 writes the output as a single rank would (output_path, staging, resume,
  // on_block_done and on_file_complete are its); the others calibrate their slice of the samples, solve the
  // modules they own and write nothing. A job without calibration (data-free) runs on rank 0 only: the other
  // ranks return at once.
  Communicator* comm = nullptr;
};

// Runs the job (the spec's paths are local). Errors name the input and what to do; on error no output directory
// is left behind. On ranks other than 0 the summary holds the solver's report only.
absl::StatusOr<CompressSummary> RunJob(const JobSpec& spec, const JobControl& control = {});

}  // namespace llmc
