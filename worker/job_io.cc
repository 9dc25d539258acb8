#include "worker/job_io.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/io/model_dir.h"
#include "engine/model/causal_lm.h"
#include "engine/model/perplexity.h"
#include "engine/tokenizer/tokenizer.h"
#include "storage/storage_uri.h"
#include "worker/job_paths.h"

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

// The local path of a location given as a path or file:// URI; "" for s3:// (and anything not local).
std::string LocalPath(const std::string& uri) {
  auto u = storage::ParseStorageUri(uri);
  return u.ok() && u->is_file() ? u->path : "";
}

absl::StatusOr<std::string> ResolveModel(const std::string& model, const storage::ModelInputOptions& in,
                                         JobPaths* paths) {
  const std::string local = LocalPath(model);
  if (paths && !local.empty()) return paths->PinModelDir("model_uri", local);
  return storage::ResolveModelInput(model, in);
}

absl::StatusOr<std::string> ResolveFile(const std::string& what, const std::string& uri, const std::string& name,
                                        const storage::ModelInputOptions& in, JobPaths* paths) {
  const std::string local = LocalPath(uri);
  if (paths && !local.empty()) return paths->PinFile(what, local, name);
  return storage::ResolveFileInput(uri, in);
}

// Ranks above 0 read the inputs, compute their share and write nothing (rank 0 opens, evaluates and commits the
// output).
absl::StatusOr<JobResult> RunFollowerRank(const JobRequest& request, const CompressionRecipe& recipe,
                                          const JobControl& control, JobPaths* paths) {
  JobSpec spec = request.spec;
  if (!recipe.NeedsCalibration()) return JobResult{};  // data-free: rank 0 does it all
  storage::ModelInputOptions in = request.input;
  in.download.transfer.cancel = control.cancel;
  LLMC_ASSIGN_OR_RETURN(spec.model_path, ResolveModel(request.spec.model_path, in, paths));
  LLMC_ASSIGN_OR_RETURN(spec.dataset, ResolveFile("calibration.dataset_uri", request.spec.dataset, "dataset", in, paths));
  spec.model_label = request.spec.model_path;
  spec.output_path.clear();
  LLMC_ASSIGN_OR_RETURN(CompressSummary summary, RunJob(spec, control));
  JobResult result;
  result.report = summary.ToJson();
  summary.model_path = request.spec.model_path;
  result.summary = std::move(summary);
  return result;
}

absl::StatusOr<JobResult> RunLeader(const JobRequest& request, const CompressionRecipe& recipe,
                                    const JobControl& control, JobPaths* paths) {
  JobSpec spec = request.spec;
  JobControl c = control;
  // 2. The output: refusing an existing output is cheap, downloading the model is not.
  storage::OutputTargetOptions oo = request.output;
  oo.overwrite = spec.overwrite;
  oo.job_id = request.job_id;
  oo.transfer.cancel = control.cancel;
  std::string output = request.spec.output_path;
  const std::string local_out = LocalPath(output);
  if (paths && !local_out.empty()) {
    const std::string local_model = LocalPath(request.spec.model_path);
    if (!local_model.empty()) {
      // The engine sees the output and the model through different paths: compare the locations as given.
      const std::filesystem::path m = std::filesystem::path(local_model).lexically_normal();
      const std::filesystem::path o = std::filesystem::path(local_out).lexically_normal();
      auto rel = o.lexically_relative(m);
      if (!rel.empty() && *rel.begin() != "..")
        return absl::InvalidArgumentError(absl::StrCat(request.spec.output_path, ": output ",
                                                       rel == "." ? "is the model directory itself"
                                                                  : "lies inside the model directory",
                                                       "; choose another OUTPUT"));
    }
    LLMC_ASSIGN_OR_RETURN(output, paths->PinOutput("output_uri", local_out, &c.staging_dir));
  }
  LLMC_ASSIGN_OR_RETURN(std::unique_ptr<storage::OutputTarget> target, storage::OutputTarget::Open(output, oo));
  spec.output_path = target->local_dir();
  if (target->remote()) spec.overwrite = true;  // a fresh scratch directory; Open checked the remote output

  // 3. The inputs.
  storage::ModelInputOptions in = request.input;
  in.download.transfer.cancel = control.cancel;
  LLMC_ASSIGN_OR_RETURN(spec.model_path, ResolveModel(request.spec.model_path, in, paths));
  if (recipe.NeedsCalibration()) {
    LLMC_ASSIGN_OR_RETURN(spec.dataset, ResolveFile("calibration.dataset_uri", request.spec.dataset, "dataset", in, paths));
  } else {
    spec.dataset.clear();  // data-free: not read
  }
  if (paths) {
    spec.model_label = request.spec.model_path;
    spec.output_label = request.spec.output_path;
  }

  // 4. Run.
  if (target->remote()) {
    storage::OutputTarget* t = target.get();
    c.on_file_complete = [t](const std::string& name, const std::string& path) { return t->FileComplete(name, path); };
  }
  LLMC_ASSIGN_OR_RETURN(CompressSummary summary, RunJob(spec, c));

  // 5. Evaluate.
  JobResult result;
  result.report = summary.ToJson();
  if (!request.eval_text.empty()) {
    LLMC_ASSIGN_OR_RETURN(std::string text, ResolveFile("eval_text_uri", request.eval_text, "eval_text", in, paths));
    LLMC_ASSIGN_OR_RETURN(EvalFigures before_f,
                          EvalPerplexity(spec.model_path, text, request.eval_max_windows, spec.threads));
    // The output is read back through the files just written, opened inside the pinned parent (a confined job),
    // not by its path: a link swapped in after the engine wrote it leads nowhere.
    std::string written = target->local_dir();
    if (paths && !target->remote()) {
      LLMC_ASSIGN_OR_RETURN(written, paths->PinWrittenOutput());
    }
    LLMC_ASSIGN_OR_RETURN(EvalFigures after,
                          EvalPerplexity(written, text, request.eval_max_windows, spec.threads));
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
    const std::string content = result.report.dump(2) + "\n";
    if (paths && !target->remote()) {
      LLMC_RETURN_IF_ERROR(paths->WriteOutputFile("compression_report.json", content));
    } else {
      const std::string path = target->local_dir() + "/compression_report.json";
      std::ofstream rep(path, std::ios::trunc);
      rep << content;
      if (!rep.flush()) return absl::InternalError(absl::StrCat("cannot write ", path));
    }
  }

  // 6. Commit.
  LLMC_RETURN_IF_ERROR(target->Commit());
  summary.model_path = request.spec.model_path;
  summary.output_path = request.spec.output_path;
  result.summary = std::move(summary);
  return result;
}

}  // namespace

absl::StatusOr<JobResult> RunJobToOutput(const JobRequest& request, const JobControl& control) {
  // 1. The recipe first, so bad flags fail before any data is touched.
  LLMC_ASSIGN_OR_RETURN(CompressionRecipe recipe, ResolveJobRecipe(request.spec));
  std::unique_ptr<JobPaths> paths;
  if (request.confinement) {
    const std::string scratch = request.output.scratch_dir.empty()
                                    ? storage::DefaultCacheDir() + "/work"
                                    : request.output.scratch_dir;
    const std::string id = request.job_id.empty() ? std::to_string(getpid()) : request.job_id;
    const int rank = control.comm ? control.comm->rank() : 0;
    LLMC_ASSIGN_OR_RETURN(paths, JobPaths::Create(request.confinement,
                                                  absl::StrCat(scratch, "/", id, ".rank", rank, ".paths")));
  }
  absl::StatusOr<JobResult> r = control.comm && control.comm->rank() > 0
                                    ? RunFollowerRank(request, recipe, control, paths.get())
                                    : RunLeader(request, recipe, control, paths.get());
  if (!r.ok() && paths) return paths->Restore(r.status());
  return r;
}

}  // namespace llmc
