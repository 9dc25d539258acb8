// When and how long S3 requests are retried: exponential backoff with jitter on server errors (5xx),
// throttling (429, SlowDown), timeouts and connection failures; never on other 4xx answers.
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace llmc::storage {

// How a request failed below HTTP (from the transport).
enum class TransportError {
  kNone,        // an HTTP response arrived
  kResolve,     // host name lookup failed
  kConnect,     // connection refused / unreachable
  kTimeout,     // connect, stall or total timeout
  kConnection,  // connection reset, closed early, send/receive error
  kTls,         // TLS handshake failed (not a certificate problem)
  kTlsVerify,   // certificate verification failed: not retried
  kAborted,     // the caller's body callback stopped the transfer (e.g. more bytes than expected): not retried
  kOther,       // anything else (malformed URL, unsupported protocol...): not retried
};

struct RetryPolicy {
  int max_attempts = 6;  // tries in all, the first included (1: no retries)
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(20);
  double multiplier = 2.0;
};

// Whether an HTTP answer should be retried: 5xx (except NotImplemented), 429, 408, and the S3 error codes
// SlowDown, InternalError, ServiceUnavailable, RequestTimeout (S3's 400 for a stalled upload) and
// OperationAborted (a conflicting operation in progress). Every other 4xx is final (AccessDenied, NoSuchKey,
// RequestTimeTooSkewed, ...). `s3_code` is the <Code> of the error body ("" if none). A 200 answer whose body
// is an S3 <Error> (as CompleteMultipartUpload and CopyObject may send) is judged by its code alone.
bool IsRetryableHttp(int http_status, absl::string_view s3_code);

// Whether a transport failure should be retried (all but kTlsVerify, kAborted, kOther).
bool IsRetryableTransport(TransportError error);

// Delay before retry number `retry` (1 = the first retry): with cap = min(max_backoff,
// initial_backoff * multiplier^(retry-1)), the delay is cap * (0.5 + 0.5 * u) for u uniform in [0, 1), so
// delays grow exponentially and concurrent clients spread out. `retry_after` (a server's Retry-After, if any)
// raises the delay to at least that, still capped at max_backoff.
absl::Duration BackoffDelay(const RetryPolicy& policy, int retry, double u,
                            absl::Duration retry_after = absl::ZeroDuration());

// "connection refused", "timeout", ... for messages.
const char* TransportErrorName(TransportError error);

}  // namespace llmc::storage
