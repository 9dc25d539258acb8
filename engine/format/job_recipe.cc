#include "engine/format/job_recipe.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/format/actorder.h"
#include "engine/format/recipe_support.h"

namespace llmc {

absl::Status ResolveRecipe(CompressionRecipe* recipe) {
  if (!recipe->gptq || !recipe->quant) return absl::OkStatus();
  QuantConfig& cfg = *recipe->quant;
  std::vector<std::pair<std::string, QuantScheme>> groups;
  for (const auto& g : cfg.groups()) {
    QuantScheme s = g.scheme;
    if (s.weights) {
      LLMC_ASSIGN_OR_RETURN(ResolvedActOrder ro, ResolveActOrder(g.name, recipe->gptq->actorder, *s.weights));
      s.weights->actorder = ro.config_value;
    }
    groups.emplace_back(g.name, std::move(s));
  }
  LLMC_ASSIGN_OR_RETURN(QuantConfig next, QuantConfig::Create(std::move(groups), cfg.ignore()));
  next.preset_name = cfg.preset_name;
  next.kv_cache_scheme = cfg.kv_cache_scheme;
  cfg = std::move(next);
  return absl::OkStatus();
}

absl::StatusOr<CompressionRecipe> ResolveJobRecipe(const JobSpec& a) {
  if (a.device != "cpu" && a.device != "cuda")
    return absl::InvalidArgumentError(absl::StrCat("device '", a.device, "': use cpu or cuda"));
  if (a.scheme.empty() == a.recipe_yaml.empty())
    return absl::InvalidArgumentError("give exactly one of a scheme or a recipe (see `llmc schemes`)");
  absl::StatusOr<CompressionRecipe> recipe;
  if (!a.scheme.empty()) {
    std::vector<std::string> ignore = a.ignore_given ? a.ignore : std::vector<std::string>{"lm_head"};
    recipe = PresetRecipe(a.scheme, a.algorithm, {"Linear"}, ignore);
  } else {
    if (!a.algorithm.empty() && absl::AsciiStrToLower(a.algorithm) != "rtn")
      return absl::InvalidArgumentError("--algorithm goes with --scheme; a --recipe names its modifiers itself");
    recipe = ParseCompressionRecipe(a.recipe_yaml, a.recipe_source);
  }
  if (!recipe.ok()) return recipe.status();
  if (recipe->quant) {
    QuantConfig& cfg = *recipe->quant;
    std::vector<std::string> ignore = cfg.ignore();
    if (a.ignore_given && a.scheme.empty()) ignore.insert(ignore.end(), a.ignore.begin(), a.ignore.end());
    std::vector<std::pair<std::string, QuantScheme>> groups;
    for (const auto& g : cfg.groups()) {
      QuantScheme s = g.scheme;
      if (s.weights && !a.observer.empty()) {
        s.weights->observer = a.observer;
        LLMC_RETURN_IF_ERROR(ResolveRecipeArgs(&*s.weights, QuantRole::kWeights,
                                               absl::StrCat("--observer ", a.observer, ": ", g.name, ".weights")));
      }
      groups.emplace_back(g.name, s);
    }
    LLMC_ASSIGN_OR_RETURN(QuantConfig next, QuantConfig::Create(groups, ignore));
    next.preset_name = cfg.preset_name;
    next.kv_cache_scheme = cfg.kv_cache_scheme;
    cfg = std::move(next);
  }
  LLMC_RETURN_IF_ERROR(ResolveRecipe(&*recipe));
  if (recipe->NeedsCalibration() && a.dataset.empty())
    return absl::InvalidArgumentError(absl::StrCat(recipe->Describe(), " needs calibration data: pass --dataset FILE ",
                                                   "(plain text or JSONL; see docs/data.md)"));
  if (a.moe_calibrate_all_experts && !recipe->NeedsCalibration())
    return absl::InvalidArgumentError(absl::StrCat(
        "moe_calibrate_all_experts applies to calibrated algorithms (GPTQ, SparseGPT, Wanda, static activation ",
        "scales); ", recipe->Describe(), " runs no calibration: leave the option out"));
  if (!a.calib_activations.empty()) {
    if (a.calib_activations != "fp32" && a.calib_activations != "bf16" && a.calib_activations != "host")
      return absl::InvalidArgumentError(absl::StrCat("calibration activations '", a.calib_activations.substr(0, 32),
                                                     "': use fp32, bf16 or host"));
    if (!recipe->NeedsCalibration() && a.calib_activations != "fp32")
      return absl::InvalidArgumentError(absl::StrCat("calibration activations ", a.calib_activations, ": ",
                                                     recipe->Describe(), " runs no calibration; leave the option out"));
  }
  if (!a.precision.empty()) {
    if (a.precision != "fp32" && a.precision != "tf32" && a.precision != "bf16")
      return absl::InvalidArgumentError(
          absl::StrCat("precision '", a.precision.substr(0, 32), "': use fp32, tf32 or bf16"));
    if (!recipe->NeedsCalibration() && a.precision != "fp32")
      return absl::InvalidArgumentError(absl::StrCat("precision ", a.precision, ": ", recipe->Describe(),
                                                     " runs no calibration (data-free jobs compute in fp32 on the ",
                                                     "CPU); leave the option out"));
  }
  if (a.num_samples < 0 || a.seq_len < 0)
    return absl::InvalidArgumentError("--num-samples and --seq-len must be positive");
  if (a.max_shard_size == 0) return absl::InvalidArgumentError("--max-shard-size must be positive");
  return recipe;
}

}  // namespace llmc
