#include "engine/pipeline/run_job.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/util.h"
#include "engine/calib/sequential_solver.h"
#include "engine/io/model_dir.h"
#include "engine/model/moe.h"

namespace llmc {

namespace {

// A preset without --ignore leaves lm_head and, in mixture-of-experts models, the routers (mlp.gate,
// block_sparse_moe.gate, shared_expert_gate, mlp.router, feed_forward.router) unquantized, as llm-compressor's MoE
// examples do: the default ignore gains the router patterns when the model has one.
JobSpec WithDefaultIgnore(const JobSpec& spec) {
  if (spec.scheme.empty() || spec.ignore_given) return spec;
  auto dir = ModelDir::Open(spec.model_path);
  if (!dir.ok()) return spec;  // the job reports the model's error itself
  for (const auto& t : (*dir)->tensors()) {
    const std::string& n = t.info->name;
    if (t.info->shape.size() != 2 || n.size() < 7 || n.compare(n.size() - 7, 7, ".weight") != 0) continue;
    if (!IsMoeRouter(n.substr(0, n.size() - 7))) continue;
    JobSpec out = spec;
    out.ignore = {"lm_head"};
    for (const std::string& p : MoeRouterIgnorePatterns()) out.ignore.push_back(p);
    out.ignore_given = true;
    return out;
  }
  return spec;
}

// vLLM builds the routers of its MoE models unquantized, so a checkpoint with a quantized router does not load:
// a recipe (or --ignore) that leaves one targeted is refused, naming it.
absl::Status CheckRoutersIgnored(const JobSpec& spec, const QuantConfig& cfg) {
  if (cfg.groups().empty()) return absl::OkStatus();
  auto dir = ModelDir::Open(spec.model_path);
  if (!dir.ok()) return absl::OkStatus();
  for (const auto& t : (*dir)->tensors()) {
    const std::string& n = t.info->name;
    if (t.info->shape.size() != 2 || n.size() < 7 || n.compare(n.size() - 7, 7, ".weight") != 0) continue;
    const std::string module = n.substr(0, n.size() - 7);
    if (!IsMoeRouter(module) || cfg.Match(module, "Linear") < 0) continue;
    const std::string leaf = module.substr(module.rfind('.', module.rfind('.') - 1) + 1);
    return absl::InvalidArgumentError(absl::StrCat(
        module, ": a mixture-of-experts router is targeted for quantization, but vLLM loads routers unquantized ",
        "(llm-compressor's MoE examples ignore them); add 're:.*", leaf.substr(0, leaf.find('.')), "\\.",
        leaf.substr(leaf.find('.') + 1), "$' to ignore"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CompressSummary> RunJob(const JobSpec& spec, const JobControl& control) {
  const double t0 = NowSeconds();
  const JobSpec a = WithDefaultIgnore(spec);
  LLMC_ASSIGN_OR_RETURN(CompressionRecipe recipe, ResolveJobRecipe(a));
  QuantConfig empty;
  const QuantConfig& cfg = recipe.quant ? *recipe.quant : empty;
  LLMC_RETURN_IF_ERROR(CheckRoutersIgnored(a, cfg));
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
    so.calib_activations = a.calib_activations;
    if (!a.precision.empty() && a.precision != "fp32" && a.device != "cuda")
      return absl::InvalidArgumentError(absl::StrCat("precision ", a.precision, ": the ", a.device,
                                                     " computes in fp32; tf32 and bf16 apply to --device cuda"));
    if (!a.precision.empty()) so.gemm_precision = a.precision;
    so.moe_calibrate_all_experts = a.moe_calibrate_all_experts;
    so.comm = control.comm;
    LLMC_ASSIGN_OR_RETURN(solver, SequentialSolver::Create(so, recipe, cfg));
    if (control.on_warning)
      for (const auto& w : solver->warnings()) control.on_warning(w);
  }
  if (control.comm && control.comm->rank() > 0) {
    // A rank that computes and writes nothing: the solver's collectives with rank 0's.
    CompressSummary summary;
    summary.model_path = a.model_label.empty() ? a.model_path : a.model_label;
    summary.method = recipe.Describe();
    if (!solver) return summary;
    SolverIo io;
    io.emit = [](const std::string& name, absl::Span<const uint8_t>) {
      return absl::InternalError(absl::StrCat("rank > 0 emitted ", name));
    };
    io.progress = control.on_progress;
    io.cancel = control.cancel;
    io.resume_from_block = control.resume_from_block;
    absl::Status s = solver->Run(io);
    if (control.on_warning)
      for (const auto& w : solver->warnings()) control.on_warning(w);
    if (!s.ok()) {
      if (control.cancel && control.cancel->load()) return absl::CancelledError("compression cancelled");
      return s;
    }
    summary.solver_report = solver->Report();
    summary.seconds = NowSeconds() - t0;
    return summary;
  }
  CompressOptions opt;
  opt.model_path = a.model_path;
  opt.output_path = a.output_path;
  opt.model_label = a.model_label;
  opt.output_label = a.output_label;
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
  // A cancel may reach the ranks at different times: one that stopped first ends the others' collectives.
  if (!summary.ok() && control.cancel && control.cancel->load() && summary.status().code() != absl::StatusCode::kCancelled)
    summary = absl::CancelledError("compression cancelled; no output was written");
  // The job's time includes the calibration setup (model open, tokenization, embedding, device start).
  if (summary.ok()) summary->seconds = NowSeconds() - t0;
  if (solver && control.on_warning)
    for (size_t i = warned; i < solver->warnings().size(); ++i) control.on_warning(solver->warnings()[i]);
  if (summary.ok() && control.on_warning)
    for (const auto& w : summary->warnings) control.on_warning(w);
  return summary;
}

}  // namespace llmc
