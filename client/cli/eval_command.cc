#include "client/cli/eval_command.h"

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <optional>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/cli_errors.h"
#include "common/util.h"
#include "engine/io/model_dir.h"
#include "engine/model/causal_lm.h"
#include "engine/model/perplexity.h"
#include "engine/tokenizer/tokenizer.h"
#ifdef LLMC_HAVE_CUDA
#include "engine/backend/cuda/rtn_kernels.h"
#include "engine/model/cuda_causal_lm.h"
#endif

namespace llmc::cli {

namespace {


// A local path from a path or file:// URI; object storage is not read by eval yet.
absl::StatusOr<std::string> LocalPath(const std::string& uri, absl::string_view what) {
  if (absl::StartsWith(uri, "file://")) return uri.substr(7);
  if (absl::StrContains(uri, "://"))
    return absl::UnimplementedError(absl::StrCat(what, " ", uri,
                                                 ": eval reads local paths and file:// URIs only; ",
                                                 "copy it to a local directory first"));
  return uri;
}

}  // namespace

int RunEvalCommand(const EvalArgs& a) {
#ifndef LLMC_HAVE_CUDA
  if (a.device == "cuda")
    return Fail(absl::UnimplementedError(
        "--device cuda: this llmc was built without the CUDA backend (nvcc was not found at build time); "
        "rebuild on a machine with the CUDA toolkit or use --device cpu"));
#endif
  if (a.device != "cpu" && a.device != "cuda")
    return Fail(absl::InvalidArgumentError(absl::StrCat("--device ", a.device, ": use cpu or cuda")));
  if (a.precision != "fp32" && a.precision != "tf32" && a.precision != "bf16")
    return Fail(absl::InvalidArgumentError(absl::StrCat("--precision ", a.precision.substr(0, 32),
                                                        ": use fp32, tf32 or bf16")));
  if (a.precision != "fp32" && a.device != "cuda")
    return Fail(absl::InvalidArgumentError(absl::StrCat("--precision ", a.precision,
                                                        ": the cpu computes in fp32; tf32 and bf16 need --device cuda")));
  if (a.seq_len < 2)
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--seq-len ", a.seq_len, ": a window must hold at least 2 tokens")));
  if (a.max_windows < 1)
    return Fail(
        absl::InvalidArgumentError(absl::StrCat("--max-windows ", a.max_windows, ": must be at least 1")));
  if (a.threads < 0)
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--threads ", a.threads, ": must be 0 (one per core) or more")));
  if (a.text.empty())
    return Fail(absl::InvalidArgumentError("--text FILE is required: the text to evaluate on"));
  if (a.activations != "both" && a.activations != "quantized" && a.activations != "weights-only")
    return Fail(absl::InvalidArgumentError(absl::StrCat("--activations ", a.activations,
                                                        ": use both, quantized or weights-only")));
  auto model_path = LocalPath(a.model, "MODEL");
  if (!model_path.ok()) return Fail(model_path.status());
  auto text_path = LocalPath(a.text, "--text");
  if (!text_path.ok()) return Fail(text_path.status());

  const double t0 = NowSeconds();
  CausalLmOptions lo;
  lo.threads = a.threads;
  lo.quantize_activations = a.activations != "weights-only";
  auto lm = CausalLm::Open(*model_path, lo);
  if (!lm.ok()) return Fail(lm.status());
  auto text = ReadTextFile(*text_path, uint64_t{1} << 30);
  if (!text.ok()) return Fail(text.status());
  auto tokenizer = Tokenizer::FromModelDir(*model_path);
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  const double t_tok = NowSeconds();
  auto ids = (*tokenizer)->Encode(NormalizeNewlines(*text), /*add_special_tokens=*/false);
  if (!ids.ok())
    return Fail(absl::Status(ids.status().code(), absl::StrCat(*text_path, ": ", ids.status().message())));
  const double tokenize_seconds = NowSeconds() - t_tok;
  if (static_cast<int64_t>(ids->size()) < a.seq_len)
    return Fail(absl::InvalidArgumentError(
        absl::StrCat(*text_path, ": ", ids->size(), " tokens, fewer than one window of --seq-len ", a.seq_len,
                     "; use a longer text or a smaller --seq-len")));

  PerplexityOptions po;
  po.seq_len = a.seq_len;
  po.max_windows = a.max_windows;
  const bool tty = !a.json && isatty(STDERR_FILENO);
  if (tty)
    po.on_progress = [](int64_t pass, int64_t passes, int64_t layer, int64_t layers) {
      std::fprintf(stderr, "\rllmc eval: pass %lld/%lld, block %lld/%lld ", static_cast<long long>(pass + 1),
                   static_cast<long long>(passes), static_cast<long long>(layer + 1),
                   static_cast<long long>(layers));
      std::fflush(stderr);
    };
  std::string gpu;
  auto run = [&]() -> absl::StatusOr<PerplexityResult> {
    if (a.device == "cuda") {
#ifdef LLMC_HAVE_CUDA
      CudaModelOptions co;  // fp32 GEMMs (no TF32) unless --precision says otherwise
      if (a.precision == "tf32") co.precision = cuda::GemmPrecision::kTf32;
      if (a.precision == "bf16") co.precision = cuda::GemmPrecision::kBf16;
      gpu = cuda::DeviceName();
      return ComputePerplexityCuda(**lm, *ids, po, co);
#endif
    }
    return ComputePerplexity(**lm, *ids, po);
  };
  // "quantized" when activations are fake-quantized as the checkpoint says, "weights-only" when the checkpoint
  // quantizes some but they ran in fp32, "none" when it quantizes none.
  const bool has_act = (*lm)->loader().quantizes_activations();
  const std::string activations = !has_act ? "none" : a.activations == "weights-only" ? "weights-only" : "quantized";
  absl::StatusOr<PerplexityResult> r = run();
  std::optional<PerplexityResult> weights_only;
  if (r.ok() && has_act && a.activations == "both") {
    if (auto s = (*lm)->SetQuantizeActivations(false); !s.ok()) return Fail(s);
    auto w = run();
    if (!w.ok()) return Fail(w.status());
    weights_only = std::move(*w);
  }
  if (tty) std::fprintf(stderr, "\r%60s\r", "");
  if (!r.ok()) return Fail(r.status());
  const double total_seconds = NowSeconds() - t0;
  const ModelSpec& spec = (*lm)->spec();
  const std::string storage = (*lm)->WeightStorage();
  // A vision-language checkpoint is evaluated on its text decoder: "Qwen2_5_VLForConditionalGeneration (text
  // decoder Qwen2ForCausalLM)".
  const std::string architecture =
      spec.layout.multimodal ? absl::StrCat(spec.layout.architecture, " (text decoder ", spec.arch->name, ")")
                             : std::string(spec.arch->name);

  if (a.json) {
    nlohmann::json j = {{"perplexity", r->perplexity},
                        {"activations", activations},
                        {"mean_nll", r->mean_nll},
                        {"tokens", r->tokens},
                        {"predicted_tokens", r->predicted_tokens},
                        {"windows", r->windows},
                        {"seq_len", a.seq_len},
                        {"max_windows", a.max_windows},
                        {"text_tokens", ids->size()},
                        {"seconds", r->seconds},
                        {"tokenize_seconds", tokenize_seconds},
                        {"total_seconds", total_seconds},
                        {"tokens_per_second", r->seconds > 0 ? r->tokens / r->seconds : 0.0},
                        {"model", a.model},
                        {"text", a.text},
                        {"architecture", spec.layout.multimodal ? spec.layout.architecture : spec.arch->name},
                        {"text_architecture", spec.arch->name},
                        {"weights", storage},
                        {"device", a.device},
                        {"precision", a.precision},
                        {"gpu", gpu},
                        {"threads", (*lm)->context()->threads()},
                        {"peak_rss_bytes", PeakRssBytes()}};
    // Beside `perplexity`: the same weights with fp32 activations (when the checkpoint quantizes some and both
    // figures were asked for; equal to `perplexity` when it quantizes none or with --activations weights-only).
    if (weights_only) {
      j["perplexity_weights_only"] = weights_only->perplexity;
      j["mean_nll_weights_only"] = weights_only->mean_nll;
      j["seconds_weights_only"] = weights_only->seconds;
    } else if (activations != "quantized") {
      j["perplexity_weights_only"] = r->perplexity;
    }
    std::cout << j.dump() << std::endl;
    return 0;
  }
  const std::string where = a.device == "cuda" ? absl::StrCat("on ", gpu)
                                               : absl::StrCat((*lm)->context()->threads(), " threads");
  if (weights_only)
    std::cout << absl::StrFormat("perplexity %.4f with activations quantized as the checkpoint says, %.4f weights "
                                 "only (fp32 activations)\n",
                                 r->perplexity, weights_only->perplexity);
  else if (activations == "weights-only")
    std::cout << "weights only: activations run in fp32 (the checkpoint quantizes them)\n";
  std::cout << absl::StrFormat(
      "perplexity %.4f on %s\n"
      "  windows     %d of %d tokens (%d tokens, %d predicted; the text has %d)\n"
      "  model       %s (%s, weights %s)\n"
      "  time        %.2f s evaluating (%.0f tokens/s, %s), %.2f s tokenizing, peak memory %s\n",
      r->perplexity, a.text, r->windows, a.seq_len, r->tokens, r->predicted_tokens, ids->size(), a.model,
      architecture, storage, r->seconds, r->seconds > 0 ? r->tokens / r->seconds : 0.0, where,
      tokenize_seconds, FormatBytes(PeakRssBytes()));
  return 0;
}

}  // namespace llmc::cli
