// The API's llmc.v1.JobSpec and the engine's llmc::JobSpec (engine/format/job_recipe.h): one conversion used by
// the coordinator (to validate) and the worker (to run), so both read a spec the same way and a service job
// runs exactly what `llmc compress` with the same flags runs.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "engine/format/job_recipe.h"
#include "llmc/v1/compression.pb.h"

namespace llmc::rpc {

// The engine spec of `spec` with model_path/output_path/dataset set to the given local paths (the URIs as given
// when validating). Defaults as `llmc compress`: algorithm rtn, seed 42, 128 samples of 512 tokens, shards of
// 5GB. INVALID_ARGUMENT naming the field (e.g. spec.max_shard_size).
absl::StatusOr<llmc::JobSpec> ToEngineSpec(const v1::JobSpec& spec, const std::string& model_path,
                                           const std::string& output_path, const std::string& dataset_path);

bool IsTerminal(v1::JobState s);
const char* StateName(v1::JobState s);

}  // namespace llmc::rpc
