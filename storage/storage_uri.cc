#include "storage/storage_uri.h"

#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "storage/sigv4_signer.h"

namespace llmc::storage {

namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

absl::StatusOr<std::string> PercentDecode(absl::string_view s, absl::string_view uri) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    int hi = i + 2 < s.size() ? HexValue(s[i + 1]) : -1;
    int lo = i + 2 < s.size() ? HexValue(s[i + 2]) : -1;
    if (hi < 0 || lo < 0)
      return absl::InvalidArgumentError(absl::StrCat(uri, ": bad percent-escape; write '%' as %25"));
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

std::string NormalizeLocalPath(absl::string_view p) {
  std::error_code ec;
  std::filesystem::path abs = std::filesystem::absolute(std::filesystem::path(std::string(p)), ec);
  if (ec) abs = std::filesystem::path(std::string(p));
  std::string s = abs.lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

}  // namespace

std::string StorageUri::ToString() const {
  if (is_s3()) return prefix.empty() ? absl::StrCat("s3://", bucket) : absl::StrCat("s3://", bucket, "/", prefix);
  return absl::StrCat("file://", UriEncode(path, /*encode_slash=*/false));
}

std::string StorageUri::Key(absl::string_view relative_key) const {
  return is_s3() ? JoinKey(prefix, relative_key) : JoinKey(path, relative_key);
}

StorageUri StorageUri::Child(absl::string_view relative_key) const {
  StorageUri c = *this;
  absl::string_view rel = absl::StripSuffix(relative_key, "/");
  if (is_s3()) c.prefix = JoinKey(prefix, rel);
  else c.path = JoinKey(path, rel);
  return c;
}

std::string JoinKey(absl::string_view prefix, absl::string_view relative_key) {
  if (relative_key.empty()) return std::string(prefix);
  if (prefix.empty()) return std::string(relative_key);
  if (prefix.back() == '/') return absl::StrCat(prefix, relative_key);
  return absl::StrCat(prefix, "/", relative_key);
}

bool IsS3Uri(absl::string_view uri) { return absl::StartsWithIgnoreCase(uri, "s3://"); }

absl::StatusOr<StorageUri> ParseStorageUri(absl::string_view uri) {
  if (uri.empty()) return absl::InvalidArgumentError("empty storage location: give a path, file:///dir or s3://bucket/prefix");
  StorageUri out;
  size_t colon = uri.find("://");
  bool has_scheme = colon != absl::string_view::npos && colon > 0;
  if (has_scheme) {
    for (char c : uri.substr(0, colon))
      if (!absl::ascii_isalnum(c) && c != '+' && c != '-' && c != '.') has_scheme = false;
  }
  if (!has_scheme) {
    if (absl::StartsWithIgnoreCase(uri, "s3:") || absl::StartsWithIgnoreCase(uri, "file:"))
      return absl::InvalidArgumentError(absl::StrCat(uri, ": malformed URI; write s3://bucket/prefix or file:///abs/dir"));
    out.scheme = UriScheme::kFile;
    out.path = NormalizeLocalPath(uri);
    return out;
  }
  std::string scheme = absl::AsciiStrToLower(uri.substr(0, colon));
  absl::string_view rest = uri.substr(colon + 3);
  if (scheme == "file") {
    size_t slash = rest.find('/');
    absl::string_view host = slash == absl::string_view::npos ? rest : rest.substr(0, slash);
    if (!host.empty() && !absl::EqualsIgnoreCase(host, "localhost"))
      return absl::InvalidArgumentError(absl::StrCat(uri, ": file URIs name a local absolute path (file:///abs/dir); '",
                                                     host, "' is not a local host"));
    if (slash == absl::string_view::npos)
      return absl::InvalidArgumentError(absl::StrCat(uri, ": no path; write file:///abs/dir"));
    absl::string_view raw = rest.substr(slash);
    size_t q = raw.find_first_of("?#");
    if (q != absl::string_view::npos)
      return absl::InvalidArgumentError(absl::StrCat(uri, ": file URIs take no query or fragment; escape '?' as %3F and '#' as %23"));
    auto decoded = PercentDecode(raw, uri);
    if (!decoded.ok()) return decoded.status();
    if (decoded->find('\0') != std::string::npos)
      return absl::InvalidArgumentError(absl::StrCat(uri, ": path contains a NUL byte"));
    out.scheme = UriScheme::kFile;
    out.path = NormalizeLocalPath(*decoded);
    return out;
  }
  if (scheme == "s3") {
    size_t slash = rest.find('/');
    absl::string_view bucket = slash == absl::string_view::npos ? rest : rest.substr(0, slash);
    absl::string_view prefix = slash == absl::string_view::npos ? absl::string_view() : rest.substr(slash + 1);
    if (bucket.empty())
      return absl::InvalidArgumentError(absl::StrCat(uri, ": no bucket; write s3://bucket/prefix"));
    if (bucket.size() > 255)
      return absl::InvalidArgumentError(absl::StrCat(uri, ": bucket name longer than 255 characters"));
    for (char c : bucket) {
      if (!absl::ascii_isalnum(c) && c != '.' && c != '-' && c != '_')
        return absl::InvalidArgumentError(absl::StrCat(uri, ": bucket name '", bucket, "' has the character '",
                                                       std::string(1, c),
                                                       "'; bucket names use letters, digits, '.', '-' and '_'"));
    }
    while (absl::ConsumeSuffix(&prefix, "/")) {
    }
    if (absl::StartsWith(prefix, "/"))
      return absl::InvalidArgumentError(absl::StrCat(uri, ": empty path segment after the bucket; write s3://bucket/prefix"));
    if (prefix.find('\0') != absl::string_view::npos)
      return absl::InvalidArgumentError(absl::StrCat(uri, ": key prefix contains a NUL byte"));
    for (absl::string_view seg : absl::StrSplit(prefix, '/', absl::SkipEmpty())) {
      if (seg == "." || seg == "..")
        return absl::InvalidArgumentError(absl::StrCat(uri, ": '", seg, "' segments are not allowed in an s3:// prefix"));
    }
    if (prefix.find("//") != absl::string_view::npos)
      return absl::InvalidArgumentError(absl::StrCat(uri, ": empty path segment ('//') in the key prefix"));
    out.scheme = UriScheme::kS3;
    out.bucket = std::string(bucket);
    out.prefix = std::string(prefix);
    return out;
  }
  return absl::UnimplementedError(absl::StrCat(uri, ": the scheme ", scheme,
                                               ":// is not supported; use a local path, file:///abs/dir or "
                                               "s3://bucket/prefix (any S3-compatible server)"));
}

absl::Status ValidateRelativeKey(absl::string_view key) {
  if (key.empty()) return absl::InvalidArgumentError("empty object key");
  if (key.front() == '/') return absl::InvalidArgumentError(absl::StrCat("object key '", key, "' starts with '/'"));
  if (key.find('\0') != absl::string_view::npos || key.find('\\') != absl::string_view::npos)
    return absl::InvalidArgumentError(absl::StrCat("object key '", key, "' contains a NUL byte or a backslash"));
  for (absl::string_view seg : absl::StrSplit(key, '/')) {
    if (seg.empty() || seg == "." || seg == "..")
      return absl::InvalidArgumentError(
          absl::StrCat("object key '", key, "' has an empty, '.' or '..' path segment; it cannot map to a local file"));
  }
  return absl::OkStatus();
}

}  // namespace llmc::storage
