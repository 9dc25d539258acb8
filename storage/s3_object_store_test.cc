// S3ObjectStore against a scripted HTTP transport: request shapes, signing, retries and error messages.
#include "storage/s3_object_store.h"
#include "storage/storage_stats.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>

#include "absl/strings/match.h"
#include "absl/time/civil_time.h"
#include "storage/crypto.h"

namespace llmc::storage {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Answers requests from a handler and records them.
class FakeTransport final : public HttpTransport {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;
  explicit FakeTransport(Handler h) : handler_(std::move(h)) {}
  HttpResponse Send(const HttpRequest& req) override {
    HttpResponse r = handler_(req);
    std::lock_guard<std::mutex> lock(mu_);
    Recorded rec{req.method, req.url, req.headers, std::string(req.body)};
    requests_.push_back(std::move(rec));
    if (req.response_buffer && r.status >= 200 && r.status < 300 && r.error == TransportError::kNone) {
      size_t n = std::min<size_t>(r.body.size(), req.response_capacity);
      std::memcpy(req.response_buffer, r.body.data(), n);
      r.buffer_bytes = n;
      if (r.body.size() > req.response_capacity) {
        r.error = TransportError::kAborted;
        r.status = 0;
      }
      r.body.clear();
    }
    return r;
  }
  struct Recorded {
    std::string method, url;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    std::string Header(absl::string_view name) const {
      for (const auto& [k, v] : headers)
        if (absl::EqualsIgnoreCase(k, name)) return v;
      return "";
    }
  };
  std::vector<Recorded> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

 private:
  Handler handler_;
  std::mutex mu_;
  std::vector<Recorded> requests_;
};

HttpResponse Answer(int status, std::string body = "", std::vector<std::pair<std::string, std::string>> headers = {}) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  r.headers = std::move(headers);
  return r;
}

std::string ErrorXml(const std::string& code, const std::string& message = "msg") {
  return "<?xml version=\"1.0\"?><Error><Code>" + code + "</Code><Message>" + message +
         "</Message><RequestId>req-1</RequestId></Error>";
}

GetEnvFn NoEnv() {
  return [](const char*) -> const char* { return nullptr; };
}

struct Harness {
  std::shared_ptr<FakeTransport> transport;
  std::unique_ptr<S3ObjectStore> store;
  std::vector<absl::Duration> sleeps;
};

std::unique_ptr<Harness> Make(const std::string& uri, FakeTransport::Handler handler, bool anonymous = false,
                              std::string endpoint = "http://127.0.0.1:9000", int max_attempts = 4) {
  auto h = std::make_unique<Harness>();
  h->transport = std::make_shared<FakeTransport>(std::move(handler));
  S3Options o;
  o.endpoint = std::move(endpoint);
  o.transport = h->transport;
  o.retry.max_attempts = max_attempts;
  o.clock = [] { return absl::FromCivil(absl::CivilSecond(2024, 5, 6, 7, 8, 9), absl::UTCTimeZone()); };
  Harness* raw = h.get();
  o.sleep = [raw](absl::Duration d) { raw->sleeps.push_back(d); };
  if (!anonymous) {
    AwsCredentials c;
    c.access_key_id = "AKIDTEST";
    c.secret_access_key = "SECRET";
    c.source = "test";
    o.credentials = c;
  } else {
    o.anonymous = true;
  }
  auto s = S3ObjectStore::Create(*ParseStorageUri(uri), o, NoEnv());
  EXPECT_TRUE(s.ok()) << s.status();
  h->store = std::move(*s);
  return h;
}

TEST(S3ObjectStore, PathStyleRequestIsSignedAndEncoded) {
  auto h = Make("s3://bkt/models/m1", [](const HttpRequest&) { return Answer(200, "hello"); });
  auto got = h->store->Get("dir/a b+c.json");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "hello");
  auto reqs = h->transport->requests();
  ASSERT_EQ(reqs.size(), 1u);
  const auto& r = reqs[0];
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.url, "http://127.0.0.1:9000/bkt/models/m1/dir/a%20b%2Bc.json");
  EXPECT_EQ(r.Header("Host"), "127.0.0.1:9000");
  EXPECT_EQ(r.Header("x-amz-date"), "20240506T070809Z");
  EXPECT_EQ(r.Header("x-amz-content-sha256"), Sha256Hex(""));
  // The signature is what SignV4 gives for exactly the headers sent.
  SigV4Request sr;
  sr.method = "GET";
  sr.canonical_uri = "/bkt/models/m1/dir/a%20b%2Bc.json";
  for (const auto& hv : r.headers)
    if (hv.first != "Authorization") sr.headers.push_back(hv);
  sr.payload_hash = Sha256Hex("");
  AwsCredentials c;
  c.access_key_id = "AKIDTEST";
  c.secret_access_key = "SECRET";
  EXPECT_EQ(r.Header("Authorization"), SignV4(sr, c, "us-east-1", "s3", "20240506T070809Z").authorization);
  EXPECT_THAT(r.Header("Authorization"), HasSubstr("Credential=AKIDTEST/20240506/us-east-1/s3/aws4_request"));
}

TEST(S3ObjectStore, VirtualHostedOnAws) {
  auto h = Make("s3://bkt/p", [](const HttpRequest&) { return Answer(200, "x"); }, false, "");
  EXPECT_FALSE(h->store->path_style());
  EXPECT_EQ(h->store->endpoint(), "https://s3.us-east-1.amazonaws.com");
  ASSERT_TRUE(h->store->Get("k").ok());
  auto r = h->transport->requests()[0];
  EXPECT_EQ(r.url, "https://bkt.s3.us-east-1.amazonaws.com/p/k");
  EXPECT_EQ(r.Header("Host"), "bkt.s3.us-east-1.amazonaws.com");
}

TEST(S3ObjectStore, EndpointSettings) {
  S3Options o;
  o.anonymous = true;
  o.endpoint = "ftp://x";
  EXPECT_FALSE(S3ObjectStore::Create(*ParseStorageUri("s3://b"), o, NoEnv()).ok());
  o.endpoint = "http://host:9000/path";
  EXPECT_FALSE(S3ObjectStore::Create(*ParseStorageUri("s3://b"), o, NoEnv()).ok());
  o.endpoint = "minio.local:9000";
  auto s = S3ObjectStore::Create(*ParseStorageUri("s3://b"), o, NoEnv());
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->endpoint(), "https://minio.local:9000");
  EXPECT_TRUE((*s)->path_style());
  o.endpoint = "http://h:80/";
  EXPECT_EQ((*S3ObjectStore::Create(*ParseStorageUri("s3://b"), o, NoEnv()))->endpoint(), "http://h");
  o.endpoint = "";
  auto env = [](const char* n) -> const char* {
    std::string k(n);
    if (k == "AWS_ENDPOINT_URL") return "http://env:1";
    if (k == "LLMC_S3_ADDRESSING") return "virtual";
    if (k == "AWS_REGION") return "eu-central-1";
    return nullptr;
  };
  auto e = S3ObjectStore::Create(*ParseStorageUri("s3://b"), o, env);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ((*e)->endpoint(), "http://env:1");
  EXPECT_FALSE((*e)->path_style());
  EXPECT_EQ((*e)->region(), "eu-central-1");
}

TEST(S3ObjectStore, SessionTokenIsSentAndSigned) {
  auto transport = std::make_shared<FakeTransport>([](const HttpRequest&) { return Answer(200); });
  S3Options o;
  o.endpoint = "http://h";
  o.transport = transport;
  AwsCredentials c{"AKID", "SECRET", "TOKEN", "test"};
  o.credentials = c;
  auto s = S3ObjectStore::Create(*ParseStorageUri("s3://b"), o, NoEnv());
  ASSERT_TRUE((*s)->Put("k", "data").ok());
  auto r = transport->requests()[0];
  EXPECT_EQ(r.Header("x-amz-security-token"), "TOKEN");
  EXPECT_THAT(r.Header("Authorization"), HasSubstr("x-amz-security-token"));
  EXPECT_EQ(r.Header("x-amz-content-sha256"), Sha256Hex("data"));
  EXPECT_EQ(r.body, "data");
}

TEST(S3ObjectStore, AnonymousRequestsAreUnsigned) {
  auto h = Make("s3://b", [](const HttpRequest&) { return Answer(200, "x"); }, /*anonymous=*/true);
  ASSERT_TRUE(h->store->Get("k").ok());
  EXPECT_EQ(h->transport->requests()[0].Header("Authorization"), "");
}

TEST(S3ObjectStore, RetriesThrottlingThenSucceeds) {
  const uint64_t retries0 = ProcessStorageStats().retries, failed0 = ProcessStorageStats().failed_requests;
  int calls = 0;
  auto h = Make("s3://b", [&](const HttpRequest&) {
    ++calls;
    if (calls <= 2) return Answer(503, ErrorXml("SlowDown", "Please reduce your request rate."));
    return Answer(200, "ok");
  });
  auto got = h->store->Get("k");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(calls, 3);
  ASSERT_EQ(h->sleeps.size(), 2u);
  EXPECT_GT(h->sleeps[0], absl::ZeroDuration());
  // Each retry re-signs (a fresh Authorization per attempt is computed; same clock here, so equal).
  EXPECT_EQ(h->transport->requests().size(), 3u);
  // The worker's heartbeats report these (llmc_storage_retries_total): two retries, no failed request.
  EXPECT_EQ(ProcessStorageStats().retries - retries0, 2u);
  EXPECT_EQ(ProcessStorageStats().failed_requests - failed0, 0u);
}

TEST(S3ObjectStore, RetriesServerErrorsUntilTheLimit) {
  const uint64_t retries0 = ProcessStorageStats().retries, failed0 = ProcessStorageStats().failed_requests;
  auto h = Make("s3://b", [](const HttpRequest&) { return Answer(500, ErrorXml("InternalError", "boom")); });
  auto got = h->store->Get("k");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(got.status().message(), HasSubstr("s3://b/k"));
  EXPECT_THAT(got.status().message(), HasSubstr("HTTP 500 InternalError: boom"));
  EXPECT_THAT(got.status().message(), HasSubstr("after 4 attempts"));
  EXPECT_EQ(h->transport->requests().size(), 4u);
  EXPECT_EQ(h->sleeps.size(), 3u);
  EXPECT_EQ(ProcessStorageStats().retries - retries0, 3u);
  EXPECT_EQ(ProcessStorageStats().failed_requests - failed0, 1u);
}

TEST(S3ObjectStore, NoRetryOnAccessDenied) {
  auto h = Make("s3://b/p", [](const HttpRequest&) { return Answer(403, ErrorXml("AccessDenied", "Access Denied")); });
  auto got = h->store->Get("k");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(got.status().message(), HasSubstr("s3://b/p/k: GET failed: HTTP 403 AccessDenied: Access Denied"));
  EXPECT_THAT(got.status().message(), HasSubstr("access key AKIDTEST from test"));
  EXPECT_THAT(got.status().message(), HasSubstr("request id req-1"));
  EXPECT_EQ(h->transport->requests().size(), 1u);
  EXPECT_TRUE(h->sleeps.empty());
}

TEST(S3ObjectStore, AnonymousAccessDeniedSaysHowToGiveCredentials) {
  auto h = Make("s3://b", [](const HttpRequest&) { return Answer(403, ErrorXml("AccessDenied")); }, true);
  auto s = h->store->Put("k", "x");
  EXPECT_THAT(s.message(), HasSubstr("no credentials were found"));
  EXPECT_THAT(s.message(), HasSubstr("AWS_ACCESS_KEY_ID"));
}

TEST(S3ObjectStore, SignatureMismatchAndMissingBucketHints) {
  auto h = Make("s3://b", [](const HttpRequest&) { return Answer(403, ErrorXml("SignatureDoesNotMatch")); });
  auto s = h->store->Put("k", "x");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(s.message(), HasSubstr("check AWS_SECRET_ACCESS_KEY"));
  auto nb = Make("s3://nob/p", [](const HttpRequest&) { return Answer(404, ErrorXml("NoSuchBucket")); });
  const uint64_t failed0 = ProcessStorageStats().failed_requests;
  auto g = nb->store->Get("k");
  EXPECT_EQ(ProcessStorageStats().failed_requests, failed0);  // NOT_FOUND is an answer, not a storage failure
  EXPECT_EQ(g.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(g.status().message(), HasSubstr("the bucket 'nob' does not exist at http://127.0.0.1:9000"));
}

TEST(S3ObjectStore, ConnectionErrorsAreRetriedThenNamed) {
  auto h = Make("s3://b", [](const HttpRequest&) {
    HttpResponse r;
    r.error = TransportError::kConnect;
    r.error_message = "Connection refused";
    return r;
  });
  auto s = h->store->Stat("k");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.status().message(), HasSubstr("connection failed talking to http://127.0.0.1:9000 (Connection refused)"));
  EXPECT_THAT(s.status().message(), HasSubstr("after 4 attempts"));
  EXPECT_THAT(s.status().message(), HasSubstr("LLMC_S3_ENDPOINT"));
}

TEST(S3ObjectStore, TlsVerificationFailureIsNotRetried) {
  auto h = Make("s3://b", [](const HttpRequest&) {
    HttpResponse r;
    r.error = TransportError::kTlsVerify;
    r.error_message = "self-signed certificate";
    return r;
  });
  auto s = h->store->Get("k");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr("AWS_CA_BUNDLE"));
  EXPECT_EQ(h->transport->requests().size(), 1u);
}

TEST(S3ObjectStore, StatTellsMissingBucketFromMissingObject) {
  auto h = Make("s3://b/p", [](const HttpRequest& r) {
    if (absl::EndsWith(r.url, "/b")) return Answer(200);  // HEAD bucket
    return Answer(404);
  });
  auto s = h->store->Stat("k");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.status().message(), HasSubstr("s3://b/p/k: no such object"));
  auto nb = Make("s3://b/p", [](const HttpRequest&) { return Answer(404); });
  EXPECT_THAT(nb->store->Stat("k").status().message(), HasSubstr("does not exist"));
  auto ok = Make("s3://b", [](const HttpRequest&) {
    return Answer(200, "", {{"content-length", "1234"}, {"etag", "\"e1\""}});
  });
  auto info = ok->store->Stat("k");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->size, 1234u);
  EXPECT_EQ(info->etag, "e1");
}

TEST(S3ObjectStore, RangedReadIntoBuffer) {
  auto h = Make("s3://b", [](const HttpRequest&) { return Answer(206, "0123456789"); });
  std::string buf(10, '\0');
  auto s = h->store->Read("k", 100, absl::MakeSpan(reinterpret_cast<uint8_t*>(buf.data()), buf.size()), "etag1");
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(buf, "0123456789");
  auto r = h->transport->requests()[0];
  EXPECT_EQ(r.Header("Range"), "bytes=100-109");
  EXPECT_EQ(r.Header("If-Match"), "\"etag1\"");
  // A short answer is an error, not a silent short read.
  auto short_h = Make("s3://b", [](const HttpRequest&) { return Answer(206, "0123"); });
  EXPECT_EQ(short_h->store->Read("k", 0, absl::MakeSpan(reinterpret_cast<uint8_t*>(buf.data()), buf.size())).code(),
            absl::StatusCode::kOutOfRange);
  auto changed = Make("s3://b", [](const HttpRequest&) { return Answer(412, ErrorXml("PreconditionFailed")); });
  auto c = changed->store->Read("k", 0, absl::MakeSpan(reinterpret_cast<uint8_t*>(buf.data()), buf.size()), "e");
  EXPECT_EQ(c.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(c.message(), HasSubstr("changed while it was being read"));
}

TEST(S3ObjectStore, GetRangeHeaders) {
  auto h = Make("s3://b", [](const HttpRequest&) { return Answer(206, "abc"); });
  ASSERT_TRUE(h->store->Get("k", 5).ok());
  ASSERT_TRUE(h->store->Get("k", 5, 3).ok());
  auto reqs = h->transport->requests();
  EXPECT_EQ(reqs[0].Header("Range"), "bytes=5-");
  EXPECT_EQ(reqs[1].Header("Range"), "bytes=5-7");
  // A server that ignores Range: the bytes are cut here.
  auto whole = Make("s3://b", [](const HttpRequest&) { return Answer(200, "0123456789"); });
  EXPECT_EQ(*whole->store->Get("k", 2, 3), "234");
}

TEST(S3ObjectStore, MultipartUploadRequests) {
  auto h = Make("s3://b/out", [](const HttpRequest& r) {
    if (r.method == "POST" && absl::StrContains(r.url, "uploads="))
      return Answer(200, "<InitiateMultipartUploadResult><UploadId>U/1</UploadId></InitiateMultipartUploadResult>");
    if (r.method == "PUT") return Answer(200, "", {{"etag", "\"pe\""}});
    if (r.method == "POST")
      return Answer(200, "<CompleteMultipartUploadResult><ETag></ETag></CompleteMultipartUploadResult>");
    return Answer(204);
  });
  auto id = h->store->CreateMultipartUpload("f.bin");
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, "U/1");
  auto etag = h->store->UploadPart("f.bin", *id, 2, "part");
  ASSERT_TRUE(etag.ok());
  EXPECT_EQ(*etag, "\"pe\"");
  ASSERT_TRUE(h->store->CompleteMultipartUpload("f.bin", *id, {{1, "\"a\""}, {2, "\"pe\""}}).ok());
  ASSERT_TRUE(h->store->AbortMultipartUpload("f.bin", *id).ok());
  auto reqs = h->transport->requests();
  EXPECT_EQ(reqs[0].url, "http://127.0.0.1:9000/b/out/f.bin?uploads=");
  EXPECT_EQ(reqs[1].url, "http://127.0.0.1:9000/b/out/f.bin?partNumber=2&uploadId=U%2F1");
  EXPECT_EQ(reqs[2].url, "http://127.0.0.1:9000/b/out/f.bin?uploadId=U%2F1");
  EXPECT_THAT(reqs[2].body, HasSubstr("<PartNumber>2</PartNumber><ETag>&quot;pe&quot;</ETag>"));
  EXPECT_EQ(reqs[2].Header("Content-Type"), "application/xml");
  EXPECT_EQ(reqs[3].method, "DELETE");
  EXPECT_FALSE(h->store->UploadPart("f.bin", *id, 0, "x").ok());
  EXPECT_FALSE(h->store->UploadPart("f.bin", *id, 10001, "x").ok());
}

TEST(S3ObjectStore, CompleteWithErrorIn200IsRetried) {
  int completes = 0;
  auto h = Make("s3://b", [&](const HttpRequest&) {
    if (++completes == 1) return Answer(200, ErrorXml("InternalError", "We encountered an internal error"));
    return Answer(200, "<CompleteMultipartUploadResult><ETag>\"x\"</ETag></CompleteMultipartUploadResult>");
  });
  ASSERT_TRUE(h->store->CompleteMultipartUpload("k", "u", {{1, "\"a\""}}).ok());
  EXPECT_EQ(completes, 2);
  auto bad = Make("s3://b", [](const HttpRequest&) { return Answer(200, ErrorXml("InvalidPart", "bad part")); });
  auto s = bad->store->CompleteMultipartUpload("k", "u", {{1, "\"a\""}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("InvalidPart"));
}

TEST(S3ObjectStore, RetriedCompleteThatAlreadyWentThrough) {
  int calls = 0;
  auto h = Make("s3://b", [&](const HttpRequest& r) {
    ++calls;
    if (r.method == "HEAD") return Answer(200, "", {{"content-length", "5"}});
    if (calls == 1) {
      HttpResponse t;
      t.error = TransportError::kTimeout;
      t.error_message = "timeout";
      return t;
    }
    return Answer(404, ErrorXml("NoSuchUpload"));
  });
  EXPECT_TRUE(h->store->CompleteMultipartUpload("k", "u", {{1, "\"a\""}}).ok());
}

TEST(S3ObjectStore, ListPagesStripTheRootPrefix) {
  auto h = Make("s3://b/root/dir", [](const HttpRequest& r) {
    if (!absl::StrContains(r.url, "continuation-token"))
      return Answer(200,
                    "<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken>t 1</NextContinuationToken>"
                    "<Contents><Key>root/dir/a</Key><Size>1</Size><ETag>\"e\"</ETag></Contents></ListBucketResult>");
    return Answer(200,
                  "<ListBucketResult><IsTruncated>false</IsTruncated>"
                  "<Contents><Key>root/dir/sub/b</Key><Size>2</Size></Contents></ListBucketResult>");
  });
  auto all = h->store->List("", 1);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].key, "a");
  EXPECT_EQ((*all)[0].etag, "e");
  EXPECT_EQ((*all)[1].key, "sub/b");
  auto reqs = h->transport->requests();
  EXPECT_EQ(reqs[0].url, "http://127.0.0.1:9000/b?list-type=2&max-keys=1&prefix=root%2Fdir%2F");
  EXPECT_EQ(reqs[1].url,
            "http://127.0.0.1:9000/b?continuation-token=t%201&list-type=2&max-keys=1&prefix=root%2Fdir%2F");
}

TEST(S3ObjectStore, DeletePrefixUsesMultiObjectDelete) {
  auto h = Make("s3://b/p", [](const HttpRequest& r) {
    if (r.method == "GET")
      return Answer(200,
                    "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>p/x/1</Key><Size>1</Size>"
                    "</Contents><Contents><Key>p/x/2&amp;</Key><Size>1</Size></Contents></ListBucketResult>");
    return Answer(200, "<DeleteResult></DeleteResult>");
  });
  auto n = h->store->DeletePrefix("x/");
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2);
  auto post = h->transport->requests()[1];
  EXPECT_EQ(post.url, "http://127.0.0.1:9000/b?delete=");
  EXPECT_THAT(post.body, HasSubstr("<Key>p/x/1</Key>"));
  EXPECT_THAT(post.body, HasSubstr("<Key>p/x/2&amp;</Key>"));
  EXPECT_EQ(post.Header("Content-MD5"), Md5Base64(post.body));
  auto partial = Make("s3://b", [](const HttpRequest& r) {
    if (r.method == "GET")
      return Answer(200, "<ListBucketResult><Contents><Key>k</Key><Size>1</Size></Contents></ListBucketResult>");
    return Answer(200, "<DeleteResult><Error><Key>k</Key><Code>AccessDenied</Code><Message>no</Message></Error>"
                       "</DeleteResult>");
  });
  EXPECT_THAT(partial->store->DeletePrefix("").status().message(), HasSubstr("AccessDenied"));
}

TEST(S3ObjectStore, DeleteOfAMissingObjectIsOk) {
  auto h = Make("s3://b", [](const HttpRequest&) { return Answer(404, ErrorXml("NoSuchKey")); });
  EXPECT_TRUE(h->store->Delete("k").ok());
  auto nb = Make("s3://b", [](const HttpRequest&) { return Answer(404, ErrorXml("NoSuchBucket")); });
  EXPECT_FALSE(nb->store->Delete("k").ok());
}

TEST(S3ObjectStore, CopyRequests) {
  auto h = Make("s3://b/p", [](const HttpRequest& r) {
    if (r.method == "HEAD") return Answer(200, "", {{"content-length", "10"}});
    return Answer(200, "<CopyObjectResult><ETag>\"c\"</ETag></CopyObjectResult>");
  });
  ASSERT_TRUE(h->store->Copy(".staging/a b", "a b").ok());
  auto put = h->transport->requests()[1];
  EXPECT_EQ(put.method, "PUT");
  EXPECT_EQ(put.url, "http://127.0.0.1:9000/b/p/a%20b");
  EXPECT_EQ(put.Header("x-amz-copy-source"), "/b/p/.staging/a%20b");
  EXPECT_THAT(put.Header("Authorization"), HasSubstr("x-amz-copy-source"));
}

TEST(S3ObjectStore, LargeCopyGoesInParts) {
  std::mutex mu;
  std::vector<std::string> ranges;
  auto transport = std::make_shared<FakeTransport>([&](const HttpRequest& r) {
    if (r.method == "HEAD") return Answer(200, "", {{"content-length", std::to_string(25u << 20)}});
    if (r.method == "POST" && absl::StrContains(r.url, "uploads="))
      return Answer(200, "<InitiateMultipartUploadResult><UploadId>u</UploadId></InitiateMultipartUploadResult>");
    if (r.method == "PUT") {
      for (const auto& [k, v] : r.headers)
        if (k == "x-amz-copy-source-range") {
          std::lock_guard<std::mutex> lock(mu);
          ranges.push_back(v);
        }
      return Answer(200, "<CopyPartResult><ETag>\"p\"</ETag></CopyPartResult>");
    }
    return Answer(200, "<CompleteMultipartUploadResult/>");
  });
  S3Options o;
  o.endpoint = "http://h";
  o.anonymous = true;
  o.transport = transport;
  o.multipart_copy_threshold = 10u << 20;
  o.copy_part_size = 10u << 20;
  auto s = S3ObjectStore::Create(*ParseStorageUri("s3://b"), o, NoEnv());
  ASSERT_TRUE((*s)->Copy("a", "b").ok());
  std::sort(ranges.begin(), ranges.end());
  EXPECT_THAT(ranges, ::testing::ElementsAre("bytes=0-10485759", "bytes=10485760-20971519", "bytes=20971520-26214399"));
}

}  // namespace
}  // namespace llmc::storage
