#include "server/http_api.h"

#include <chrono>

#include <google/protobuf/util/json_util.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/grpc_services.h"

namespace llmc::server {

namespace {

std::string JsonError(const absl::Status& s) {
  nlohmann::json j = {{"code", CodeName(s.code())}, {"message", std::string(s.message())}};
  return j.dump();
}

void Reply(httplib::Response& res, const absl::Status& s, const google::protobuf::Message* m) {
  if (!s.ok()) {
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

HttpApi::HttpApi(Coordinator* c, Authenticator* auth, ServiceMetrics* m) : c_(c), auth_(auth), m_(m) {}

HttpApi::~HttpApi() { Stop(); }

absl::Status HttpApi::Start(const std::string& host, int port) {
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
  auto caller = [this](const httplib::Request& req) { return auth_->Authenticate(req.get_header_value("Authorization")); };

  svr.Get("/healthz", [count](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
    count("/healthz", res);
  });
  svr.Get("/metrics", [this, count](const httplib::Request&, httplib::Response& res) {
    res.set_content(m_->registry->Render(), "text/plain; version=0.0.4; charset=utf-8");
    count("/metrics", res);
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
  if (svr_) svr_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace llmc::server
