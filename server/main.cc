// llmc-server: the coordinator. Parses flags and runs service::Server until SIGINT/SIGTERM.
//   llmc-server --data-dir D --listen 127.0.0.1:7443 --http-listen 127.0.0.1:7480 [--allowed-root URI]...
//   llmc-server token create --data-dir D --tenant T --role admin|submitter|viewer [--name TEXT]
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <iostream>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/str_join.h"
#include "server/server.h"
#include "common/signals.h"

int main(int argc, char** argv) {
  CLI::App app{"llmc-server: the llmc compression service coordinator (see docs/service.md)"};
  llmc::server::ServerOptions o;
  std::string ready_file;
  app.add_option("--data-dir", o.data_dir, "job store, tokens and the default storage root")->capture_default_str();
  app.add_option("--listen", o.listen, "gRPC address (port 0: any free port)")->capture_default_str();
  app.add_option("--http-listen", o.http_listen, "HTTP address for /metrics, /healthz and /api/v1 (\"\": off)")
      ->capture_default_str();
  app.add_option("--web-dir", o.web_dir,
                 "the web console's files (default: BIN/../share/llmc/web; the console is off when that is missing)");
  app.add_flag("--metrics-auth", o.metrics_auth, "ask for a bearer token on /metrics too (/healthz stays open)");
  app.add_option("--http-max-connections", o.http_max_connections, "HTTP connections open at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  app.add_option("--http-max-connections-per-client", o.http_max_connections_per_client,
                 "HTTP connections open at once from one client address (more are closed at once; raise it behind "
                 "a reverse proxy)")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  app.add_option("--allowed-root", o.allowed_roots,
                 "a directory or s3:// prefix jobs may read and write (repeatable; DATA_DIR/storage always is)");
  app.add_option("--allowed-input-root", o.input_roots,
                 "a directory or s3:// prefix jobs may only read models and data from (repeatable)");
  app.add_option("--tls-cert", o.tls_cert, "PEM certificate chain: serve gRPC over TLS");
  app.add_option("--tls-key", o.tls_key, "PEM private key for --tls-cert");
  app.add_option("--lease-ms", o.lease_ms, "a worker silent this long is lost")->capture_default_str();
  app.add_option("--max-attempts", o.max_attempts, "lost attempts before a job fails")->capture_default_str();
  app.add_option("--max-num-samples", o.limits.max_num_samples, "most calibration samples a job may ask for")
      ->capture_default_str();
  app.add_option("--max-seq-len", o.limits.max_seq_len, "longest calibration sample (tokens) a job may ask for")
      ->capture_default_str();
  app.add_option("--max-calibration-tokens", o.limits.max_calibration_tokens,
                 "most calibration tokens (num_samples x seq_len) a job may ask for")
      ->capture_default_str();
  app.add_flag("--tenant-roots", o.tenant_roots.per_tenant,
               "each tenant's jobs may use only ROOT/TENANT of every allowed root (and the shared roots)");
  app.add_option("--shared-root", o.tenant_roots.shared_roots,
                 "a directory or s3:// prefix every tenant's jobs may read and write (repeatable)");
  app.add_option("--shared-input-root", o.tenant_roots.shared_input_roots,
                 "a directory or s3:// prefix every tenant's jobs may read (repeatable)");
  app.add_option("--tenant-max-active-jobs", o.quotas.max_active_jobs,
                 "most jobs one tenant may have queued or running (0: no quota)")
      ->capture_default_str();
  app.add_option("--tenant-max-gpus", o.quotas.max_gpus,
                 "most GPUs (spec.gpus summed) one tenant's queued and running jobs may ask for (0: no quota)")
      ->capture_default_str();
  app.add_option("--tenant-max-spec-bytes", o.quotas.max_spec_bytes,
                 "most bytes of job specs one tenant may have in the job store (0: no quota)")
      ->capture_default_str();
  app.add_option("--ready-file", ready_file, "write \"GRPC_PORT HTTP_PORT\" here once serving (for scripts)");

  auto* token = app.add_subcommand("token", "manage API tokens");
  auto* create = token->add_subcommand("create", "create a token and print it (shown once)");
  std::string tenant, role = "submitter", name;
  create->add_option("--tenant", tenant, "tenant the token acts for")->required();
  create->add_option("--role", role, "admin, submitter or viewer")->capture_default_str();
  create->add_option("--name", name, "a note for operators");
  create->add_option("--data-dir", o.data_dir, "the coordinator's data directory")->capture_default_str();
  token->require_subcommand(1);
  auto* backup = app.add_subcommand("backup", "copy the job store into a new file while the server runs "
                                              "(SQLite online backup; see docs/operations.md)");
  std::string backup_file;
  backup->add_option("--data-dir", o.data_dir, "the coordinator's data directory")->capture_default_str();
  backup->add_option("--output", backup_file, "the backup file to create (must not exist)")->required();
  auto* restore = app.add_subcommand("restore", "replace the job store with a backup (the server must be stopped)");
  std::string restore_from;
  restore->add_option("--data-dir", o.data_dir, "the coordinator's data directory")->capture_default_str();
  restore->add_option("--from", restore_from, "a file written by llmc-server backup")->required();
  spdlog::flush_on(spdlog::level::info);  // logs reach a redirected file line by line
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (create->parsed()) {
    auto t = llmc::server::CreateTokenInDataDir(o.data_dir, tenant, role, name);
    if (!t.ok()) {
      std::fprintf(stderr, "llmc-server: error: %s\n", std::string(t.status().message()).c_str());
      return 1;
    }
    std::cout << *t << std::endl;
    return 0;
  }

  if (backup->parsed()) {
    absl::Status s = llmc::server::BackupDataDir(o.data_dir, backup_file);
    if (!s.ok()) {
      std::fprintf(stderr, "llmc-server: error: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    std::cout << "backed up " << o.data_dir << "/jobs.db to " << backup_file << " (integrity_check ok)" << std::endl;
    return 0;
  }
  if (restore->parsed()) {
    auto moved = llmc::server::RestoreDataDir(o.data_dir, restore_from);
    if (!moved.ok()) {
      std::fprintf(stderr, "llmc-server: error: %s\n", std::string(moved.status().message()).c_str());
      return 1;
    }
    std::cout << "restored " << o.data_dir << "/jobs.db from " << restore_from;
    if (!moved->empty()) std::cout << "; the replaced files are " << absl::StrJoin(*moved, ", ");
    std::cout << std::endl;
    return 0;
  }
  // Signals are taken by sigwait below, in this thread only.
  sigset_t set = llmc::BlockTerminationSignals();

  auto server = llmc::server::Server::Start(o);
  if (!server.ok()) {
    std::fprintf(stderr, "llmc-server: error: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  if (!ready_file.empty()) {
    std::string tmp = ready_file + ".tmp";
    std::ofstream(tmp) << (*server)->grpc_port() << " " << (*server)->http_port() << "\n";
    std::rename(tmp.c_str(), ready_file.c_str());
  }
  int sig = 0;
  sigwait(&set, &sig);
  spdlog::info("signal {}: shutting down", sig);
  (*server)->Shutdown();
  return 0;
}
