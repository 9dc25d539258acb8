#include "server/http_api.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include <google/protobuf/util/json_util.h>
#include <microhttpd.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "engine/format/algorithms.h"
#include "engine/format/quant_scheme.h"
#include "server/grpc_services.h"

namespace llmc::server {

std::string ErrorField(absl::string_view message) {
  // "spec.calibration.dataset_uri: ...", "spec.gpus 0: ...", "spec.labels[\"k\"]...", "request_id: ...".
  size_t n = 0;
  if (absl::StartsWith(message, "request_id")) {
    n = 10;
  } else if (absl::StartsWith(message, "spec.")) {
    n = 5;
    while (n < message.size() &&
           ((message[n] >= 'a' && message[n] <= 'z') || message[n] == '_' || message[n] == '.' ||
            (message[n] >= '0' && message[n] <= '9')))
      ++n;
    while (n > 0 && message[n - 1] == '.') --n;
    if (n <= 5) return "";
  } else {
    return "";
  }
  if (n < message.size() && message[n] != ':' && message[n] != ' ' && message[n] != '[' && message[n] != '\'') return "";
  return std::string(message.substr(0, n));
}

namespace {

std::string JsonError(const absl::Status& s) {
  nlohmann::json j = {{"code", CodeName(s.code())}, {"message", std::string(s.message())}};
  if (std::string f = ErrorField(s.message()); !f.empty()) j["field"] = f;
  return j.dump();
}

std::string ToJsonLine(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

// A job id in a path: what the API's ids are made of.
bool IsJobId(absl::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char ch : id)
    if (!absl::ascii_isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '.' && ch != '-') return false;
  return true;
}

}  // namespace

// One whole request, as the handlers see it.
struct HttpApi::Request {
  std::string method;  // GET (HEAD is answered as GET, without the body), POST, ...
  std::string path;    // decoded, without the query
  std::multimap<std::string, std::string> query;  // decoded
  std::string authorization;
  std::string body;
  bool has_param(const std::string& k) const { return query.count(k) > 0; }
  std::string param(const std::string& k) const {
    auto it = query.find(k);
    return it == query.end() ? "" : it->second;
  }
};

// One open job-change stream: the state its content reader keeps between calls.
struct JobStream {
  HttpApi* api = nullptr;
  Principal caller;
  int64_t after = 0;  // the last change number sent
  bool started = false;
  int fd = -1;  // the connection's socket, to notice a client that went away
  absl::Time deadline, last_write;
  std::string pending;  // produced, not yet handed to the connection
};

// The answer: a status and a body, or a job-change stream.
struct HttpApi::Reply {
  std::string route = "other";  // the route label of llmc_http_requests_total
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::unique_ptr<JobStream> stream;
  void Json(std::string b) {
    content_type = "application/json";
    body = std::move(b);
  }
  void Error(const absl::Status& s) {
    status = HttpStatusFor(s.code());
    Json(JsonError(s));
  }
  void Message(const absl::Status& s, const google::protobuf::Message* m) {
    if (!s.ok() || m == nullptr) return Error(s);
    std::string out;
    google::protobuf::util::JsonPrintOptions o;
    o.preserve_proto_field_names = false;
    o.always_print_primitive_fields = true;
    auto st = google::protobuf::util::MessageToJsonString(*m, &out, o);
    if (!st.ok()) return Error(absl::InternalError(std::string(st.message())));
    status = 200;
    Json(std::move(out));
  }
};

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted: return 409;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kCancelled: return 499;
    case absl::StatusCode::kUnimplemented: return 501;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

HttpApi::HttpApi(Coordinator* c, Authenticator* auth, ServiceMetrics* m, HttpOptions options)
    : c_(c), auth_(auth), m_(m), options_(std::move(options)) {}

HttpApi::~HttpApi() { Stop(); }

void HttpApi::Count(const std::string& route, int status) { m_->http_requests->Inc({route, absl::StrCat(status)}); }

bool HttpApi::Admit(const std::string& client) {
  absl::MutexLock l(&conn_mu_);
  const char* reason = nullptr;
  if (open_ >= options_.max_connections) {
    reason = "total";
  } else if (auto it = per_client_.find(client);
             it != per_client_.end() && it->second >= options_.max_connections_per_client) {
    reason = "per_client";
  }
  if (reason == nullptr) return true;
  m_->http_refused->Inc({reason});
  // One line every 10 s at most (a client over its limit may try thousands of times a second).
  ++refusals_unlogged_;
  const absl::Time now = absl::Now();
  if (now - last_refusal_log_ >= absl::Seconds(10)) {
    if (reason == std::string("total")) {
      spdlog::warn("http: refused a connection from {}: {} are open (--http-max-connections); {} refused since the "
                   "last such line",
                   client, open_, refusals_unlogged_);
    } else {
      spdlog::warn("http: refused a connection from {}: it has {} open (--http-max-connections-per-client; raise it "
                   "behind a proxy); {} refused since the last such line",
                   client, options_.max_connections_per_client, refusals_unlogged_);
    }
    last_refusal_log_ = now;
    refusals_unlogged_ = 0;
  }
  return false;
}

void HttpApi::Opened(const std::string& client) {
  absl::MutexLock l(&conn_mu_);
  ++open_;
  ++per_client_[client];
  m_->http_connections->Set(open_);
}

void HttpApi::Closed(const std::string& client) {
  absl::MutexLock l(&conn_mu_);
  --open_;
  if (auto it = per_client_.find(client); it != per_client_.end() && --it->second <= 0) per_client_.erase(it);
  m_->http_connections->Set(open_);
}

void HttpApi::Route(const Request& req, Reply* res) {
  const std::string& path = req.path;
  const bool get = req.method == "GET" || req.method == "HEAD", post = req.method == "POST";
  auto caller = [this, &req]() -> absl::StatusOr<Principal> {
    auto p = auth_->Authenticate(req.authorization);
    if (p.ok()) LLMC_RETURN_IF_ERROR(RequireRead(*p));
    return p;
  };
  // A known path asked with another method: 405 naming the one it takes.
  auto only = [&](bool ok, const char* method, const char* route) {
    res->route = route;
    if (ok) return true;
    res->headers.emplace_back("Allow", method);
    res->Error(absl::InvalidArgumentError(absl::StrCat(path, " takes ", method, ", not ", req.method.substr(0, 16))));
    res->status = 405;
    return false;
  };

  if (path == "/healthz") {
    if (!only(get, "GET", "/healthz")) return;
    res->body = "ok\n";
    res->content_type = "text/plain";
    return;
  }
  if (path == "/metrics") {
    if (!only(get, "GET", "/metrics")) return;
    if (options_.metrics_auth) {
      auto p = caller();
      if (!p.ok()) return res->Error(p.status());
    }
    res->body = m_->registry->Render();
    res->content_type = "text/plain; version=0.0.4; charset=utf-8";
    return;
  }
  // ---- the web console's files (web_console.h) ----
  if (path == "/" || path == "/console") {
    if (!only(get, "GET", "/console/")) return;
    res->status = 302;
    res->headers.emplace_back("Location", "/console/");
    return;
  }
  if (absl::StartsWith(path, "/console/")) {
    if (!only(get, "GET", "/console/")) return;
    if (!console_) {
      res->status = 404;
      res->body = absl::StrCat("The llmc web console is not installed on this server: ", console_missing_, "\n");
      return;
    }
    auto f = console_->Read(absl::string_view(path).substr(9));
    if (!f.ok()) {
      res->status = 404;
      res->body = "not found\n";
      return;
    }
    res->body = std::move(f->body);
    res->content_type = f->content_type;
    res->headers.emplace_back("Cache-Control", "no-cache");
    return;
  }

  // ---- who the token is (the console shows it) ----
  if (path == "/api/v1/whoami") {
    if (!only(get, "GET", "/api/v1/whoami")) return;
    auto p = caller();
    if (!p.ok()) return res->Error(p.status());
    res->Json(nlohmann::json{{"tenant", p->tenant}, {"role", RoleName(p->role)}, {"canSubmit", RequireWrite(*p, "submit").ok()}}
                  .dump());
    return;
  }

  // ---- the presets and algorithms a job may name (the registries behind `llmc schemes` / `llmc algorithms`) ----
  if (path == "/api/v1/methods") {
    if (!only(get, "GET", "/api/v1/methods")) return;
    auto p = caller();
    if (!p.ok()) return res->Error(p.status());
    nlohmann::json presets = nlohmann::json::array(), algorithms = nlohmann::json::array();
    for (const PresetInfo& i : Presets())
      presets.push_back({{"name", i.name}, {"description", i.description}, {"needsCalibration", i.needs_calibration}});
    for (const AlgorithmInfo& a : Algorithms())
      algorithms.push_back({{"name", a.name}, {"summary", a.summary}, {"needsCalibration", a.needs_calibration}});
    res->Json(nlohmann::json{{"presets", presets}, {"algorithms", algorithms}}.dump());
    return;
  }

  // ---- ValidateJob ----
  if (path == "/api/v1/jobs:validate") {
    if (!only(post, "POST", "/api/v1/jobs:validate")) return;
    v1::ValidateJobRequest vr;
    v1::ValidateJobResponse out;
    auto st = google::protobuf::util::JsonStringToMessage(req.body, &vr);
    if (!st.ok())
      return res->Error(
          absl::InvalidArgumentError(absl::StrCat("body: not a ValidateJobRequest in JSON: ", st.message().ToString())));
    auto p = caller();
    if (!p.ok()) return res->Error(p.status());
    auto r = c_->ValidateJob(*p, vr.spec());
    if (r.ok()) out = std::move(*r);
    return res->Message(r.status(), &out);
  }

  // ---- the caller's job changes as server-sent events ----
  // `event: hello` (data: {"tenant", "role"}) first; then `event: job` with a Job (JSON) whenever one of the
  // caller's jobs changes (state, progress, events); `event: resync` when changes were missed (reload the list);
  // a comment line every kHttpStreamKeepAliveS seconds. Ends after kHttpStreamMaxS (the client reconnects).
  if (path == "/api/v1/jobs:stream") {
    if (!only(get, "GET", "/api/v1/jobs:stream")) return;
    auto p = caller();
    if (!p.ok()) return res->Error(p.status());
    if (streams_.fetch_add(1) >= kMaxHttpStreams) {
      streams_.fetch_sub(1);
      return res->Error(absl::ResourceExhaustedError(
          absl::StrCat(kMaxHttpStreams, " job streams are open on this server; close a console tab or retry later")));
    }
    res->stream = std::make_unique<JobStream>();
    res->stream->api = this;
    res->stream->caller = *p;
    res->stream->after = c_->LastJobChange();
    res->stream->deadline = absl::Now() + absl::Seconds(kHttpStreamMaxS);
    res->content_type = "text/event-stream";
    return;
  }
  if (path == "/api/v1/jobs") {
    if (post) {
      res->route = "/api/v1/jobs";
      v1::CreateJobRequest cr;
      v1::Job out;
      auto st = google::protobuf::util::JsonStringToMessage(req.body, &cr);
      if (!st.ok())
        return res->Error(
            absl::InvalidArgumentError(absl::StrCat("body: not a CreateJobRequest in JSON: ", st.message().ToString())));
      auto p = caller();
      if (!p.ok()) return res->Error(p.status());
      auto r = c_->CreateJob(*p, cr);
      if (r.ok()) out = std::move(*r);
      return res->Message(r.status(), &out);
    }
    if (!only(get, "GET, POST", "/api/v1/jobs")) return;
    v1::ListJobsRequest lr;
    if (req.has_param("state")) {
      v1::JobState st = v1::JOB_STATE_UNSPECIFIED;
      if (!v1::JobState_Parse(req.param("state"), &st))
        return res->Error(absl::InvalidArgumentError(
            absl::StrCat("state '", absl::CHexEscape(req.param("state").substr(0, 64)),
                         "': use QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED or RETRYING")));
      lr.set_state(st);
    }
    auto [lb, le] = req.query.equal_range("label");
    for (auto it = lb; it != le; ++it) {
      std::pair<std::string, std::string> kv = absl::StrSplit(it->second, absl::MaxSplits('=', 1));
      (*lr.mutable_labels())[kv.first] = kv.second;
    }
    if (req.has_param("page_size")) {
      int n = 0;
      if (!absl::SimpleAtoi(req.param("page_size"), &n))
        return res->Error(absl::InvalidArgumentError("page_size: not a number"));
      lr.set_page_size(n);
    }
    lr.set_page_token(req.param("page_token"));
    auto p = caller();
    if (!p.ok()) return res->Error(p.status());
    v1::ListJobsResponse out;
    auto r = c_->ListJobs(*p, lr);
    if (r.ok()) out = std::move(*r);
    return res->Message(r.status(), &out);
  }
  if (path == "/api/v1/workers") {
    if (!only(get, "GET", "/api/v1/workers")) return;
    auto p = caller();
    if (!p.ok()) return res->Error(p.status());
    v1::ListWorkersResponse out;
    auto r = c_->ListWorkers(*p);
    if (r.ok()) out = std::move(*r);
    return res->Message(r.status(), &out);
  }
  if (absl::StartsWith(path, "/api/v1/jobs/")) {
    absl::string_view rest = absl::string_view(path).substr(13);
    if (absl::ConsumeSuffix(&rest, ":cancel") && IsJobId(rest)) {
      if (!only(post, "POST", "/api/v1/jobs/{id}:cancel")) return;
      auto p = caller();
      if (!p.ok()) return res->Error(p.status());
      v1::Job out;
      auto r = c_->CancelJob(*p, std::string(rest));
      if (r.ok()) out = std::move(*r);
      return res->Message(r.status(), &out);
    }
    rest = absl::string_view(path).substr(13);
    if (absl::ConsumeSuffix(&rest, "/events") && IsJobId(rest)) {
      if (!only(get, "GET", "/api/v1/jobs/{id}/events")) return;
      // Replay only (no long poll): events after from_seq up to now.
      v1::WatchJobRequest wr;
      wr.set_id(std::string(rest));
      int64_t from = 0;
      if (req.has_param("from_seq") && !absl::SimpleAtoi(req.param("from_seq"), &from))
        return res->Error(absl::InvalidArgumentError("from_seq: not a number"));
      wr.set_from_seq(from);
      nlohmann::json events = nlohmann::json::array();
      auto p = caller();
      if (!p.ok()) return res->Error(p.status());
      auto job = c_->GetJob(*p, wr.id());
      if (!job.ok()) return res->Error(job.status());
      if (from < job->last_event_seq()) {
        const int64_t last = job->last_event_seq();
        absl::Status s = c_->WatchJob(
            *p, wr,
            [&](const v1::JobEvent& e) {
              std::string j;
              (void)google::protobuf::util::MessageToJsonString(e, &j);
              events.push_back(nlohmann::json::parse(j));
              return e.seq() < last;  // stop at what existed when the request came
            },
            [] { return false; });
        if (!s.ok() && !absl::IsCancelled(s)) return res->Error(s);
      }
      res->Json(nlohmann::json{{"events", events}}.dump());
      return;
    }
    rest = absl::string_view(path).substr(13);
    if (IsJobId(rest)) {
      if (!only(get, "GET", "/api/v1/jobs/{id}")) return;
      auto p = caller();
      if (!p.ok()) return res->Error(p.status());
      v1::Job out;
      auto r = c_->GetJob(*p, std::string(rest));
      if (r.ok()) out = std::move(*r);
      return res->Message(r.status(), &out);
    }
  }
  res->route = "other";
  res->status = 404;
  res->body = "not found\n";
}

// libmicrohttpd's callbacks.
struct HttpCallbacks {
  // What a request keeps between the calls that deliver it (its body comes in pieces).
  struct Pending {
    std::string body;
    size_t dropped = 0;  // bytes of a body over the limit read and dropped
    bool too_large = false;
  };

  static MHD_Result CollectQuery(void* cls, MHD_ValueKind, const char* key, const char* value) {
    auto* q = static_cast<std::multimap<std::string, std::string>*>(cls);
    if (key != nullptr && q->size() < 256) q->emplace(key, value == nullptr ? "" : value);
    return MHD_YES;
  }

  static MHD_Result OnRequest(void* cls, MHD_Connection* connection, const char* url, const char* method,
                              const char* /*version*/, const char* upload_data, size_t* upload_data_size,
                              void** con_cls) {
    auto* api = static_cast<HttpApi*>(cls);
    auto* pending = static_cast<Pending*>(*con_cls);
    if (pending == nullptr) {  // the headers are in; the body (if any) comes in the next calls
      pending = new Pending;
      *con_cls = pending;
      const char* length = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
      uint64_t n = 0;
      // Refused before the body is read (the connection is closed after the reply).
      if (length != nullptr && absl::SimpleAtoi(length, &n) && n > static_cast<uint64_t>(kMaxRequestBytes))
        return TooLarge(api, connection);
      return MHD_YES;
    }
    if (*upload_data_size > 0) {
      // A body without a length (chunked) that passes the limit: the rest is read and dropped, and the reply is
      // 413; one that goes on for more than the limit again closes the connection.
      if (pending->too_large || pending->body.size() + *upload_data_size > static_cast<size_t>(kMaxRequestBytes)) {
        pending->too_large = true;
        pending->dropped += *upload_data_size + std::exchange(pending->body, std::string()).size();
        *upload_data_size = 0;
        return pending->dropped > 2 * static_cast<size_t>(kMaxRequestBytes) ? MHD_NO : MHD_YES;
      }
      pending->body.append(upload_data, *upload_data_size);
      *upload_data_size = 0;
      return MHD_YES;
    }
    if (pending->too_large) return TooLarge(api, connection);
    HttpApi::Request req;
    req.method = method;
    req.path = url;
    req.body = std::move(pending->body);
    MHD_get_connection_values(connection, MHD_GET_ARGUMENT_KIND, &CollectQuery, &req.query);
    const char* auth = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth != nullptr) req.authorization = auth;
    HttpApi::Reply reply;
    api->Route(req, &reply);
    return api->Send(connection, req, &reply) ? MHD_YES : MHD_NO;
  }

  static MHD_Result TooLarge(HttpApi* api, MHD_Connection* connection) {
    HttpApi::Reply reply;
    reply.Error(absl::InvalidArgumentError(
        absl::StrCat("body: larger than ", kMaxRequestBytes, " bytes; a job spec or recipe this large is refused")));
    reply.status = 413;
    HttpApi::Request req;
    return api->Send(connection, req, &reply) ? MHD_YES : MHD_NO;
  }

  static void OnCompleted(void*, MHD_Connection*, void** con_cls, MHD_RequestTerminationCode) {
    delete static_cast<Pending*>(*con_cls);
    *con_cls = nullptr;
  }

  // A job-change stream's next bytes: blocks (this connection's own thread) until there is something to send,
  // the stream's time is up, the server stops or the client went away.
  static ssize_t ReadStream(void* cls, uint64_t, char* buf, size_t max) {
    auto* st = static_cast<JobStream*>(cls);
    HttpApi* api = st->api;
    while (st->pending.empty()) {
      if (!st->started) {
        st->started = true;
        st->pending = absl::StrCat(
            "retry: 2000\nevent: hello\ndata: ",
            nlohmann::json{{"tenant", st->caller.tenant}, {"role", RoleName(st->caller.role)}}.dump(), "\n\n");
        break;
      }
      if (api->stopping_ || absl::Now() > st->deadline) return MHD_CONTENT_READER_END_OF_STREAM;
      if (st->fd >= 0) {
        pollfd p{st->fd, POLLRDHUP, 0};
        if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
          return MHD_CONTENT_READER_END_WITH_ERROR;  // the client closed its side
      }
      // Wait at most a second, so Stop and a closed connection are noticed soon.
      Coordinator::JobChanges ch = api->c_->WaitJobChanges(st->after, absl::Seconds(1));
      if (ch.stopped) return MHD_CONTENT_READER_END_OF_STREAM;
      if (ch.missed) st->pending = "event: resync\ndata: {}\n\n";
      for (const std::string& id : ch.job_ids) {
        auto job = api->c_->GetJob(st->caller, id);  // NOT_FOUND for another tenant's job: not sent
        if (job.ok()) absl::StrAppend(&st->pending, "event: job\ndata: ", ToJsonLine(*job), "\n\n");
      }
      st->after = ch.seq;
      if (st->pending.empty() && absl::Now() - st->last_write > absl::Seconds(kHttpStreamKeepAliveS))
        st->pending = ": keep-alive\n\n";
    }
    const size_t n = std::min(max, st->pending.size());
    std::memcpy(buf, st->pending.data(), n);
    st->pending.erase(0, n);
    st->last_write = absl::Now();
    return static_cast<ssize_t>(n);
  }

  static void EndStream(void* cls) {
    auto* st = static_cast<JobStream*>(cls);
    st->api->streams_.fetch_sub(1);
    delete st;
  }

  // Percent-decoding of the path and the query (in place): %HH becomes its byte, except %00, which stays as it is
  // (the path and values are C strings here: a decoded NUL would cut "index.html%00.js" to "index.html").
  static size_t Unescape(void*, MHD_Connection*, char* s) {
    auto hex = [](char ch) -> int {
      if (ch >= '0' && ch <= '9') return ch - '0';
      if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
      if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
      return -1;
    };
    char* out = s;
    for (const char* in = s; *in != '\0';) {
      if (in[0] == '%' && hex(in[1]) >= 0 && hex(in[2]) >= 0 && (hex(in[1]) | hex(in[2])) != 0) {
        *out++ = static_cast<char>(hex(in[1]) * 16 + hex(in[2]));
        in += 3;
      } else {
        *out++ = *in++;
      }
    }
    *out = '\0';
    return static_cast<size_t>(out - s);
  }

  // A client's address without the port ("127.0.0.1", "::1"; an IPv4-mapped IPv6 address as IPv4).
  static std::string ClientAddress(const sockaddr* addr) {
    char text[INET6_ADDRSTRLEN] = "?";
    if (addr == nullptr) return text;
    if (addr->sa_family == AF_INET) {
      ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(addr)->sin_addr, text, sizeof(text));
    } else if (addr->sa_family == AF_INET6) {
      const in6_addr& a6 = reinterpret_cast<const sockaddr_in6*>(addr)->sin6_addr;
      if (IN6_IS_ADDR_V4MAPPED(&a6)) {
        ::inet_ntop(AF_INET, &a6.s6_addr[12], text, sizeof(text));
      } else {
        ::inet_ntop(AF_INET6, &a6, text, sizeof(text));
      }
    }
    return text;
  }

  // Called for every accepted connection before it is served: the limits.
  static MHD_Result Accept(void* cls, const sockaddr* addr, socklen_t) {
    return static_cast<HttpApi*>(cls)->Admit(ClientAddress(addr)) ? MHD_YES : MHD_NO;
  }

  // A connection opened (on the accepting thread, right after Accept) or closed: the counts by client.
  static void Connection(void* cls, MHD_Connection* connection, void** socket_context, MHD_ConnectionNotificationCode what) {
    auto* api = static_cast<HttpApi*>(cls);
    if (what == MHD_CONNECTION_NOTIFY_STARTED) {
      const MHD_ConnectionInfo* info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
      auto* client = new std::string(ClientAddress(info != nullptr ? info->client_addr : nullptr));
      api->Opened(*client);
      *socket_context = client;
    } else if (what == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context != nullptr) {
      auto* client = static_cast<std::string*>(*socket_context);
      api->Closed(*client);
      delete client;
      *socket_context = nullptr;
    }
  }

  static void Log(void*, const char* fmt, va_list ap) {
    char line[512];
    std::vsnprintf(line, sizeof(line), fmt, ap);
    std::string_view v(line);
    while (!v.empty() && v.back() == '\n') v.remove_suffix(1);
    spdlog::debug("http: {}", v);
  }
};

bool HttpApi::Send(MHD_Connection* connection, const Request& req, Reply* reply) {
  MHD_Response* r = nullptr;
  if (reply->stream) {
    const MHD_ConnectionInfo* info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (info != nullptr) reply->stream->fd = info->connect_fd;
    JobStream* st = reply->stream.release();
    r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, &HttpCallbacks::ReadStream, st,
                                          &HttpCallbacks::EndStream);
    if (r == nullptr) {
      HttpCallbacks::EndStream(st);
      return false;
    }
    // The stream has its own end (kHttpStreamMaxS) and writes a keep-alive line while idle.
    MHD_set_connection_option(connection, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    MHD_add_response_header(r, "Cache-Control", "no-store");
  } else {
    r = MHD_create_response_from_buffer(reply->body.size(), reply->body.data(), MHD_RESPMEM_MUST_COPY);
    if (r == nullptr) return false;
    if (absl::StartsWith(req.path, "/api/")) MHD_add_response_header(r, "Cache-Control", "no-store");
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, reply->content_type.c_str());
  for (const auto& [k, v] : SecurityHeaders()) MHD_add_response_header(r, k.c_str(), v.c_str());
  for (const auto& [k, v] : reply->headers) MHD_add_response_header(r, k.c_str(), v.c_str());
  if (reply->status == 401) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
  const bool queued = MHD_queue_response(connection, static_cast<unsigned>(reply->status), r) == MHD_YES;
  MHD_destroy_response(r);
  Count(reply->route, reply->status);
  return queued;
}

absl::Status HttpApi::Start(const std::string& host, int port) {
  if (options_.max_connections < 1 || options_.max_connections_per_client < 1 ||
      options_.max_connections_per_client > options_.max_connections)
    return absl::InvalidArgumentError(absl::StrCat(
        "http connection limits: --http-max-connections (", options_.max_connections,
        ") and --http-max-connections-per-client (", options_.max_connections_per_client,
        ") must be at least 1, the second at most the first"));
  {
    auto wc = WebConsole::Open(options_.web_dir.empty() ? DefaultWebDir() : options_.web_dir);
    if (wc.ok()) {
      console_ = std::move(*wc);
    } else if (!options_.web_dir.empty()) {
      return absl::Status(wc.status().code(), absl::StrCat("--web-dir: ", wc.status().message()));
    } else {
      console_missing_ = std::string(wc.status().message());
      spdlog::warn("no web console: {}", console_missing_);
    }
  }
  if (port < 0 || port > 65535) return absl::InvalidArgumentError(absl::StrCat("http: port ", port, " is out of range"));
  // The address to bind: a numeric address ("[::1]" or "::1" for IPv6) or a name of this machine.
  std::string bind_host = host;
  if (bind_host.size() >= 2 && bind_host.front() == '[' && bind_host.back() == ']')
    bind_host = bind_host.substr(1, bind_host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = absl::StrCat(port);
  if (int e = ::getaddrinfo(bind_host.empty() ? nullptr : bind_host.c_str(), service.c_str(), &hints, &found); e != 0)
    return absl::InvalidArgumentError(absl::StrCat("http: cannot bind to '", absl::CHexEscape(host.substr(0, 256)),
                                                   "': ", gai_strerror(e), "; give an address of this machine"));
  sockaddr_storage addr{};
  std::memcpy(&addr, found->ai_addr, std::min<size_t>(found->ai_addrlen, sizeof(addr)));
  const bool v6 = found->ai_family == AF_INET6;
  ::freeaddrinfo(found);

  stopping_ = false;
  // One thread per connection (a job-change stream blocks its own), poll() rather than select() (no descriptor
  // limit), connections capped in all and per client address (Accept; libmicrohttpd's own cap, one above, is only
  // a backstop), silent ones closed after kHttpIdleTimeoutS.
  unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG;
  if (v6) flags |= MHD_USE_IPv6;
  daemon_ = MHD_start_daemon(
      flags, static_cast<uint16_t>(port), &HttpCallbacks::Accept, this, &HttpCallbacks::OnRequest, this,
      MHD_OPTION_EXTERNAL_LOGGER, &HttpCallbacks::Log, this,  // first, so every message goes to the log
      MHD_OPTION_SOCK_ADDR, reinterpret_cast<sockaddr*>(&addr),
      MHD_OPTION_CONNECTION_LIMIT, static_cast<unsigned>(options_.max_connections) + 1,
      MHD_OPTION_CONNECTION_TIMEOUT, static_cast<unsigned>(kHttpIdleTimeoutS),
      MHD_OPTION_NOTIFY_COMPLETED, &HttpCallbacks::OnCompleted, this,
      MHD_OPTION_NOTIFY_CONNECTION, &HttpCallbacks::Connection, this,
      MHD_OPTION_UNESCAPE_CALLBACK, &HttpCallbacks::Unescape, this,
      MHD_OPTION_LISTEN_BACKLOG_SIZE, 512u,
      MHD_OPTION_END);
  if (daemon_ == nullptr)
    return absl::UnavailableError(absl::StrCat("http: cannot listen on ", host, ":", port,
                                               " (in use?); choose another --http-listen"));
  const MHD_DaemonInfo* info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
  port_ = info != nullptr ? info->port : port;
  return absl::OkStatus();
}

void HttpApi::Stop() {
  stopping_ = true;
  if (daemon_ != nullptr) {
    MHD_stop_daemon(daemon_);  // closes every connection and joins its thread (streams end within a second)
    daemon_ = nullptr;
  }
}

}  // namespace llmc::server
