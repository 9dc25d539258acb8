#include "server/http_api.h"

#include <chrono>
#include <memory>

#include <google/protobuf/util/json_util.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

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

// One open job-change stream.
struct Stream {
  Principal caller;
  int64_t after = 0;  // the last change number sent
  bool started = false;
  absl::Time deadline, last_write;
};

void Reply(httplib::Response& res, const absl::Status& s, const google::protobuf::Message* m) {
  if (!s.ok() || m == nullptr) {
    res.status = HttpStatusFor(s.code());
    res.set_content(JsonError(s), "application/json");
    return;
  }
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = false;
  o.always_print_primitive_fields = true;
  auto st = google::protobuf::util::MessageToJsonString(*m, &out, o);
  if (!st.ok()) {
    res.status = 500;
    res.set_content(JsonError(absl::InternalError(std::string(st.message()))), "application/json");
    return;
  }
  res.status = 200;
  res.set_content(out, "application/json");
}

}  // namespace

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

absl::Status HttpApi::Start(const std::string& host, int port) {
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
  stopping_ = false;
  svr_ = std::make_unique<httplib::Server>();
  auto& svr = *svr_;
  // httplib serves a connection on one pool thread for its whole life: idle and slow clients are cut off after a
  // few seconds, and the pool is large enough that many connections held open still leave threads for /healthz
  // and /metrics (docs/service.md, "HTTP").
  svr.new_task_queue = [] { return new httplib::ThreadPool(kHttpThreads); };
  svr.set_keep_alive_timeout(kHttpIdleTimeoutS);
  svr.set_keep_alive_max_count(100);
  svr.set_read_timeout(kHttpReadTimeoutS, 0);
  svr.set_write_timeout(kHttpReadTimeoutS, 0);
  svr.set_payload_max_length(kMaxRequestBytes);
  // Before a handler sets one, a response's status is -1 (httplib answers 200 then).
  auto count = [this](const char* route, const httplib::Response& res) {
    m_->http_requests->Inc({route, absl::StrCat(res.status == -1 ? 200 : res.status)});
  };
  // Requests no route took (404, or 400 for a malformed request) are counted under route "other"; a handler's own
  // error replies carry a body and were counted by the handler.
  svr.set_error_handler([this](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) m_->http_requests->Inc({"other", absl::StrCat(res.status)});
  });
  auto caller = [this](const httplib::Request& req) -> absl::StatusOr<Principal> {
    auto p = auth_->Authenticate(req.get_header_value("Authorization"));
    if (p.ok()) LLMC_RETURN_IF_ERROR(RequireRead(*p));
    return p;
  };
  svr.set_post_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    for (const auto& [k, v] : SecurityHeaders()) res.set_header(k.c_str(), v);
    if (absl::StartsWith(req.path, "/api/")) res.set_header("Cache-Control", "no-store");
    if (res.status == 401) res.set_header("WWW-Authenticate", "Bearer");
  });

  svr.Get("/healthz", [count](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
    count("/healthz", res);
  });
  svr.Get("/metrics", [this, count, caller](const httplib::Request& req, httplib::Response& res) {
    if (options_.metrics_auth) {
      auto p = caller(req);
      if (!p.ok()) {
        Reply(res, p.status(), nullptr);
        count("/metrics", res);
        return;
      }
    }
    res.set_content(m_->registry->Render(), "text/plain; version=0.0.4; charset=utf-8");
    count("/metrics", res);
  });
  // ---- the web console's files (web_console.h) ----
  svr.Get("/", [](const httplib::Request&, httplib::Response& res) { res.set_redirect("/console/"); });
  svr.Get("/console", [](const httplib::Request&, httplib::Response& res) { res.set_redirect("/console/"); });
  svr.Get(R"(/console/(.*))", [this, count](const httplib::Request& req, httplib::Response& res) {
    if (!console_) {
      res.status = 404;
      res.set_content(absl::StrCat("The llmc web console is not installed on this server: ", console_missing_, "\n"),
                      "text/plain; charset=utf-8");
    } else {
      auto f = console_->Read(req.matches[1].str());
      if (f.ok()) {
        res.set_content(std::move(f->body), f->content_type);
        res.set_header("Cache-Control", "no-cache");
      } else {
        res.status = 404;
        res.set_content("not found\n", "text/plain; charset=utf-8");
      }
    }
    count("/console/", res);
  });

  // ---- who the token is (the console shows it) ----
  svr.Get("/api/v1/whoami", [count, caller](const httplib::Request& req, httplib::Response& res) {
    auto p = caller(req);
    if (!p.ok()) {
      Reply(res, p.status(), nullptr);
    } else {
      res.set_content(nlohmann::json{{"tenant", p->tenant},
                                     {"role", RoleName(p->role)},
                                     {"canSubmit", RequireWrite(*p, "submit").ok()}}
                          .dump(),
                      "application/json");
    }
    count("/api/v1/whoami", res);
  });

  // ---- the presets and algorithms a job may name (the registries behind `llmc schemes` / `llmc algorithms`) ----
  svr.Get("/api/v1/methods", [count, caller](const httplib::Request& req, httplib::Response& res) {
    auto p = caller(req);
    if (!p.ok()) {
      Reply(res, p.status(), nullptr);
    } else {
      nlohmann::json presets = nlohmann::json::array(), algorithms = nlohmann::json::array();
      for (const PresetInfo& i : Presets())
        presets.push_back({{"name", i.name}, {"description", i.description}, {"needsCalibration", i.needs_calibration}});
      for (const AlgorithmInfo& a : Algorithms())
        algorithms.push_back({{"name", a.name}, {"summary", a.summary}, {"needsCalibration", a.needs_calibration}});
      res.set_content(nlohmann::json{{"presets", presets}, {"algorithms", algorithms}}.dump(), "application/json");
    }
    count("/api/v1/methods", res);
  });

  // ---- ValidateJob ----
  svr.Post("/api/v1/jobs:validate", [this, count, caller](const httplib::Request& req, httplib::Response& res) {
    v1::ValidateJobRequest vr;
    v1::ValidateJobResponse out;
    absl::Status s;
    auto st = google::protobuf::util::JsonStringToMessage(req.body, &vr);
    if (!st.ok())
      s = absl::InvalidArgumentError(absl::StrCat("body: not a ValidateJobRequest in JSON: ", st.message().ToString()));
    if (s.ok()) {
      auto p = caller(req);
      s = p.status();
      if (p.ok()) {
        auto r = c_->ValidateJob(*p, vr.spec());
        s = r.status();
        if (r.ok()) out = std::move(*r);
      }
    }
    Reply(res, s, &out);
    count("/api/v1/jobs:validate", res);
  });

  // ---- the caller's job changes as server-sent events ----
  // `event: hello` (data: {"tenant", "role"}) first; then `event: job` with a Job (JSON) whenever one of the
  // caller's jobs changes (state, progress, events); `event: resync` when changes were missed (reload the list);
  // a comment line every kHttpStreamKeepAliveS seconds. Ends after kHttpStreamMaxS (the client reconnects).
  svr.Get("/api/v1/jobs:stream", [this, count, caller](const httplib::Request& req, httplib::Response& res) {
    auto p = caller(req);
    absl::Status s = p.status();
    if (s.ok() && streams_.fetch_add(1) >= kMaxHttpStreams) {
      streams_.fetch_sub(1);
      s = absl::ResourceExhaustedError(
          absl::StrCat(kMaxHttpStreams, " job streams are open on this server; close a console tab or retry later"));
    }
    if (!s.ok()) {
      Reply(res, s, nullptr);
      count("/api/v1/jobs:stream", res);
      return;
    }
    auto st = std::make_shared<Stream>();
    st->caller = *p;
    st->after = c_->LastJobChange();
    st->deadline = absl::Now() + absl::Seconds(kHttpStreamMaxS);
    res.set_header("Cache-Control", "no-store");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, st](size_t, httplib::DataSink& sink) {
          std::string out;
          if (!st->started) {
            st->started = true;
            out = absl::StrCat("retry: 2000\nevent: hello\ndata: ",
                               nlohmann::json{{"tenant", st->caller.tenant}, {"role", RoleName(st->caller.role)}}.dump(),
                               "\n\n");
          } else {
            if (stopping_ || absl::Now() > st->deadline || !sink.is_writable()) {
              sink.done();
              return true;
            }
            // Wait at most a second, so Stop and a closed connection are noticed soon.
            Coordinator::JobChanges ch = c_->WaitJobChanges(st->after, absl::Seconds(1));
            if (ch.stopped) {
              sink.done();
              return true;
            }
            if (ch.missed) out = "event: resync\ndata: {}\n\n";
            for (const std::string& id : ch.job_ids) {
              auto job = c_->GetJob(st->caller, id);  // NOT_FOUND for another tenant's job: not sent
              if (job.ok()) absl::StrAppend(&out, "event: job\ndata: ", ToJsonLine(*job), "\n\n");
            }
            st->after = ch.seq;
            if (out.empty() && absl::Now() - st->last_write > absl::Seconds(kHttpStreamKeepAliveS))
              out = ": keep-alive\n\n";
          }
          if (out.empty()) return true;
          st->last_write = absl::Now();
          return sink.write(out.data(), out.size());
        },
        [this](bool) { streams_.fetch_sub(1); });
    count("/api/v1/jobs:stream", res);
  });
  svr.Get("/api/v1/jobs", [this, count, caller](const httplib::Request& req, httplib::Response& res) {
    v1::ListJobsRequest lr;
    absl::Status s;
    if (req.has_param("state")) {
      v1::JobState st = v1::JOB_STATE_UNSPECIFIED;
      if (!v1::JobState_Parse(req.get_param_value("state"), &st))
        s = absl::InvalidArgumentError(absl::StrCat("state '", req.get_param_value("state"),
                                                    "': use QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED or RETRYING"));
      lr.set_state(st);
    }
    for (size_t i = 0; i < req.get_param_value_count("label"); ++i) {
      std::pair<std::string, std::string> kv = absl::StrSplit(req.get_param_value("label", i), absl::MaxSplits('=', 1));
      (*lr.mutable_labels())[kv.first] = kv.second;
    }
    if (req.has_param("page_size")) {
      int n = 0;
      if (!absl::SimpleAtoi(req.get_param_value("page_size"), &n)) s = absl::InvalidArgumentError("page_size: not a number");
      lr.set_page_size(n);
    }
    lr.set_page_token(req.get_param_value("page_token"));
    v1::ListJobsResponse out;
    if (s.ok()) {
      auto p = caller(req);
      s = p.status();
      if (p.ok()) {
        auto r = c_->ListJobs(*p, lr);
        s = r.status();
        if (r.ok()) out = std::move(*r);
      }
    }
    Reply(res, s, &out);
    count("/api/v1/jobs", res);
  });
  svr.Post("/api/v1/jobs", [this, count, caller](const httplib::Request& req, httplib::Response& res) {
    v1::CreateJobRequest cr;
    v1::Job out;
    absl::Status s;
    auto st = google::protobuf::util::JsonStringToMessage(req.body, &cr);
    if (!st.ok()) s = absl::InvalidArgumentError(absl::StrCat("body: not a CreateJobRequest in JSON: ", st.message().ToString()));
    if (s.ok()) {
      auto p = caller(req);
      s = p.status();
      if (p.ok()) {
        auto r = c_->CreateJob(*p, cr);
        s = r.status();
        if (r.ok()) out = std::move(*r);
      }
    }
    Reply(res, s, &out);
    count("/api/v1/jobs", res);
  });
  svr.Post(R"(/api/v1/jobs/([A-Za-z0-9_.-]+):cancel)", [this, count, caller](const httplib::Request& req,
                                                                          httplib::Response& res) {
    v1::Job out;
    auto p = caller(req);
    absl::Status s = p.status();
    if (p.ok()) {
      auto r = c_->CancelJob(*p, req.matches[1]);
      s = r.status();
      if (r.ok()) out = std::move(*r);
    }
    Reply(res, s, &out);
    count("/api/v1/jobs/{id}:cancel", res);
  });
  svr.Get(R"(/api/v1/jobs/([A-Za-z0-9_.-]+)/events)", [this, count, caller](const httplib::Request& req,
                                                                         httplib::Response& res) {
    // Replay only (no long poll): events after from_seq up to now.
    v1::WatchJobRequest wr;
    wr.set_id(req.matches[1]);
    int64_t from = 0;
    if (req.has_param("from_seq")) absl::SimpleAtoi(req.get_param_value("from_seq"), &from);
    wr.set_from_seq(from);
    nlohmann::json events = nlohmann::json::array();
    auto p = caller(req);
    absl::Status s = p.status();
    if (p.ok()) {
      auto job = c_->GetJob(*p, wr.id());
      s = job.status();
      if (job.ok() && from < job->last_event_seq()) {
        const int64_t last = job->last_event_seq();
        s = c_->WatchJob(
            *p, wr,
            [&](const v1::JobEvent& e) {
              std::string j;
              (void)google::protobuf::util::MessageToJsonString(e, &j);
              events.push_back(nlohmann::json::parse(j));
              return e.seq() < last;  // stop at what existed when the request came
            },
            [] { return false; });
        if (absl::IsCancelled(s)) s = absl::OkStatus();
      }
    }
    if (s.ok()) {
      res.set_content(nlohmann::json{{"events", events}}.dump(), "application/json");
    } else {
      res.status = HttpStatusFor(s.code());
      res.set_content(JsonError(s), "application/json");
    }
    count("/api/v1/jobs/{id}/events", res);
  });
  svr.Get(R"(/api/v1/jobs/([A-Za-z0-9_.-]+))", [this, count, caller](const httplib::Request& req, httplib::Response& res) {
    v1::Job out;
    auto p = caller(req);
    absl::Status s = p.status();
    if (p.ok()) {
      auto r = c_->GetJob(*p, req.matches[1]);
      s = r.status();
      if (r.ok()) out = std::move(*r);
    }
    Reply(res, s, &out);
    count("/api/v1/jobs/{id}", res);
  });
  svr.Get("/api/v1/workers", [this, count, caller](const httplib::Request& req, httplib::Response& res) {
    v1::ListWorkersResponse out;
    auto p = caller(req);
    absl::Status s = p.status();
    if (p.ok()) {
      auto r = c_->ListWorkers(*p);
      s = r.status();
      if (r.ok()) out = std::move(*r);
    }
    Reply(res, s, &out);
    count("/api/v1/workers", res);
  });

  if (port == 0) {
    port_ = svr.bind_to_any_port(host);
    if (port_ < 0) return absl::UnavailableError(absl::StrCat("http: cannot listen on ", host));
  } else {
    if (!svr.bind_to_port(host, port))
      return absl::UnavailableError(absl::StrCat("http: cannot listen on ", host, ":", port,
                                                 " (in use?); choose another --http-listen"));
    port_ = port;
  }
  thread_ = std::thread([this] { svr_->listen_after_bind(); });
  // httplib's stop() does nothing before the listen loop runs: wait for it, so a Stop right after Start ends it.
  while (!svr_->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return absl::OkStatus();
}

void HttpApi::Stop() {
  stopping_ = true;
  if (svr_) svr_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace llmc::server
