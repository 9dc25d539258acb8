#include "storage/s3_object_store.h"

#include <algorithm>
#include <atomic>
#include <random>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/parallel.h"
#include "common/status_macros.h"
#include "storage/crypto.h"
#include "storage/s3_xml.h"
#include "storage/storage_stats.h"

namespace llmc::storage {

namespace {

constexpr char kEmptySha256[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

double Uniform01() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

// One S3 request before signing.
struct S3Call {
  std::string op;  // what it does, for messages: "HEAD", "GET", "PUT", "list", ...
  std::string method;
  std::string key;            // full object key; empty for a bucket-level request
  std::vector<std::pair<std::string, std::string>> query;
  std::vector<std::pair<std::string, std::string>> headers;  // besides host, date, hashes and auth
  absl::string_view body;
  std::string content_type;   // sent (and signed) for PUT/POST
  uint8_t* buffer = nullptr;  // ranged reads into caller memory
  uint64_t capacity = 0;
  bool error_in_200 = false;  // the answer may be 200 with an <Error> body
};

}  // namespace

struct S3ObjectStore::Impl {
  StorageUri root;
  S3Options opt;
  std::string endpoint;    // scheme://host[:port], as resolved (for messages)
  std::string scheme;      // http or https
  std::string host;        // host[:port] of the endpoint
  bool aws = false;        // no custom endpoint: AWS itself
  bool path_style = true;
  std::string region;
  AwsCredentials creds;
  std::shared_ptr<HttpTransport> transport;

  std::string FullKey(absl::string_view rel) const { return JoinKey(root.prefix, rel); }
  std::string KeyUri(absl::string_view full_key) const {
    return full_key.empty() ? absl::StrCat("s3://", root.bucket) : absl::StrCat("s3://", root.bucket, "/", full_key);
  }
  std::string StoreUri() const { return root.ToString(); }

  std::string Host() const { return path_style ? host : absl::StrCat(root.bucket, ".", host); }
  std::string Path(absl::string_view full_key) const {
    std::string enc = UriEncode(full_key, /*encode_slash=*/false);
    if (path_style) return full_key.empty() ? absl::StrCat("/", root.bucket) : absl::StrCat("/", root.bucket, "/", enc);
    return absl::StrCat("/", enc);
  }

  absl::Time Now() const { return opt.clock ? opt.clock() : absl::Now(); }
  void Sleep(absl::Duration d) const {
    if (opt.sleep) opt.sleep(d);
    else absl::SleepFor(d);
  }

  // What to do about an error answer, in words.
  std::string Hint(const S3Call& call, int status, const std::string& code) const {
    std::string who = creds.anonymous() ? std::string("no credentials (the request went unsigned)")
                                        : absl::StrCat("access key ", creds.access_key_id, " from ", creds.source);
    if (code == "NoSuchBucket")
      return absl::StrCat("the bucket '", root.bucket, "' does not exist at ", endpoint,
                          "; create it, or check the bucket name and the endpoint (LLMC_S3_ENDPOINT / AWS_ENDPOINT_URL)");
    if (code == "NoSuchKey" || (status == 404 && code.empty())) return "no such object";
    if (code == "NoSuchUpload") return "the multipart upload no longer exists (aborted, completed or expired)";
    if (code == "InvalidAccessKeyId")
      return absl::StrCat("the server does not know ", who, "; check AWS_ACCESS_KEY_ID / AWS_PROFILE and the endpoint");
    if (code == "SignatureDoesNotMatch")
      return absl::StrCat("the signature made with ", who, " was rejected; check AWS_SECRET_ACCESS_KEY and the region (",
                          region, "; set AWS_REGION)");
    if (code == "ExpiredToken" || code == "TokenRefreshRequired")
      return absl::StrCat("the session token from ", creds.source, " has expired; refresh the credentials");
    if (code == "RequestTimeTooSkewed")
      return "this machine's clock is more than 15 minutes off the server's; synchronize it (NTP)";
    if (code == "AuthorizationHeaderMalformed" || code == "PermanentRedirect" || code == "IllegalLocationConstraintException" ||
        status == 301 || status == 307)
      return absl::StrCat("the bucket is in another region; set AWS_REGION to it (now ", region, ")");
    if (status == 403 || code == "AccessDenied" || code == "AllAccessDisabled") {
      if (creds.anonymous())
        return "no credentials were found, so the request went unsigned; set AWS_ACCESS_KEY_ID and "
               "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials";
      return absl::StrCat(who, " is not allowed to ", call.op, " this; check the bucket policy or IAM permissions");
    }
    if (code == "InvalidBucketName") return "the bucket name is not valid on this server";
    if (code == "EntityTooSmall") return "a multipart part other than the last is below the server's minimum (5 MiB)";
    if (code == "InvalidPart" || code == "InvalidPartOrder") return "the parts listed do not match the parts uploaded";
    if (status >= 500 || status == 429 || code == "SlowDown")
      return absl::StrCat("the server at ", endpoint, " kept failing; try again later");
    return "";
  }

  absl::Status MapError(const S3Call& call, int status, const std::optional<S3Error>& err, int attempts) const {
    std::string code = err ? err->code : "";
    std::string uri = call.key.empty() ? StoreUri() : KeyUri(call.key);
    std::string msg = absl::StrCat(uri, ": ", call.op, " failed: HTTP ", status);
    if (!code.empty()) absl::StrAppend(&msg, " ", code);
    if (err && !err->message.empty()) absl::StrAppend(&msg, ": ", err->message);
    if (err && !err->region.empty()) absl::StrAppend(&msg, " (bucket region ", err->region, ")");
    if (err && !err->request_id.empty()) absl::StrAppend(&msg, " (request id ", err->request_id, ")");
    if (attempts > 1) absl::StrAppend(&msg, " after ", attempts, " attempts");
    std::string hint = Hint(call, status, code);
    if (!hint.empty()) absl::StrAppend(&msg, "; ", hint);
    // An error body in a 200 answer (CompleteMultipartUpload, CopyObject): classify by its code.
    if (status < 300) status = IsRetryableHttp(0, code) ? 503 : 400;
    if (code == "NoSuchBucket" || code == "NoSuchKey" || code == "NoSuchUpload" || status == 404)
      return absl::NotFoundError(msg);
    if (code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" || code == "ExpiredToken" ||
        code == "TokenRefreshRequired")
      return absl::UnauthenticatedError(msg);
    if (status == 403) return absl::PermissionDeniedError(msg);
    if (status == 412 || code == "PreconditionFailed") return absl::FailedPreconditionError(msg);
    if (status == 416 || code == "InvalidRange") return absl::OutOfRangeError(msg);
    if (status == 301 || status == 307 || code == "AuthorizationHeaderMalformed" || code == "RequestTimeTooSkewed" ||
        code == "PermanentRedirect")
      return absl::FailedPreconditionError(msg);
    if (status == 409) return absl::AbortedError(msg);
    if (status >= 500 || status == 429 || status == 408 || IsRetryableHttp(status, code))
      return absl::UnavailableError(msg);
    if (status == 501) return absl::UnimplementedError(msg);
    if (status >= 400) return absl::InvalidArgumentError(msg);
    return absl::InternalError(msg);
  }

  absl::Status TransportStatus(const S3Call& call, const HttpResponse& r, int attempts) const {
    std::string uri = call.key.empty() ? StoreUri() : KeyUri(call.key);
    std::string msg = absl::StrCat(uri, ": ", call.op, " failed: ", TransportErrorName(r.error), " talking to ", endpoint,
                                   " (", r.error_message, ")");
    if (attempts > 1) absl::StrAppend(&msg, " after ", attempts, " attempts");
    switch (r.error) {
      case TransportError::kResolve:
      case TransportError::kConnect:
        absl::StrAppend(&msg, "; check that the server is running and the endpoint (LLMC_S3_ENDPOINT / AWS_ENDPOINT_URL)");
        return absl::UnavailableError(msg);
      case TransportError::kTimeout:
      case TransportError::kConnection:
      case TransportError::kTls:
        absl::StrAppend(&msg, "; the network or the server is failing, try again later");
        return absl::UnavailableError(msg);
      case TransportError::kTlsVerify:
        absl::StrAppend(&msg, "; the server's certificate is not trusted: set AWS_CA_BUNDLE to its CA file");
        return absl::FailedPreconditionError(msg);
      case TransportError::kAborted:
        return absl::DataLossError(msg);
      default:
        return absl::InternalError(msg);
    }
  }

  // Counts a request that failed for good (NOT_FOUND is an answer, e.g. to an existence check, not a failure).
  static absl::Status Failed(absl::Status s) {
    if (!absl::IsNotFound(s)) ProcessStorageStats().failed_requests.fetch_add(1, std::memory_order_relaxed);
    return s;
  }

  // Sends `call` with retries. Returns the 2xx answer, or the error as a Status. `*attempts_out` gets the
  // number of tries made.
  absl::StatusOr<HttpResponse> Execute(const S3Call& call, int* attempts_out = nullptr) const {
    const std::string path = Path(call.key);
    const std::string query = CanonicalQueryString(call.query);
    const std::string url = absl::StrCat(scheme, "://", Host(), path, query.empty() ? "" : "?", query);
    const bool sign = !creds.anonymous() && !opt.anonymous;
    std::string payload_hash = "UNSIGNED-PAYLOAD";
    if (opt.sign_payload) payload_hash = call.body.empty() ? kEmptySha256 : Sha256Hex(call.body);
    const int max_attempts = std::max(1, opt.retry.max_attempts);
    absl::Duration retry_after = absl::ZeroDuration();
    for (int attempt = 1;; ++attempt) {
      if (attempts_out) *attempts_out = attempt;
      if (attempt > 1) {
        ProcessStorageStats().retries.fetch_add(1, std::memory_order_relaxed);
        Sleep(BackoffDelay(opt.retry, attempt - 1, Uniform01(), retry_after));
      }
      retry_after = absl::ZeroDuration();
      HttpRequest req;
      req.method = call.method;
      req.url = url;
      req.body = call.body;
      req.response_buffer = call.buffer;
      req.response_capacity = call.capacity;
      req.headers.emplace_back("Host", Host());
      if (call.method == "PUT" || call.method == "POST")
        req.headers.emplace_back("Content-Type", call.content_type.empty() ? "application/octet-stream" : call.content_type);
      for (const auto& h : call.headers) req.headers.push_back(h);
      if (sign) {
        std::string date = AmzDate(Now());
        req.headers.emplace_back("x-amz-date", date);
        req.headers.emplace_back("x-amz-content-sha256", payload_hash);
        if (!creds.session_token.empty()) req.headers.emplace_back("x-amz-security-token", creds.session_token);
        SigV4Request sr;
        sr.method = call.method;
        sr.canonical_uri = path;
        sr.query = call.query;
        sr.headers = req.headers;
        sr.payload_hash = payload_hash;
        req.headers.emplace_back("Authorization", SignV4(sr, creds, region, "s3", date).authorization);
      }
      HttpResponse r = transport->Send(req);
      const bool last = attempt >= max_attempts;
      if (r.error != TransportError::kNone) {
        if (IsRetryableTransport(r.error) && !last) continue;
        return Failed(TransportStatus(call, r, attempt));
      }
      if (r.status >= 200 && r.status < 300) {
        if (call.error_in_200) {
          std::optional<S3Error> err = ParseS3Error(r.body);
          if (err) {
            if (IsRetryableHttp(r.status, err->code) && !last) continue;
            return Failed(MapError(call, r.status, err, attempt));
          }
        }
        return r;
      }
      std::optional<S3Error> err = ParseS3Error(r.body);
      if (std::string region_hint = r.Header("x-amz-bucket-region"); !region_hint.empty() && region_hint != region) {
        if (!err) err = S3Error{};
        if (err->region.empty()) err->region = region_hint;
        if (err->code.empty() && (r.status == 301 || r.status == 400)) err->code = "PermanentRedirect";
      }
      std::string code = err ? err->code : "";
      if (IsRetryableHttp(r.status, code) && !last) {
        int64_t secs = 0;
        if (absl::SimpleAtoi(r.Header("retry-after"), &secs) && secs > 0) retry_after = absl::Seconds(secs);
        continue;
      }
      return Failed(MapError(call, r.status, err, attempt));
    }
  }

  absl::StatusOr<std::string> UploadPartCopy(const std::string& src_full, const std::string& dst_full,
                                             const std::string& upload_id, int part, uint64_t first,
                                             uint64_t last) const {
    S3Call c;
    c.op = "copy part";
    c.method = "PUT";
    c.key = dst_full;
    c.query = {{"partNumber", absl::StrCat(part)}, {"uploadId", upload_id}};
    c.headers = {{"x-amz-copy-source", CopySource(src_full)},
                 {"x-amz-copy-source-range", absl::StrCat("bytes=", first, "-", last)}};
    c.error_in_200 = true;
    auto r = Execute(c);
    if (!r.ok()) return r.status();
    auto etag = ParseResultETag(r->body, "CopyPartResult");
    if (!etag.ok()) return etag.status();
    if (etag->empty()) return absl::InternalError(absl::StrCat(KeyUri(dst_full), ": the server returned no ETag for copied part ", part));
    return *etag;
  }

  std::string CopySource(const std::string& src_full) const {
    return absl::StrCat("/", root.bucket, "/", UriEncode(src_full, /*encode_slash=*/false));
  }
};

S3ObjectStore::S3ObjectStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
S3ObjectStore::~S3ObjectStore() = default;

absl::StatusOr<std::unique_ptr<S3ObjectStore>> S3ObjectStore::Create(const StorageUri& root, const S3Options& options,
                                                                     const GetEnvFn& getenv) {
  if (!root.is_s3()) return absl::InvalidArgumentError(absl::StrCat(root.ToString(), ": not an s3:// location"));
  auto impl = std::make_unique<Impl>();
  impl->root = root;
  impl->opt = options;
  impl->region = ResolveRegion(options.region, getenv);
  std::string endpoint = ResolveEndpoint(options.endpoint, getenv);
  impl->aws = endpoint.empty();
  if (impl->aws) endpoint = absl::StrCat("https://s3.", impl->region, ".amazonaws.com");
  absl::string_view ep = endpoint;
  while (absl::ConsumeSuffix(&ep, "/")) {
  }
  if (absl::ConsumePrefix(&ep, "https://")) impl->scheme = "https";
  else if (absl::ConsumePrefix(&ep, "http://")) impl->scheme = "http";
  else if (ep.find("://") != absl::string_view::npos)
    return absl::InvalidArgumentError(absl::StrCat("S3 endpoint '", endpoint, "': use http:// or https://"));
  else impl->scheme = "https";
  if (ep.empty() || ep.find('/') != absl::string_view::npos || ep.find('?') != absl::string_view::npos)
    return absl::InvalidArgumentError(absl::StrCat("S3 endpoint '", endpoint,
                                                   "' must be scheme://host[:port] with no path (e.g. http://127.0.0.1:7480)"));
  // Drop a default port so that the Host header matches what clients usually sign.
  std::string host(ep);
  if (impl->scheme == "http" && absl::EndsWith(host, ":80")) host.resize(host.size() - 3);
  if (impl->scheme == "https" && absl::EndsWith(host, ":443")) host.resize(host.size() - 4);
  impl->host = host;
  impl->endpoint = absl::StrCat(impl->scheme, "://", host);

  S3Addressing addressing = options.addressing;
  if (addressing == S3Addressing::kAuto) {
    const char* env = getenv("LLMC_S3_ADDRESSING");
    std::string v = env ? absl::AsciiStrToLower(env) : "";
    if (v == "path") addressing = S3Addressing::kPath;
    else if (v == "virtual" || v == "virtual-hosted") addressing = S3Addressing::kVirtualHosted;
    else if (!v.empty())
      return absl::InvalidArgumentError(absl::StrCat("LLMC_S3_ADDRESSING=", env, ": use path or virtual"));
  }
  if (addressing == S3Addressing::kAuto)
    impl->path_style = !impl->aws || root.bucket.find('.') != std::string::npos;
  else impl->path_style = addressing == S3Addressing::kPath;

  if (options.credentials) {
    impl->creds = *options.credentials;
    if (impl->creds.source.empty()) impl->creds.source = "options";
  } else if (!options.anonymous) {
    auto c = ResolveAwsCredentials(getenv);
    if (!c.ok()) return c.status();
    impl->creds = *c;
  }
  if (options.transport) {
    impl->transport = options.transport;
  } else {
    CurlTransportOptions http = options.http;
    if (http.ca_bundle.empty()) {
      const char* ca = getenv("AWS_CA_BUNDLE");
      if (ca && *ca) http.ca_bundle = ca;
    }
    impl->transport = NewCurlTransport(http);
  }
  return std::unique_ptr<S3ObjectStore>(new S3ObjectStore(std::move(impl)));
}

std::string S3ObjectStore::uri() const { return impl_->StoreUri(); }
const std::string& S3ObjectStore::endpoint() const { return impl_->endpoint; }
const std::string& S3ObjectStore::region() const { return impl_->region; }
bool S3ObjectStore::path_style() const { return impl_->path_style; }
const AwsCredentials& S3ObjectStore::credentials() const { return impl_->creds; }

absl::StatusOr<ObjectInfo> S3ObjectStore::Stat(absl::string_view key) {
  S3Call c;
  c.op = "HEAD";
  c.method = "HEAD";
  c.key = impl_->FullKey(key);
  auto r = impl_->Execute(c);
  if (!r.ok()) {
    // A HEAD answer has no body: tell a missing bucket from a missing object.
    if (absl::IsNotFound(r.status())) {
      S3Call b;
      b.op = "HEAD bucket";
      b.method = "HEAD";
      auto br = impl_->Execute(b);
      if (!br.ok() && absl::IsNotFound(br.status()))
        return impl_->MapError(c, 404, S3Error{"NoSuchBucket", "", "", "", "", ""}, 1);
      return absl::NotFoundError(absl::StrCat(impl_->KeyUri(c.key), ": no such object"));
    }
    return r.status();
  }
  ObjectInfo info;
  info.key = std::string(key);
  if (!absl::SimpleAtoi(r->Header("content-length"), &info.size))
    return absl::InternalError(absl::StrCat(impl_->KeyUri(c.key), ": HEAD answer without a Content-Length"));
  info.etag = StripQuotes(r->Header("etag"));
  return info;
}

absl::Status S3ObjectStore::Read(absl::string_view key, uint64_t offset, absl::Span<uint8_t> out,
                                 absl::string_view if_match) {
  if (out.empty()) return absl::OkStatus();
  S3Call c;
  c.op = "GET";
  c.method = "GET";
  c.key = impl_->FullKey(key);
  c.headers.emplace_back("Range", absl::StrCat("bytes=", offset, "-", offset + out.size() - 1));
  if (!if_match.empty()) c.headers.emplace_back("If-Match", absl::StrCat("\"", StripQuotes(if_match), "\""));
  c.buffer = out.data();
  c.capacity = out.size();
  auto r = impl_->Execute(c);
  if (!r.ok()) {
    if (absl::IsFailedPrecondition(r.status()) && !if_match.empty())
      return absl::FailedPreconditionError(absl::StrCat(impl_->KeyUri(c.key), ": the object changed while it was being read (it is no longer version ",
                                                        StripQuotes(if_match), "); start the transfer again"));
    if (absl::IsOutOfRange(r.status()))
      return absl::OutOfRangeError(absl::StrCat(impl_->KeyUri(c.key), ": object is shorter than ", offset + out.size(), " bytes"));
    return r.status();
  }
  if (r->status == 200 && offset != 0)
    return absl::InternalError(absl::StrCat(impl_->KeyUri(c.key), ": the server ignored the Range header"));
  if (r->buffer_bytes != out.size())
    return absl::OutOfRangeError(absl::StrCat(impl_->KeyUri(c.key), ": got ", r->buffer_bytes, " of ", out.size(),
                                              " bytes at offset ", offset, "; the object is shorter than expected"));
  return absl::OkStatus();
}

absl::StatusOr<std::string> S3ObjectStore::Get(absl::string_view key, uint64_t offset, uint64_t length) {
  S3Call c;
  c.op = "GET";
  c.method = "GET";
  c.key = impl_->FullKey(key);
  if (length == 0) return std::string();
  bool ranged = offset != 0 || length != kToEnd;
  if (ranged) {
    std::string range = length == kToEnd || offset + length < offset ? absl::StrCat("bytes=", offset, "-")
                                                                     : absl::StrCat("bytes=", offset, "-", offset + length - 1);
    c.headers.emplace_back("Range", range);
  }
  auto r = impl_->Execute(c);
  if (!r.ok()) {
    if (absl::IsOutOfRange(r.status())) return std::string();  // the range starts past the end
    return r.status();
  }
  if (ranged && r->status == 200) {  // the server sent the whole object
    std::string all = std::move(r->body);
    if (offset >= all.size()) return std::string();
    return all.substr(offset, length == kToEnd ? std::string::npos : length);
  }
  return std::move(r->body);
}

absl::Status S3ObjectStore::Put(absl::string_view key, absl::string_view data) {
  S3Call c;
  c.op = "PUT";
  c.method = "PUT";
  c.key = impl_->FullKey(key);
  c.body = data;
  auto r = impl_->Execute(c);
  return r.status();
}

absl::StatusOr<std::string> S3ObjectStore::CreateMultipartUpload(absl::string_view key) {
  S3Call c;
  c.op = "CreateMultipartUpload";
  c.method = "POST";
  c.key = impl_->FullKey(key);
  c.query = {{"uploads", ""}};
  auto r = impl_->Execute(c);
  if (!r.ok()) return r.status();
  auto id = ParseInitiateMultipartUpload(r->body);
  if (!id.ok()) return absl::InternalError(absl::StrCat(impl_->KeyUri(c.key), ": ", id.status().message()));
  return id;
}

absl::StatusOr<std::string> S3ObjectStore::UploadPart(absl::string_view key, absl::string_view upload_id, int part_number,
                                                      absl::string_view data) {
  if (part_number < 1 || part_number > 10000)
    return absl::InvalidArgumentError(absl::StrCat(impl_->KeyUri(impl_->FullKey(key)), ": part number ", part_number,
                                                   " outside 1..10000"));
  S3Call c;
  c.op = absl::StrCat("upload part ", part_number);
  c.method = "PUT";
  c.key = impl_->FullKey(key);
  c.query = {{"partNumber", absl::StrCat(part_number)}, {"uploadId", std::string(upload_id)}};
  c.body = data;
  auto r = impl_->Execute(c);
  if (!r.ok()) return r.status();
  std::string etag = r->Header("etag");
  if (etag.empty())
    return absl::InternalError(absl::StrCat(impl_->KeyUri(c.key), ": the server returned no ETag for part ", part_number));
  return etag;
}

absl::Status S3ObjectStore::CompleteMultipartUpload(absl::string_view key, absl::string_view upload_id,
                                                    const std::vector<CompletedPart>& parts) {
  S3Call c;
  c.op = "CompleteMultipartUpload";
  c.method = "POST";
  c.key = impl_->FullKey(key);
  c.query = {{"uploadId", std::string(upload_id)}};
  std::string body = CompleteMultipartUploadXml(parts);
  c.body = body;
  c.content_type = "application/xml";
  c.error_in_200 = true;
  int attempts = 0;
  auto r = impl_->Execute(c, &attempts);
  if (r.ok()) return absl::OkStatus();
  // A retried Complete whose first try went through finds the upload gone: the object is there.
  if (attempts > 1 && absl::IsNotFound(r.status()) && absl::StrContains(r.status().message(), "NoSuchUpload")) {
    if (Stat(key).ok()) return absl::OkStatus();
  }
  return r.status();
}

absl::Status S3ObjectStore::AbortMultipartUpload(absl::string_view key, absl::string_view upload_id) {
  S3Call c;
  c.op = "AbortMultipartUpload";
  c.method = "DELETE";
  c.key = impl_->FullKey(key);
  c.query = {{"uploadId", std::string(upload_id)}};
  auto r = impl_->Execute(c);
  if (!r.ok() && absl::IsNotFound(r.status()) && absl::StrContains(r.status().message(), "NoSuchUpload"))
    return absl::OkStatus();
  return r.status();
}

absl::StatusOr<ListResult> S3ObjectStore::ListPage(absl::string_view prefix, absl::string_view token, int max_keys) {
  const std::string& root = impl_->root.prefix;
  std::string full_prefix = root.empty() ? std::string(prefix) : absl::StrCat(root, "/", prefix);
  S3Call c;
  c.op = "list";
  c.method = "GET";
  c.query = {{"list-type", "2"}, {"max-keys", absl::StrCat(std::clamp(max_keys, 1, 1000))}};
  if (!full_prefix.empty()) c.query.emplace_back("prefix", full_prefix);
  if (!token.empty()) c.query.emplace_back("continuation-token", std::string(token));
  auto r = impl_->Execute(c);
  if (!r.ok()) return r.status();
  auto page = ParseListObjectsV2(r->body);
  if (!page.ok())
    return absl::InternalError(absl::StrCat(impl_->StoreUri(), ": listing '", prefix, "': ", page.status().message()));
  size_t strip = root.empty() ? 0 : root.size() + 1;
  std::vector<ObjectInfo> objects;
  objects.reserve(page->objects.size());
  for (auto& o : page->objects) {
    if (!absl::StartsWith(o.key, full_prefix)) continue;  // a server that ignored the prefix
    o.key = o.key.substr(strip);
    objects.push_back(std::move(o));
  }
  page->objects = std::move(objects);
  return page;
}

absl::Status S3ObjectStore::Delete(absl::string_view key) {
  S3Call c;
  c.op = "DELETE";
  c.method = "DELETE";
  c.key = impl_->FullKey(key);
  auto r = impl_->Execute(c);
  if (!r.ok() && absl::IsNotFound(r.status()) && !absl::StrContains(r.status().message(), "NoSuchBucket"))
    return absl::OkStatus();
  return r.status();
}

absl::StatusOr<int64_t> S3ObjectStore::DeletePrefix(absl::string_view prefix) {
  int64_t deleted = 0;
  std::string token;
  do {
    auto page = ListPage(prefix, token, 1000);
    if (!page.ok()) return page.status();
    token = page->next_token;
    if (page->objects.empty()) continue;
    std::vector<std::string> keys;
    for (const auto& o : page->objects) keys.push_back(impl_->FullKey(o.key));
    std::string body = DeleteObjectsXml(keys);
    S3Call c;
    c.op = "delete objects";
    c.method = "POST";
    c.query = {{"delete", ""}};
    c.body = body;
    c.content_type = "application/xml";
    std::string md5 = Md5Base64(body);
    c.headers = {{"Content-MD5", md5}};
    c.error_in_200 = true;
    auto r = impl_->Execute(c);
    if (!r.ok()) return r.status();
    auto failures = ParseDeleteResult(r->body);
    if (!failures.ok()) return absl::InternalError(absl::StrCat(impl_->StoreUri(), ": ", failures.status().message()));
    if (!failures->empty()) {
      const auto& f = failures->front();
      return absl::UnavailableError(absl::StrCat(impl_->KeyUri(f.key), ": delete failed: ", f.code, " ", f.message, " (",
                                                 failures->size(), " of ", keys.size(), " objects not deleted)"));
    }
    deleted += static_cast<int64_t>(keys.size());
  } while (!token.empty());
  return deleted;
}

absl::Status S3ObjectStore::Copy(absl::string_view src, absl::string_view dst) {
  std::string src_full = impl_->FullKey(src);
  std::string dst_full = impl_->FullKey(dst);
  auto info = Stat(src);
  if (!info.ok()) return info.status();
  if (info->size <= impl_->opt.multipart_copy_threshold) {
    S3Call c;
    c.op = absl::StrCat("copy from ", impl_->KeyUri(src_full), " to");
    c.method = "PUT";
    c.key = dst_full;
    c.headers = {{"x-amz-copy-source", impl_->CopySource(src_full)}};
    c.error_in_200 = true;
    auto r = impl_->Execute(c);
    return r.status();
  }
  auto id = CreateMultipartUpload(dst);
  if (!id.ok()) return id.status();
  const uint64_t part = std::max<uint64_t>(impl_->opt.copy_part_size, 5ull << 20);
  const int n = static_cast<int>((info->size + part - 1) / part);
  std::vector<CompletedPart> parts(n);
  absl::Status first_error = ParallelFor(n, 4, [&](int64_t i) -> absl::Status {
    uint64_t a = static_cast<uint64_t>(i) * part;
    uint64_t b = std::min(info->size, a + part) - 1;
    LLMC_ASSIGN_OR_RETURN(std::string etag,
                          impl_->UploadPartCopy(src_full, dst_full, *id, static_cast<int>(i) + 1, a, b));
    parts[i] = {static_cast<int>(i) + 1, std::move(etag)};  // each index is written by one thread
    return absl::OkStatus();
  });
  if (first_error.ok()) first_error = CompleteMultipartUpload(dst, *id, parts);
  if (!first_error.ok()) {
    (void)AbortMultipartUpload(dst, *id);
    return first_error;
  }
  return absl::OkStatus();
}

absl::Status S3ObjectStore::CreateBucket() {
  S3Call c;
  c.op = "create bucket";
  c.method = "PUT";
  std::string body;
  if (impl_->region != "us-east-1" && impl_->aws) {
    body = absl::StrCat("<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>",
                        XmlEscape(impl_->region), "</LocationConstraint></CreateBucketConfiguration>");
    c.content_type = "application/xml";
  }
  c.body = body;
  auto r = impl_->Execute(c);
  if (!r.ok() && absl::StrContains(r.status().message(), "BucketAlreadyOwnedByYou")) return absl::OkStatus();
  return r.status();
}

}  // namespace llmc::storage
