#include "storage/aws_config.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace llmc::storage {

namespace {

std::string Env(const GetEnvFn& getenv, const char* name) {
  const char* v = getenv(name);
  return v ? std::string(absl::StripAsciiWhitespace(v)) : std::string();
}

}  // namespace

GetEnvFn SystemEnv() {
  return [](const char* name) -> const char* { return std::getenv(name); };
}

absl::StatusOr<AwsCredentials> ParseSharedCredentials(absl::string_view text, absl::string_view profile,
                                                      absl::string_view path) {
  std::string section;
  bool found = false;
  std::vector<std::string> profiles;
  AwsCredentials c;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    absl::string_view line = absl::StripAsciiWhitespace(raw);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[') {
      if (line.back() != ']') continue;
      section = std::string(absl::StripAsciiWhitespace(line.substr(1, line.size() - 2)));
      // ~/.aws/config style "[profile name]" is accepted too.
      if (absl::StartsWith(section, "profile ")) section = std::string(absl::StripAsciiWhitespace(section.substr(8)));
      profiles.push_back(section);
      if (section == profile) found = true;
      continue;
    }
    if (section != profile) continue;
    size_t eq = line.find('=');
    if (eq == absl::string_view::npos) continue;
    std::string key = absl::AsciiStrToLower(absl::StripAsciiWhitespace(line.substr(0, eq)));
    std::string value(absl::StripAsciiWhitespace(line.substr(eq + 1)));
    if (key == "aws_access_key_id") c.access_key_id = value;
    else if (key == "aws_secret_access_key") c.secret_access_key = value;
    else if (key == "aws_session_token" || key == "aws_security_token") c.session_token = value;
  }
  if (!found)
    return absl::NotFoundError(absl::StrCat("profile '", profile, "' is not in ", path, " (profiles there: ",
                                            profiles.empty() ? "none" : absl::StrJoin(profiles, ", "),
                                            "); set AWS_PROFILE to one of them"));
  if (c.access_key_id.empty() || c.secret_access_key.empty())
    return absl::FailedPreconditionError(absl::StrCat("profile '", profile, "' in ", path,
                                                      " lacks aws_access_key_id or aws_secret_access_key"));
  c.source = absl::StrCat(path, " [", profile, "]");
  return c;
}

absl::StatusOr<AwsCredentials> ResolveAwsCredentials(const GetEnvFn& getenv) {
  std::string id = Env(getenv, "AWS_ACCESS_KEY_ID");
  std::string secret = Env(getenv, "AWS_SECRET_ACCESS_KEY");
  if (!id.empty() || !secret.empty()) {
    if (id.empty() || secret.empty())
      return absl::FailedPreconditionError(absl::StrCat(
          id.empty() ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID", " is set but ",
          id.empty() ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY", " is not; set both (or neither, to use ",
          "the shared credentials file)"));
    AwsCredentials c;
    c.access_key_id = id;
    c.secret_access_key = secret;
    c.session_token = Env(getenv, "AWS_SESSION_TOKEN");
    c.source = "environment (AWS_ACCESS_KEY_ID)";
    return c;
  }
  std::string profile = Env(getenv, "AWS_PROFILE");
  bool profile_named = !profile.empty();
  if (profile.empty()) profile = "default";
  std::string path = Env(getenv, "AWS_SHARED_CREDENTIALS_FILE");
  bool path_named = !path.empty();
  if (path.empty()) {
    std::string home = Env(getenv, "HOME");
    if (!home.empty()) path = absl::StrCat(home, "/.aws/credentials");
  }
  if (!path.empty()) {
    std::ifstream in(path, std::ios::binary);
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      auto c = ParseSharedCredentials(ss.str(), profile, path);
      // A file without a [default] profile is fine when no profile was asked for: go anonymous.
      if (!c.ok() && absl::IsNotFound(c.status()) && !profile_named) return AwsCredentials{};
      if (!c.ok()) return absl::FailedPreconditionError(c.status().message());
      return c;
    }
    if (path_named)
      return absl::FailedPreconditionError(
          absl::StrCat("AWS_SHARED_CREDENTIALS_FILE=", path, " cannot be read; fix the path or unset it"));
  }
  if (profile_named)
    return absl::FailedPreconditionError(absl::StrCat("AWS_PROFILE=", profile, " is set but there is no credentials file (",
                                                      path.empty() ? "$HOME is unset" : path,
                                                      "); create it or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"));
  return AwsCredentials{};
}

std::string ResolveRegion(absl::string_view configured, const GetEnvFn& getenv) {
  if (!configured.empty()) return std::string(configured);
  for (const char* name : {"AWS_REGION", "AWS_DEFAULT_REGION"}) {
    std::string v = Env(getenv, name);
    if (!v.empty()) return v;
  }
  return "us-east-1";
}

std::string ResolveEndpoint(absl::string_view configured, const GetEnvFn& getenv) {
  if (!configured.empty()) return std::string(configured);
  for (const char* name : {"LLMC_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"}) {
    std::string v = Env(getenv, name);
    if (!v.empty()) return v;
  }
  return "";
}

}  // namespace llmc::storage
