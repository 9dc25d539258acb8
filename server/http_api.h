// The coordinator's HTTP side (cpp-httplib): /healthz, /metrics (Prometheus text format), a JSON view of the
// API (docs/api.md, "JSON view"): the same messages as the gRPC API, converted with protobuf's JSON mapping, with
// the same bearer-token auth (header `Authorization: Bearer <token>`), a server-sent event stream of the caller's
// job changes, and the web console's static files under /console/ (web_console.h, docs/console.md). Every
// response carries SecurityHeaders().
//
// Thread-safety: Start/Stop from one thread; requests are served on the server's own thread pool.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "server/auth.h"
#include "server/coordinator.h"
#include "server/metrics.h"
#include "server/web_console.h"

namespace httplib {
class Server;
}

namespace llmc::server {

// Serving limits: pool threads (each open connection holds one while it is served or idle), seconds an idle
// keep-alive connection is kept, seconds a slow client may take to send a request or read a reply.
inline constexpr int kHttpThreads = 256;
inline constexpr int kHttpIdleTimeoutS = 2;
inline constexpr int kHttpReadTimeoutS = 5;
// Job-change streams (GET /api/v1/jobs:stream) open at once (each holds a pool thread; more are refused with
// 429), how long one lasts before the server ends it (the console reconnects), and the keep-alive interval.
inline constexpr int kMaxHttpStreams = 64;
inline constexpr int kHttpStreamMaxS = 600;
inline constexpr int kHttpStreamKeepAliveS = 10;

struct HttpOptions {
  // The console's folder; "" serves DefaultWebDir() when it exists (else /console/ answers 404 with what to do).
  // A folder given here must exist: Start fails otherwise.
  std::string web_dir;
  // /metrics asks for a bearer token (any role but worker) too; /healthz stays open.
  bool metrics_auth = false;
};

// The HTTP status for a canonical code (NOT_FOUND -> 404, ...).
int HttpStatusFor(absl::StatusCode code);

// The request field an error message is about, as its messages start with it ("spec.output_uri: ...",
// "spec.gpus 0: ...", "request_id: ..."); "" when it names none. JSON errors carry it as "field".
std::string ErrorField(absl::string_view message);

class HttpApi {
 public:
  HttpApi(Coordinator* c, Authenticator* auth, ServiceMetrics* m, HttpOptions options = {});
  ~HttpApi();
  // Binds host:port (port 0: any; see port()) and serves on a background thread. NOT_FOUND when
  // options.web_dir is given and is not a console folder.
  absl::Status Start(const std::string& host, int port);
  // Ends open job-change streams (within a second) and stops serving.
  void Stop();
  int port() const { return port_; }
  // The console folder served, or "" when none is.
  std::string web_dir() const { return console_ ? console_->dir() : ""; }

 private:
  Coordinator* c_;
  Authenticator* auth_;
  ServiceMetrics* m_;
  HttpOptions options_;
  std::optional<WebConsole> console_;
  std::string console_missing_;  // why no console is served
  std::atomic<bool> stopping_{false};
  std::atomic<int> streams_{0};
  std::unique_ptr<httplib::Server> svr_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace llmc::server
