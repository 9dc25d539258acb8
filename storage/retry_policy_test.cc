#include "storage/retry_policy.h"

#include <gtest/gtest.h>

namespace llmc::storage {
namespace {

TEST(RetryPolicy, RetriesServerErrorsAndThrottling) {
  EXPECT_TRUE(IsRetryableHttp(500, "InternalError"));
  EXPECT_TRUE(IsRetryableHttp(502, ""));
  EXPECT_TRUE(IsRetryableHttp(503, "SlowDown"));
  EXPECT_TRUE(IsRetryableHttp(504, ""));
  EXPECT_TRUE(IsRetryableHttp(429, ""));
  EXPECT_TRUE(IsRetryableHttp(408, ""));
  EXPECT_TRUE(IsRetryableHttp(400, "RequestTimeout"));
  EXPECT_TRUE(IsRetryableHttp(200, "InternalError"));  // CompleteMultipartUpload's 200 with an error body
  EXPECT_FALSE(IsRetryableHttp(501, "NotImplemented"));
}

TEST(RetryPolicy, NeverRetriesOtherClientErrors) {
  for (int status : {400, 401, 403, 404, 405, 409, 411, 412, 416})
    EXPECT_FALSE(IsRetryableHttp(status, "")) << status;
  EXPECT_FALSE(IsRetryableHttp(403, "AccessDenied"));
  EXPECT_FALSE(IsRetryableHttp(403, "SignatureDoesNotMatch"));
  EXPECT_FALSE(IsRetryableHttp(403, "RequestTimeTooSkewed"));
  EXPECT_FALSE(IsRetryableHttp(404, "NoSuchKey"));
  EXPECT_FALSE(IsRetryableHttp(400, "EntityTooSmall"));
}

TEST(RetryPolicy, TransportErrors) {
  EXPECT_TRUE(IsRetryableTransport(TransportError::kConnect));
  EXPECT_TRUE(IsRetryableTransport(TransportError::kTimeout));
  EXPECT_TRUE(IsRetryableTransport(TransportError::kConnection));
  EXPECT_TRUE(IsRetryableTransport(TransportError::kResolve));
  EXPECT_TRUE(IsRetryableTransport(TransportError::kTls));
  EXPECT_FALSE(IsRetryableTransport(TransportError::kTlsVerify));
  EXPECT_FALSE(IsRetryableTransport(TransportError::kAborted));
  EXPECT_FALSE(IsRetryableTransport(TransportError::kOther));
}

TEST(RetryPolicy, BackoffGrowsExponentiallyWithJitterAndCap) {
  RetryPolicy p;
  p.initial_backoff = absl::Milliseconds(100);
  p.max_backoff = absl::Seconds(1);
  p.multiplier = 2;
  // u = 0 gives half the cap, u -> 1 the whole cap.
  EXPECT_EQ(BackoffDelay(p, 1, 0.0), absl::Milliseconds(50));
  EXPECT_EQ(BackoffDelay(p, 1, 1.0), absl::Milliseconds(100));
  EXPECT_EQ(BackoffDelay(p, 2, 0.0), absl::Milliseconds(100));
  EXPECT_EQ(BackoffDelay(p, 3, 1.0), absl::Milliseconds(400));
  EXPECT_EQ(BackoffDelay(p, 10, 1.0), absl::Seconds(1));
  EXPECT_EQ(BackoffDelay(p, 10, 0.0), absl::Milliseconds(500));
  for (int retry = 1; retry < 8; ++retry)
    for (double u : {0.0, 0.3, 0.99}) {
      absl::Duration d = BackoffDelay(p, retry, u);
      EXPECT_GT(d, absl::ZeroDuration());
      EXPECT_LE(d, p.max_backoff);
    }
}

TEST(RetryPolicy, RetryAfterRaisesTheDelayUpToTheCap) {
  RetryPolicy p;
  p.initial_backoff = absl::Milliseconds(100);
  p.max_backoff = absl::Seconds(5);
  EXPECT_EQ(BackoffDelay(p, 1, 0.0, absl::Seconds(2)), absl::Seconds(2));
  EXPECT_EQ(BackoffDelay(p, 1, 0.0, absl::Seconds(60)), absl::Seconds(5));
}

}  // namespace
}  // namespace llmc::storage
