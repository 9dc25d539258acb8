#include "client/cli/compress_command.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/cli_errors.h"
#include "common/util.h"
#include "engine/format/recipe.h"
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
  std::fprintf(stderr, "\r[%s] %5.1f%%  %d/%d modules  %s/%s  %.0f MB/s ", bar.c_str(), frac * 100, p.modules_done,
               p.modules_total, FormatBytes(p.bytes_done).c_str(), FormatBytes(p.bytes_total).c_str(), rate);
  std::fflush(stderr);
}

}  // namespace

int RunCompressCommand(const CompressArgs& a) {
  std::string algo = absl::AsciiStrToLower(a.algorithm);
  if (algo != "rtn")
    return Fail(absl::UnimplementedError(absl::StrCat("--algorithm ", a.algorithm,
                                                      " needs calibration, which this build does not run yet; use --algorithm rtn")));
  if (a.device != "cpu" && a.device != "cuda")
    return Fail(absl::InvalidArgumentError(absl::StrCat("--device ", a.device, ": use cpu or cuda")));
  if (!a.dataset.empty() || a.calibration_flags_given)
    return Fail(absl::UnimplementedError("--dataset, --num-samples, --seq-len and --seed feed calibrated algorithms, "
                                         "which this build does not run yet; drop them for data-free compression"));
  if (a.device == "cuda" && !a.json)
    std::fprintf(stderr, "llmc: note: data-free compression is I/O-bound and runs on the CPU; --device cuda applies "
                         "to calibrated algorithms\n");
  if (a.scheme.empty() == a.recipe.empty())
    return Fail(absl::InvalidArgumentError("give exactly one of --scheme NAME or --recipe FILE (see `llmc schemes`)"));
  absl::StatusOr<QuantConfig> cfg;
  std::vector<std::string> ignore = a.ignore;
  if (!a.scheme.empty()) {
    if (!a.ignore_given) ignore = {"lm_head"};
    cfg = PresetConfig(a.scheme, {"Linear"}, ignore);
    if (cfg.ok()) {
      auto presets = Presets();
      for (const auto& p : presets)
        if (p.name == cfg->preset_name && p.needs_calibration)
          return Fail(absl::UnimplementedError(absl::StrCat("scheme ", p.name, " has static activation scales that need ",
                                                            "calibration data, which this build does not run yet; use ",
                                                            p.name == "FP8" ? "FP8_DYNAMIC" : "NVFP4A16", " for data-free compression")));
    }
  } else {
    auto text = ReadTextFile(a.recipe, 16u << 20);
    if (!text.ok()) return Fail(text.status());
    cfg = ParseRecipe(*text, a.recipe);
    if (cfg.ok() && a.ignore_given) {
      std::vector<std::string> all = cfg->ignore();
      all.insert(all.end(), a.ignore.begin(), a.ignore.end());
      std::vector<std::pair<std::string, QuantScheme>> groups;
      for (const auto& g : cfg->groups()) groups.emplace_back(g.name, g.scheme);
      std::string preset = cfg->preset_name;
      cfg = QuantConfig::Create(groups, all);
      if (cfg.ok()) cfg->preset_name = preset;
    }
  }
  if (!cfg.ok()) return Fail(cfg.status());
  if (!a.observer.empty()) {
    std::vector<std::pair<std::string, QuantScheme>> groups;
    for (const auto& g : cfg->groups()) {
      QuantScheme s = g.scheme;
      if (s.weights) s.weights->observer = a.observer;
      groups.emplace_back(g.name, s);
    }
    std::string preset = cfg->preset_name;
    cfg = QuantConfig::Create(groups, cfg->ignore());
    if (!cfg.ok()) return Fail(cfg.status());
    cfg->preset_name = preset;
  }
  auto shard = ParseByteSize(a.max_shard_size);
  if (!shard.ok()) return Fail(absl::InvalidArgumentError(absl::StrCat("--max-shard-size: ", shard.status().message())));
  if (*shard == 0) return Fail(absl::InvalidArgumentError("--max-shard-size must be positive"));

  CompressOptions opt;
  opt.model_path = a.model;
  opt.output_path = a.output;
  opt.max_shard_size = *shard;
  opt.threads = a.threads;
  opt.overwrite = a.overwrite;
  opt.cancel = &g_cancel;
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  bool tty = isatty(STDERR_FILENO) && !a.no_progress && !a.json;
  double t0 = NowSeconds();
  if (tty) opt.on_progress = [t0](const CompressProgress& p) { DrawProgress(p, t0); };
  auto summary = RunCompress(opt, *cfg);
  if (tty) std::fprintf(stderr, "\n");
  if (!summary.ok()) return Fail(summary.status());
  const CompressSummary& s = *summary;
  if (a.json) {
    std::cout << s.ToJson().dump() << std::endl;
    return 0;
  }
  double ratio = s.output_bytes ? static_cast<double>(s.input_bytes) / s.output_bytes : 0;
  std::cout << absl::StrFormat(
      "compressed %s -> %s\n"
      "  scheme      %s (%d modules quantized, %d left unquantized)\n"
      "  size        %s -> %s (%.2fx smaller) in %d shard(s)\n"
      "  time        %.2f s, %.0f MB/s input, %d threads, peak memory %s\n",
      s.model_path, s.output_path, s.scheme, s.modules_quantized, s.modules_ignored, FormatBytes(s.input_bytes),
      FormatBytes(s.output_bytes), ratio, s.shards, s.seconds, s.seconds > 0 ? s.input_bytes / 1e6 / s.seconds : 0.0,
      s.threads, FormatBytes(s.peak_rss_bytes));
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

}  // namespace llmc::cli
