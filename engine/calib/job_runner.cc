#include "engine/calib/job_runner.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/util.h"
#include "engine/calib/sequential_solver.h"

namespace llmc {

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
      if (s.weights && !a.observer.empty()) s.weights->observer = a.observer;
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
  if (a.num_samples < 0 || a.seq_len < 0)
    return absl::InvalidArgumentError("--num-samples and --seq-len must be positive");
  if (a.max_shard_size == 0) return absl::InvalidArgumentError("--max-shard-size must be positive");
  return recipe;
}

absl::StatusOr<CompressSummary> RunJob(const JobSpec& a, const JobControl& control) {
  const double t0 = NowSeconds();
  LLMC_ASSIGN_OR_RETURN(CompressionRecipe recipe, ResolveJobRecipe(a));
  QuantConfig empty;
  const QuantConfig& cfg = recipe.quant ? *recipe.quant : empty;
  std::unique_ptr<SequentialSolver> solver;
  if (recipe.NeedsCalibration()) {
    SequentialOptions so;
    so.model_path = a.model_path;
    so.dataset = a.dataset;
    if (a.num_samples > 0) so.calibration.num_samples = a.num_samples;
    if (a.seq_len > 0) so.calibration.seq_len = a.seq_len;
    so.calibration.seed = a.seed;
    so.threads = a.threads;
    so.device = a.device;
    LLMC_ASSIGN_OR_RETURN(solver, SequentialSolver::Create(so, recipe, cfg));
    if (control.on_warning)
      for (const auto& w : solver->warnings()) control.on_warning(w);
  }
  CompressOptions opt;
  opt.model_path = a.model_path;
  opt.output_path = a.output_path;
  opt.max_shard_size = a.max_shard_size;
  opt.threads = a.threads;
  opt.overwrite = a.overwrite;
  opt.cancel = control.cancel;
  opt.on_progress = control.on_progress;
  opt.solver = solver.get();
  opt.recipe_yaml = recipe.yaml;
  opt.method = recipe.Describe();
  opt.staging_dir = control.staging_dir;
  opt.resume_from_block = control.resume_from_block;
  opt.on_block_done = control.on_block_done;
  opt.keep_staging = control.keep_staging;
  opt.on_file_complete = control.on_file_complete;
  size_t warned = solver ? solver->warnings().size() : 0;
  auto summary = RunCompress(opt, cfg);
  // The job's time includes the calibration setup (model open, tokenization, embedding, device start).
  if (summary.ok()) summary->seconds = NowSeconds() - t0;
  if (solver && control.on_warning)
    for (size_t i = warned; i < solver->warnings().size(); ++i) control.on_warning(solver->warnings()[i]);
  return summary;
}

}  // namespace llmc
