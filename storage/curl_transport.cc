// libcurl implementation of HttpTransport.
#include <curl/curl.h>

#include <algorithm>
#include <cstring>
#include <mutex>  // std::call_once
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "storage/http_transport.h"

namespace llmc::storage {

std::string HttpResponse::Header(absl::string_view name) const {
  for (auto it = headers.rbegin(); it != headers.rend(); ++it)
    if (it->first == name) return it->second;
  return "";
}

namespace {

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

TransportError Classify(CURLcode c) {
  switch (c) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
      return TransportError::kResolve;
    case CURLE_COULDNT_CONNECT:
      return TransportError::kConnect;
    case CURLE_OPERATION_TIMEDOUT:
      return TransportError::kTimeout;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SEND_FAIL_REWIND:
    case CURLE_WEIRD_SERVER_REPLY:
      return TransportError::kConnection;
    case CURLE_SSL_CONNECT_ERROR:
      return TransportError::kTls;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
      return TransportError::kTlsVerify;
    case CURLE_WRITE_ERROR:
    case CURLE_READ_ERROR:
    case CURLE_ABORTED_BY_CALLBACK:
      return TransportError::kAborted;
    default:
      return TransportError::kOther;
  }
}

// State of one exchange, shared with libcurl's callbacks.
struct Exchange {
  const HttpRequest* request = nullptr;
  HttpResponse* response = nullptr;
  size_t read_offset = 0;
  bool overflow = false;
  bool success_status = false;  // set once the status line of the final answer is known
  int status_seen = 0;
};

size_t OnRead(char* dst, size_t size, size_t n, void* user) {
  auto* ex = static_cast<Exchange*>(user);
  absl::string_view body = ex->request->body;
  size_t take = std::min(size * n, body.size() - ex->read_offset);
  std::memcpy(dst, body.data() + ex->read_offset, take);
  ex->read_offset += take;
  return take;
}

int OnSeek(void* user, curl_off_t offset, int origin) {
  auto* ex = static_cast<Exchange*>(user);
  if (origin != SEEK_SET || offset < 0 || static_cast<size_t>(offset) > ex->request->body.size())
    return CURL_SEEKFUNC_CANTSEEK;
  ex->read_offset = static_cast<size_t>(offset);
  return CURL_SEEKFUNC_OK;
}

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* ex = static_cast<Exchange*>(user);
  absl::string_view line(data, size * n);
  if (absl::StartsWith(line, "HTTP/")) {
    ex->response->headers.clear();  // a new answer (after 100 Continue)
    size_t sp = line.find(' ');
    int code = 0;
    if (sp != absl::string_view::npos && line.size() >= sp + 4) {
      for (size_t i = sp + 1; i < sp + 4; ++i) code = code * 10 + (line[i] - '0');
    }
    ex->status_seen = code;
    ex->success_status = code >= 200 && code < 300;
    return size * n;
  }
  size_t colon = line.find(':');
  if (colon != absl::string_view::npos) {
    std::string name = absl::AsciiStrToLower(absl::StripAsciiWhitespace(line.substr(0, colon)));
    std::string value(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    ex->response->headers.emplace_back(std::move(name), std::move(value));
  }
  return size * n;
}

size_t OnWrite(char* data, size_t size, size_t n, void* user) {
  auto* ex = static_cast<Exchange*>(user);
  size_t len = size * n;
  const HttpRequest& req = *ex->request;
  if (req.response_buffer != nullptr && ex->success_status) {
    HttpResponse& r = *ex->response;
    if (r.buffer_bytes + len > req.response_capacity) {
      ex->overflow = true;
      return 0;  // aborts the transfer (CURLE_WRITE_ERROR)
    }
    std::memcpy(req.response_buffer + r.buffer_bytes, data, len);
    r.buffer_bytes += len;
    return len;
  }
  // Error bodies are small; cap what is kept.
  if (ex->response->body.size() < (64u << 20)) ex->response->body.append(data, len);
  return len;
}

class CurlTransport final : public HttpTransport {
 public:
  explicit CurlTransport(const CurlTransportOptions& o) : opt_(o) { GlobalInit(); }
  ~CurlTransport() override {
    for (CURL* h : idle_) curl_easy_cleanup(h);
  }

  HttpResponse Send(const HttpRequest& req) override {
    HttpResponse resp;
    CURL* h = Acquire();
    if (h == nullptr) {
      resp.error = TransportError::kOther;
      resp.error_message = "curl_easy_init failed";
      return resp;
    }
    Exchange ex;
    ex.request = &req;
    ex.response = &resp;
    char errbuf[CURL_ERROR_SIZE] = {0};
    curl_slist* headers = nullptr;
    for (const auto& [k, v] : req.headers) headers = curl_slist_append(headers, absl::StrCat(k, ": ", v).c_str());
    // No "Expect: 100-continue" round trip (it stalls a second on servers that ignore it).
    headers = curl_slist_append(headers, "Expect:");

    curl_easy_setopt(h, CURLOPT_URL, req.url.c_str());
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &ex);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, OnWrite);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &ex);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(absl::ToInt64Milliseconds(opt_.connect_timeout)));
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME,
                     std::max(1L, static_cast<long>(absl::ToInt64Seconds(opt_.stall_timeout))));
    if (opt_.total_timeout > absl::ZeroDuration())
      curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(absl::ToInt64Milliseconds(opt_.total_timeout)));
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, opt_.verify_tls ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, opt_.verify_tls ? 2L : 0L);
    if (!opt_.ca_bundle.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, opt_.ca_bundle.c_str());

    if (req.method == "GET") {
      curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else if (req.method == "HEAD") {
      curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (req.method == "PUT") {
      curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt(h, CURLOPT_READFUNCTION, OnRead);
      curl_easy_setopt(h, CURLOPT_READDATA, &ex);
      curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, OnSeek);
      curl_easy_setopt(h, CURLOPT_SEEKDATA, &ex);
      curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
    } else if (req.method == "POST") {
      curl_easy_setopt(h, CURLOPT_POST, 1L);
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, req.body.data() ? req.body.data() : "");
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
    } else {
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req.method.c_str());
    }

    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(headers);
    if (rc != CURLE_OK) {
      resp.error = ex.overflow ? TransportError::kAborted : Classify(rc);
      resp.error_message = errbuf[0] ? std::string(errbuf) : std::string(curl_easy_strerror(rc));
      if (ex.overflow) resp.error_message = "the server sent more bytes than requested";
      resp.status = 0;
      Release(h, /*healthy=*/false);
      return resp;
    }
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    resp.status = static_cast<int>(code);
    Release(h, /*healthy=*/true);
    return resp;
  }

 private:
  CURL* Acquire() {
    {
      absl::MutexLock lock(&mu_);
      if (!idle_.empty()) {
        CURL* h = idle_.back();
        idle_.pop_back();
        curl_easy_reset(h);  // keeps the connection, DNS and TLS session caches
        return h;
      }
    }
    return curl_easy_init();
  }

  void Release(CURL* h, bool healthy) {
    if (healthy) {
      absl::MutexLock lock(&mu_);
      if (idle_.size() < 64) {
        idle_.push_back(h);
        return;
      }
    }
    curl_easy_cleanup(h);
  }

  CurlTransportOptions opt_;
  absl::Mutex mu_;
  std::vector<CURL*> idle_ ABSL_GUARDED_BY(mu_);  // connections kept for reuse, at most 64
};

}  // namespace

std::unique_ptr<HttpTransport> NewCurlTransport(const CurlTransportOptions& options) {
  return std::make_unique<CurlTransport>(options);
}

}  // namespace llmc::storage
