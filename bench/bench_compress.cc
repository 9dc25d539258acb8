// llmc-bench-compress: data-free compression speed and memory per scheme on a synthetic Llama checkpoint.
//
// For each scheme the job runs in its own child process (so peak RSS is that job's alone) with a warm page
// cache. The reference measured in the same run is a plain read of every input file (pread into a 16 MB
// buffer): compression is an I/O-bound stream, so "read ratio" = llmc's input MB/s / read MB/s says how close
// to the speed of reading the files llmc gets.
//
//   llmc-bench-compress [--shape 1b] [--dir bench/data] [--schemes W4A16,FP8_DYNAMIC,...] [--threads N] [--json]
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "tests/support/synthetic_model.h"
#include "common/util.h"
#include "engine/format/recipe.h"
#include "engine/pipeline/compress_job.h"

namespace fs = std::filesystem;

namespace {

// Reads every file of `dir` once; returns bytes read.
uint64_t ReadAllFiles(const std::string& dir) {
  std::vector<char> buf(16u << 20);
  uint64_t total = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".safetensors") continue;
    int fd = open(e.path().c_str(), O_RDONLY);
    if (fd < 0) continue;
    ssize_t n;
    while ((n = read(fd, buf.data(), buf.size())) > 0) total += n;
    close(fd);
  }
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Benchmark data-free compression (seconds, input MB/s, peak RSS) against a plain file read"};
  std::string shape_name = "1b", dir = "bench/data", schemes_arg =
      "W4A16,W4A16_ASYM,W8A16,W8A8,FP8_DYNAMIC,FP8_BLOCK,NVFP4A16,MXFP4A16";
  int threads = 0, layers = -1, repeat = 3;
  bool json_out = false;
  app.add_option("--shape", shape_name, "synthetic model shape: tiny, 1b or 8b")->capture_default_str();
  app.add_option("--dir", dir, "where synthetic models are kept (created once, reused)")->capture_default_str();
  app.add_option("--schemes", schemes_arg, "comma-separated schemes")->capture_default_str();
  app.add_option("--threads", threads, "compression threads (default: one per core)");
  app.add_option("--layers", layers, "override the number of layers of the shape");
  app.add_option("--repeat", repeat, "runs per scheme; the median run is reported")->capture_default_str();
  app.add_flag("--json", json_out, "print JSON instead of a table");
  CLI11_PARSE(app, argc, argv);

  llmc::SyntheticLlamaShape shape;
  if (!llmc::SyntheticShapeByName(shape_name, &shape)) {
    std::fprintf(stderr, "unknown shape %s\n", shape_name.c_str());
    return 1;
  }
  if (layers > 0) shape.layers = layers;
  std::string model = (fs::path(dir) / absl::StrFormat("llama-%s-L%d-bf16", shape_name, shape.layers)).string();
  if (!fs::exists(fs::path(model) / "config.json")) {
    std::fprintf(stderr, "generating %s ...\n", model.c_str());
    auto s = llmc::WriteSyntheticLlama(model, shape, llmc::DType::kBF16, 1, 5'000'000'000ull);
    if (!s.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
      return 1;
    }
  }
  // Warm the page cache, then time the reference read.
  ReadAllFiles(model);
  double t0 = llmc::NowSeconds();
  uint64_t bytes = ReadAllFiles(model);
  double read_s = llmc::NowSeconds() - t0;
  double read_mbs = bytes / 1e6 / read_s;

  nlohmann::json results = nlohmann::json::array();
  for (const auto& scheme : absl::StrSplit(schemes_arg, ',')) {
    struct Run {
      nlohmann::json summary;
      double rss_mb;
    };
    std::vector<Run> runs;
    for (int rep = 0; rep < std::max(1, repeat); ++rep) {
      std::string out = (fs::path(dir) / ("out-" + std::string(scheme))).string();
      fs::remove_all(out);
      sync();  // the previous run's writeback must not slow this one
      int pipefd[2];
      if (pipe(pipefd) != 0) return 1;
      pid_t pid = fork();
      if (pid == 0) {
        close(pipefd[0]);
        auto cfg = llmc::PresetConfig(std::string(scheme), {"Linear"}, {"lm_head"});
        if (!cfg.ok()) _exit(2);
        llmc::CompressOptions o;
        o.model_path = model;
        o.output_path = out;
        o.threads = threads;
        auto s = llmc::RunCompress(o, *cfg);
        if (!s.ok()) {
          std::fprintf(stderr, "%s: %s\n", std::string(scheme).c_str(), std::string(s.status().message()).c_str());
          _exit(3);
        }
        std::string j = s->ToJson().dump();
        if (write(pipefd[1], j.data(), j.size()) < 0) _exit(4);
        _exit(0);
      }
      close(pipefd[1]);
      std::string text;
      char buf[65536];
      ssize_t n;
      while ((n = read(pipefd[0], buf, sizeof buf)) > 0) text.append(buf, n);
      close(pipefd[0]);
      int status;
      struct rusage ru;
      wait4(pid, &status, 0, &ru);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::fprintf(stderr, "%s failed\n", std::string(scheme).c_str());
        return 1;
      }
      runs.push_back({nlohmann::json::parse(text), ru.ru_maxrss / 1024.0});
      fs::remove_all(out);
    }
    std::sort(runs.begin(), runs.end(), [](const Run& a, const Run& b) {
      return a.summary["seconds"].get<double>() < b.summary["seconds"].get<double>();
    });
    const Run& med = runs[runs.size() / 2];
    double max_rss = 0;
    for (const auto& r : runs) max_rss = std::max(max_rss, r.rss_mb);
    const nlohmann::json& j = med.summary;
    double secs = j["seconds"].get<double>();
    double mbs = j["input_bytes"].get<double>() / 1e6 / secs;
    results.push_back({{"scheme", std::string(scheme)},
                       {"seconds", secs},
                       {"input_mb_per_s", mbs},
                       {"read_ratio", mbs / read_mbs},
                       {"peak_rss_mb", max_rss},
                       {"runs", runs.size()},
                       {"input_bytes", j["input_bytes"]},
                       {"output_bytes", j["output_bytes"]},
                       {"threads", j["threads"]}});
  }
  nlohmann::json report = {{"model", model},
                           {"shape", shape_name},
                           {"input_bytes", bytes},
                           {"reference_read_seconds", read_s},
                           {"reference_read_mb_per_s", read_mbs},
                           {"cores", std::thread::hardware_concurrency()},
                           {"results", results}};
  if (json_out) {
    std::cout << report.dump(2) << std::endl;
    return 0;
  }
  std::cout << absl::StrFormat("model %s: %.2f GB, reference read %.0f MB/s (warm page cache), %u cores\n\n", model,
                               bytes / 1e9, read_mbs, std::thread::hardware_concurrency());
  std::cout << "| scheme | seconds | input MB/s | read ratio | peak RSS MB | output GB |\n|---|---|---|---|---|---|\n";
  for (const auto& r : results)
    std::cout << absl::StrFormat("| %s | %.2f | %.0f | %.2f | %.0f | %.2f |\n", r["scheme"].get<std::string>(),
                                 r["seconds"].get<double>(), r["input_mb_per_s"].get<double>(),
                                 r["read_ratio"].get<double>(), r["peak_rss_mb"].get<double>(),
                                 r["output_bytes"].get<double>() / 1e9);
  return 0;
}
