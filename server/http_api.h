// The coordinator's HTTP side (cpp-httplib): /healthz, /metrics (Prometheus text format) and a JSON view of
// the API for the web console (docs/api.md, "JSON view"): the same messages as the gRPC API, converted with
// protobuf's JSON mapping, with the same bearer-token auth (header `Authorization: Bearer <token>`).
//
// Thread-safety: Start/Stop from one thread; requests are served on the server's own thread pool.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "server/auth.h"
#include "server/coordinator.h"
#include "server/metrics.h"

namespace httplib {
class Server;
}

namespace llmc::server {

// Serving limits: pool threads (each open connection holds one while it is served or idle), seconds an idle
// keep-alive connection is kept, seconds a slow client may take to send a request or read a reply.
inline constexpr int kHttpThreads = 256;
inline constexpr int kHttpIdleTimeoutS = 2;
inline constexpr int kHttpReadTimeoutS = 5;

// The HTTP status for a canonical code (NOT_FOUND -> 404, ...).
int HttpStatusFor(absl::StatusCode code);

class HttpApi {
 public:
  HttpApi(Coordinator* c, Authenticator* auth, ServiceMetrics* m);
  ~HttpApi();
  // Binds host:port (port 0: any; see port()) and serves on a background thread.
  absl::Status Start(const std::string& host, int port);
  void Stop();
  int port() const { return port_; }

 private:
  Coordinator* c_;
  Authenticator* auth_;
  ServiceMetrics* m_;
  std::unique_ptr<httplib::Server> svr_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace llmc::server
