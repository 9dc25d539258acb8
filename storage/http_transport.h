// The HTTP exchange under the S3 client: an interface (so tests can answer requests themselves) and the libcurl
// implementation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "storage/retry_policy.h"

namespace llmc::storage {

struct HttpRequest {
  std::string method;  // GET, HEAD, PUT, POST, DELETE
  std::string url;     // complete, already encoded
  std::vector<std::pair<std::string, std::string>> headers;
  absl::string_view body;  // sent for PUT/POST; must stay valid during Send
  // When non-null, the response body (of a 2xx answer) goes here instead of HttpResponse::body; an answer
  // longer than `response_capacity` fails with TransportError::kAborted.
  uint8_t* response_buffer = nullptr;
  uint64_t response_capacity = 0;
};

struct HttpResponse {
  int status = 0;  // 0 when `error` is set
  TransportError error = TransportError::kNone;
  std::string error_message;  // the transport's words for `error`
  std::vector<std::pair<std::string, std::string>> headers;  // names lowercased, in arrival order
  std::string body;               // the body, unless it went to response_buffer
  uint64_t buffer_bytes = 0;      // bytes written to response_buffer

  // The last value of header `name` (lowercase), or "".
  std::string Header(absl::string_view name) const;
};

// Sends requests. Implementations are thread-safe.
class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  virtual HttpResponse Send(const HttpRequest& request) = 0;
};

struct CurlTransportOptions {
  absl::Duration connect_timeout = absl::Seconds(10);
  // A transfer slower than 1 KiB/s for this long fails with kTimeout (covers dead connections and servers
  // that stop answering). Server-side work with no bytes flowing (a large copy) must finish within it.
  absl::Duration stall_timeout = absl::Seconds(120);
  absl::Duration total_timeout = absl::ZeroDuration();  // zero: no limit
  bool verify_tls = true;
  std::string ca_bundle;  // PEM file of trusted CAs; "" for the system's
};

// libcurl transport; reuses connections through a pool of easy handles. Thread-safe.
std::unique_ptr<HttpTransport> NewCurlTransport(const CurlTransportOptions& options = {});

}  // namespace llmc::storage
