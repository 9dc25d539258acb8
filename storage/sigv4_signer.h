// AWS Signature Version 4 (header-based) for S3 requests, written on OpenSSL's SHA-256 and HMAC-SHA256.
//
// The caller builds the request (method, encoded path, query, the headers it will send, including `host`,
// `x-amz-date`, `x-amz-content-sha256` and, with temporary credentials, `x-amz-security-token`) and adds the
// returned Authorization header. Every header given here is signed, so send exactly these headers.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace llmc::storage {

struct AwsCredentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // empty unless temporary credentials
  // Where they came from, for error messages ("environment", "/home/u/.aws/credentials [default]"); never the
  // secret itself.
  std::string source;
  // No credentials: requests go unsigned (anonymous access to public buckets).
  bool anonymous() const { return access_key_id.empty(); }
};

struct SigV4Request {
  std::string method;         // "GET", "PUT", ...
  std::string canonical_uri;  // the path exactly as sent, already URI-encoded ("/bucket/a%20b.txt")
  std::vector<std::pair<std::string, std::string>> query;    // decoded names and values; any order
  std::vector<std::pair<std::string, std::string>> headers;  // as sent (any case/order); must include host
  std::string payload_hash;   // lowercase hex SHA-256 of the body, or "UNSIGNED-PAYLOAD"
};

struct SigV4Signature {
  std::string canonical_request;
  std::string string_to_sign;
  std::string signed_headers;  // "host;x-amz-date"
  std::string signature;       // lowercase hex
  std::string authorization;   // the Authorization header value
};

// Signs `request` for `region`/`service` at `amz_date` ("20150830T123600Z", UTC). Pure function; thread-safe.
SigV4Signature SignV4(const SigV4Request& request, const AwsCredentials& credentials, absl::string_view region,
                      absl::string_view service, absl::string_view amz_date);

// The ISO 8601 basic timestamp SigV4 uses ("20150830T123600Z").
std::string AmzDate(absl::Time t);

// RFC 3986 percent-encoding as SigV4 wants it: unreserved characters (A-Z a-z 0-9 - _ . ~) are kept, every other
// byte is %XX (uppercase hex); '/' is kept unless `encode_slash`.
std::string UriEncode(absl::string_view s, bool encode_slash);

// "a=1&b=2": names and values encoded with UriEncode(.., true), sorted by name then value.
std::string CanonicalQueryString(const std::vector<std::pair<std::string, std::string>>& query);

}  // namespace llmc::storage
