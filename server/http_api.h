// The coordinator's HTTP side (libmicrohttpd): /healthz, /metrics (Prometheus text format), a JSON view of the
// API (docs/api.md, "JSON view"): the same messages as the gRPC API, converted with protobuf's JSON mapping, with
// the same bearer-token auth (header `Authorization: Bearer <token>`), a server-sent event stream of the caller's
// job changes, and the web console's static files under /console/ (web_console.h, docs/console.md). Every
// response carries SecurityHeaders().
//
// Thread-safety: Start/Stop from one thread; requests are served on libmicrohttpd's threads (one per connection).
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/auth.h"
#include "server/coordinator.h"
#include "server/metrics.h"
#include "server/web_console.h"

struct MHD_Daemon;
struct MHD_Connection;

namespace llmc::server {

// Serving limits (libmicrohttpd, one thread per open connection): connections open at once, connections open at
// once from one client address (more are closed as soon as they are accepted, so one client cannot take the pool;
// raise it behind a reverse proxy, where every request comes from the proxy's address), and seconds a connection
// may stay silent (an idle keep-alive connection, or a slow client sending its request or reading its reply).
inline constexpr int kHttpMaxConnections = 256;
inline constexpr int kHttpMaxConnectionsPerClient = 32;
inline constexpr int kHttpIdleTimeoutS = 5;
// Job-change streams (GET /api/v1/jobs:stream) open at once (each holds a connection; more are refused with
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
  // Connection limits (see above); each at least 1, and the per-client limit at most the total.
  int max_connections = kHttpMaxConnections;
  int max_connections_per_client = kHttpMaxConnectionsPerClient;
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
  // Binds host:port (port 0: any; see port()) and serves on background threads. NOT_FOUND when
  // options.web_dir is given and is not a console folder, INVALID_ARGUMENT for limits out of range or a host that
  // is not an address of this machine, UNAVAILABLE when the port cannot be bound.
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
  MHD_Daemon* daemon_ = nullptr;
  int port_ = 0;
  // Open connections, in all and by client address (the limits of HttpOptions are applied here, when a connection
  // is accepted, so refusals are counted and logged).
  absl::Mutex conn_mu_;
  int open_ ABSL_GUARDED_BY(conn_mu_) = 0;
  absl::flat_hash_map<std::string, int> per_client_ ABSL_GUARDED_BY(conn_mu_);
  absl::Time last_refusal_log_ ABSL_GUARDED_BY(conn_mu_) = absl::InfinitePast();
  int64_t refusals_unlogged_ ABSL_GUARDED_BY(conn_mu_) = 0;

  struct Request;
  struct Reply;
  friend struct HttpCallbacks;  // libmicrohttpd's callbacks (http_api.cc)
  // The answer to one whole request (routing, auth, the handlers) and the route it is counted under; Send queues
  // it on the connection and counts it.
  void Route(const Request& req, Reply* reply);
  bool Send(MHD_Connection* connection, const Request& req, Reply* reply);
  void Count(const std::string& route, int status);
  // Whether a connection from `client` may open now (counted and logged when not).
  bool Admit(const std::string& client);
  void Opened(const std::string& client);
  void Closed(const std::string& client);
};

}  // namespace llmc::server
