#include "storage/aws_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "tests/support/temp_dir.h"

namespace llmc::storage {
namespace {

using ::testing::HasSubstr;

GetEnvFn FakeEnv(std::map<std::string, std::string> vars) {
  auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [shared](const char* name) -> const char* {
    auto it = shared->find(name);
    return it == shared->end() ? nullptr : it->second.c_str();
  };
}

TEST(AwsConfig, CredentialsFromEnvironment) {
  auto c = ResolveAwsCredentials(FakeEnv({{"AWS_ACCESS_KEY_ID", "AKID"}, {"AWS_SECRET_ACCESS_KEY", "SECRET"},
                                          {"AWS_SESSION_TOKEN", "TOKEN"}, {"HOME", "/nonexistent"}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->access_key_id, "AKID");
  EXPECT_EQ(c->secret_access_key, "SECRET");
  EXPECT_EQ(c->session_token, "TOKEN");
  EXPECT_THAT(c->source, HasSubstr("environment"));
}

TEST(AwsConfig, HalfSetEnvironmentIsAnError) {
  auto c = ResolveAwsCredentials(FakeEnv({{"AWS_ACCESS_KEY_ID", "AKID"}}));
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(c.status().message(), HasSubstr("AWS_SECRET_ACCESS_KEY is not"));
}

TEST(AwsConfig, SharedCredentialsFileAndProfile) {
  testing::TempDir tmp;
  tmp.Write("creds", "# comment\n[default]\naws_access_key_id = DEF\naws_secret_access_key=DEFSECRET\n\n"
                     "[profile other]\n aws_access_key_id=OTH \naws_secret_access_key = OTHSECRET\n"
                     "aws_session_token = T\n");
  auto def = ResolveAwsCredentials(FakeEnv({{"AWS_SHARED_CREDENTIALS_FILE", tmp / "creds"}}));
  ASSERT_TRUE(def.ok()) << def.status();
  EXPECT_EQ(def->access_key_id, "DEF");
  EXPECT_EQ(def->secret_access_key, "DEFSECRET");
  EXPECT_THAT(def->source, HasSubstr("[default]"));
  auto other = ResolveAwsCredentials(FakeEnv({{"AWS_SHARED_CREDENTIALS_FILE", tmp / "creds"}, {"AWS_PROFILE", "other"}}));
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(other->access_key_id, "OTH");
  EXPECT_EQ(other->session_token, "T");
  auto missing = ResolveAwsCredentials(FakeEnv({{"AWS_SHARED_CREDENTIALS_FILE", tmp / "creds"}, {"AWS_PROFILE", "nope"}}));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(missing.status().message(), HasSubstr("profiles there: default, other"));
}

TEST(AwsConfig, HomeCredentialsFile) {
  testing::TempDir tmp;
  std::filesystem::create_directories(tmp / ".aws");
  tmp.Write(".aws/credentials", "[default]\naws_access_key_id=H\naws_secret_access_key=HS\n");
  auto c = ResolveAwsCredentials(FakeEnv({{"HOME", tmp.path()}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->access_key_id, "H");
}

TEST(AwsConfig, NamedFileMissingIsAnError) {
  auto c = ResolveAwsCredentials(FakeEnv({{"AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/creds"}}));
  EXPECT_THAT(c.status().message(), HasSubstr("cannot be read"));
  auto p = ResolveAwsCredentials(FakeEnv({{"AWS_PROFILE", "x"}, {"HOME", "/nonexistent"}}));
  EXPECT_THAT(p.status().message(), HasSubstr("AWS_PROFILE=x"));
}

TEST(AwsConfig, NothingMeansAnonymous) {
  auto c = ResolveAwsCredentials(FakeEnv({{"HOME", "/nonexistent"}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->anonymous());
}

TEST(AwsConfig, ProfileWithoutKeys) {
  auto c = ParseSharedCredentials("[default]\naws_access_key_id=A\n", "default", "f");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(AwsConfig, RegionAndEndpoint) {
  EXPECT_EQ(ResolveRegion("", FakeEnv({})), "us-east-1");
  EXPECT_EQ(ResolveRegion("", FakeEnv({{"AWS_DEFAULT_REGION", "eu-west-1"}})), "eu-west-1");
  EXPECT_EQ(ResolveRegion("", FakeEnv({{"AWS_DEFAULT_REGION", "eu-west-1"}, {"AWS_REGION", "us-west-2"}})), "us-west-2");
  EXPECT_EQ(ResolveRegion("ap-south-1", FakeEnv({{"AWS_REGION", "us-west-2"}})), "ap-south-1");
  EXPECT_EQ(ResolveEndpoint("", FakeEnv({})), "");
  EXPECT_EQ(ResolveEndpoint("", FakeEnv({{"AWS_ENDPOINT_URL", "http://a"}})), "http://a");
  EXPECT_EQ(ResolveEndpoint("", FakeEnv({{"AWS_ENDPOINT_URL", "http://a"}, {"LLMC_S3_ENDPOINT", "http://b"}})), "http://b");
  EXPECT_EQ(ResolveEndpoint("http://c", FakeEnv({{"LLMC_S3_ENDPOINT", "http://b"}})), "http://c");
}

}  // namespace
}  // namespace llmc::storage
