// llmc-server: the coordinator process. Opens the job store in the data directory, writes the bootstrap
// tokens, recovers jobs, and serves the gRPC API (with health checking and reflection) and the HTTP side.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/access_policy.h"
#include "server/coordinator.h"
#include "server/http_api.h"
#include "server/spec_limits.h"

namespace llmc::server {

struct ServerOptions {
  std::string data_dir = "llmc-data";
  std::string listen = "127.0.0.1:7443";      // gRPC
  std::string http_listen = "127.0.0.1:7480";  // /metrics, /healthz, JSON view, console; "" to disable
  std::string web_dir;                          // the console's files; "" for DefaultWebDir() (web_console.h)
  bool metrics_auth = false;                    // /metrics asks for a bearer token
  int http_max_connections = kHttpMaxConnections;                       // HTTP connections open at once
  int http_max_connections_per_client = kHttpMaxConnectionsPerClient;  // ... from one client address
  std::vector<std::string> allowed_roots;       // read-write; DATA_DIR/storage is always one
  std::vector<std::string> input_roots;         // read-only (models, datasets)
  std::string tls_cert, tls_key;                // PEM files: serve gRPC over TLS
  int64_t lease_ms = 6000;
  int max_attempts = 3;
  SpecLimits limits;  // upper bounds on a job's calibration (--max-num-samples, --max-seq-len, ...)
  TenantRootOptions tenant_roots;  // --tenant-roots, --shared-root, --shared-input-root
  TenantQuotas quotas;             // --tenant-max-active-jobs, --tenant-max-gpus, --tenant-max-spec-bytes
};

class Server {
 public:
  // Starts everything; errors name what failed (data dir, ports, roots).
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options);
  ~Server();
  // Stops accepting calls, ends streams (workers reconnect elsewhere or later) and closes the store.
  void Shutdown();
  int grpc_port() const;
  int http_port() const;
  // The web console folder served on the HTTP port, or "" when none is.
  std::string web_dir() const;

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// `llmc-server token create`: registers a token for `tenant` with `role` in DATA_DIR's store and returns it.
// `llmc-server backup`: an online backup of DATA_DIR's job store into the new file `output` (BackupStore; the server
// may be running).
absl::Status BackupDataDir(const std::string& data_dir, const std::string& output);
// `llmc-server restore`: replaces DATA_DIR's job store with the backup `from` (RestoreStore). FAILED_PRECONDITION
// while an llmc-server holds the data directory. Returns where the replaced files were moved.
absl::StatusOr<std::vector<std::string>> RestoreDataDir(const std::string& data_dir, const std::string& from);

absl::StatusOr<std::string> CreateTokenInDataDir(const std::string& data_dir, const std::string& tenant,
                                                 const std::string& role, const std::string& name);

}  // namespace llmc::server
