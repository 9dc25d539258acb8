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
#include "common/status_macros.h"
#include "engine/format/algorithms.h"
#include "engine/format/job_recipe.h"
#include "engine/io/model_dir.h"
#include "engine/pipeline/compress_job.h"
#include "engine/pipeline/inspect.h"
#include "worker/job_io.h"

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

int RunCompressCommand(const CompressArgs& a) {
  JobSpec spec;
  spec.model_path = a.model;
  spec.output_path = a.output;
  spec.scheme = a.scheme;
  spec.algorithm = a.algorithm;
  if (!a.recipe.empty()) {
    auto text = ReadTextFile(a.recipe, 16u << 20);
    if (!text.ok()) return Fail(text.status());
    if (text->empty()) return Fail(absl::InvalidArgumentError(absl::StrCat(a.recipe, ": the recipe file is empty")));
    spec.recipe_yaml = *text;
    spec.recipe_source = a.recipe;
    if (!a.scheme.empty())
      return Fail(absl::InvalidArgumentError("give exactly one of --scheme NAME or --recipe FILE (see `llmc schemes`)"));
  }
  spec.ignore = a.ignore;
  spec.ignore_given = a.ignore_given;
  spec.observer = a.observer;
  spec.dataset = a.dataset;
  spec.num_samples = a.num_samples;
  spec.seq_len = a.seq_len;
  spec.seed = static_cast<uint64_t>(a.seed);
  spec.threads = a.threads;
  spec.device = a.device;
  spec.overwrite = a.overwrite;
  auto shard = ParseByteSize(a.max_shard_size);
  if (!shard.ok()) return Fail(absl::InvalidArgumentError(absl::StrCat("--max-shard-size: ", shard.status().message())));
  if (*shard == 0) return Fail(absl::InvalidArgumentError("--max-shard-size must be positive"));
  spec.max_shard_size = *shard;
  // Check the recipe first, so bad flags fail before any model data is read.
  auto recipe = ResolveJobRecipe(spec);
  if (!recipe.ok()) return Fail(recipe.status());
  if (!recipe->NeedsCalibration() && (!a.dataset.empty() || a.calibration_flags_given) && !a.json)
    std::fprintf(stderr, "llmc: note: %s is data-free; --dataset and the sampling flags are not used\n",
                 recipe->Describe().c_str());
  // The job path (worker/job_io.h): MODEL and OUTPUT may be object-storage URIs (the model is fetched into the
  // cache; the output is written locally and published, finished shards uploading while the job runs).
  JobRequest request;
  request.spec = spec;
  request.eval_text = a.eval_text;
  request.eval_max_windows = a.eval_max_windows;
  JobControl control;
  control.cancel = &g_cancel;
  if (!a.json) control.on_warning = [](const std::string& w) { std::fprintf(stderr, "llmc: warning: %s\n", w.c_str()); };
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  bool tty = isatty(STDERR_FILENO) && !a.no_progress && !a.json;
  double t0 = NowSeconds();
  if (tty) control.on_progress = [t0](const CompressProgress& p) { DrawProgress(p, t0); };
  auto result = RunJobToOutput(request, control);
  if (tty) std::fprintf(stderr, "\n");
  if (!result.ok()) return Fail(result.status());
  CompressSummary& s = result->summary;
  nlohmann::json j = result->report;
  j["output"] = a.output;
  j["model"] = a.model;
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
  if (!s.solver_report.is_null()) {  // calibrated
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
