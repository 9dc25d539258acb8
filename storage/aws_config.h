// Where S3 settings come from: credentials (environment, then the shared credentials file, else anonymous),
// region and endpoint (options, then environment).
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "storage/sigv4_signer.h"

namespace llmc::storage {

// Reads an environment variable; returns nullptr when unset. Tests pass their own.
using GetEnvFn = std::function<const char*(const char*)>;
GetEnvFn SystemEnv();

// Credentials, in order: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN); else the profile
// AWS_PROFILE (default "default") of the shared credentials file AWS_SHARED_CREDENTIALS_FILE (default
// $HOME/.aws/credentials); else anonymous (empty AwsCredentials). Errors (FAILED_PRECONDITION) for half-set
// variables, a named file or profile that does not exist, or a profile without both keys; they say what to fix.
absl::StatusOr<AwsCredentials> ResolveAwsCredentials(const GetEnvFn& getenv = SystemEnv());

// Parses the INI text of a shared credentials file and returns `profile`'s keys (aws_access_key_id,
// aws_secret_access_key, aws_session_token). `path` is only for messages. NOT_FOUND if the profile is absent,
// FAILED_PRECONDITION if a key is missing.
absl::StatusOr<AwsCredentials> ParseSharedCredentials(absl::string_view text, absl::string_view profile,
                                                      absl::string_view path);

// The region: `configured` if set, else AWS_REGION, AWS_DEFAULT_REGION, else "us-east-1".
std::string ResolveRegion(absl::string_view configured, const GetEnvFn& getenv = SystemEnv());

// The endpoint: `configured` if set, else LLMC_S3_ENDPOINT, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL; "" means
// AWS itself (https://s3.REGION.amazonaws.com).
std::string ResolveEndpoint(absl::string_view configured, const GetEnvFn& getenv = SystemEnv());

}  // namespace llmc::storage
