#include "storage/retry_policy.h"

#include <algorithm>
#include <cmath>

namespace llmc::storage {

bool IsRetryableHttp(int http_status, absl::string_view s3_code) {
  if (s3_code == "SlowDown" || s3_code == "InternalError" || s3_code == "ServiceUnavailable" ||
      s3_code == "RequestTimeout" || s3_code == "OperationAborted")
    return true;
  if (http_status >= 500 && http_status <= 599) return s3_code != "NotImplemented";
  return http_status == 429 || http_status == 408;
}

bool IsRetryableTransport(TransportError error) {
  switch (error) {
    case TransportError::kResolve:
    case TransportError::kConnect:
    case TransportError::kTimeout:
    case TransportError::kConnection:
    case TransportError::kTls:
      return true;
    default:
      return false;
  }
}

absl::Duration BackoffDelay(const RetryPolicy& policy, int retry, double u, absl::Duration retry_after) {
  if (retry < 1) retry = 1;
  u = std::clamp(u, 0.0, 1.0);
  double cap_s = absl::ToDoubleSeconds(policy.initial_backoff) * std::pow(policy.multiplier, retry - 1);
  cap_s = std::min(cap_s, absl::ToDoubleSeconds(policy.max_backoff));
  absl::Duration d = absl::Seconds(cap_s * (0.5 + 0.5 * u));
  if (retry_after > d) d = std::min(retry_after, policy.max_backoff);
  return d;
}

const char* TransportErrorName(TransportError error) {
  switch (error) {
    case TransportError::kNone: return "no error";
    case TransportError::kResolve: return "host name lookup failed";
    case TransportError::kConnect: return "connection failed";
    case TransportError::kTimeout: return "timed out";
    case TransportError::kConnection: return "connection error";
    case TransportError::kTls: return "TLS handshake failed";
    case TransportError::kTlsVerify: return "TLS certificate verification failed";
    case TransportError::kAborted: return "transfer aborted";
    case TransportError::kOther: return "request failed";
  }
  return "request failed";
}

}  // namespace llmc::storage
