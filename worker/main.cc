// llmc-worker: one worker process (one GPU, or the CPU). Parses flags and runs service::Worker until
// SIGINT/SIGTERM.
//   llmc-worker --coordinator 127.0.0.1:7443 --token-file DATA_DIR/worker.token [--device cpu|cuda] [--threads N]
//               [--comm-address ADDR] [--comm-timeout SECONDS]
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <thread>

#include <CLI/CLI.hpp>
#include <spdlog/cfg/env.h>
#include <spdlog/spdlog.h>

#include "proto/channel.h"
#include "worker/worker.h"
#include "common/signals.h"

int main(int argc, char** argv) {
  spdlog::cfg::load_env_levels();  // SPDLOG_LEVEL (docs/cli.md)
  CLI::App app{"llmc-worker: runs compression jobs for an llmc coordinator (see docs/service.md)"};
  llmc::worker::WorkerOptions o;
  std::string token_file, work_dir;
  app.add_option("--coordinator", o.coordinator, "the coordinator's gRPC address")->capture_default_str();
  app.add_option("--token-file", token_file, "file with the worker token (the coordinator's DATA_DIR/worker.token)");
  app.add_option("--token", o.token, "the worker token itself (prefer --token-file)");
  app.add_option("--worker-id", o.worker_id, "stable worker name (default HOST-PID)");
  app.add_option("--device", o.device, "cpu or cuda")->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads per job (default: one per core)");
  app.add_option("--work-dir", work_dir, "working directory for the worker (caches; default: the current one)");
  app.add_option("--ca-cert", o.ca_cert, "PEM root certificates: connect with TLS");
  app.add_option("--comm-address", o.comm_address,
                 "address the other ranks of a multi-worker cpu job reach this worker at (Gloo listens on it, any "
                 "port); give this host's address when the workers are on several hosts, or `hostname` for the name "
                 "gethostname() returns (containers on one network)")
      ->capture_default_str();
  app.add_option("--comm-timeout", o.comm_timeout_s,
                 "seconds a multi-worker job's ranks wait for each other (forming, and each collective)")
      ->capture_default_str()
      ->check(CLI::Range(1, 24 * 3600));
  app.add_option("--test-block-delay-ms", o.block_delay_ms, "testing only: pause after each durable block")
      ->group("");
  spdlog::flush_on(spdlog::level::info);  // logs reach a redirected file line by line
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (o.token.empty()) {
    if (token_file.empty()) {
      std::fprintf(stderr, "llmc-worker: error: give --token-file DATA_DIR/worker.token (or --token)\n");
      return 1;
    }
    auto t = llmc::rpc::ReadTokenFile(token_file);
    if (!t.ok()) {
      std::fprintf(stderr, "llmc-worker: error: %s\n", std::string(t.status().message()).c_str());
      return 1;
    }
    o.token = *t;
  }
  if (o.device != "cpu" && o.device != "cuda") {
    std::fprintf(stderr, "llmc-worker: error: --device %s: use cpu or cuda\n", o.device.c_str());
    return 1;
  }
  if (!work_dir.empty() && chdir(work_dir.c_str()) != 0) {
    std::fprintf(stderr, "llmc-worker: error: --work-dir %s: cannot enter it\n", work_dir.c_str());
    return 1;
  }
  sigset_t set = llmc::BlockTerminationSignals();

  llmc::worker::Worker worker(o);
  std::thread sig([&] {
    int s = 0;
    sigwait(&set, &s);
    spdlog::info("signal {}: stopping", s);
    worker.Stop();
  });
  absl::Status st = worker.Run();
  pthread_kill(sig.native_handle(), SIGTERM);  // ends the signal thread's sigwait (Stop again is harmless)
  sig.join();
  if (!st.ok()) {
    std::fprintf(stderr, "llmc-worker: error: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
