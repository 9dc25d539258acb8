#include "client/cli/compress_command.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/cli_errors.h"
#include "common/util.h"
#include "engine/calib/sequential_solver.h"
#include "engine/format/algorithms.h"
#include "engine/format/recipe.h"
#include "engine/model/causal_lm.h"
#include "engine/model/perplexity.h"
#include "engine/tokenizer/tokenizer.h"
#include "common/status_macros.h"
#include "engine/io/model_dir.h"
#include "engine/pipeline/compress_job.h"
#include "engine/pipeline/inspect.h"

namespace llmc::cli {

namespace {

std::atomic<bool> g_cancel{false};
void OnSignal(int) { g_cancel = true; }


void DrawProgress(const CompressProgress& p, double t0) {
  double frac = p.bytes_total ? static_cast<double>(p.bytes_done) / p.bytes_total : 0.0;
  const int width = 30;
  int filled = static_cast<int>(frac * width);
  std::string bar(filled, '#');
  bar.append(width - filled, '.');
  double secs = NowSeconds() - t0;
  double rate = secs > 0 ? p.bytes_done / 1e6 / secs : 0;
  if (p.blocks_total > 0) {
    frac = static_cast<double>(p.blocks_done) / p.blocks_total;
    filled = static_cast<int>(frac * width);
    bar.assign(filled, '#');
    bar.append(width - filled, '.');
    std::fprintf(stderr, "\r[%s] %5.1f%%  %-28s %d/%d modules  %.0f s ", bar.c_str(), frac * 100, p.stage.c_str(),
                 p.modules_done, p.modules_total, secs);
  } else {
    std::fprintf(stderr, "\r[%s] %5.1f%%  %d/%d modules  %s/%s  %.0f MB/s ", bar.c_str(), frac * 100, p.modules_done,
                 p.modules_total, FormatBytes(p.bytes_done).c_str(), FormatBytes(p.bytes_total).c_str(), rate);
  }
  std::fflush(stderr);
}

}  // namespace

namespace {

// Perplexity of a model directory on a text file (the `llmc eval` protocol, CPU).
absl::StatusOr<double> EvalPerplexity(const std::string& model, const std::string& text_path, int64_t max_windows,
                                      int threads) {
  CausalLmOptions lo;
  lo.threads = threads;
  LLMC_ASSIGN_OR_RETURN(auto lm, CausalLm::Open(model, lo));
  LLMC_ASSIGN_OR_RETURN(auto tok, Tokenizer::FromModelDir(model));
  LLMC_ASSIGN_OR_RETURN(std::string text, ReadTextFile(text_path, 1ull << 30));
  LLMC_ASSIGN_OR_RETURN(auto ids, tok->Encode(NormalizeNewlines(text), /*add_special_tokens=*/false));
  PerplexityOptions po;
  po.max_windows = max_windows;
  LLMC_ASSIGN_OR_RETURN(PerplexityResult r, ComputePerplexity(*lm, ids, po));
  return r.perplexity;
}

// Extends the recipe's quantization ignore list and applies --observer.
absl::Status AdjustConfig(const CompressArgs& a, CompressionRecipe* recipe) {
  if (!recipe->quant) return absl::OkStatus();
  QuantConfig& cfg = *recipe->quant;
  std::vector<std::string> ignore = cfg.ignore();
  if (a.ignore_given && !a.recipe.empty()) ignore.insert(ignore.end(), a.ignore.begin(), a.ignore.end());
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
  return absl::OkStatus();
}

}  // namespace

int RunCompressCommand(const CompressArgs& a) {
  if (a.device != "cpu" && a.device != "cuda")
    return Fail(absl::InvalidArgumentError(absl::StrCat("--device ", a.device, ": use cpu or cuda")));
  if (a.scheme.empty() == a.recipe.empty())
    return Fail(absl::InvalidArgumentError("give exactly one of --scheme NAME or --recipe FILE (see `llmc schemes`)"));
  absl::StatusOr<CompressionRecipe> recipe;
  if (!a.scheme.empty()) {
    std::vector<std::string> ignore = a.ignore_given ? a.ignore : std::vector<std::string>{"lm_head"};
    recipe = PresetRecipe(a.scheme, a.algorithm, {"Linear"}, ignore);
  } else {
    if (absl::AsciiStrToLower(a.algorithm) != "rtn")
      return Fail(absl::InvalidArgumentError("--algorithm goes with --scheme; a --recipe names its modifiers itself"));
    auto text = ReadTextFile(a.recipe, 16u << 20);
    if (!text.ok()) return Fail(text.status());
    recipe = ParseCompressionRecipe(*text, a.recipe);
  }
  if (!recipe.ok()) return Fail(recipe.status());
  if (auto s = AdjustConfig(a, &*recipe); !s.ok()) return Fail(s);
  if (auto s = ResolveRecipe(&*recipe); !s.ok()) return Fail(s);
  const bool calibrated = recipe->NeedsCalibration();
  if (calibrated && a.dataset.empty())
    return Fail(absl::InvalidArgumentError(absl::StrCat(recipe->Describe(), " needs calibration data: pass --dataset FILE ",
                                                        "(plain text or JSONL; see docs/data.md)")));
  if (calibrated && a.device == "cuda")
    return Fail(absl::UnimplementedError("--device cuda: the calibrated pipeline runs on the CPU in this build; use --device cpu"));
  if (!calibrated && (!a.dataset.empty() || a.calibration_flags_given) && !a.json)
    std::fprintf(stderr, "llmc: note: %s is data-free; --dataset and the sampling flags are not used\n",
                 recipe->Describe().c_str());
  if (a.num_samples < 0 || a.seq_len < 0)
    return Fail(absl::InvalidArgumentError("--num-samples and --seq-len must be positive"));
  auto shard = ParseByteSize(a.max_shard_size);
  if (!shard.ok()) return Fail(absl::InvalidArgumentError(absl::StrCat("--max-shard-size: ", shard.status().message())));
  if (*shard == 0) return Fail(absl::InvalidArgumentError("--max-shard-size must be positive"));

  QuantConfig empty;
  const QuantConfig& cfg = recipe->quant ? *recipe->quant : empty;
  std::unique_ptr<SequentialSolver> solver;
  double t0 = NowSeconds();
  if (calibrated) {
    SequentialOptions so;
    so.model_path = a.model;
    so.dataset = a.dataset;
    if (a.num_samples > 0) so.calibration.num_samples = a.num_samples;
    if (a.seq_len > 0) so.calibration.seq_len = a.seq_len;
    so.calibration.seed = static_cast<uint64_t>(a.seed);
    so.threads = a.threads;
    auto s = SequentialSolver::Create(so, *recipe, cfg);
    if (!s.ok()) return Fail(s.status());
    solver = std::move(*s);
    if (!a.json)
      for (const auto& w : solver->warnings()) std::fprintf(stderr, "llmc: warning: %s\n", w.c_str());
  }
  CompressOptions opt;
  opt.model_path = a.model;
  opt.output_path = a.output;
  opt.max_shard_size = *shard;
  opt.threads = a.threads;
  opt.overwrite = a.overwrite;
  opt.cancel = &g_cancel;
  opt.solver = solver.get();
  opt.recipe_yaml = recipe->yaml;
  opt.method = recipe->Describe();
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  bool tty = isatty(STDERR_FILENO) && !a.no_progress && !a.json;
  if (tty) opt.on_progress = [t0](const CompressProgress& p) { DrawProgress(p, t0); };
  auto summary = RunCompress(opt, cfg);
  if (tty) std::fprintf(stderr, "\n");
  if (!summary.ok()) return Fail(summary.status());
  CompressSummary& s = *summary;
  s.seconds = NowSeconds() - t0;
  nlohmann::json j = s.ToJson();
  if (!a.eval_text.empty()) {
    auto before = EvalPerplexity(a.model, a.eval_text, a.eval_max_windows, a.threads);
    if (!before.ok()) return Fail(before.status());
    auto after = EvalPerplexity(a.output, a.eval_text, a.eval_max_windows, a.threads);
    if (!after.ok()) return Fail(after.status());
    j["eval"] = {{"text", a.eval_text},
                 {"max_windows", a.eval_max_windows},
                 {"perplexity_before", *before},
                 {"perplexity_after", *after},
                 {"recovery_percent", 100.0 * *before / *after}};
    // Keep the report in the checkpoint complete.
    std::ofstream rep(std::string(a.output) + "/compression_report.json", std::ios::trunc);
    rep << j.dump(2) << "\n";
  }
  if (!a.json && solver)
    for (const auto& w : solver->warnings()) std::fprintf(stderr, "llmc: warning: %s\n", w.c_str());
  if (a.json) {
    std::cout << j.dump() << std::endl;
    return 0;
  }
  double ratio = s.output_bytes ? static_cast<double>(s.input_bytes) / s.output_bytes : 0;
  std::cout << absl::StrFormat(
      "compressed %s -> %s\n"
      "  method      %s (%d modules quantized, %d left unquantized)\n"
      "  size        %s -> %s (%.2fx smaller) in %d shard(s)\n"
      "  time        %.2f s, %.0f MB/s input, %d threads, peak memory %s\n",
      s.model_path, s.output_path, s.method, s.modules_quantized, s.modules_ignored, FormatBytes(s.input_bytes),
      FormatBytes(s.output_bytes), ratio, s.shards, s.seconds, s.seconds > 0 ? s.input_bytes / 1e6 / s.seconds : 0.0,
      s.threads, FormatBytes(s.peak_rss_bytes));
  if (!s.solver_report.is_null()) {
    const auto& r = s.solver_report;
    std::cout << absl::StrFormat("  calibration %d samples, %d tokens from %s\n", r["calibration"]["samples"].get<int64_t>(),
                                 r["calibration"]["tokens"].get<int64_t>(), a.dataset);
    double worst = 0;
    std::string worst_name;
    for (const auto& m : r["modules"])
      if (m.contains("relative_weight_error") && m["relative_weight_error"].get<double>() > worst) {
        worst = m["relative_weight_error"].get<double>();
        worst_name = m["name"].get<std::string>();
      }
    if (!worst_name.empty())
      std::cout << absl::StrFormat("  error       largest relative weight error %.4f (%s)\n", worst, worst_name);
  }
  if (j.contains("eval"))
    std::cout << absl::StrFormat("  perplexity  %.4f -> %.4f (recovery %.2f%%) on %s\n", j["eval"]["perplexity_before"].get<double>(),
                                 j["eval"]["perplexity_after"].get<double>(), j["eval"]["recovery_percent"].get<double>(),
                                 a.eval_text);
  std::cout << absl::StrFormat("  report      %s/compression_report.json\n", s.output_path);
  return 0;
}

int RunInspectCommand(const InspectArgs& a) {
  auto r = InspectCheckpoint(a.checkpoint);
  if (!r.ok()) return Fail(r.status());
  if (a.json) std::cout << r->dump() << std::endl;
  else std::cout << RenderInspect(*r, a.verbose);
  return 0;
}

int RunSchemesCommand(bool json) {
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& p : Presets()) {
      auto s = PresetScheme(p.name);
      auto f = InferFormat(*s);
      out.push_back({{"name", p.name}, {"description", p.description}, {"needs_calibration", p.needs_calibration},
                     {"format", *f}, {"weights", s->weights ? s->weights->ToJson() : nlohmann::json(nullptr)},
                     {"input_activations", s->input_activations ? s->input_activations->ToJson() : nlohmann::json(nullptr)}});
    }
    std::cout << out.dump() << std::endl;
    return 0;
  }
  for (const auto& p : Presets())
    std::cout << absl::StrFormat("  %-12s %s%s\n", p.name, p.description, p.needs_calibration ? " [calibrated]" : "");
  return 0;
}

int RunAlgorithmsCommand(bool json) {
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& a : Algorithms()) {
      nlohmann::json args = nlohmann::json::array();
      for (const auto& x : a.args)
        args.push_back({{"name", x.name}, {"type", x.type}, {"default", x.default_value}, {"help", x.help}});
      out.push_back({{"name", a.name}, {"modifier", a.modifier}, {"summary", a.summary},
                     {"needs_calibration", a.needs_calibration}, {"statistics", a.statistics}, {"arguments", args}});
    }
    std::cout << out.dump() << std::endl;
    return 0;
  }
  for (const auto& a : Algorithms()) {
    std::cout << absl::StrFormat("%s (%s)%s\n  %s\n", a.name, a.modifier, a.needs_calibration ? " [calibrated]" : "",
                                 a.summary);
    for (const auto& x : a.args)
      std::cout << absl::StrFormat("    %-18s %-8s default %-10s %s\n", x.name, x.type,
                                   x.default_value.is_null() ? "-" : x.default_value.dump(), x.help);
  }
  return 0;
}

}  // namespace llmc::cli
