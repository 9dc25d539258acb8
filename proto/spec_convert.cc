#include "proto/spec_convert.h"

#include "absl/strings/str_cat.h"
#include "common/util.h"

namespace llmc::rpc {

absl::StatusOr<llmc::JobSpec> ToEngineSpec(const v1::JobSpec& spec, const std::string& model_path,
                                           const std::string& output_path, const std::string& dataset_path) {
  llmc::JobSpec e;
  e.model_path = model_path;
  e.output_path = output_path;
  switch (spec.method_case()) {
    case v1::JobSpec::kPreset:
      e.scheme = spec.preset().scheme();
      e.algorithm = spec.preset().algorithm().empty() ? "rtn" : spec.preset().algorithm();
      if (e.scheme.empty())
        return absl::InvalidArgumentError("spec.preset.scheme: empty; name a scheme such as W4A16 (see `llmc schemes`)");
      break;
    case v1::JobSpec::kRecipeYaml:
      e.recipe_yaml = spec.recipe_yaml();
      e.recipe_source = "spec.recipe_yaml";
      if (e.recipe_yaml.empty())
        return absl::InvalidArgumentError("spec.recipe_yaml: empty; give an llm-compressor recipe or a preset");
      break;
    default:
      return absl::InvalidArgumentError(
          "spec: give exactly one of spec.preset (scheme and algorithm) or spec.recipe_yaml");
  }
  e.ignore.assign(spec.ignore().begin(), spec.ignore().end());
  e.ignore_given = spec.ignore_size() > 0;
  e.observer = spec.observer();
  e.calib_activations = spec.calibration_activations();
  e.precision = spec.precision();
  if (spec.has_moe_calibrate_all_experts()) e.moe_calibrate_all_experts = spec.moe_calibrate_all_experts().value();
  e.dataset = dataset_path;
  if (spec.calibration().num_samples() < 0 || spec.calibration().seq_len() < 0)
    return absl::InvalidArgumentError("spec.calibration: num_samples and seq_len must be positive (0: default)");
  e.num_samples = spec.calibration().num_samples();
  e.seq_len = spec.calibration().seq_len();
  e.seed = spec.calibration().seed() == 0 ? 42 : spec.calibration().seed();
  if (!spec.max_shard_size().empty()) {
    auto n = ParseByteSize(spec.max_shard_size());
    if (!n.ok() || *n == 0)
      return absl::InvalidArgumentError(absl::StrCat("spec.max_shard_size '", spec.max_shard_size(),
                                                     "': give a positive size such as 5GB or 500MB"));
    e.max_shard_size = *n;
  }
  return e;
}

bool IsTerminal(v1::JobState s) { return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED; }

const char* StateName(v1::JobState s) {
  switch (s) {
    case v1::QUEUED: return "QUEUED";
    case v1::RUNNING: return "RUNNING";
    case v1::SUCCEEDED: return "SUCCEEDED";
    case v1::FAILED: return "FAILED";
    case v1::CANCELLED: return "CANCELLED";
    case v1::RETRYING: return "RETRYING";
    default: return "UNSPECIFIED";
  }
}

}  // namespace llmc::rpc
