#include "client/cli/compress_command.h"

#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <filesystem>
#include <iostream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/cli/cli_errors.h"
#include "common/util.h"
#include "common/status_macros.h"
#include "engine/dist/make_communicator.h"
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

// The GPU a rank's process sees (CUDA_VISIBLE_DEVICES), or "" to leave it as it is. NCCL needs one GPU per rank;
// Gloo ranks with --device cuda share the visible GPUs round-robin.
absl::StatusOr<std::string> RankGpu(int rank, int ranks, const std::string& backend) {
  const char* env = std::getenv("CUDA_VISIBLE_DEVICES");
  std::vector<std::string> visible;
  if (env && *env) visible = absl::StrSplit(env, ',', absl::SkipWhitespace());
  if (backend == "nccl") {
    if (visible.empty()) return absl::StrCat(rank);
    if (static_cast<int>(visible.size()) < ranks)
      return absl::InvalidArgumentError(absl::StrCat("--ranks ", ranks, " over nccl needs one GPU per rank; ",
                                                     "CUDA_VISIBLE_DEVICES lists ", visible.size()));
    return visible[rank];
  }
  if (visible.empty()) return std::string();
  return visible[rank % visible.size()];
}

// The processes of ranks 1..N-1 of `llmc compress --ranks N`: this command line again, plus their rank and the
// rendezvous directory. They die with this process (PR_SET_PDEATHSIG) and print nothing but errors.
class RankProcesses {
 public:
  ~RankProcesses() { Stop(); }

  absl::Status Start(const CompressArgs& a, const std::string& backend, const std::string& dir) {
    const pid_t parent = getpid();
    for (int r = 1; r < a.ranks; ++r) {
      std::vector<std::string> args = a.argv;
      args.insert(args.end(), {"--rank", absl::StrCat(r), "--rendezvous", dir, "--no-progress"});
      std::string gpu;
      if (a.device == "cuda") {
        auto g = RankGpu(r, a.ranks, backend);
        if (!g.ok()) return g.status();
        gpu = *g;
      }
      pid_t pid = fork();
      if (pid < 0) return absl::ResourceExhaustedError(absl::StrCat("cannot start rank ", r, ": fork failed"));
      if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1);
        if (!gpu.empty()) setenv("CUDA_VISIBLE_DEVICES", gpu.c_str(), 1);
        if (FILE* f = std::freopen("/dev/null", "w", stdout); f == nullptr) _exit(1);
        std::vector<char*> cargv;
        for (auto& x : args) cargv.push_back(x.data());
        cargv.push_back(nullptr);
        execv("/proc/self/exe", cargv.data());
        _exit(127);
      }
      pids_.push_back(pid);
    }
    return absl::OkStatus();
  }

  // A rank that has exited with a failure (its rank and status), if any; reaps it.
  std::optional<std::pair<int, int>> Failed() {
    for (size_t i = 0; i < pids_.size(); ++i) {
      if (pids_[i] <= 0) continue;
      int status = 0;
      if (waitpid(pids_[i], &status, WNOHANG) != pids_[i]) continue;
      pids_[i] = 0;
      if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        return std::make_pair(static_cast<int>(i) + 1, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    }
    return std::nullopt;
  }

  // Waits up to `grace` for every rank to exit; then kills the rest. False when one failed or had to be killed.
  bool Wait(std::chrono::milliseconds grace) {
    const auto deadline = std::chrono::steady_clock::now() + grace;
    bool ok = true;
    for (pid_t& pid : pids_) {
      if (pid <= 0) continue;
      int status = 0;
      while (waitpid(pid, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() >= deadline) {
          kill(pid, SIGKILL);
          waitpid(pid, &status, 0);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
      pid = 0;
    }
    return ok;
  }

  void Stop() {
    for (pid_t pid : pids_)
      if (pid > 0) kill(pid, SIGTERM);
    Wait(std::chrono::seconds(5));
  }

 private:
  std::vector<pid_t> pids_;
};

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
  if (!a.moe_calibrate_all_experts.empty()) {
    if (a.moe_calibrate_all_experts != "true" && a.moe_calibrate_all_experts != "false")
      return Fail(absl::InvalidArgumentError(absl::StrCat("--moe-calibrate-all-experts '", a.moe_calibrate_all_experts,
                                                          "': use true or false")));
    spec.moe_calibrate_all_experts = a.moe_calibrate_all_experts == "true";
  }
  spec.dataset = a.dataset;
  spec.num_samples = a.num_samples;
  spec.seq_len = a.seq_len;
  spec.seed = static_cast<uint64_t>(a.seed);
  spec.threads = a.threads;
  spec.device = a.device;
  spec.calib_activations = a.calib_activations;
  spec.precision = a.precision;
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
  // Several ranks: this process is rank 0 and starts the others; they meet in a rendezvous directory.
  if (a.ranks < 1 || a.ranks > 64) return Fail(absl::InvalidArgumentError("--ranks must be between 1 and 64"));
  if (a.rank < 0 || a.rank >= a.ranks || (a.rank > 0) != !a.rendezvous.empty())
    return Fail(absl::InvalidArgumentError("--rank and --rendezvous are set by `llmc compress --ranks N` itself"));
  if (a.comm_timeout_s < 1 || a.comm_timeout_s > 86400)
    return Fail(absl::InvalidArgumentError("--comm-timeout must be between 1 and 86400 seconds"));
  const std::string backend = a.comm.empty() ? DefaultCommBackend(a.device) : a.comm;
  if (backend != "gloo" && backend != "nccl")
    return Fail(absl::InvalidArgumentError(absl::StrCat("--comm ", a.comm.substr(0, 64), ": use gloo or nccl")));
  // An explicit --comm forms the communicator even for one rank (the same path as several, e.g. to check NCCL).
  const bool shared = (a.ranks > 1 || !a.comm.empty()) && recipe->NeedsCalibration();
  if (a.ranks > 1 && !shared && a.rank == 0 && !a.json)
    std::fprintf(stderr, "llmc: note: %s is data-free; it runs in one process (--ranks applies to calibration)\n",
                 recipe->Describe().c_str());
  if (a.rank > 0 && !shared) return 0;
  if (shared && a.threads == 0)  // the cores shared among the ranks
    spec.threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / a.ranks);
  RankProcesses ranks;
  std::string rendezvous = a.rendezvous;
  std::unique_ptr<Communicator> comm;
  struct RemoveDir {
    std::string dir;
    ~RemoveDir() {
      std::error_code ec;
      if (!dir.empty()) std::filesystem::remove_all(dir, ec);
    }
  } remove_rendezvous;
  if (shared) {
    if (a.rank == 0) {
      std::string tmpl = (std::filesystem::temp_directory_path() / "llmc-ranks-XXXXXX").string();
      if (!mkdtemp(tmpl.data()))
        return Fail(absl::InternalError(absl::StrCat("cannot create a rendezvous directory in ",
                                                     std::filesystem::temp_directory_path().string())));
      rendezvous = remove_rendezvous.dir = tmpl;
      if (a.device == "cuda") {
        auto gpu = RankGpu(0, a.ranks, backend);
        if (!gpu.ok()) return Fail(gpu.status());
        if (!gpu->empty()) setenv("CUDA_VISIBLE_DEVICES", gpu->c_str(), 1);
      }
      if (absl::Status st = ranks.Start(a, backend, rendezvous); !st.ok()) return Fail(st);
    }
    auto store = NewDirectoryStore(rendezvous);
    if (!store.ok()) return Fail(store.status());
    CommOptions co;
    co.backend = backend;
    co.rank = a.rank;
    co.size = a.ranks;
    co.prefix = "compress";
    co.timeout = absl::Seconds(a.comm_timeout_s);
    // A rank that fails before the ranks are formed stops this one too, instead of leaving it waiting.
    std::atomic<bool> formed{false};
    std::thread watch;
    if (a.rank == 0)
      watch = std::thread([&] {
        while (!formed.load()) {
          if (auto f = ranks.Failed()) {
            std::fprintf(stderr, "llmc: error: rank %d exited with status %d before the ranks were formed\n",
                         f->first, f->second);
            ranks.Stop();
            std::_Exit(1);
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
      });
    auto c = MakeCommunicator(co, store->get());
    formed = true;
    if (watch.joinable()) watch.join();
    if (!c.ok()) return Fail(c.status());
    comm = std::move(*c);
  }
  // The job path (worker/job_io.h): MODEL and OUTPUT may be object-storage URIs (the model is fetched into the
  // cache; the output is written locally and published, finished shards uploading while the job runs).
  JobRequest request;
  request.spec = spec;
  request.eval_text = a.eval_text;
  request.eval_max_windows = a.eval_max_windows;
  JobControl control;
  control.cancel = &g_cancel;
  control.comm = comm.get();
  if (!a.json && a.rank == 0) control.on_warning = [](const std::string& w) { std::fprintf(stderr, "llmc: warning: %s\n", w.c_str()); };
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  bool tty = isatty(STDERR_FILENO) && !a.no_progress && !a.json;
  double t0 = NowSeconds();
  if (tty) control.on_progress = [t0](const CompressProgress& p) { DrawProgress(p, t0); };
  auto result = RunJobToOutput(request, control);
  if (tty) std::fprintf(stderr, "\n");
  if (a.rank > 0) {
    if (!result.ok())
      return Fail(absl::Status(result.status().code(), absl::StrCat("rank ", a.rank, ": ", result.status().message())));
    return 0;
  }
  comm.reset();  // the other ranks see the end of the job
  if (!result.ok()) {
    ranks.Stop();
    return Fail(result.status());
  }
  if (!ranks.Wait(std::chrono::seconds(60)))
    std::fprintf(stderr, "llmc: warning: a rank did not end cleanly after the job finished\n");
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
  if (j.contains("eval")) {
    const auto& e = j["eval"];
    std::cout << absl::StrFormat("  perplexity  %.4f -> %.4f (recovery %.2f%%) on %s\n", e["perplexity_before"].get<double>(),
                                 e["perplexity_after"].get<double>(), e["recovery_percent"].get<double>(), a.eval_text);
    if (e.value("activations_quantized", false))
      std::cout << absl::StrFormat("              weights only (fp32 activations): %.4f (recovery %.2f%%)\n",
                                   e["perplexity_after_weights_only"].get<double>(),
                                   e["recovery_percent_weights_only"].get<double>());
  }
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
  auto arg_json = [](const AlgorithmArg& x) {
    nlohmann::json j = {{"name", x.name}, {"type", x.type}, {"default", x.default_value}, {"help", x.help}};
    if (!x.no_effect.empty()) j["no_effect"] = x.no_effect;
    return j;
  };
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& a : Algorithms()) {
      nlohmann::json args = nlohmann::json::array();
      for (const auto& x : a.args) args.push_back(arg_json(x));
      for (const auto& x : CommonModifierArgs()) args.push_back(arg_json(x));
      out.push_back({{"name", a.name}, {"modifier", a.modifier}, {"summary", a.summary},
                     {"needs_calibration", a.needs_calibration}, {"statistics", a.statistics}, {"arguments", args}});
    }
    std::cout << out.dump() << std::endl;
    return 0;
  }
  auto print_arg = [](const AlgorithmArg& x) {
    std::cout << absl::StrFormat("    %-18s %-8s default %-10s %s%s\n", x.name, x.type,
                                 x.default_value.is_null() ? "-" : x.default_value.dump(), x.help,
                                 x.no_effect.empty() ? "" : absl::StrCat(" [no effect: ", x.no_effect, "]"));
  };
  for (const auto& a : Algorithms()) {
    std::cout << absl::StrFormat("%s (%s)%s\n  %s\n", a.name, a.modifier, a.needs_calibration ? " [calibrated]" : "",
                                 a.summary);
    for (const auto& x : a.args) print_arg(x);
  }
  std::cout << "every modifier also accepts llm-compressor's lifecycle fields:\n";
  for (const auto& x : CommonModifierArgs()) print_arg(x);
  return 0;
}

}  // namespace llmc::cli
