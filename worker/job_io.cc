#include "worker/job_io.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/io/model_dir.h"
#include "engine/model/causal_lm.h"
#include "engine/model/perplexity.h"
#include "engine/tokenizer/tokenizer.h"

namespace llmc {

absl::StatusOr<EvalFigures> EvalPerplexity(const std::string& model_dir, const std::string& text_path,
                                           int64_t max_windows, int threads) {
  CausalLmOptions lo;
  lo.threads = threads;
  LLMC_ASSIGN_OR_RETURN(auto lm, CausalLm::Open(model_dir, lo));
  LLMC_ASSIGN_OR_RETURN(auto tok, Tokenizer::FromModelDir(model_dir));
  LLMC_ASSIGN_OR_RETURN(std::string text, ReadTextFile(text_path, 1ull << 30));
  LLMC_ASSIGN_OR_RETURN(auto ids, tok->Encode(NormalizeNewlines(text), /*add_special_tokens=*/false));
  PerplexityOptions po;
  po.max_windows = max_windows;
  LLMC_ASSIGN_OR_RETURN(PerplexityResult r, ComputePerplexity(*lm, ids, po));
  EvalFigures f;
  f.perplexity = f.perplexity_weights_only = r.perplexity;
  f.activations_quantized = lm->quantizes_activations();
  if (f.activations_quantized) {
    LLMC_RETURN_IF_ERROR(lm->SetQuantizeActivations(false));
    LLMC_ASSIGN_OR_RETURN(PerplexityResult w, ComputePerplexity(*lm, ids, po));
    f.perplexity_weights_only = w.perplexity;
  }
  return f;
}

namespace {

// Ranks above 0 read the inputs, compute their share and write nothing (rank 0 opens, evaluates and commits the
// output).
absl::StatusOr<JobResult> RunFollowerRank(const JobRequest& request, const CompressionRecipe& recipe,
                                          const JobControl& control) {
  JobSpec spec = request.spec;
  if (!recipe.NeedsCalibration()) return JobResult{};  // data-free: rank 0 does it all
  storage::ModelInputOptions in = request.input;
  in.download.transfer.cancel = control.cancel;
  LLMC_ASSIGN_OR_RETURN(spec.model_path, storage::ResolveModelInput(request.spec.model_path, in));
  LLMC_ASSIGN_OR_RETURN(spec.dataset, storage::ResolveFileInput(request.spec.dataset, in));
  spec.output_path.clear();
  LLMC_ASSIGN_OR_RETURN(CompressSummary summary, RunJob(spec, control));
  JobResult result;
  result.report = summary.ToJson();
  summary.model_path = request.spec.model_path;
  result.summary = std::move(summary);
  return result;
}

}  // namespace

absl::StatusOr<JobResult> RunJobToOutput(const JobRequest& request, const JobControl& control) {
  JobSpec spec = request.spec;
  // 1. The recipe first, so bad flags fail before any model data is read.
  LLMC_ASSIGN_OR_RETURN(CompressionRecipe recipe, ResolveJobRecipe(spec));
  if (control.comm && control.comm->rank() > 0) return RunFollowerRank(request, recipe, control);

  // 2. The output: refusing an existing output is cheap, downloading the model is not.
  storage::OutputTargetOptions oo = request.output;
  oo.overwrite = spec.overwrite;
  oo.job_id = request.job_id;
  oo.transfer.cancel = control.cancel;
  LLMC_ASSIGN_OR_RETURN(std::unique_ptr<storage::OutputTarget> target,
                        storage::OutputTarget::Open(request.spec.output_path, oo));
  spec.output_path = target->local_dir();
  if (target->remote()) spec.overwrite = true;  // a fresh scratch directory; Open checked the remote output

  // 3. The inputs.
  storage::ModelInputOptions in = request.input;
  in.download.transfer.cancel = control.cancel;
  LLMC_ASSIGN_OR_RETURN(spec.model_path, storage::ResolveModelInput(request.spec.model_path, in));
  if (recipe.NeedsCalibration()) {
    LLMC_ASSIGN_OR_RETURN(spec.dataset, storage::ResolveFileInput(request.spec.dataset, in));
  } else {
    spec.dataset.clear();  // data-free: not read
  }

  // 4. Run.
  JobControl c = control;
  if (target->remote()) {
    storage::OutputTarget* t = target.get();
    c.on_file_complete = [t](const std::string& name, const std::string& path) { return t->FileComplete(name, path); };
  }
  LLMC_ASSIGN_OR_RETURN(CompressSummary summary, RunJob(spec, c));

  // 5. Evaluate.
  JobResult result;
  result.report = summary.ToJson();
  if (!request.eval_text.empty()) {
    LLMC_ASSIGN_OR_RETURN(std::string text, storage::ResolveFileInput(request.eval_text, in));
    LLMC_ASSIGN_OR_RETURN(EvalFigures before_f,
                          EvalPerplexity(spec.model_path, text, request.eval_max_windows, spec.threads));
    LLMC_ASSIGN_OR_RETURN(EvalFigures after,
                          EvalPerplexity(target->local_dir(), text, request.eval_max_windows, spec.threads));
    const double before = before_f.perplexity;
    // "after" runs activations as the checkpoint says; "after_weights_only" with fp32 activations.
    result.report["eval"] = {{"text", request.eval_text},
                             {"max_windows", request.eval_max_windows},
                             {"perplexity_before", before},
                             {"perplexity_after", after.perplexity},
                             {"perplexity_after_weights_only", after.perplexity_weights_only},
                             {"activations_quantized", after.activations_quantized},
                             {"recovery_percent", 100.0 * before / after.perplexity},
                             {"recovery_percent_weights_only", 100.0 * before / after.perplexity_weights_only}};
    // The checkpoint's report says what was measured.
    const std::string path = target->local_dir() + "/compression_report.json";
    std::ofstream rep(path, std::ios::trunc);
    rep << result.report.dump(2) << "\n";
    if (!rep.flush()) return absl::InternalError(absl::StrCat("cannot write ", path));
  }

  // 6. Commit.
  LLMC_RETURN_IF_ERROR(target->Commit());
  summary.model_path = request.spec.model_path;
  summary.output_path = request.spec.output_path;
  result.summary = std::move(summary);
  return result;
}

}  // namespace llmc
